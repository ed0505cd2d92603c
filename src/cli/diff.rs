//! `eci-profile diff`: which workloads a profile change moves. Each
//! workload's pod template (and each bare pod) is judged in its namespace
//! under the profile in force and under the proposed one, as `check` judges
//! it, and the workloads whose pods would get something different are shown.
//!
//! Exit codes, as diff(1): 0 nothing changes (or `--exit-code` not given),
//! 1 something changes (with `--exit-code`), 2 trouble (an unreadable input
//! or profile, the cluster not answering, a usage error).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgGroup, Args, ValueEnum};
use eci_profile::decision::Exclusions;
use eci_profile::namespaces::NamespaceLookup as _;
use eci_profile::profile::{Manifests, Profile};
use eci_profile::profile_diff::{Changed, Report, Verdict};
use eci_profile::sources::snapshot;
use eci_profile::truncate::echo;
use eci_profile::workloads::{self, Inventory};
use serde_json::{Value, json};

#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("in_force").required(true).multiple(true).args(["current", "kubeconfig"])),
    group(ArgGroup::new("workloads").required(true).multiple(true).args(["inputs", "kubeconfig"])),
)]
pub struct DiffArgs {
    /// The proposed profile: ConfigMap and/or Selector manifests, or mounted
    /// ConfigMap directories (repeatable)
    #[arg(long = "profile", value_name = "PATH", required = true)]
    profile: Vec<PathBuf>,
    /// The profile in force, as --profile [default: read from the cluster of --kubeconfig]
    #[arg(long = "current", value_name = "PATH")]
    current: Vec<PathBuf>,
    /// Read from this cluster, read-only, what no file gives: the profile in
    /// force (without --current), the workloads and namespaces (without INPUT)
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig's context to use [default: its current context]
    #[arg(long, value_name = "NAME", requires = "kubeconfig")]
    context: Option<String>,
    /// How long one request to the cluster may take (connecting aside)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = super::serve::duration)]
    request_timeout: std::time::Duration,
    /// The profile ConfigMap in the cluster
    #[arg(long, value_name = "NAMESPACE/NAME", default_value = "kube-system/eci-profile", value_parser = super::serve::namespaced_name)]
    profile_configmap: (String, String),
    /// Namespace manifests giving namespace labels (Namespace objects among
    /// the INPUT files count too)
    #[arg(long, value_name = "FILE", requires = "inputs")]
    namespaces_file: Option<PathBuf>,
    /// Also leave pods in this namespace alone (repeatable; kube-system, kube-public and kube-node-lease always are)
    #[arg(long = "exclude-namespace", value_name = "NS")]
    exclude_namespaces: Vec<String>,
    /// What to print
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Exit 1 when any workload changes (as `git diff --exit-code`)
    #[arg(long)]
    exit_code: bool,
    /// Workloads, pods and namespaces: `kubectl get -A -o yaml` output (a
    /// List), manifests, `-` for standard input [default: read from the
    /// cluster of --kubeconfig]
    #[arg(value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// The workloads that change, by namespace, and a summary line
    Text,
    /// One JSON document
    Json,
}

/// Exit code when something changes, with `--exit-code`.
const CHANGES: u8 = 1;
/// Exit code for trouble: nothing could be compared.
const TROUBLE: u8 = 2;

pub fn run(args: DiffArgs) -> Result<ExitCode, String> {
    match compare(&args) {
        Ok(changes) if changes && args.exit_code => Ok(ExitCode::from(CHANGES)),
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(message) => {
            eprintln!("eci-profile: {message}");
            Ok(ExitCode::from(TROUBLE))
        }
    }
}

