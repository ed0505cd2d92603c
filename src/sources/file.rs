//! Profiles and namespaces from the local filesystem: a ConfigMap manifest
//! (YAML or JSON) or a directory with one file per key (a mounted ConfigMap);
//! and budget usage for `check --usage-file`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize as _;
use serde_json::Value;

use super::watch::{self, Changes};
use crate::budgets::ledger::Seen;
use crate::budgets::{Amounts, Ledger, Quantity, Resource, requests};
use crate::digest;
use crate::metrics::Metrics;
use crate::namespaces::StaticNamespaces;
use crate::profile::{
    self, Diagnostic, Diagnostics, Entry, Manifests, Origin, Profile, ProfileData, Severity,
};
use crate::published::Published;

/// What a profile path held when read, as bytes, before any parsing.
enum Raw {
    /// A ConfigMap manifest file.
    Manifest(Vec<u8>),
    /// A mounted ConfigMap: (key, file, bytes) per key, by key.
    Directory(Vec<(String, String, Vec<u8>)>),
}

impl Raw {
    /// A digest of everything read (keys and bytes), to tell contents apart.
    fn digest(&self) -> u64 {
        match self {
            Raw::Manifest(bytes) => digest::fnv1a([bytes.as_slice()]),
            Raw::Directory(files) => digest::fnv1a(
                files
                    .iter()
                    .flat_map(|(key, _, bytes)| [key.as_bytes(), bytes.as_slice()]),
            ),
        }
    }

    /// The manifests read, with informations about what was left out.
    fn into_manifests(self, path: &Path) -> Result<(Manifests, Diagnostics), Diagnostics> {
        let name = path.display().to_string();
        match self {
            Raw::Manifest(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| read_error(&name, String::new(), NOT_UTF8.into()))?;
                Manifests::read(&name, &text)
            }
            Raw::Directory(files) => {
                let mut data = ProfileData::default();
                for (key, file_name, bytes) in files {
                    let text = String::from_utf8(bytes)
                        .map_err(|_| read_error(&file_name, key.clone(), NOT_UTF8.into()))?;
                    data.entries.insert(
                        key,
                        Entry {
                            text,
                            origin: Origin::File(file_name),
                            key_position: Default::default(),
                        },
                    );
                }
                let manifests = Manifests {
                    configmap: Some(data),
                    selectors: Vec::new(),
                };
                Ok((manifests, Diagnostics::default()))
            }
        }
    }
}

const NOT_UTF8: &str = "cannot read: stream did not contain valid UTF-8";

fn read_error(file: &str, field: String, message: String) -> Diagnostics {
    Diagnostics(vec![Diagnostic {
        severity: Severity::Error,
        file: Some(file.to_string()),
        position: None,
        selector: None,
        field,
        message,
        suggestion: None,
    }])
}

