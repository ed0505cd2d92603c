//! `eci-profile validate [--strict] [-o text|json] FILE...`
//!
//! Exit codes: 0 every file valid, 1 a file has errors (or, with
//! `--strict`, warnings), 2 usage (clap).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use eci_profile::profile::{self, Diagnostics, Severity};
use eci_profile::sources::file::read_profile;

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 every file valid; 1 an error (with --strict, also a warning) or an unreadable file; 2 a usage error."
)]
pub struct ValidateArgs {
    /// Fail on warnings too (unknown keys and fields, rules that select every pod or do nothing)
    #[arg(long)]
    strict: bool,
    /// How to print the findings
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Profile manifests (YAML or JSON: the ConfigMap, eci.aliyun.com Selector
    /// objects, or both; several documents and `kind: List` allowed) or mounted ConfigMap directories.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// One finding a line (`file:line:column: severity: ...`), then a summary per file
    Text,
    /// One JSON document: every file with its findings, and the totals
    Json,
}

/// One file's findings.
struct Report {
    name: String,
    diagnostics: Diagnostics,
    /// The number of rules, when the profile compiled.
    rules: Option<usize>,
}

impl Report {
    fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }

    /// Whether the file passes: it compiled, and under `strict` has no warnings.
    fn passes(&self, strict: bool) -> bool {
        self.rules.is_some() && !(strict && self.count(Severity::Warning) > 0)
    }
}

/// Prints every finding of every file; fails when any file has an error,
/// or a warning under `--strict`.
pub fn run(args: ValidateArgs) -> Result<ExitCode, String> {
    let reports: Vec<Report> = args
        .files
        .iter()
        .map(|path| {
            let (diagnostics, rules) = match read_profile(path) {
                Err(diagnostics) => (diagnostics, None),
                Ok((manifests, notes)) => {
                    let mut compiled = profile::compile_manifests(&manifests);
                    let rules = compiled.profile.as_ref().map(|p| p.rule_count());
                    compiled.diagnostics.0.extend(notes.0);
                    (compiled.diagnostics, rules)
                }
            };
            Report {
                name: path.display().to_string(),
                diagnostics,
                rules,
            }
        })
        .collect();
    let out = match args.output {
        Output::Text => reports.iter().map(|r| text(r, args.strict)).collect(),
        Output::Json => format!("{}\n", json(&reports, args.strict)),
    };
    super::print(&out)?;
    Ok(if reports.iter().all(|r| r.passes(args.strict)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::FAILURE)
    })
}

fn text(report: &Report, strict: bool) -> String {
    let mut out = String::new();
    for d in report.diagnostics.iter() {
        let _ = writeln!(out, "{d}");
    }
    let name = &report.name;
    let errors = report.count(Severity::Error);
    let warnings = report.count(Severity::Warning);
    match report.rules {
        Some(_) if !report.passes(strict) => writeln!(
            out,
            "{name}: invalid under --strict: {warnings} warning{}",
            plural(warnings)
        ),
        Some(rules) => writeln!(
            out,
            "{name}: valid: {rules} selector{}, {warnings} warning{}",
            plural(rules),
            plural(warnings)
        ),
        None => writeln!(
            out,
            "{name}: invalid: {errors} error{}, {warnings} warning{}",
            plural(errors),
            plural(warnings)
        ),
    }
    .expect("writing to a String cannot fail");
    out
}

/// `{"files": [{"file", "valid", "rules", "diagnostics": [...]}], "errors", "warnings", "valid"}`.
fn json(reports: &[Report], strict: bool) -> serde_json::Value {
    let files: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "file": r.name,
                "valid": r.passes(strict),
                "rules": r.rules,
                "diagnostics": r.diagnostics.iter().map(|d| d.to_json()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let total = |severity| reports.iter().map(|r| r.count(severity)).sum::<usize>();
    serde_json::json!({
        "files": files,
        "errors": total(Severity::Error),
        "warnings": total(Severity::Warning),
        "valid": reports.iter().all(|r| r.passes(strict)),
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
