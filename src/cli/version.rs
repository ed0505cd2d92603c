//! `eci-profile version`: what this binary was built from.

use std::process::ExitCode;

use clap::Args;
use eci_profile::build_info;

#[derive(Debug, Args)]
pub struct VersionArgs {}

/// The version, git revision, build date and compiler, one a line
/// (also what `--version` prints).
pub static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{}\nrevision: {}\nbuild date: {}\nrustc: {}",
        build_info::VERSION,
        build_info::REVISION,
        build_info::DATE,
        build_info::RUSTC
    )
});

pub fn run(_: VersionArgs) -> Result<ExitCode, String> {
    super::print(&format!("eci-profile {}\n", *TEXT))?;
    Ok(ExitCode::SUCCESS)
}