/// Reads the bytes of a ConfigMap manifest file or of a mounted directory's keys.
fn read_raw(path: &Path) -> Result<Raw, Diagnostics> {
    let name = path.display().to_string();
    let io_error = |what: String| read_error(&name, String::new(), what);
    let metadata = fs::metadata(path).map_err(|e| io_error(format!("cannot read: {e}")))?;
    if !metadata.is_dir() {
        let bytes = fs::read(path).map_err(|e| io_error(format!("cannot read: {e}")))?;
        return Ok(Raw::Manifest(bytes));
    }
    let mut files = Vec::new();
    let entries = fs::read_dir(path).map_err(|e| io_error(format!("cannot list: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(format!("cannot list: {e}")))?;
        let key = entry.file_name().to_string_lossy().into_owned();
        // `..data`, `..2024_01_01...` are kubelet's; dotfiles are not keys.
        if key.starts_with('.') {
            continue;
        }
        let file = entry.path();
        // Keys are symlinks into `..data`: follow them.
        if !fs::metadata(&file).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let file_name = file.display().to_string();
        let bytes = fs::read(&file)
            .map_err(|e| read_error(&file_name, key.clone(), format!("cannot read: {e}")))?;
        files.push((key, file_name, bytes));
    }
    files.sort();
    Ok(Raw::Directory(files))
}

/// Reads a profile from a manifest file (a ConfigMap, Selector objects, or
/// both) or a mounted ConfigMap directory; with informations about objects
/// of other kinds left out.
pub fn read_profile(path: &Path) -> Result<(Manifests, Diagnostics), Diagnostics> {
    read_raw(path)?.into_manifests(path)
}

/// Reads Namespace manifests (for `--namespaces-file`).
pub fn read_namespaces(path: &Path) -> Result<StaticNamespaces, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    StaticNamespaces::from_manifests(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads what each namespace holds on virtual nodes (for `check
/// --usage-file`), YAML or JSON, either:
/// - a map `namespace -> {pods: N, requests.cpu: "12", requests.memory: "20Gi"}`
///   (budget keys: bare `cpu` and `memory` mean requests; missing keys are 0);
/// - a PodList (`kubectl get pods -A -l eci-profile.io/virtual-node=true -o json`):
///   each live pod (neither Succeeded, Failed nor being deleted) counts with
///   its requests, whatever node it is on.
pub fn read_usage(path: &Path) -> Result<Ledger, String> {
    let name = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    usage_from_text(&text).map_err(|e| format!("{name}: {e}"))
}

/// [`read_usage`] on the file's text.
fn usage_from_text(text: &str) -> Result<Ledger, String> {
    let document: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| format!("not YAML: {}", e.without_snippet()))?
    };
    match document {
        Value::Null => Ok(Ledger::default()),
        Value::Object(map) => match map.get("kind") {
            Some(Value::String(kind)) if kind == "PodList" || kind == "List" => {
                usage_of_pods(map.get("items"))
            }
            Some(Value::String(kind)) => Err(format!(
                "expected a PodList or a map of namespaces to usage, found kind {}",
                crate::truncate::echo(kind)
            )),
            _ => usage_by_namespace(map),
        },
        _ => Err("expected a PodList or a map of namespaces to usage".into()),
    }
}

/// The usage of a map `namespace -> {resource: quantity}`.
fn usage_by_namespace(map: serde_json::Map<String, Value>) -> Result<Ledger, String> {
    let mut ledger = Ledger::default();
    for (namespace, usage) in &map {
        let ns = crate::truncate::echo(namespace);
        let resources = match usage {
            Value::Object(resources) => resources,
            Value::Null => continue,
            _ => {
                return Err(format!(
                    "namespace {ns}: expected a map such as {{pods: 12, requests.cpu: \"10\"}}"
                ));
            }
        };
        let mut amounts = Amounts::default();
        for (key, value) in resources {
            let at = format!("namespace {ns}, key {}", crate::truncate::echo(key));
            let resource = Resource::parse(key).ok_or_else(|| {
                format!("{at}: not a budget resource (pods, requests.cpu or cpu, requests.memory or memory)")
            })?;
            let quantity = match value {
                Value::String(text) => Quantity::parse(text),
                Value::Number(number) => Quantity::parse(&number.to_string()),
                _ => None,
            }
            .filter(|q| q.0 >= 0)
            .ok_or_else(|| format!("{at}: not a quantity of 0 or more: {value}"))?;
            match resource {
                Resource::Pods => amounts.pods = quantity,
                Resource::Cpu => amounts.cpu = quantity,
                Resource::Memory => amounts.memory = quantity,
            }
        }
        ledger.observe(Seen {
            uid: namespace,
            namespace,
            node: None,
            amounts,
            live: true,
            reservation: None,
        });
    }
    Ok(ledger)
}

/// The usage of a PodList's `items`: every live pod, wherever bound.
fn usage_of_pods(items: Option<&Value>) -> Result<Ledger, String> {
    let items = match items {
        Some(Value::Array(items)) => items.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return Err("items: expected a list of pods".into()),
    };
    let mut ledger = Ledger::default();
    for (i, item) in items.iter().enumerate() {
        if let Some(kind) = item.get("kind").and_then(Value::as_str)
            && kind != "Pod"
        {
            return Err(format!(
                "items[{i}]: expected a Pod, found kind {}",
                crate::truncate::echo(kind)
            ));
        }
        let pod = super::pods::SentPod::deserialize(item)
            .map_err(|e| format!("items[{i}]: not a pod: {e}"))?;
        let namespace = pod
            .metadata
            .namespace
            .as_deref()
            .ok_or_else(|| format!("items[{i}]: the pod has no metadata.namespace"))?;
        // Items without a uid (hand-written lists) count once each.
        let uid = pod
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| format!("items[{i}]"));
        ledger.observe(Seen {
            uid: &uid,
            namespace,
            node: None,
            amounts: requests::of_spec(&pod.spec),
            live: pod.is_live(),
            reservation: None,
        });
    }
    Ok(ledger)
}

