//! The whole request path (bytes in, bytes out) on AdmissionReview bodies
//! captured from a real kube-apiserver.

mod common;

use base64::Engine as _;
use common::{admission_fixture, fixture_namespaces, fixture_path, profile};
use eci_profile::decision::{Exclusions, Outcome};
use eci_profile::namespaces::StaticNamespaces;
use eci_profile::profile::Profile;
use eci_profile::review::{self, Context};
use serde_json::{Value, json};

const ALL: &[&str] = &[
    "create-bare-pod",
    "create-daemonset-pod-node-a",
    "create-daemonset-pod",
    "create-deployment-pod",
    "create-dry-run",
    "create-hostnetwork-hostpath-pod",
    "create-job-pod",
    "create-labelled-pod-with-everything",
    "create-large-pod",
    "create-pod-invalid-tilde-annotation-key",
    "create-pod-with-nodename",
    "create-statefulset-pod",
    "update-ephemeralcontainers",
    "update-label",
];

/// The embedded default profile plus a batch rule for fx-team's jobs.
fn test_profile() -> Profile {
    profile(
        r#"[
          {"name": "batch-jobs", "priority": 10, "policy": "normalNodePrefer",
           "namespaceSelector": {"matchLabels": {"team": "batch"}},
           "objectSelector": {"matchExpressions": [{"key": "batch.kubernetes.io/job-name", "operator": "Exists"}]},
           "effect": {"annotations": {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}}},
          {"name": "pod-label-alibabacloud-eci", "objectSelector": {"matchLabels": {"alibabacloud.com/eci": "true"}}},
          {"name": "pod-label-eci", "objectSelector": {"matchLabels": {"eci": "true"}}},
          {"name": "namespace-label-alibabacloud-eci", "namespaceSelector": {"matchLabels": {"alibabacloud.com/eci": "true"}}}
        ]"#,
    )
}

struct Reviewed {
    request: Value,
    response: Value,
    outcome: Outcome,
    /// The decoded patch, `[]` when none.
    patch: json_patch::Patch,
}

fn review_with(body: &[u8], profile: &Profile, namespaces: &StaticNamespaces) -> Reviewed {
    let exclusions = Exclusions::default();
    let context = Context {
        profile,
        exclusions: &exclusions,
        namespaces,
        budgets: &eci_profile::budgets::Unlimited,
    };
    let reviewed = review::review(body, context).expect("a valid review");
    let evaluation = reviewed.evaluation;
    let response: Value = serde_json::from_slice(&reviewed.response).expect("response is JSON");
    let patch = match response["response"]["patch"].as_str() {
        Some(b64) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64");
            serde_json::from_slice(&raw).expect("patch is a JSON Patch")
        }
        None => json_patch::Patch::default(),
    };
    Reviewed {
        request: serde_json::from_slice(body).unwrap(),
        response,
        outcome: evaluation.decision.outcome,
        patch,
    }
}

fn review_fixture(name: &str) -> Reviewed {
    review_with(
        &admission_fixture(name),
        &test_profile(),
        &fixture_namespaces(),
    )
}

