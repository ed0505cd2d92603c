//! Command-line interface: `serve`, `check`, `test`, `validate`, `diff`, `convert`,
//! `certs`, `version`, `completion`.

mod certs;
mod check;
mod completion;
mod convert;
mod diff;
mod logging;
mod serve;
mod test;
mod validate;
mod version;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use eci_profile::profile::{self, Profile, ProfileData, Severity};
use eci_profile::sources::file::read_profile;

/// Sends Kubernetes pods to virtual nodes (ECI / virtual-kubelet) by the
/// rules of an eci-profile ConfigMap.
#[derive(Debug, Parser)]
#[command(name = "eci-profile", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the webhook server (HTTPS) and its admin listener (HTTP).
    Serve(Box<serve::ServeArgs>),
    /// Show what the webhook does with pods or AdmissionReview requests.
    Check(check::CheckArgs),
    /// Run ProfileTest files: expected decisions for pods, workloads and AdmissionReviews.
    Test(test::TestArgs),
    /// Validate profiles: ConfigMap and Selector manifests, or mounted directories.
    Validate(validate::ValidateArgs),
    /// Show which workloads a profile change moves to or from virtual nodes.
    Diff(diff::DiffArgs),
    /// Convert between the profile ConfigMap and Selector objects.
    Convert(convert::ConvertArgs),
    /// Write a CA and a serving certificate signed by it (ca.crt, tls.crt, tls.key).
    Certs(certs::CertsArgs),
    /// Print the version, git revision, build date and compiler.
    Version(version::VersionArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(completion::CompletionArgs),
}

/// Exit code for a refused profile or unreadable input.
const FAILURE: u8 = 1;

/// Runs the command line; returns the process exit code.
pub fn run() -> ExitCode {
    let command = Cli::command().long_version(version::TEXT.as_str());
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Check(args) => check::run(args),
        Command::Test(args) => test::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Version(args) => version::run(args),
        Command::Completion(args) => completion::run(args, &mut Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("eci-profile: {message}");
            ExitCode::from(FAILURE)
        }
    }
}

/// Loads and compiles a profile file, or the embedded default without one.
/// Warnings go to stderr; errors refuse the profile.
fn load_profile(path: Option<&Path>) -> Result<Profile, String> {
    let (manifests, name) = match path {
        Some(path) => (
            read_profile(path).map_err(|d| d.to_string())?.0,
            path.display().to_string(),
        ),
        None => {
            let name = "<embedded default profile>";
            let data = ProfileData::from_manifest(name, profile::EMBEDDED_DEFAULT)
                .map_err(|d| d.to_string())?;
            let manifests = profile::Manifests {
                configmap: Some(data),
                selectors: Vec::new(),
            };
            (manifests, name.to_string())
        }
    };
    compile(&manifests, &name)
}

/// Compiles `manifests` (named `name` in errors), printing the warnings on
/// stderr.
fn compile(manifests: &profile::Manifests, name: &str) -> Result<Profile, String> {
    let (profile, diagnostics) = profile::compile_manifests(manifests)
        .into_result()
        .map_err(|e| format!("{name}: {e}"))?;
    for d in diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
    {
        eprintln!("{d}");
    }
    Ok(profile)
}

/// The manifests of every file, as one profile: at most one ConfigMap.
pub(crate) fn read_profile_files(
    files: &[PathBuf],
) -> Result<profile::Manifests, Vec<profile::Diagnostic>> {
    let mut all = profile::Manifests::default();
    let mut errors = Vec::new();
    let mut configmap_file = None;
    for path in files {
        match read_profile(path) {
            Err(diagnostics) => errors.extend(diagnostics.0),
            Ok((manifests, _notes)) => {
                all.selectors.extend(manifests.selectors);
                let Some(data) = manifests.configmap else {
                    continue;
                };
                match &configmap_file {
                    Some(first) => errors.push(profile::Diagnostic {
                        file: Some(path.display().to_string()),
                        ..profile::Diagnostic::new(
                            Severity::Error,
                            None,
                            "",
                            format!(
                                "a second ConfigMap (the first is in {first}): a profile is one ConfigMap (and any number of Selectors)"
                            ),
                        )
                    }),
                    None => {
                        configmap_file = Some(path.display().to_string());
                        all.configmap = Some(data);
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(all)
    } else {
        Err(errors)
    }
}

/// Writes `text` to standard output. A reader that stopped early (`| head`)
/// is not an error; any other failure to write is.
fn print(text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to standard output: {e}"))
        }
        _ => Ok(()),
    }
}

/// The name (`<stdin>` for `-`) and text of an input file.
fn read_input(path: &Path) -> Result<(String, String), String> {
    use std::io::Read as _;
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("<stdin>: cannot read: {e}"))?;
        return Ok(("<stdin>".to_string(), text));
    }
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    Ok((name, text))
}

/// Files named on the command line, or `-` for standard input.
fn inputs(paths: &[PathBuf]) -> Vec<PathBuf> {
    if paths.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        paths.to_vec()
    }
}