/// Reads and compiles a profile file; errors are the findings, as text.
pub fn load_profile(path: &Path) -> Result<(Profile, Diagnostics), String> {
    let (manifests, _) = read_profile(path).map_err(|d| d.to_string())?;
    profile::compile_manifests(&manifests)
        .into_result()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The profile file (or mounted directory) a server follows: each change
/// of its content is read once, whatever the events that led to it.
pub struct ProfileFile {
    path: PathBuf,
    published: Arc<Published<Profile>>,
    metrics: Arc<Metrics>,
    /// The digest of the content last tried (or of the last read error).
    tried: Option<u64>,
}

impl ProfileFile {
    /// Follows `path`, whose profile `published` already holds.
    pub fn new(path: PathBuf, published: Arc<Published<Profile>>, metrics: Arc<Metrics>) -> Self {
        Self {
            path,
            published,
            metrics,
            tried: None,
        }
    }

    /// Re-reads the profile. Content already tried is skipped, so a profile
    /// that stays invalid is reported (logged, counted) once; a valid new one
    /// is published; content equal to the profile in use clears
    /// `profile_reload_failing`. An invalid one never replaces the last good one.
    pub fn reload(&mut self) {
        let path = self.path.as_path();
        let raw = read_raw(path);
        // A read error counts as content too: the same error is reported once.
        let digest = match &raw {
            Ok(raw) => raw.digest(),
            Err(diagnostics) => digest::fnv1a([diagnostics.to_string().as_bytes()]),
        };
        if self.tried == Some(digest) {
            return;
        }
        self.tried = Some(digest);
        let manifests = match raw.and_then(|raw| raw.into_manifests(path)) {
            Ok((manifests, _)) => manifests,
            Err(diagnostics) => {
                self.metrics.profile_loaded(None);
                tracing::error!(path = %path.display(), error = %diagnostics, "cannot read the profile; keeping the last good one");
                return;
            }
        };
        match profile::compile_manifests(&manifests).into_result() {
            Ok((profile, _)) if profile.digest() == self.published.get().digest() => {
                self.metrics.profile_current();
            }
            Ok((profile, diagnostics)) => {
                for d in diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Warning)
                {
                    tracing::warn!(path = %path.display(), "{d}");
                }
                super::publish(
                    &self.published,
                    &self.metrics,
                    profile,
                    &path.display().to_string(),
                );
            }
            Err(e) => {
                self.metrics.profile_loaded(None);
                tracing::error!(path = %path.display(), error = %e, "profile rejected; keeping the last good one");
            }
        }
    }
}