#[test]
fn every_fixture_gets_a_well_formed_idempotent_answer() {
    let profile = test_profile();
    let namespaces = fixture_namespaces();
    for name in ALL {
        let r = review_with(&admission_fixture(name), &profile, &namespaces);
        let response = &r.response;
        assert_eq!(response["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(response["kind"], "AdmissionReview", "{name}");
        assert_eq!(
            response["response"]["uid"], r.request["request"]["uid"],
            "{name}: uid echoed"
        );
        assert_eq!(
            response["response"]["allowed"], true,
            "{name}: never denies"
        );
        if r.patch.0.is_empty() {
            assert!(response["response"].get("patch").is_none(), "{name}");
            assert!(response["response"].get("patchType").is_none(), "{name}");
            continue;
        }
        assert_eq!(response["response"]["patchType"], "JSONPatch", "{name}");
        // The patch applies to the object, and the result is a valid Pod.
        let mut pod = r.request["request"]["object"].clone();
        json_patch::patch(&mut pod, &r.patch).unwrap_or_else(|e| panic!("{name}: {e}"));
        let typed: Result<k8s_openapi::api::core::v1::Pod, _> = serde_json::from_value(pod.clone());
        assert!(typed.is_ok(), "{name}: {typed:?}");
        // Calling again with the patched pod (reinvocation) changes nothing.
        let mut again = r.request.clone();
        again["request"]["object"] = pod;
        let second = review_with(&serde_json::to_vec(&again).unwrap(), &profile, &namespaces);
        assert!(
            second.patch.0.is_empty(),
            "{name}: second patch {}",
            second.patch
        );
        assert_eq!(second.outcome, Outcome::Unchanged, "{name}");
    }
}

fn skip_code(r: &Reviewed) -> &'static str {
    match &r.outcome {
        Outcome::Skipped(reason) => reason.code(),
        other => panic!("expected skipped, got {other:?}"),
    }
}

fn warnings(r: &Reviewed) -> Vec<String> {
    r.response["response"]["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn patched(r: &Reviewed) -> Value {
    let mut pod = r.request["request"]["object"].clone();
    json_patch::patch(&mut pod, &r.patch).unwrap();
    pod
}

#[test]
fn deployment_pod_opted_in_by_label() {
    let r = review_fixture("create-deployment-pod");
    assert_eq!(r.outcome, Outcome::Mutated);
    let pod = patched(&r);
    assert_eq!(
        pod["metadata"]["annotations"]["eci-profile.io/selectors"],
        "pod-label-alibabacloud-eci"
    );
    assert_eq!(
        pod["spec"]["nodeSelector"],
        json!({"k8s.aliyun.com/vnode": "true"})
    );
    // The defaulted tolerations are kept and ours is appended.
    let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(tolerations.len(), 3);
    assert_eq!(tolerations[2]["key"], "k8s.aliyun.com/vnode");
}

#[test]
fn existing_fields_are_kept() {
    let r = review_fixture("create-labelled-pod-with-everything");
    let before = &r.request["request"]["object"];
    let pod = patched(&r);
    assert_eq!(r.outcome, Outcome::Mutated);
    assert_eq!(pod["metadata"]["annotations"]["example.com/owner"], "alice");
    assert_eq!(pod["spec"]["nodeSelector"]["disktype"], "ssd");
    assert_eq!(pod["spec"]["nodeSelector"]["k8s.aliyun.com/vnode"], "true");
    assert_eq!(pod["spec"]["affinity"], before["spec"]["affinity"]);
    let old = before["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(
        pod["spec"]["tolerations"].as_array().unwrap()[..old.len()],
        old[..]
    );
    // Rules: the pod label and the namespace label both select it.
    assert_eq!(
        pod["metadata"]["annotations"]["eci-profile.io/selectors"],
        "pod-label-eci,namespace-label-alibabacloud-eci"
    );
    // Only additions, and none to maps the pod already had.
    for op in r.patch.0.iter() {
        let path = op.path().to_string();
        assert!(
            !matches!(
                path.as_str(),
                "/metadata/annotations" | "/spec/nodeSelector"
            ),
            "{path}"
        );
    }
}

#[test]
fn tilde_annotation_key_survives() {
    let r = review_fixture("create-pod-invalid-tilde-annotation-key");
    assert_eq!(r.outcome, Outcome::Mutated);
    let pod = patched(&r);
    assert_eq!(pod["metadata"]["annotations"]["example.com/a~b"], "x");
}

#[test]
fn daemonset_pods_are_skipped_with_a_warning() {
    for name in ["create-daemonset-pod", "create-daemonset-pod-node-a"] {
        let r = review_fixture(name);
        assert_eq!(skip_code(&r), "daemonset");
        let w = warnings(&r);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("DaemonSet node-agent"), "{w:?}");
    }
}

#[test]
fn host_namespaces_and_pinned_pods_are_skipped() {
    let r = review_fixture("create-hostnetwork-hostpath-pod");
    assert_eq!(skip_code(&r), "host-network");
    assert_eq!(warnings(&r).len(), 1);
    let r = review_fixture("create-pod-with-nodename");
    assert_eq!(skip_code(&r), "node-name");
    assert!(warnings(&r)[0].contains("vnode-fake"));
}

#[test]
fn updates_and_subresources_are_not_considered() {
    for name in ["update-label", "update-ephemeralcontainers"] {
        let r = review_fixture(name);
        assert_eq!(skip_code(&r), "not-pod-create");
        assert!(warnings(&r).is_empty());
    }
}

#[test]
fn unselected_pods_are_left_alone_silently() {
    for name in ["create-bare-pod", "create-statefulset-pod"] {
        let r = review_fixture(name);
        assert_eq!(skip_code(&r), "not-selected", "{name}");
        assert!(warnings(&r).is_empty(), "{name}");
    }
}

#[test]
fn job_pod_follows_the_batch_rule() {
    let r = review_fixture("create-job-pod");
    assert_eq!(r.outcome, Outcome::Mutated);
    let pod = patched(&r);
    assert_eq!(
        pod["metadata"]["annotations"]["eci-profile.io/selectors"],
        "batch-jobs"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["k8s.aliyun.com/eci-spot-strategy"],
        "SpotAsPriceGo"
    );
    assert!(
        pod["spec"].get("nodeSelector").is_none(),
        "normalNodePrefer adds no nodeSelector"
    );
    assert_eq!(
        pod["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["weight"],
        100
    );
}

#[test]
fn dry_run_and_large_pods_are_mutated_like_any_other() {
    assert_eq!(review_fixture("create-dry-run").outcome, Outcome::Mutated);
    assert_eq!(review_fixture("create-large-pod").outcome, Outcome::Mutated);
}

#[test]
fn unknown_namespace_labels_warn() {
    // No namespaces known: the namespaceSelector rule cannot match, and says so.
    let r = review_with(
        &admission_fixture("create-large-pod"),
        &test_profile(),
        &StaticNamespaces::default(),
    );
    assert_eq!(skip_code(&r), "not-selected");
    let w = warnings(&r);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("labels of namespace fx-eci are unknown"),
        "{w:?}"
    );
}

#[test]
fn response_has_the_shape_kube_apiserver_accepted() {
    let accepted: Value = serde_json::from_slice(
        &std::fs::read(fixture_path(
            "admission-responses/patch-base64-accepted.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let r = review_fixture("create-deployment-pod");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&r.response), keys(&accepted));
    assert_eq!(keys(&r.response["response"]), keys(&accepted["response"]));
    assert!(
        r.response["response"]["patch"].is_string(),
        "patch is a base64 string"
    );
}

#[test]
fn malformed_bodies_are_errors_not_panics() {
    let profile = test_profile();
    let namespaces = StaticNamespaces::default();
    let exclusions = Exclusions::default();
    let context = Context {
        profile: &profile,
        exclusions: &exclusions,
        budgets: &eci_profile::budgets::Unlimited,
        namespaces: &namespaces,
    };
    let cases: &[(&[u8], &str)] = &[
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        // JSON is UTF-8, even in a field the webhook does not read.
        (b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":\"u\",\"userInfo\":{\"username\":\"\xff\"}}}", "not JSON"),
        (b"[1,2]", "not an admission.k8s.io/v1 AdmissionReview"),
        (br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"u"}}"#, "not an admission.k8s.io/v1"),
        (br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#, "no request"),
        (br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"operation":"CREATE"}}"#, "request.uid is missing"),
        (br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":""}}"#, "request.uid is missing"),
    ];
    for (body, expected) in cases {
        let err = review::review(body, context).expect_err("must be refused");
        assert!(err.to_string().contains(expected), "{err} vs {expected}");
    }
}

#[test]
fn unreadable_pod_is_allowed_unchanged_with_a_warning() {
    let profile = test_profile();
    let mut request: Value =
        serde_json::from_slice(&admission_fixture("create-deployment-pod")).unwrap();
    request["request"]["object"]["metadata"]["labels"] = json!(["not", "a", "map"]);
    let r = review_with(
        &serde_json::to_vec(&request).unwrap(),
        &profile,
        &fixture_namespaces(),
    );
    assert_eq!(skip_code(&r), "unreadable-object");
    assert_eq!(r.response["response"]["allowed"], true);
    assert!(warnings(&r)[0].contains("could not be read"));
}
