//! The TLS accept loop: every connection is TLS (no plain HTTP on this
//! port), with a handshake timeout, TCP_NODELAY, HTTP/2 when the client
//! asks for it (ALPN), else HTTP/1.1 keep-alive with idle and header-read
//! timeouts ([`timeouts`](super::timeouts)), and a graceful drain.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

use super::Limits;
use super::timeouts::{Phase, Timed};

/// Accepts connections until `stop` turns true, then lets open connections
/// finish their requests for at most `grace`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    // The idle and header-read timeouts are Timed's: hyper's own header-read
    // timer also runs while a connection is idle.
    let mut http1 = auto::Builder::new(TokioExecutor::new()).http1_only();
    http1.http1().keep_alive(true);
    let mut http2 = auto::Builder::new(TokioExecutor::new()).http2_only();
    http2.http2().timer(TokioTimer::new());
    let (http1, http2) = (Arc::new(http1), Arc::new(http2));

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let (http1, http2) = (http1.clone(), http2.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls_stream =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let call = move |request: hyper::Request<Incoming>| router.clone().call(request);
            let ended = if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                let service = hyper::service::service_fn(call);
                let connection = http2.serve_connection(TokioIo::new(tls_stream), service);
                watcher.watch(connection.into_owned()).await
            } else {
                let phase = Phase::default();
                let io = Timed::new(
                    tls_stream,
                    phase.clone(),
                    limits.idle_timeout,
                    limits.header_read_timeout,
                );
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        phase.handling();
                        let answer = call(request);
                        let phase = phase.clone();
                        async move {
                            let response = answer.await;
                            phase.idle();
                            response
                        }
                    });
                let connection = http1.serve_connection(TokioIo::new(io), service);
                watcher.watch(connection.into_owned()).await
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after the grace period; closing them"
        );
    }
}

/// Resolves once `stop` is true.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