/// Follows the profile file (or mounted directory) at `path` for ever: only
/// events on its own files count (see [`watch`]), and see
/// [`ProfileFile::reload`] for what each change does. The watch is set up
/// before this returns, so no change made after it is missed.
pub fn follow_profile(
    path: PathBuf,
    published: Arc<Published<Profile>>,
    metrics: Arc<Metrics>,
) -> impl Future<Output = ()> + Send + 'static {
    let mut changes = Changes::watch(&[&path], watch::DEBOUNCE, watch::POLL);
    let mut file = ProfileFile::new(path, published, metrics);
    async move {
        loop {
            changes.next().await;
            file.reload();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap()
    }

    #[test]
    fn usage_by_namespace_in_yaml_or_json() {
        let yaml = "team-a:\n  pods: 12\n  requests.cpu: \"10\"\n  memory: 20Gi\nteam-b: {cpu: 500m}\nempty:\n";
        let ledger = usage_from_text(yaml).unwrap();
        assert_eq!(
            ledger.used("team-a"),
            Amounts {
                pods: Quantity::units(12),
                cpu: q("10"),
                memory: q("20Gi"),
            }
        );
        assert_eq!(ledger.used("team-b").cpu, Quantity(500));
        assert_eq!(ledger.used("team-b").pods, Quantity(0));
        assert_eq!(ledger.used("empty"), Amounts::default());
        let json = r#"{"team-a": {"pods": 40, "requests.memory": "1.5Gi"}}"#;
        let ledger = usage_from_text(json).unwrap();
        assert_eq!(ledger.used("team-a").pods, Quantity::units(40));
        assert_eq!(ledger.used("team-a").memory, q("1536Mi"));
        assert_eq!(usage_from_text("").unwrap().usage().count(), 0);
    }

    #[test]
    fn usage_errors_name_the_namespace_and_key() {
        let error = |text: &str| usage_from_text(text).unwrap_err();
        assert_eq!(
            error("team-a:\n  pod: 3\n"),
            "namespace team-a, key pod: not a budget resource (pods, requests.cpu or cpu, requests.memory or memory)"
        );
        assert_eq!(
            error("team-a:\n  cpu: lots\n"),
            "namespace team-a, key cpu: not a quantity of 0 or more: \"lots\""
        );
        assert_eq!(
            error("team-a:\n  pods: -1\n"),
            "namespace team-a, key pods: not a quantity of 0 or more: -1"
        );
        assert!(error("team-a: 3\n").starts_with("namespace team-a: expected a map"));
        assert!(error("- a\n- b\n").starts_with("expected a PodList"));
        assert!(error("kind: NamespaceList\n").contains("found kind NamespaceList"));
        assert!(error("{\"team-a\": ").starts_with("not JSON: "));
        assert!(error("team-a: [\n").starts_with("not YAML: "));
    }

    #[test]
    fn usage_of_a_pod_list_counts_live_pods_wherever_bound() {
        let list = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"kind": "Pod", "metadata": {"name": "a", "namespace": "team-a", "uid": "1"},
                 "spec": {"nodeName": "virtual-kubelet", "containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]},
                 "status": {"phase": "Running"}},
                {"metadata": {"name": "b", "namespace": "team-a"},
                 "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}},
                {"metadata": {"name": "done", "namespace": "team-a", "uid": "3"},
                 "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "8"}}}]},
                 "status": {"phase": "Succeeded"}},
                {"metadata": {"name": "going", "namespace": "team-a", "uid": "4",
                              "deletionTimestamp": "2026-11-30T10:00:00Z"},
                 "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "8"}}}]}},
                {"metadata": {"name": "c", "namespace": "team-b", "uid": "5"}, "spec": {}}
            ]
        });
        let ledger = usage_from_text(&list.to_string()).unwrap();
        assert_eq!(
            ledger.used("team-a"),
            Amounts {
                pods: Quantity::units(2),
                cpu: Quantity(2500),
                memory: q("4Gi"),
            }
        );
        assert_eq!(ledger.used("team-b").pods, Quantity::units(1));
        let error = |text: &str| usage_from_text(text).unwrap_err();
        assert_eq!(
            error(r#"{"kind": "PodList", "items": [{"kind": "Pod", "metadata": {"name": "x"}}]}"#),
            "items[0]: the pod has no metadata.namespace"
        );
        assert!(
            error(r#"{"kind": "List", "items": [{"kind": "Deployment"}]}"#)
                .contains("items[0]: expected a Pod, found kind Deployment")
        );
        assert!(
            error(r#"{"kind": "PodList", "items": [{"metadata": {"namespace": 3}}]}"#)
                .starts_with("items[0]: not a pod: ")
        );
    }
}
