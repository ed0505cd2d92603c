//! `POST /mutate`: AdmissionReview v1 in, AdmissionReview v1 out, through
//! [`review::review`], the code path `eci-profile check -o review` uses;
//! `POST /validate`: Selectors and the profile ConfigMap checked at apply
//! time ([`validation`]). Both read bodies under the same limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as Extract};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt as _;
use tracing::{Instrument as _, field};

use super::State;
use super::budget::{Budget, DECISION_WAIT, Reservation};
use crate::budgets::{Checking, Gate, Reserving};
use crate::decision::{Outcome, SkipReason};
use crate::metrics::status_label;
use crate::review::{self, AdmissionRequest, Context};
use crate::validation;

/// What the webhook's handlers share.
struct Webhook {
    state: Arc<State>,
    budget: Arc<Budget>,
}

/// The webhook's routes; unknown paths get 404, other methods 405.
pub fn router(state: Arc<State>) -> Router {
    let budget = Arc::new(Budget::new(&state.limits, &state.metrics));
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Arc::new(Webhook { state, budget }))
}

/// Which handler a body is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Mutate,
    Validate,
}

async fn validate(Extract(webhook): Extract<Arc<Webhook>>, request: Request) -> Response {
    let span = tracing::debug_span!("validation", uid = field::Empty);
    answer(&webhook, request, span.clone(), Endpoint::Validate)
        .instrument(span)
        .await
}

