//! The admin listener (plain HTTP): liveness, readiness and metrics.

use std::sync::Arc;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::State;

/// `GET /healthz`, `GET /readyz`, `GET /metrics`.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(Extract(state): Extract<Arc<State>>) -> impl IntoResponse {
    state.metrics.refused("admin", "404", "not-found");
    (StatusCode::NOT_FOUND, "not found\n")
}

async fn method_not_allowed(Extract(state): Extract<Arc<State>>) -> impl IntoResponse {
    state.metrics.refused("admin", "405", "method-not-allowed");
    (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
}

async fn readyz(Extract(state): Extract<Arc<State>>) -> impl IntoResponse {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(Extract(state): Extract<Arc<State>>) -> impl IntoResponse {
    state.record_budgets();
    let profile = state.profile.get();
    state
        .metrics
        .retain_rules(profile.rules().map(|rule| rule.name.as_str()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
