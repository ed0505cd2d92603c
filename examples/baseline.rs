//! The network benchmark's baseline (`benches/load.sh`): the TLS and HTTP
//! stack of `eci-profile serve` (rustls with ring, TLS 1.2 and 1.3, ALPN h2
//! and http/1.1, hyper's HTTP/1.1 + HTTP/2 server, TCP_NODELAY) answering
//! every POST with a constant AdmissionReview and doing no other work.
//! Given a response file, it answers with those bytes (the load script gives
//! it eci-profile's own answer to the benchmark request, so both send the
//! same bytes and differ only in the work).
//!
//!     cargo run --release --example baseline -- 127.0.0.1:9443 certs/tls.crt certs/tls.key [RESPONSE]

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::routing::post;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

const RESPONSE: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (listen, cert, key, response) = match args.as_slice() {
        [_, listen, cert, key] => (listen, cert, key, RESPONSE.to_string()),
        [_, listen, cert, key, file] => (
            listen,
            cert,
            key,
            std::fs::read_to_string(file)?.trim_end().to_string(),
        ),
        _ => anyhow::bail!("usage: baseline LISTEN TLS_CERT TLS_KEY [RESPONSE_FILE]"),
    };
    let response: &'static str = Box::leak(response.into_boxed_str());
    eci_profile::tls::install_default_provider();
    let store = Arc::new(eci_profile::tls::CertificateStore::open(
        cert.as_ref(),
        key.as_ref(),
    )?);
    let acceptor = TlsAcceptor::from(Arc::new(eci_profile::tls::server_config(store, None)?));
    let router = Router::new().route(
        "/mutate",
        post(move || async move { ([(header::CONTENT_TYPE, "application/json")], response) }),
    );
    let listener = TcpListener::bind(listen.as_str()).await?;
    eprintln!("baseline listening on {}", listener.local_addr()?);
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
