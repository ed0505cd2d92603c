//! `eci-profile validate FILE...`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use eci_profile::profile::{self, Diagnostics};
use eci_profile::sources::file::read_profile;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Profile manifests (YAML or JSON: the ConfigMap, eci.aliyun.com Selector
    /// objects, or both; several documents and `kind: List` allowed) or mounted ConfigMap directories.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Prints every finding of every file; fails when any file has an error.
pub fn run(args: ValidateArgs) -> Result<ExitCode, String> {
    let mut failed = false;
    for path in &args.files {
        let name = path.display();
        let (diagnostics, rules) = match read_profile(path) {
            Err(diagnostics) => (diagnostics, None),
            Ok((manifests, notes)) => {
                let mut compiled = profile::compile_manifests(&manifests);
                let rules = compiled.profile.as_ref().map(|p| p.rule_count());
                compiled.diagnostics.0.extend(notes.0);
                (compiled.diagnostics, rules)
            }
        };
        for d in diagnostics.iter() {
            println!("{d}");
        }
        let Diagnostics(list) = &diagnostics;
        let count = |s| list.iter().filter(|d| d.severity == s).count();
        let (errors, warnings) = (
            count(profile::Severity::Error),
            count(profile::Severity::Warning),
        );
        match rules {
            Some(rules) => println!(
                "{name}: valid: {rules} selector{}, {warnings} warning{}",
                plural(rules),
                plural(warnings)
            ),
            None => {
                failed = true;
                println!(
                    "{name}: invalid: {errors} error{}, {warnings} warning{}",
                    plural(errors),
                    plural(warnings)
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::from(super::FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
