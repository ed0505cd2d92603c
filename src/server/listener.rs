//! The accept loop shared by both listeners: the webhook's (TLS only, HTTP/2
//! when the client asks for it by ALPN, else HTTP/1.1) and the admin port's
//! (plain HTTP/1.1). Both get the same guarantees:
//!
//! - a bound on open connections, a TLS handshake timeout, the header-read
//!   and idle timeouts of [`timeouts`](super::timeouts) for both protocols,
//!   HTTP/2 keep-alive PINGs and a bound on concurrent streams;
//! - a drain that loses no request ([`Stage`]): once draining, every HTTP/1.1
//!   response says `Connection: close` and every HTTP/2 connection gets a
//!   GOAWAY, so clients re-dial (through the Service, to another replica)
//!   instead of writing a request into a connection about to close; idle
//!   connections are closed only when the listener stops accepting, and
//!   in-flight requests get the grace period;
//! - refusals counted by reason (`eci_profile_http_refusals_total`,
//!   `eci_profile_tls_handshake_failures_total`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

use super::Limits;
use super::timeouts::{Phase, Protocol, Timed, TimedOut};
use crate::metrics::Metrics;

/// Where the server is in its life; each listener follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Answering, keeping connections alive.
    Serving,
    /// Shutdown asked: still accepting and answering, but every connection is
    /// told to close after its current response.
    Draining,
    /// No more connections accepted; idle ones closed, in-flight requests
    /// finish within the grace period.
    Closing,
}

/// HTTP/2: most streams a client may have open on one connection.
pub const HTTP2_MAX_STREAMS: u32 = 32;
/// HTTP/2 flow-control windows: what a client may send before we read it.
const HTTP2_STREAM_WINDOW: u32 = 128 * 1024;
const HTTP2_CONNECTION_WINDOW: u32 = 512 * 1024;
/// HTTP/1.1: the read buffer's bound, and the largest request head (larger
/// heads get 431).
const HTTP1_MAX_BUFFER: usize = 64 * 1024;

/// A bound listener and how its connections are served.
pub struct Listener {
    /// `webhook` or `admin`, in metrics and logs.
    pub name: &'static str,
    /// The bound socket.
    pub tcp: TcpListener,
    /// TLS for every connection (the webhook); `None` for plain HTTP/1.1.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections beyond this are closed as soon as they are accepted.
    pub max_connections: usize,
}

/// What every connection of a listener shares.
struct Shared {
    name: &'static str,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

/// Serves `listener` with `router` until `stage` reaches [`Stage::Closing`],
/// then gives open connections at most `grace` to finish.
pub async fn serve(
    listener: Listener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    mut stage: watch::Receiver<Stage>,
    grace: Duration,
) {
    let Listener {
        name,
        tcp,
        tls,
        max_connections,
    } = listener;
    let acceptor = tls.map(TlsAcceptor::from);
    let mut http1 = http1::Builder::new();
    http1
        .keep_alive(true)
        .max_buf_size(HTTP1_MAX_BUFFER)
        .max_header_size(HTTP1_MAX_BUFFER)
        .timer(TokioTimer::new())
        // Timed's: hyper's own also runs while a connection is idle.
        .header_read_timeout(None);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .keep_alive_interval(limits.http2_ping.0)
        .keep_alive_timeout(limits.http2_ping.1)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW);
    let shared = Arc::new(Shared {
        name,
        router,
        limits,
        metrics,
        http1,
        http2,
    });
    let connections = Arc::new(Semaphore::new(max_connections));
    // Connections still open after the grace period are dropped.
    let (abort, aborted) = watch::channel(false);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = reached(&mut stage, Stage::Closing) => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // Counted, and logged only at debug: a flood must not flood the log.
            shared.metrics.refused(name, "none", "too-many-connections");
            tracing::debug!(listener = name, %peer, max_connections, "too many connections: closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let (stage, aborted) = (stage.clone(), aborted.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut aborted = aborted;
            tokio::select! {
                () = connection(stream, peer, acceptor, &shared, stage) => {}
                () = reached(&mut aborted, true) => {}
            }
        });
    }
    drop(tcp);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            ?grace,
            open = max_connections - connections.available_permits(),
            "connections still open after the grace period; closing them"
        );
        let _ = abort.send(true);
    }
}

/// Resolves once `receiver` holds `at` or more (or its sender is gone).
async fn reached<T: PartialOrd>(receiver: &mut watch::Receiver<T>, at: T) {
    let _ = receiver.wait_for(|now| *now >= at).await;
}

