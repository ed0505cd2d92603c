//! `eci-profile check`: what the webhook would do with pods, workloads or
//! AdmissionReview requests, through the same code path as the server.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use clap::{Args, ValueEnum};
use eci_profile::budgets::{self, Checking, Ledger, Resource};
use eci_profile::decision::{Exclusions, Outcome, Target};
use eci_profile::namespaces::{NamespaceLookup as _, StaticNamespaces};
use eci_profile::profile::SchedulingPolicy;
use eci_profile::review::{self, Context, Evaluation};
use eci_profile::sources::file::{read_namespaces, read_usage};
use eci_profile::truncate::echo;
use eci_profile::workloads;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Profile manifest (the ConfigMap and/or Selector objects) or mounted ConfigMap directory [default: the embedded default profile]
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Namespace manifests giving namespace labels (e.g. `kubectl get ns -o yaml`); Namespace
    /// objects among the inputs count too, and this file wins
    #[arg(long, value_name = "FILE")]
    namespaces_file: Option<PathBuf>,
    /// What each namespace holds on virtual nodes, checked against budgets: a map
    /// `namespace: {pods: N, requests.cpu: Q, requests.memory: Q}` or a PodList
    /// (every live pod in it counts) [default: nothing in use]
    #[arg(long, value_name = "FILE")]
    usage_file: Option<PathBuf>,
    /// Namespace for pods and workloads whose manifest names none [default: their own, else default]
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// Also leave pods in this namespace alone (repeatable; kube-system, kube-public and kube-node-lease always are)
    #[arg(long = "exclude-namespace", value_name = "NS")]
    exclude_namespaces: Vec<String>,
    /// What to print
    #[arg(short, long, value_enum, default_value_t = Output::Explain)]
    output: Output,
    /// Pod or workload manifests (YAML or JSON, several documents allowed) or
    /// AdmissionReview requests (JSON); `-` or nothing reads standard input
    #[arg(value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// In plain words: rules, policy, warnings and patch
    Explain,
    /// The pod after the patch
    Pod,
    /// The JSON Patch
    Patch,
    /// The AdmissionReview response the server sends
    Review,
}

/// One request to decide.
pub(crate) struct Case {
    /// Where it came from, for `explain`.
    pub(crate) label: String,
    /// The AdmissionReview request body.
    pub(crate) body: Vec<u8>,
    /// Whether the input was YAML (for `-o pod`).
    pub(crate) yaml: bool,
}

pub fn run(args: CheckArgs) -> Result<ExitCode, String> {
    let profile = super::load_profile(args.profile.as_deref())?;
    // Namespace objects among the inputs (a `kubectl get -A -o yaml`
    // export), then --namespaces-file, which wins.
    let mut namespaces = StaticNamespaces::default();
    let mut cases = Vec::new();
    for path in super::inputs(&args.inputs) {
        read_cases(
            &path,
            args.namespace.as_deref(),
            &mut cases,
            &mut namespaces,
        )?;
    }
    if let Some(path) = &args.namespaces_file {
        namespaces.extend(read_namespaces(path)?);
    }
    let usage = usage(args.usage_file.as_deref())?;
    let exclusions = Exclusions::with_namespaces(args.exclude_namespaces.iter().cloned());
    let context = Context {
        profile: &profile,
        exclusions: &exclusions,
        namespaces: &namespaces,
        budgets: &Checking(&usage),
    };
    let mut out = String::new();
    for (i, case) in cases.iter().enumerate() {
        let review::Reviewed {
            response,
            evaluation,
            ..
        } = review::review(&case.body, context).map_err(|e| format!("{}: {e}", case.label))?;
        match args.output {
            Output::Review => {
                out.push_str(std::str::from_utf8(&response).expect("JSON is UTF-8"));
                out.push('\n');
            }
            Output::Patch => {
                out.push_str(&pretty(&evaluation.decision.patch));
                out.push('\n');
            }
            Output::Pod => {
                let mut pod = request_object(&case.body);
                json_patch::patch(&mut pod, &evaluation.decision.patch.to_json_patch())
                    .map_err(|e| format!("{}: the patch does not apply: {e}", case.label))?;
                if case.yaml {
                    if i > 0 {
                        out.push_str("---\n");
                    }
                    out.push_str(&serde_saphyr::to_string(&pod).map_err(|e| e.to_string())?);
                } else {
                    out.push_str(&pretty(&pod));
                    out.push('\n');
                }
            }
            Output::Explain => {
                if i > 0 {
                    out.push('\n');
                }
                let usage = usage.lock().unwrap_or_else(|e| e.into_inner());
                explain(
                    &mut out,
                    &case.label,
                    &evaluation,
                    namespaces.labels(&evaluation.namespace).is_some(),
                    &usage,
                    args.usage_file.as_deref(),
                );
            }
        }
    }
    super::print(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("JSON serialises")
}

/// `request.object` of a request body built or checked by `read_cases`.
pub(crate) fn request_object(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|mut review| review.pointer_mut("/request/object").map(Value::take))
        .unwrap_or(Value::Null)
}

