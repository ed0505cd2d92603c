//! Benchmark inputs shared by the criterion benches and the load script's
//! generator (`examples/bench_data.rs`): profiles of any size, and pods.

#![allow(dead_code)]

use serde_json::{Value, json};

/// A profile ConfigMap manifest with `n` selectors mixing matchLabels and
/// matchExpressions, namespace and object selectors, and effects. Exactly
/// one rule (the last) selects the typical pod (`app: api` in a namespace
/// labelled `team: batch`), so the profile size is the only variable.
pub fn profile_manifest(n: usize) -> String {
    let mut rules: Vec<Value> = (0..n.saturating_sub(1))
        .map(|i| match i % 4 {
            0 => json!({"name": format!("app-{i}"),
                        "objectSelector": {"matchLabels": {"app": format!("app-{i}")}},
                        "effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "2-4Gi"}}}),
            1 => json!({"name": format!("team-{i}"),
                        "namespaceSelector": {"matchLabels": {"team": format!("team-{i}")}},
                        "effect": {"labels": {"pool": format!("pool-{i}")}}}),
            2 => json!({"name": format!("tier-{i}"), "priority": (i % 7) as i64,
                        "objectSelector": {"matchExpressions": [
                            {"key": "tier", "operator": "In", "values": [format!("t-{i}"), format!("u-{i}")]}]}}),
            _ => json!({"name": format!("both-{i}"), "policy": "fair",
                        "namespaceSelector": {"matchLabels": {"env": format!("env-{i}")}},
                        "objectSelector": {"matchExpressions": [
                            {"key": "component", "operator": "In", "values": [format!("c-{i}")]},
                            {"key": "canary", "operator": "DoesNotExist"}]}}),
        })
        .collect();
    if n > 0 {
        rules.push(json!({"name": "batch-api",
                          "namespaceSelector": {"matchLabels": {"team": "batch"}},
                          "objectSelector": {"matchLabels": {"app": "api"}},
                          "effect": {"annotations": {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}}}));
    }
    let selectors = serde_json::to_string(&rules).unwrap();
    let mut manifest = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: eci-profile\n  namespace: kube-system\ndata:\n  selectors: |\n",
    );
    manifest.push_str("    ");
    manifest.push_str(&selectors);
    manifest.push('\n');
    manifest
}

/// Namespace manifests: `n` namespaces, plus `fx-team` (`team: batch`, `env: prod`).
pub fn namespaces_manifest(n: usize) -> String {
    let mut items: Vec<Value> = (0..n)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": format!("ns-{i}"), "labels": {
                             "kubernetes.io/metadata.name": format!("ns-{i}"),
                             "team": format!("team-{}", i % 50), "env": "prod"}}})
        })
        .collect();
    items.push(json!({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": "fx-team", "labels": {
                          "kubernetes.io/metadata.name": "fx-team", "team": "batch", "env": "prod"}}}));
    serde_json::to_string(&json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap()
}

/// The smallest pod the API server would send.
pub fn minimal_pod_request() -> Vec<u8> {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": "min", "labels": {"app": "api"}},
                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    eci_profile::review::pod_create_request(&pod, "fx-team", "00000000-0000-4000-8000-000000000001")
}

/// A captured AdmissionReview body.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/admission/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The large pod fixture (40 containers, 100 volumes, 139 KB) moved to
/// fx-team with the typical pod's labels, so it is selected too.
pub fn large_pod_request() -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&fixture("create-large-pod")).unwrap();
    review["request"]["namespace"] = json!("fx-team");
    review["request"]["object"]["metadata"]["namespace"] = json!("fx-team");
    review["request"]["object"]["metadata"]["labels"] = json!({"app": "api"});
    serde_json::to_vec(&review).unwrap()
}