/// One accepted connection: the TLS handshake when there is one, then HTTP.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    shared: &Shared,
    stage: watch::Receiver<Stage>,
) {
    let Some(acceptor) = acceptor else {
        return http(stream, Protocol::Http1, peer, shared, stage).await;
    };
    let handshake = tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(stream));
    let stream = match handshake.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let reason = handshake_failure(&e);
            shared.metrics.handshake_failed(reason);
            tracing::debug!(%peer, reason, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.handshake_failed("timeout");
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    http(stream, protocol, peer, shared, stage).await
}

/// The reason label of a failed handshake.
fn handshake_failure(error: &std::io::Error) -> &'static str {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)) => {
            "client-certificate"
        }
        Some(_) => "protocol",
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => "eof",
        None => "io",
    }
}

/// Serves HTTP on an established connection until it ends, the client's
/// timeouts run out, or the drain closes it.
async fn http<I>(
    io: I,
    protocol: Protocol,
    peer: SocketAddr,
    shared: &Shared,
    stage: watch::Receiver<Stage>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits;
    let phase = Phase::new(protocol);
    let io = TokioIo::new(Timed::new(
        io,
        phase.clone(),
        limits.idle_timeout,
        limits.header_read_timeout,
    ));
    let service = {
        let (router, phase, stage) = (shared.router.clone(), phase.clone(), stage.clone());
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            phase.handling();
            let answer = router.clone().call(request);
            let (phase, stage) = (phase.clone(), stage.clone());
            async move {
                let Ok(mut response) = answer.await;
                if protocol == Protocol::Http1 && *stage.borrow() >= Stage::Draining {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                phase.answered();
                Ok::<_, Infallible>(response)
            }
        })
    };
    let watch = Watch {
        protocol,
        phase: &phase,
        limits,
        stage,
    };
    let ended = match protocol {
        Protocol::Http1 => {
            let connection = shared.http1.serve_connection(io, service);
            drive(connection, |c| c.graceful_shutdown(), watch).await
        }
        Protocol::Http2 => {
            let connection = shared.http2.serve_connection(io, service);
            drive(connection, |c| c.graceful_shutdown(), watch).await
        }
    };
    if let Err(e) = ended {
        refusal(shared, &e);
        tracing::debug!(listener = shared.name, %peer, error = %e, "connection ended");
    }
}

/// What decides when a connection is asked to close.
struct Watch<'a> {
    protocol: Protocol,
    phase: &'a Phase,
    limits: Limits,
    stage: watch::Receiver<Stage>,
}

/// Polls `connection` to its end, closing it gracefully when the drain asks
/// (HTTP/2 at [`Stage::Draining`], HTTP/1.1 at [`Stage::Closing`]: until then
/// its responses say `Connection: close`) or, for HTTP/2, when it has been
/// idle too long. A connection asked to close gets `request_timeout` more.
async fn drive<C: Future<Output = hyper::Result<()>>>(
    connection: C,
    close_gracefully: impl FnOnce(Pin<&mut C>),
    watch: Watch<'_>,
) -> hyper::Result<()> {
    let Watch {
        protocol,
        phase,
        limits,
        mut stage,
    } = watch;
    let mut connection = pin!(connection);
    let close_at = match protocol {
        Protocol::Http1 => Stage::Closing,
        Protocol::Http2 => Stage::Draining,
    };
    let idle = async {
        match protocol {
            Protocol::Http2 => phase.idle_for(limits.idle_timeout).await,
            Protocol::Http1 => std::future::pending().await,
        }
    };
    let mut idle = pin!(idle);
    // hyper drops an HTTP/2 connection asked to close before its handshake,
    // with whatever request came with the preface: wait for the preface.
    let drained = async {
        reached(&mut stage, close_at).await;
        if protocol == Protocol::Http2 {
            phase.begun().await;
        }
    };
    tokio::select! {
        ended = connection.as_mut() => return ended,
        () = drained => {}
        () = idle.as_mut() => {}
    }
    close_gracefully(connection.as_mut());
    match tokio::time::timeout(limits.request_timeout, connection).await {
        Ok(ended) => ended,
        Err(_) => Ok(()),
    }
}

/// Counts a connection that ended on something the client did wrong.
fn refusal(shared: &Shared, error: &hyper::Error) {
    let (status, reason) = if error.is_parse_too_large() {
        ("431", "headers-too-large")
    } else if error.is_parse() || error.is_parse_version_h2() {
        ("400", "malformed-http")
    } else if timed_out(error) == Some(TimedOut::Headers) {
        ("none", "header-timeout")
    } else {
        return;
    };
    shared.metrics.refused(shared.name, status, reason);
}

/// What the connection's I/O timed out on, if that is how it ended.
fn timed_out(error: &hyper::Error) -> Option<TimedOut> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(what) = e.downcast_ref::<TimedOut>() {
            return Some(*what);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(what) = io.get_ref().and_then(|e| e.downcast_ref::<TimedOut>())
        {
            return Some(*what);
        }
        source = e.source();
    }
    None
}