/// Prints the comparison; returns whether anything changes.
fn compare(args: &DiffArgs) -> Result<bool, String> {
    let new = compile_files(&args.profile, "--profile")?;
    let (current, objects, owned) = read_sources(args)?;
    let old = match current {
        Current::Files => compile_files(&args.current, "--current")?,
        Current::Cluster(manifests, notes) => {
            for note in notes {
                eprintln!("note: {note}");
            }
            let (ns, name) = &args.profile_configmap;
            let source = format!("the profile in force (ConfigMap {ns}/{name} and Selectors)");
            super::compile(&manifests, &source).map_err(|e| {
                format!("{e}\n(the webhook keeps the last good profile, which cannot be read back: give it with --current)")
            })?
        }
    };
    let mut inventory = Inventory::from_objects(objects)?;
    inventory.owned += owned;
    note_left_out(&inventory, [&old, &new]);
    let exclusions = Exclusions::with_namespaces(args.exclude_namespaces.iter().cloned());
    let report = Report::new(
        &inventory.workloads,
        &inventory.namespaces,
        &exclusions,
        &old,
        &new,
    );
    let out = match args.output {
        Output::Text => text(&report),
        Output::Json => {
            let mut json = serde_json::to_string_pretty(&json!({
                "summary": report.summary(),
                "judged": report.judged,
                "counts": report.counts(),
                "changed": report.changed,
            }))
            .expect("JSON serialises");
            json.push('\n');
            json
        }
    };
    super::print(&out)?;
    Ok(!report.changed.is_empty())
}

/// Where the profile in force comes from.
enum Current {
    Files,
    /// Read from the cluster, with notes on what was left out.
    Cluster(Manifests, Vec<String>),
}

/// The profile in force (unless from files) and the inventory's objects,
/// from files or, for what no file gives, from the cluster (with how many
/// objects were left to their controller as they were listed).
fn read_sources(args: &DiffArgs) -> Result<(Current, Vec<Value>, usize), String> {
    let mut objects = Vec::new();
    for path in &args.inputs {
        objects.extend(read_objects(path)?);
    }
    if let Some(path) = &args.namespaces_file {
        objects.extend(read_objects(path)?);
    }
    let needs_cluster = args.current.is_empty() || args.inputs.is_empty();
    let Some(kubeconfig) = args.kubeconfig.as_deref().filter(|_| needs_cluster) else {
        return Ok((Current::Files, objects, 0));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    eci_profile::tls::install_default_provider();
    runtime.block_on(async {
        let mut config =
            super::serve::kube_config(Some(kubeconfig), args.context.as_deref()).await?;
        config.read_timeout = Some(args.request_timeout);
        config.write_timeout = Some(args.request_timeout);
        let client = super::serve::client_of(config)?;
        let current = if args.current.is_empty() {
            let (ns, name) = &args.profile_configmap;
            let (manifests, notes) = snapshot::profile_in_force(&client, ns, name).await?;
            Current::Cluster(manifests, notes)
        } else {
            Current::Files
        };
        let mut owned = 0;
        if args.inputs.is_empty() {
            let listed = snapshot::inventory(&client).await?;
            (objects, owned) = (listed.objects, listed.owned);
        }
        Ok((current, objects, owned))
    })
}

/// Compiles the profile files given with `flag`.
fn compile_files(paths: &[PathBuf], flag: &str) -> Result<Profile, String> {
    let manifests = super::read_profile_files(paths).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    super::compile(&manifests, &format!("{flag} {}", names.join(", ")))
}

/// The objects of one input file (`-`: standard input).
fn read_objects(path: &Path) -> Result<Vec<Value>, String> {
    let (name, text) = super::read_input(path)?;
    workloads::parse_objects(&text).map_err(|e| format!("{name}: {e}"))
}

/// Notes on stderr what was not judged, and the namespaces whose labels
/// are unknown when a profile has rules that select namespaces.
fn note_left_out(inventory: &Inventory, profiles: [&Profile; 2]) {
    let mut left_out = Vec::new();
    if inventory.owned > 0 {
        left_out.push(format!(
            "{} owned by a workload judged instead",
            inventory.owned
        ));
    }
    if inventory.finished > 0 {
        left_out.push(format!("{} finished pods", inventory.finished));
    }
    for (kind, n) in &inventory.other_kinds {
        left_out.push(format!("{n} {}", echo(kind)));
    }
    if !left_out.is_empty() {
        eprintln!("note: not judged: {}", left_out.join(", "));
    }
    let selects_namespaces = profiles
        .iter()
        .any(|p| p.rules().any(|r| r.namespace_selector.is_some()));
    let unknown: BTreeSet<&str> = inventory
        .workloads
        .iter()
        .map(|w| w.namespace.as_str())
        .filter(|ns| inventory.namespaces.labels(ns).is_none())
        .collect();
    if selects_namespaces && !unknown.is_empty() {
        let shown: Vec<String> = unknown
            .iter()
            .take(5)
            .map(|ns| echo(ns).to_string())
            .collect();
        let more = if unknown.len() > 5 { ", ..." } else { "" };
        eprintln!(
            "note: {} namespaces have no Namespace object in the input ({}{more}): rules with a namespaceSelector see only their name (add `kubectl get namespaces -o yaml`, or --namespaces-file)",
            unknown.len(),
            shown.join(", ")
        );
    }
}

/// The workloads that change, by namespace, then the summary line.
fn text(report: &Report<'_>) -> String {
    let mut out = String::new();
    let mut namespace = None;
    for changed in &report.changed {
        if namespace != Some(changed.workload.namespace) {
            namespace = Some(changed.workload.namespace);
            let _ = writeln!(out, "namespace {}", echo(changed.workload.namespace));
        }
        workload(&mut out, changed);
    }
    if !report.changed.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "{}", report.summary());
    out
}