/// Reads one input into cases: an AdmissionReview is used byte for byte;
/// pods and workloads become the request kube-apiserver would send;
/// Namespace objects go to `namespaces`.
fn read_cases(
    path: &Path,
    namespace: Option<&str>,
    cases: &mut Vec<Case>,
    namespaces: &mut StaticNamespaces,
) -> Result<(), String> {
    let (name, text) = super::read_input(path)?;
    match documents(&name, &text)? {
        Documents::Review(text) => cases.push(Case {
            label: name,
            body: text.into_bytes(),
            yaml: false,
        }),
        Documents::Objects { documents, yaml } => {
            for document in workloads::flatten_lists(documents) {
                if document["kind"] == "Namespace" {
                    namespaces
                        .insert_object(&document)
                        .map_err(|e| format!("{name}: {e}"))?;
                    continue;
                }
                add_document(&name, document, namespace, yaml, cases)?;
            }
        }
    }
    Ok(())
}

/// What one input file holds.
pub(crate) enum Documents {
    /// A JSON AdmissionReview, to be used byte for byte.
    Review(String),
    /// Objects (pods, workloads, AdmissionReviews, Lists); `yaml` unless
    /// the file was JSON.
    Objects { documents: Vec<Value>, yaml: bool },
}

/// Reads the documents of a file's text; `name` names it in errors.
pub(crate) fn documents(name: &str, text: &str) -> Result<Documents, String> {
    let json = text.trim_start().starts_with('{');
    if json && let Ok(document) = serde_json::from_str::<Value>(text) {
        if document["kind"] == "AdmissionReview" {
            return Ok(Documents::Review(text.to_string()));
        }
        return Ok(Documents::Objects {
            documents: vec![document],
            yaml: false,
        });
    }
    Ok(Documents::Objects {
        documents: workloads::parse_objects(text).map_err(|e| format!("{name}: {e}"))?,
        yaml: !json,
    })
}

/// Adds the request for one object (a pod, a workload's pod template or an
/// AdmissionReview; Lists are flattened by the callers); other kinds are
/// left out with a note on stderr. `namespace` overrides the object's own.
pub(crate) fn add_document(
    file: &str,
    document: Value,
    namespace: Option<&str>,
    yaml: bool,
    cases: &mut Vec<Case>,
) -> Result<(), String> {
    let kind = document["kind"].as_str().unwrap_or("").to_string();
    let name = document["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let pod = match kind.as_str() {
        "AdmissionReview" => {
            let body = serde_json::to_vec(&document).expect("JSON serialises");
            cases.push(Case {
                label: file.to_string(),
                body,
                yaml,
            });
            return Ok(());
        }
        "Pod" => document.clone(),
        _ if workloads::is_workload(&kind) => workloads::pod_from_template(&document)
            .ok_or_else(|| format!("{file}: {kind} {} has no pod template", echo(&name)))?,
        _ => {
            eprintln!(
                "{file}: skipping {} {}: not a pod, a workload or an AdmissionReview",
                echo(&kind),
                echo(&name)
            );
            return Ok(());
        }
    };
    let namespace = namespace
        .or_else(|| document["metadata"]["namespace"].as_str())
        .unwrap_or("default")
        .to_string();
    let uid = format!("00000000-0000-4000-8000-{:012}", cases.len() + 1);
    let label = if kind == "Pod" {
        format!("{file}: Pod {}/{}", echo(&namespace), echo(&name))
    } else {
        format!(
            "{file}: {kind} {}/{} (its pod template)",
            echo(&namespace),
            echo(&name)
        )
    };
    cases.push(Case {
        label,
        body: review::pod_create_request(&pod, &namespace, &uid),
        yaml,
    });
    Ok(())
}

/// What each namespace holds on virtual nodes, read from `path` (none:
/// nothing in use), to decide with [`Checking`]. Each pod is checked
/// against it alone: pods of one run do not take places from each other.
pub(crate) fn usage(path: Option<&Path>) -> Result<Mutex<Ledger>, String> {
    Ok(Mutex::new(match path {
        Some(path) => read_usage(path)?,
        None => Ledger::default(),
    }))
}