async fn mutate(Extract(webhook): Extract<Arc<Webhook>>, request: Request) -> Response {
    // At debug: formatting its fields for every request would cost more than
    // deciding; the info events below carry the same fields themselves.
    let span = tracing::debug_span!(
        "admission",
        uid = field::Empty,
        operation = field::Empty,
        namespace = field::Empty,
        pod = field::Empty,
        decision = field::Empty,
        rules = field::Empty,
    );
    let started = Instant::now();
    let response = answer(&webhook, request, span.clone(), Endpoint::Mutate)
        .instrument(span)
        .await;
    webhook
        .state
        .metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Answers `request`, recording what was decided in `span` (the request's).
async fn answer(
    webhook: &Arc<Webhook>,
    request: Request,
    span: tracing::Span,
    endpoint: Endpoint,
) -> Response {
    let state = &*webhook.state;
    let started = Instant::now();
    let deadline = timeout_param(request.uri().query()).map_or(state.limits.request_timeout, |t| {
        t.min(state.limits.request_timeout)
    });
    let limit = state.limits.max_body_bytes;
    let version = request.version();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = async {
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(BodyError::TooLarge);
        }
        let declared = declared.map(|n| n as usize);
        // The declared length is held up front: a body that would not fit is
        // refused before a byte of it is read.
        let mut reservation = webhook
            .budget
            .reserve(declared.unwrap_or(0))
            .ok_or(BodyError::Budget)?;
        let read = read(request.into_body(), declared, limit, &mut reservation);
        match tokio::time::timeout(deadline, read).await {
            Err(_) => Err(BodyError::TimedOut),
            Ok(read) => read.map(|bytes| (bytes, reservation)),
        }
    };
    let (bytes, reservation) = match body.await {
        Ok(read) => read,
        Err(e) => return body_refused(state, e, limit, version),
    };
    tracing::trace!(body = %String::from_utf8_lossy(&bytes), "request body");

    if !webhook.budget.is_large(bytes.len()) {
        if endpoint == Endpoint::Validate {
            return judge(state, &bytes);
        }
        let request = match review::parse_request(&bytes) {
            Ok(request) => request,
            Err(e) => return refuse(state, StatusCode::BAD_REQUEST, "bad-request", e.to_string()),
        };
        if let Some(namespace) = unknown_namespace(state, &request) {
            // A namespace created a moment ago: ask once, within the deadline.
            let _ = tokio::time::timeout(deadline, state.namespaces.fetch(namespace)).await;
        }
        return decide(state, request, &span);
    }

    // A large body: read and decided on a decision thread, a few at a time,
    // so that the async workers keep serving small requests.
    let wait = DECISION_WAIT.min(deadline.saturating_sub(started.elapsed()));
    let Some(slot) = webhook.budget.decision_slot(wait).await else {
        return busy(
            state,
            "decision-budget",
            "too many large requests being decided",
        );
    };
    let held = (slot, reservation.into_owned(webhook.budget.clone()));
    let shared = webhook.clone();
    let runtime = tokio::runtime::Handle::current();
    let decision = webhook.budget.on_decision_thread(move || {
        let _held = held;
        let state = &*shared.state;
        if endpoint == Endpoint::Validate {
            return judge(state, &bytes);
        }
        let request = match review::parse_request(&bytes) {
            Ok(request) => request,
            Err(e) => return refuse(state, StatusCode::BAD_REQUEST, "bad-request", e.to_string()),
        };
        if let Some(namespace) = unknown_namespace(state, &request) {
            let remaining = deadline.saturating_sub(started.elapsed());
            let fetch = state.namespaces.fetch(namespace);
            // The timer is made inside the runtime (this thread is not one of its own).
            let _ = runtime.block_on(async { tokio::time::timeout(remaining, fetch).await });
        }
        decide(state, request, &span)
    });
    decision.await.unwrap_or_else(|| {
        refuse(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "deciding failed".into(),
        )
    })
}

/// Checks a Selector or the profile ConfigMap being applied, and answers.
fn judge(state: &State, body: &[u8]) -> Response {
    let profile = state.profile.get();
    let (namespace, name) = &state.profile_configmap;
    let context = validation::Context {
        configmap: (namespace, name),
        profile: &profile,
    };
    let (verdict, response) = match validation::review(body, context) {
        Ok(reviewed) => reviewed,
        Err(e) => return refuse(state, StatusCode::BAD_REQUEST, "bad-request", e.to_string()),
    };
    let outcome = if verdict.denial.is_some() {
        "denied"
    } else {
        "allowed"
    };
    state.metrics.request(outcome, verdict.subject.as_str());
    if verdict.subject != validation::Subject::Other {
        tracing::info!(
            subject = verdict.subject.as_str(),
            name = crate::truncate::echo(&verdict.name).as_ref(),
            warnings = verdict.warnings.len(),
            denial = verdict.denial.as_deref(),
            "{} {outcome}",
            verdict.subject.as_str()
        );
    }
    ([(header::CONTENT_TYPE, "application/json")], response).into_response()
}

/// The namespace of a pod CREATE whose labels are not known yet.
fn unknown_namespace<'r>(state: &State, request: &'r AdmissionRequest<'_>) -> Option<&'r str> {
    if !request.is_pod_create() {
        return None;
    }
    request
        .pod_namespace()
        .filter(|namespace| state.namespaces.labels(namespace).is_none())
}

/// Decides on `request` and answers it, recording the decision in `span`,
/// the metrics and the log.
fn decide(state: &State, request: AdmissionRequest<'_>, span: &tracing::Span) -> Response {
    let profile = state.profile.get();
    // A pod sent to a virtual node reserves its budget place under the
    // request's uid, which the API server repeats if it calls again; a dry
    // run creates no pod, so it only checks.
    let uid = request.uid.clone();
    let now = std::time::Instant::now();
    let reserving = Reserving {
        ledger: &state.ledger,
        id: &uid,
        now,
        expires: now + crate::budgets::RESERVATION_TTL,
    };
    let checking = Checking(&state.ledger);
    let budgets: &dyn Gate = match request.dry_run {
        Some(true) => &checking,
        _ => &reserving,
    };
    let context = Context {
        profile: &profile,
        exclusions: &state.exclusions,
        namespaces: &*state.namespaces,
        budgets,
    };
    let reviewed = review::respond(request, context);
    let evaluation = &reviewed.evaluation;
    let decision = &evaluation.decision;
    if !span.is_disabled() {
        span.record("uid", reviewed.uid.as_str());
        span.record("operation", reviewed.operation.as_str());
        span.record(
            "namespace",
            crate::truncate::echo(&evaluation.namespace).as_ref(),
        );
        if let Some(pod) = &evaluation.pod {
            span.record("pod", pod.display_name().as_str());
        }
        span.record("rules", decision.applied.join(",").as_str());
        span.record("decision", decision.outcome.as_str());
    }
    state
        .metrics
        .request(decision.outcome.as_str(), decision.outcome.reason());
    state.metrics.rules_decided(decision);
    // Routine decisions at debug (the metrics count them all); those the
    // user was warned about at info.
    let reason = decision.outcome.reason();
    if decision.warnings.is_empty() {
        match &decision.outcome {
            Outcome::Skipped(SkipReason::NotPodCreate) => {
                tracing::debug!("not a pod creation: allowed unchanged")
            }
            Outcome::Skipped(why) => tracing::debug!(reason, "pod allowed unchanged: {why}"),
            Outcome::Unchanged => tracing::debug!("pod already complete: allowed unchanged"),
            Outcome::Mutated => tracing::debug!(operations = decision.patch.len(), "pod patched"),
        }
    } else {
        tracing::info!(
            uid = reviewed.uid.as_str(),
            namespace = crate::truncate::echo(&evaluation.namespace).as_ref(),
            pod = evaluation.pod.as_ref().map(|p| p.display_name()).as_deref(),
            decision = decision.outcome.as_str(),
            rules = decision.applied.join(",").as_str(),
            reason,
            warnings = ?decision.warnings,
            "pod {}",
            decision.outcome.as_str()
        );
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        reviewed.response,
    )
        .into_response()
}

async fn not_found(Extract(webhook): Extract<Arc<Webhook>>) -> Response {
    webhook.state.metrics.refused("webhook", "404", "not-found");
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn method_not_allowed(Extract(webhook): Extract<Arc<Webhook>>) -> Response {
    webhook
        .state
        .metrics
        .refused("webhook", "405", "method-not-allowed");
    (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response()
}

enum BodyError {
    TooLarge,
    Budget,
    TimedOut,
    Read(String),
}

/// The answer to a request whose body was not read whole.
fn body_refused(
    state: &State,
    error: BodyError,
    limit: usize,
    version: axum::http::Version,
) -> Response {
    let refused = match error {
        BodyError::TooLarge => refuse(
            state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("request body over {limit} bytes"),
        ),
        BodyError::Budget => busy(state, "body-budget", "too many request bytes held"),
        BodyError::TimedOut => refuse(
            state,
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "request body not received in time".into(),
        ),
        BodyError::Read(e) => {
            return refuse(
                state,
                StatusCode::BAD_REQUEST,
                "bad-request",
                format!("cannot read the request body: {e}"),
            );
        }
    };
    unread_body(refused, version)
}

/// Reads the body into one buffer, within `limit` and `reservation`: a body
/// that comes in one piece (the usual case) is kept as it came; else the
/// buffer is sized from the declared length, or grown as the body comes, and
/// the reservation grown to cover it first.
async fn read(
    mut body: Body,
    declared: Option<usize>,
    limit: usize,
    reservation: &mut Reservation<'_>,
) -> Result<Bytes, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut buffer: Vec<u8> = Vec::new();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len();
        if received > limit {
            return Err(BodyError::TooLarge);
        }
        if first.is_none() && buffer.capacity() == 0 && declared.is_none_or(|n| n == received) {
            if !reservation.cover(received) {
                return Err(BodyError::Budget);
            }
            first = Some(data);
            continue;
        }
        if buffer.capacity() < received {
            let capacity = declared
                .unwrap_or(0)
                .max(buffer.capacity() * 2)
                .min(limit)
                .max(received);
            if !reservation.cover(capacity) {
                return Err(BodyError::Budget);
            }
            buffer.reserve_exact(capacity - buffer.len());
        }
        if let Some(first) = first.take() {
            buffer.extend_from_slice(&first);
        }
        buffer.extend_from_slice(&data);
    }
    Ok(match first {
        Some(first) => first,
        None => Bytes::from(buffer),
    })
}

/// A 503 for a request over a budget: the API server may retry later (its
/// `failurePolicy` decides about this one).
fn busy(state: &State, reason: &'static str, message: &str) -> Response {
    let mut response = refuse(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        reason,
        format!("{message}: retry later"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A plain-text error answer; the request counts as an error.
fn refuse(state: &State, status: StatusCode, kind: &'static str, message: String) -> Response {
    state.metrics.request("error", kind);
    state
        .metrics
        .refused("webhook", status_label(status.as_u16()), kind);
    tracing::warn!(status = status.as_u16(), "request refused: {message}");
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// `response`, to a request whose body was not read to its end: an HTTP/1.1
/// connection cannot be used again, so the client is told it closes (and the
/// listener lingers so that it reads this answer rather than a reset).
fn unread_body(mut response: Response, version: axum::http::Version) -> Response {
    if version < axum::http::Version::HTTP_2 {
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// kube-apiserver's own deadline for the call: `timeout` in the query string
/// (`?timeout=10s`), a Go duration, which needs no percent-decoding.
fn timeout_param(query: Option<&str>) -> Option<Duration> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(parse_go_duration)
}

/// Parses a Go duration as kube-apiserver writes it (`10s`, `1m30s`, `500ms`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos: u64 = match &rest[..unit_len] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += match number.parse::<u64>() {
            Ok(whole) => Duration::from_nanos(whole.checked_mul(nanos)?),
            Err(_) => Duration::try_from_secs_f64(number.parse::<f64>().ok()? * nanos as f64 / 1e9)
                .ok()?,
        };
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("5 parsecs"), None);
        assert_eq!(parse_go_duration("."), None);
        assert_eq!(parse_go_duration("1.5.5s"), None);
        assert_eq!(parse_go_duration("99999999999h"), None);
        assert_eq!(parse_go_duration("250us"), Some(Duration::from_micros(250)));
    }

    #[test]
    fn timeout_from_the_query_string() {
        assert_eq!(
            timeout_param(Some("timeout=10s")),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            timeout_param(Some("a=b&timeout=2s")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(timeout_param(Some("timeout=soon")), None);
        assert_eq!(timeout_param(Some("xtimeout=1s")), None);
        assert_eq!(timeout_param(None), None);
    }
}
