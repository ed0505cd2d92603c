//! The network benchmark's baseline and yardsticks (`benches/load.sh`): the
//! TLS and HTTP stack of `eci-profile serve` (rustls with ring, TLS 1.2 and
//! 1.3, ALPN h2 and http/1.1, hyper's HTTP/1.1 + HTTP/2 server, TCP_NODELAY)
//! answering every POST with a constant AdmissionReview and deciding nothing.
//! Given a response file, it answers with those bytes (the load script gives
//! it eci-profile's own answer to the benchmark request, so every server sends
//! the same bytes and they differ only in the work).
//!
//! `--read` sets how much of the request it reads before answering:
//! - `none` (the baseline): not even the body;
//! - `json`: the body, checked as JSON by serde_json without keeping any of
//!   it: the least any webhook reading its request with serde_json pays;
//! - `kube`: the body, read as kube-rs's `AdmissionReview<DynamicObject>`
//!   and turned into an `AdmissionRequest`, as a webhook built on kube-rs's
//!   admission types does before deciding anything.
//!
//!     cargo run --release --example baseline -- [--read MODE] 127.0.0.1:9443 certs/tls.crt certs/tls.key [RESPONSE]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

const RESPONSE: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;
const USAGE: &str =
    "usage: baseline [--read none|json|kube] LISTEN TLS_CERT TLS_KEY [RESPONSE_FILE]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let read = match args.iter().position(|a| a == "--read") {
        Some(i) if i + 1 < args.len() => args.drain(i..i + 2).nth(1).expect("two drained"),
        Some(_) => anyhow::bail!(USAGE),
        None => "none".to_string(),
    };
    let (listen, cert, key, response) = match args.as_slice() {
        [listen, cert, key] => (listen, cert, key, RESPONSE.to_string()),
        [listen, cert, key, file] => (
            listen,
            cert,
            key,
            std::fs::read_to_string(file)?.trim_end().to_string(),
        ),
        _ => anyhow::bail!(USAGE),
    };
    let response: &'static str = Box::leak(response.into_boxed_str());
    let answer = move || ([(header::CONTENT_TYPE, "application/json")], response).into_response();
    let route = match read.as_str() {
        "none" => post(move || async move { answer() }),
        "json" => post(move |body: Bytes| async move {
            match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                Ok(_) => answer(),
                Err(e) => bad_request(e),
            }
        }),
        "kube" => post(move |body: Bytes| async move {
            let request = serde_json::from_slice::<AdmissionReview<DynamicObject>>(&body)
                .map_err(|e| e.to_string())
                .and_then(|review| {
                    let request: Result<AdmissionRequest<DynamicObject>, _> = review.try_into();
                    request.map_err(|e| e.to_string())
                });
            match request {
                Ok(request) => {
                    std::hint::black_box(request);
                    answer()
                }
                Err(e) => bad_request(e),
            }
        }),
        _ => anyhow::bail!(USAGE),
    };

    eci_profile::tls::install_default_provider();
    let store = Arc::new(eci_profile::tls::CertificateStore::open(
        cert.as_ref(),
        key.as_ref(),
    )?);
    let acceptor = TlsAcceptor::from(Arc::new(eci_profile::tls::server_config(store, None)?));
    let router = Router::new().route("/mutate", route);
    let listener = TcpListener::bind(listen.as_str()).await?;
    eprintln!(
        "baseline (read: {read}) listening on {}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                router.clone().call(request)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn bad_request(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
}
