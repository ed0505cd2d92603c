//! `eci-profile convert --to selectors|configmap FILE...`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use eci_profile::profile::convert::{self, Conversion};
use eci_profile::profile::{self, Diagnostic, Manifests, Severity};
use eci_profile::sources::file::read_profile;

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The format to convert to
    #[arg(long, value_enum, value_name = "FORMAT")]
    to: Format,
    /// Namespace of the ConfigMap printed
    #[arg(long, value_name = "NS", default_value = profile::DEFAULT_CONFIGMAP.0)]
    namespace: String,
    /// Name of the ConfigMap printed
    #[arg(long, value_name = "NAME", default_value = profile::DEFAULT_CONFIGMAP.1)]
    name: String,
    /// With `--to selectors`: also print the ConfigMap without its selectors, holding what Selectors cannot carry
    #[arg(long)]
    keep_configmap: bool,
    /// With `--to configmap`: convert policy namespaceResourceLimit to virtualNodeOnly instead of refusing it
    #[arg(long)]
    drop_unsupported: bool,
    /// Profile manifests (YAML or JSON: the ConfigMap, eci.aliyun.com Selector
    /// objects, or both, in any number of files) or mounted ConfigMap directories.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Selector objects (eci.aliyun.com/v1), one per rule
    Selectors,
    /// The profile ConfigMap, every rule in its `selectors`
    Configmap,
}

/// Prints the converted objects (YAML) on stdout and findings on stderr;
/// fails, printing nothing, when the input or the conversion has an error.
pub fn run(args: ConvertArgs) -> Result<ExitCode, String> {
    match args.to {
        Format::Configmap if args.keep_configmap => {
            return Err("--keep-configmap applies to --to selectors only".into());
        }
        Format::Selectors if args.drop_unsupported => {
            return Err("--drop-unsupported applies to --to configmap only".into());
        }
        _ => {}
    }
    let manifests = match read_all(&args.files) {
        Ok(manifests) => manifests,
        Err(errors) => {
            for d in errors {
                eprintln!("{d}");
            }
            return Ok(ExitCode::from(super::FAILURE));
        }
    };
    let metadata = (args.namespace.as_str(), args.name.as_str());
    let Conversion {
        objects,
        diagnostics,
    } = match args.to {
        Format::Selectors => {
            convert::to_selectors(&manifests, args.keep_configmap.then_some(metadata))
        }
        Format::Configmap => convert::to_configmap(&manifests, metadata, args.drop_unsupported),
    };
    for d in diagnostics.iter().filter(|d| d.severity != Severity::Info) {
        eprintln!("{d}");
    }
    if diagnostics.has_errors() {
        return Ok(ExitCode::from(super::FAILURE));
    }
    print!("{}", convert::to_yaml(&objects));
    Ok(ExitCode::SUCCESS)
}

/// The manifests of every file, as one profile: at most one ConfigMap.
fn read_all(files: &[PathBuf]) -> Result<Manifests, Vec<Diagnostic>> {
    let mut all = Manifests::default();
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
                    Some(first) => errors.push(Diagnostic {
                        severity: Severity::Error,
                        file: Some(path.display().to_string()),
                        position: None,
                        selector: None,
                        field: String::new(),
                        message: format!(
                            "a second ConfigMap (the first is in {first}): a profile is one ConfigMap (and any number of Selectors)"
                        ),
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
