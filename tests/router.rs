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
