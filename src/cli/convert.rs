//! `eci-profile convert --to selectors|configmap FILE...`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use eci_profile::profile::convert::{self, Conversion};
use eci_profile::profile::{self, Severity};

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
    let manifests = match super::read_profile_files(&args.files) {
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
    super::print(&convert::to_yaml(&objects))?;
    Ok(ExitCode::SUCCESS)
}