/// Plain words about one evaluation; `usage` is what namespaces hold on
/// virtual nodes, read from `usage_file` (none: nothing in use).
fn explain(
    out: &mut String,
    label: &str,
    evaluation: &Evaluation<'_>,
    namespace_known: bool,
    usage: &Ledger,
    usage_file: Option<&Path>,
) {
    let decision = &evaluation.decision;
    let pod = evaluation
        .pod
        .as_ref()
        .map(|p| format!("{}/{}", echo(&evaluation.namespace), p.display_name()))
        .unwrap_or_else(|| "(not a pod creation)".into());
    let _ = writeln!(out, "{label}");
    let _ = writeln!(out, "  pod:       {pod}");
    if evaluation.pod.is_some() && !namespace_known {
        let _ = writeln!(
            out,
            "  namespace: labels unknown (give --namespaces-file); only {} is known",
            eci_profile::labels::NAMESPACE_NAME_LABEL
        );
    }
    let result = match &decision.outcome {
        Outcome::Mutated => "MUTATED: sent to a virtual node".to_string(),
        Outcome::Unchanged => {
            "UNCHANGED: sent to a virtual node; it already has everything".to_string()
        }
        Outcome::Skipped(reason) => format!("SKIPPED: left unchanged: {reason}"),
    };
    let _ = writeln!(out, "  result:    {result}");
    if !decision.selected.is_empty() {
        let rules: Vec<String> = decision
            .selected
            .iter()
            .map(|r| format!("{} (priority {}, policy {})", r.name, r.priority, r.policy))
            .collect();
        let _ = writeln!(out, "  selected:  {}", rules.join("; "));
    }
    match (decision.target, decision.policy) {
        (Some(Target::ByHand), _) => {
            let _ = writeln!(
                out,
                "  targeted:  by hand: the pod already has the virtual node's nodeSelector; tolerations only"
            );
        }
        (_, Some(policy)) => {
            let what = match policy {
                SchedulingPolicy::VirtualNodeOnly => {
                    "virtual nodes only: nodeSelector and tolerations"
                }
                SchedulingPolicy::NormalNodePrefer => {
                    "real nodes first, virtual nodes as overflow: tolerations and a preferred node affinity"
                }
                SchedulingPolicy::Fair => "either kind of node: tolerations only",
                SchedulingPolicy::NormalNodeOnly => {
                    "real nodes only: left alone, and lower-priority rules cannot send it"
                }
            };
            let _ = writeln!(out, "  policy:    {policy} ({what})");
        }
        _ => {}
    }
    let effect_only: Vec<&str> = decision
        .applied
        .iter()
        .copied()
        .filter(|name| !decision.selected.iter().any(|r| r.name == *name))
        .collect();
    if !effect_only.is_empty() {
        let _ = writeln!(
            out,
            "  effects:   also from rules without selector: {}",
            effect_only.join(", ")
        );
    }
    explain_budget(out, evaluation, usage, usage_file);
    for warning in &decision.warnings {
        let _ = writeln!(out, "  warning:   {warning}");
    }
    if decision.patch.is_empty() {
        let _ = writeln!(out, "  patch:     none");
    } else {
        let _ = writeln!(out, "  patch:     {} operation(s)", decision.patch.len());
        for add in decision.patch.operations() {
            let _ = writeln!(out, "    add {} {}", add.path(), add.value());
        }
    }
}

/// The budget of the rule that decided (the first that selects the pod),
/// with the usage in the pod's namespace against its limits.
fn explain_budget(
    out: &mut String,
    evaluation: &Evaluation<'_>,
    usage: &Ledger,
    usage_file: Option<&Path>,
) {
    let (Some(pod), Some(rule)) = (&evaluation.pod, evaluation.decision.selected.first()) else {
        return;
    };
    let Some(budget) = &rule.budget else { return };
    let namespace = &evaluation.namespace;
    let scope = match &budget.namespace {
        None => "each namespace it selects".to_string(),
        Some(only) => format!("namespace {} only", echo(only)),
    };
    let head = format!("rule {} ({scope})", echo(&rule.name));
    if budget
        .namespace
        .as_ref()
        .is_some_and(|only| only != namespace)
    {
        let _ = writeln!(
            out,
            "  budget:    {head}: not for namespace {}",
            echo(namespace)
        );
        return;
    }
    let (used, requested) = (usage.used(namespace), budgets::requests::of_spec(&pod.spec));
    let limits = &budget.limits.0;
    if limits.is_empty() {
        let _ = writeln!(out, "  budget:    {head}: no limit on what it counts");
        return;
    }
    let against: Vec<String> = limits
        .iter()
        .map(|&(resource, limit)| {
            format!(
                "{}/{} {resource}",
                resource.show(used.of(resource)),
                resource.show(limit)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "  budget:    {head}: {} (namespace {})",
        against.join(", "),
        echo(namespace)
    );
    let asked: Vec<String> = limits
        .iter()
        .map(|&(resource, _)| match resource {
            Resource::Pods => "1 pod".to_string(),
            _ => format!("{} {resource}", resource.show(requested.of(resource))),
        })
        .collect();
    let source = match usage_file {
        Some(path) => format!("in use from {}", path.display()),
        None => "nothing in use (no --usage-file)".to_string(),
    };
    let _ = writeln!(
        out,
        "             {source}; the pod adds {}",
        asked.join(", ")
    );
}
