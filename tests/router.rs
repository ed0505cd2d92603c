//! The routers in-process (no sockets), as tower services.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::admission_fixture;
use eci_profile::decision::Exclusions;
use eci_profile::namespaces::StaticNamespaces;
use eci_profile::profile::Profile;
use eci_profile::server::{Limits, State, admin, webhook};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

fn state(max_body_bytes: usize) -> Arc<State> {
    Arc::new(State::new(
        Profile::embedded_default(),
        Arc::new(StaticNamespaces::default()),
        Exclusions::default(),
        Limits {
            max_body_bytes,
            ..Limits::default()
        },
    ))
}

async fn call(
    router: axum::Router,
    request: Request<Body>,
) -> (StatusCode, Option<String>, String) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).body(body.into()).unwrap()
}

#[tokio::test]
async fn mutate_answers_json() {
    let (status, content_type, body) = call(
        webhook::router(state(1 << 20)),
        post(
            "/mutate?timeout=10s",
            admission_fixture("create-deployment-pod"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert!(body.contains(r#""patchType":"JSONPatch""#), "{body}");
}

#[tokio::test]
async fn errors_are_plain_text_with_the_right_status() {
    let router = webhook::router(state(1024));
    let (status, content_type, body) = call(router.clone(), post("/mutate", "[]")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(content_type.as_deref(), Some("text/plain; charset=utf-8"));
    assert!(
        body.starts_with("request body is not an admission.k8s.io/v1 AdmissionReview request"),
        "{body}"
    );

    // Over the limit without a Content-Length (a streamed body): 413 once the limit is passed.
    let (status, _, _) = call(
        router.clone(),
        post("/mutate", chunked(admission_fixture("create-large-pod"))),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let (status, _, _) = call(
        router.clone(),
        Request::get("/mutate").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = call(router, post("/", "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A body in 4 KiB chunks, with no known length.
fn chunked(bytes: Vec<u8>) -> Body {
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = bytes
        .chunks(4096)
        .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn admin_endpoints() {
    let s = state(1024);
    let router = admin::router(s.clone());
    let (status, _, body) = call(
        router.clone(),
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    // Not serving yet: not ready.
    let (status, _, body) = call(
        router.clone(),
        Request::get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "not ready: the webhook listener is not serving yet\n");
    s.readiness.set_certificate_served();
    let (status, _, _) = call(
        router.clone(),
        Request::get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    s.readiness.set_draining();
    let (status, _, body) = call(
        router.clone(),
        Request::get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n"
        )
    );
    let (status, content_type, body) = call(
        router,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(body.contains("eci_profile_profile_selectors 4"), "{body}");
}

/// The answer `eci-profile check -o review` gives.
fn expected_review(body: &[u8]) -> String {
    let profile = Profile::embedded_default();
    let context = eci_profile::review::Context {
        profile: &profile,
        exclusions: &Exclusions::default(),
        namespaces: &StaticNamespaces::default(),
        budgets: &eci_profile::budgets::Unlimited,
    };
    String::from_utf8(eci_profile::review::review(body, context).unwrap().response).unwrap()
}

#[tokio::test]
async fn bodies_are_read_whole_however_they_come() {
    let router = webhook::router(state(4 << 20));
    // The typical pod, and the 139 KB one (a large body, decided off the
    // request workers), with a Content-Length or streamed in pieces.
    for name in ["create-deployment-pod", "create-large-pod"] {
        let body = admission_fixture(name);
        let expected = expected_review(&body);
        let declared = Request::post("/mutate")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body.clone()))
            .unwrap();
        for request in [declared, post("/mutate", chunked(body.clone()))] {
            let (status, _, answer) = call(router.clone(), request).await;
            assert_eq!(status, StatusCode::OK, "{name}: {answer}");
            assert_eq!(answer, expected, "{name}");
        }
    }
}

#[tokio::test]
async fn past_the_body_budget_large_bodies_get_503_and_small_ones_are_served() {
    // 400 KiB in all: large bodies may hold 300 KiB.
    let state = Arc::new(State::new(
        Profile::embedded_default(),
        Arc::new(StaticNamespaces::default()),
        Exclusions::default(),
        Limits {
            max_buffered_bytes: 400 * 1024,
            ..Limits::default()
        },
    ));
    let router = webhook::router(state.clone());
    // A client declaring 250 KiB and sending nothing yet.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let holding = Request::post("/mutate")
        .header(header::CONTENT_LENGTH, 250 * 1024)
        .body(Body::from_stream(stream))
        .unwrap();
    let held = tokio::spawn(router.clone().oneshot(holding));
    while state.metrics.buffered_request_bytes.get() < 250 * 1024 {
        tokio::task::yield_now().await;
    }

    let large = admission_fixture("create-large-pod");
    let declared = |body: &[u8]| {
        Request::post("/mutate")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body.to_vec()))
            .unwrap()
    };
    let response = router.clone().oneshot(declared(&large)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    // Streamed, it is refused once it outgrows the large share.
    let (status, _, _) = call(router.clone(), post("/mutate", chunked(large.clone()))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let small = admission_fixture("create-deployment-pod");
    let (status, _, answer) = call(router.clone(), declared(&small)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, expected_review(&small));
    assert!(
        state.metrics.encode().contains(
            r#"eci_profile_http_refusals_total{listener="webhook",status="503",reason="body-budget"} 2"#
        ),
        "{}",
        state.metrics.encode()
    );

    // The holder gives up: its bytes are given back.
    drop(tx);
    let response = held.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(state.metrics.buffered_request_bytes.get(), 0);
    let (status, _, _) = call(router, declared(&large)).await;
    assert_eq!(status, StatusCode::OK);
}

/// An AdmissionReview for applying `object` (a YAML manifest), in the
/// envelope the API server sends (taken from a captured request).
fn apply_request(operation: &str, kind: (&str, &str, &str, &str), object_yaml: &str) -> Vec<u8> {
    let (group, version, kind, resource) = kind;
    let mut review: serde_json::Value =
        serde_json::from_slice(&admission_fixture("update-label")).unwrap();
    let object: serde_json::Value = serde_saphyr::from_str(object_yaml).unwrap();
    let request = &mut review["request"];
    for field in ["kind", "requestKind"] {
        request[field] = serde_json::json!({"group": group, "version": version, "kind": kind});
    }
    for field in ["resource", "requestResource"] {
        request[field] =
            serde_json::json!({"group": group, "version": version, "resource": resource});
    }
    request["operation"] = operation.into();
    request["name"] = object["metadata"]["name"].clone();
    request["namespace"] = object["metadata"]["namespace"].clone();
    request["object"] = object;
    if operation == "CREATE" {
        request["oldObject"] = serde_json::Value::Null;
    }
    serde_json::to_vec(&review).unwrap()
}

fn upstream_selector(name: &str) -> String {
    std::fs::read_to_string(common::fixture_path(&format!(
        "upstream-selectors/{name}.yaml"
    )))
    .unwrap()
}

const SELECTOR: (&str, &str, &str, &str) = ("eci.aliyun.com", "v1beta1", "Selector", "selectors");
const CONFIGMAP: (&str, &str, &str, &str) = ("", "v1", "ConfigMap", "configmaps");

async fn validate(router: &axum::Router, body: Vec<u8>) -> serde_json::Value {
    let (status, content_type, body) =
        call(router.clone(), post("/validate?timeout=3s", body)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["response"].clone()
}

#[tokio::test]
async fn validate_allows_the_upstream_examples_and_denies_the_unquoted_deletion_cost() {
    let router = webhook::router(state(1 << 20));
    for name in ["fair", "normal-node-prefer", "virtual-node-only", "eip"] {
        let response = validate(
            &router,
            apply_request("CREATE", SELECTOR, &upstream_selector(name)),
        )
        .await;
        assert_eq!(response["allowed"], true, "{name}: {response}");
        assert!(response.get("warnings").is_none(), "{name}: {response}");
    }
    // Annotation values are strings: kubectl sends the number as it is
    // when the CRD's schema does not refuse it first.
    let response = validate(
        &router,
        apply_request("UPDATE", SELECTOR, &upstream_selector("pod-deletion-cost")),
    )
    .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 422);
    assert_eq!(
        response["status"]["message"],
        "invalid Selector \"test-fair\" (1 error):\nerror: selector \"test-fair\": spec.effect.annotations[\"controller.kubernetes.io/pod-deletion-cost\"]: must be a string, found a number (quote it)"
    );
    assert_eq!(response["uid"], "aa83af4a-0550-4faa-a392-a94de64c6168");
}

#[tokio::test]
async fn validate_checks_the_profile_configmap_only() {
    let router = webhook::router(state(1 << 20));
    let configmap = |name: &str, selectors: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: kube-system\ndata:\n  selectors: '{selectors}'\n"
        )
    };
    let bad = r#"[{"name": "a", "objectSelector": {}, "policy": "sometimes"}]"#;
    let response = validate(
        &router,
        apply_request("UPDATE", CONFIGMAP, &configmap("eci-profile", bad)),
    )
    .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("selectors[0].policy: unknown policy \"sometimes\""),
        "{response}"
    );
    let warned = r#"[{"name": "a", "objectSelector": {}}]"#;
    let response = validate(
        &router,
        apply_request("CREATE", CONFIGMAP, &configmap("eci-profile", warned)),
    )
    .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("its selectors are empty"),
        "{response}"
    );
    // Another ConfigMap in the namespace: allowed at once, whatever it holds.
    let response = validate(
        &router,
        apply_request("UPDATE", CONFIGMAP, &configmap("coredns", bad)),
    )
    .await;
    assert_eq!(
        response,
        serde_json::json!({"uid": "aa83af4a-0550-4faa-a392-a94de64c6168", "allowed": true})
    );
}

#[tokio::test]
async fn validate_reads_bodies_under_the_same_limits() {
    let router = webhook::router(state(1024));
    let (status, _, body) = call(router.clone(), post("/validate", "[]")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let big = apply_request("CREATE", SELECTOR, &upstream_selector("fair"));
    let padded = [big.clone(), vec![b' '; 2048]].concat();
    let (status, _, _) = call(router.clone(), post("/validate", padded)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, _) = call(
        router,
        Request::get("/validate").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