fn workload(out: &mut String, changed: &Changed<'_>) {
    let Changed {
        workload, old, new, ..
    } = changed;
    let _ = writeln!(
        out,
        "  {} {}: {}",
        workload.kind,
        echo(workload.name),
        changed.change.phrase(1)
    );
    let _ = writeln!(out, "    was: {}", describe(old));
    let _ = writeln!(out, "    now: {}", describe(new));
    differences(out, "annotation", &old.annotations, &new.annotations);
    differences(out, "label", &old.labels, &new.labels);
    // Fields added: a path may repeat (`/spec/tolerations/-`), so they are
    // compared as lists.
    for (sign, from, to) in [('-', old, new), ('+', new, old)] {
        for addition in from
            .scheduling
            .iter()
            .filter(|a| !to.scheduling.contains(a))
        {
            let _ = writeln!(
                out,
                "    {sign} field {}: {}",
                echo(&addition.path),
                echo(&addition.value.to_string())
            );
        }
    }
}

/// A verdict in a few words.
fn describe(verdict: &Verdict) -> String {
    if let Some(reason) = &verdict.reason {
        return format!("{}: left alone: {reason}", verdict.placement);
    }
    let mut text = format!("{}: {}", verdict.placement, verdict.outcome);
    if !verdict.rules.is_empty() {
        let rules: Vec<String> = verdict.rules.iter().map(|r| echo(r).to_string()).collect();
        let _ = write!(text, " by {}", rules.join(", "));
    }
    if let Some(policy) = verdict.policy {
        let _ = write!(text, " (policy {policy})");
    }
    text
}

/// `+`, `-` and `~` lines for the entries that differ.
fn differences(
    out: &mut String,
    what: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let key_shown = echo(key);
        match (old.get(key), new.get(key)) {
            (Some(a), Some(b)) if a != b => {
                let _ = writeln!(out, "    ~ {what} {key_shown}: {} → {}", echo(a), echo(b));
            }
            (Some(a), None) => {
                let _ = writeln!(out, "    - {what} {key_shown}: {}", echo(a));
            }
            (None, Some(b)) => {
                let _ = writeln!(out, "    + {what} {key_shown}: {}", echo(b));
            }
            _ => {}
        }
    }
}
