//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cli;
pub mod export;
pub mod install_once;
pub mod manifests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use eci_profile::decision::{self, Decision, Exclusions};
use eci_profile::labels::Labels;
use eci_profile::namespaces::StaticNamespaces;
use eci_profile::patch::Patch;
use eci_profile::pod::Pod;
use eci_profile::profile::{self, Profile, ProfileData};
use serde_json::Value;

/// `tests/fixtures/<relative>`.
pub fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// The bytes of a captured AdmissionReview request.
pub fn admission_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(&format!("admission/{name}.json"))).expect("fixture exists")
}

/// The namespaces the fixtures were captured in.
pub fn fixture_namespaces() -> StaticNamespaces {
    let text = std::fs::read_to_string(fixture_path("namespaces.yaml")).unwrap();
    StaticNamespaces::from_manifests(&text).unwrap()
}

/// A profile from data entries; panics on errors.
pub fn profile_with(entries: &[(&str, &str)]) -> Profile {
    let data = ProfileData::from_map(entries.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    match profile::compile(&data).into_result() {
        Ok((profile, _)) => profile,
        Err(e) => panic!("{e}"),
    }
}

/// A profile with these selectors (JSON or YAML).
pub fn profile(selectors: &str) -> Profile {
    profile_with(&[("selectors", selectors)])
}

/// Labels from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What a decision did, owned.
#[derive(Debug)]
pub struct Outcome {
    pub outcome: decision::Outcome,
    pub applied: Vec<String>,
    pub policy: Option<profile::SchedulingPolicy>,
    pub warnings: Vec<String>,
    /// The patch as JSON.
    pub patch: Value,
    /// The pod after the patch.
    pub patched: Value,
}

/// Decides `pod` in `namespace` (labels `ns_labels`), applies the patch, and
/// checks that deciding again on the patched pod adds nothing and that the
/// patched pod is still a valid `k8s_openapi` Pod.
pub fn decide(
    pod: &Value,
    namespace: &str,
    ns_labels: Option<&Labels>,
    profile: &Profile,
) -> Outcome {
    decide_excluding(pod, namespace, ns_labels, profile, &Exclusions::default())
}

/// [`decide`] with exclusions.
pub fn decide_excluding(
    pod: &Value,
    namespace: &str,
    ns_labels: Option<&Labels>,
    profile: &Profile,
    exclusions: &Exclusions,
) -> Outcome {
    let first = run(pod, namespace, ns_labels, profile, exclusions);
    let patched = apply(pod, &first.patch);
    let again = run(&patched, namespace, ns_labels, profile, exclusions);
    assert!(
        again.patch.is_empty(),
        "not idempotent: second patch {} after first {}",
        serde_json::to_string(&again.patch).unwrap(),
        serde_json::to_string(&first.patch).unwrap()
    );
    let typed: Result<k8s_openapi::api::core::v1::Pod, _> = serde_json::from_value(patched.clone());
    assert!(typed.is_ok(), "patched pod is not a valid Pod: {typed:?}");
    Outcome {
        outcome: first.outcome.clone(),
        applied: first.applied.iter().map(|s| s.to_string()).collect(),
        policy: first.policy,
        warnings: first.warnings.clone(),
        patch: serde_json::to_value(&first.patch).unwrap(),
        patched,
    }
}

fn run<'p>(
    pod: &Value,
    namespace: &str,
    ns_labels: Option<&Labels>,
    profile: &'p Profile,
    exclusions: &Exclusions,
) -> Decision<'p> {
    let pod: Pod = serde_json::from_value(pod.clone()).expect("pod view deserialises");
    decision::decide(&pod, namespace, ns_labels, profile, exclusions)
}

/// `pod` with `patch` applied; panics if it does not apply.
pub fn apply(pod: &Value, patch: &Patch) -> Value {
    let mut pod = pod.clone();
    json_patch::patch(&mut pod, &patch.to_json_patch()).expect("patch applies");
    pod
}

/// A minimal pod with these labels, as the API server would send it (defaulted).
pub fn pod_with_labels(pairs: &[(&str, &str)]) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": labels(pairs)},
        "spec": {
            "containers": [{"name": "c", "image": "nginx"}],
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ]
        }
    })
}

/// `binary serve` on loopback ports the system picks; more flags may follow.
/// With JSON logs, its "serving" log line gives the ports
/// ([`serving_addresses`]).
pub fn serve_on_loopback(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    command
}

/// [`serve_on_loopback`] with this crate's binary, this serving pair and
/// JSON logs.
pub fn serve_command(cert: &Path, key: &Path) -> Command {
    let mut command = serve_on_loopback(Path::new(env!("CARGO_BIN_EXE_eci-profile")));
    command
        .args(["--log-format", "json"])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key);
    command
}

/// The webhook and admin addresses of `serve`'s "serving" log line; `None`
/// for any other line.
pub fn serving_addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if !line.contains("\"serving\"") {
        return None;
    }
    let log: Value = serde_json::from_str(line).ok()?;
    let address = |name: &str| log[name].as_str()?.parse().ok();
    Some((address("webhook")?, address("admin")?))
}

/// Whether a list request's query asks for a watch (the fake API servers).
pub fn is_watch(query: &Option<String>) -> bool {
    query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true"))
}

/// Asserts that a list or watch request asks for metadata only (the fake
/// API servers), as a metadata watch does.
pub fn assert_metadata_only(headers: &axum::http::HeaderMap) {
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        accept.contains("as=PartialObjectMetadata"),
        "metadata-only list/watch: {accept}"
    );
}

/// Waits until `condition` holds, checking every 20 ms, at most `limit`;
/// whether it held.
pub async fn eventually(limit: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    condition()
}

/// `POST /mutate` to `state`'s webhook router, as the API server calls it;
/// the AdmissionReview answered (a 200 is asserted).
pub async fn mutate(state: &std::sync::Arc<eci_profile::server::State>, body: Vec<u8>) -> Value {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let response = eci_profile::server::webhook::router(state.clone())
        .oneshot(
            axum::http::Request::post("/mutate?timeout=5s")
                .body(axum::body::Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), axum::http::StatusCode::OK);
    serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

/// `GET path` from `state`'s admin router: the status and the body.
pub async fn admin_get(
    state: &std::sync::Arc<eci_profile::server::State>,
    path: &str,
) -> (axum::http::StatusCode, String) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let response = eci_profile::server::admin::router(state.clone())
        .oneshot(
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}
