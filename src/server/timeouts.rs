//! The timeouts of a connection, as Go's `net/http` server keeps them, for
//! both protocols.
//!
//! - HTTP/1.1: between requests a kept-alive connection may wait `idle` for
//!   the next one; once a request has begun (or the connection is new), its
//!   headers must be complete within `header_read`.
//! - HTTP/2: the client preface must arrive within `header_read`; a
//!   connection with no stream in flight is idle, and the listener closes it
//!   gracefully (GOAWAY) after `idle` ([`Phase::idle_for`]). Frames such as
//!   PINGs do not make a connection busy.
//!
//! hyper's own header-read timeout also runs while a connection is idle, so
//! it would close kube-apiserver's kept-alive connections (its client keeps
//! them 90 s) after a few seconds, and every call after a pause would pay a
//! new TLS handshake: about ten times the CPU and latency of the call.
//!
//! Closing is lingering ([`Timed`]'s `poll_shutdown`): the write side is shut
//! first and what the client still sends is read and dropped for a moment, so
//! that a client still sending a body it was refused (413) reads the answer
//! instead of a connection reset.

use std::fmt;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Waiting for a request's headers (HTTP/1.1) or the preface (HTTP/2); a new
/// connection starts here.
const HEADERS: u64 = 0;
/// The service has at least one request; their own deadlines apply.
const HANDLING: u64 = 1;
/// Nothing in flight: waiting for the next request.
const IDLE: u64 = 2;
const STATE: u64 = 3;
/// Requests in flight, in bits 2..22.
const IN_FLIGHT_SHIFT: u32 = 2;
const IN_FLIGHT: u64 = ((1 << 20) - 1) << IN_FLIGHT_SHIFT;
/// Every change counts up in the bits above, so a timer is never left over
/// from an earlier phase.
const GENERATION: u64 = 1 << 22;

/// Longest a closing connection is drained of what the client still sends.
pub const LINGER: Duration = Duration::from_secs(2);
/// Most bytes drained from a closing connection.
pub const LINGER_BYTES: usize = 8 << 20;

/// The protocol a connection speaks, which decides what its reads mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Where a connection is, shared by its I/O ([`Timed`]) and its service.
#[derive(Clone, Debug)]
pub struct Phase(Arc<PhaseInner>);

#[derive(Debug)]
struct PhaseInner {
    word: AtomicU64,
    protocol: Protocol,
    /// Woken when an HTTP/2 connection becomes idle or busy.
    changed: Notify,
}

impl Phase {
    /// A new connection speaking `protocol`: its headers (or preface) are due.
    pub fn new(protocol: Protocol) -> Self {
        Self(Arc::new(PhaseInner {
            word: AtomicU64::new(HEADERS),
            protocol,
            changed: Notify::new(),
        }))
    }

    /// A request's headers are read: the service has it.
    pub fn handling(&self) {
        self.update(|word| {
            let in_flight = (word & IN_FLIGHT) >> IN_FLIGHT_SHIFT;
            Some(next(word, HANDLING, in_flight + 1))
        });
    }

    /// A request is answered; with none left in flight, the connection is idle.
    pub fn answered(&self) {
        self.update(|word| {
            let in_flight = ((word & IN_FLIGHT) >> IN_FLIGHT_SHIFT).saturating_sub(1);
            let state = if in_flight == 0 { IDLE } else { HANDLING };
            Some(next(word, state, in_flight))
        });
    }

    /// Resolves once the connection's first bytes (its request headers or
    /// HTTP/2 preface) have been read or a request has begun.
    pub async fn begun(&self) {
        loop {
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.word() & STATE != HEADERS || self.word() >= GENERATION {
                return;
            }
            changed.await;
        }
    }

    /// Resolves once the connection has had no request in flight for `idle`
    /// (the HTTP/2 idle timeout; HTTP/1.1's is [`Timed`]'s).
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let word = self.word();
            if word & STATE != IDLE {
                changed.await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(idle) => {
                    if self.word() & !STATE & !IN_FLIGHT == word & !STATE & !IN_FLIGHT {
                        return;
                    }
                }
                () = changed => {}
            }
        }
    }

    fn word(&self) -> u64 {
        self.0.word.load(Ordering::Acquire)
    }

    fn update(&self, f: impl FnMut(u64) -> Option<u64>) {
        let _ = self
            .0
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, f);
        if self.0.protocol == Protocol::Http2 {
            self.0.changed.notify_waiters();
        }
    }

    /// Bytes arrived: an HTTP/1.1 request begins, an HTTP/2 preface is in.
    fn bytes_read(&self) {
        let word = self.word();
        let to = match (self.0.protocol, word & STATE) {
            (Protocol::Http1, IDLE) => HEADERS,
            (Protocol::Http2, HEADERS) => IDLE,
            _ => return,
        };
        let from = word & STATE;
        self.update(|word| {
            (word & STATE == from).then(|| next(word, to, (word & IN_FLIGHT) >> IN_FLIGHT_SHIFT))
        });
    }
}

/// `word` moved to `state` with `in_flight` requests, one generation on.
fn next(word: u64, state: u64, in_flight: u64) -> u64 {
    ((word & !(STATE | IN_FLIGHT)).wrapping_add(GENERATION))
        | (in_flight << IN_FLIGHT_SHIFT & IN_FLIGHT)
        | state
}

/// What a connection timed out on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimedOut {
    /// A kept-alive HTTP/1.1 connection sent no new request in time.
    Idle,
    /// A request's headers (or the HTTP/2 preface) did not arrive in time.
    Headers,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimedOut::Idle => "idle connection timed out",
            TimedOut::Headers => "request headers not received in time",
        })
    }
}

impl std::error::Error for TimedOut {}

/// A connection's I/O, failing reads with `TimedOut` when the phase's time
/// is up, and lingering when it is shut down.
#[derive(Debug)]
pub struct Timed<T> {
    io: T,
    phase: Phase,
    idle: Duration,
    header_read: Duration,
    /// The phase word the timer runs for.
    armed: Option<u64>,
    timer: Pin<Box<Sleep>>,
    /// Bytes dropped while lingering; `None` until the write side is shut.
    lingered: Option<usize>,
}

impl<T> Timed<T> {
    /// `io`, with `idle` between requests and `header_read` for a request's headers.
    pub fn new(io: T, phase: Phase, idle: Duration, header_read: Duration) -> Self {
        Self {
            io,
            phase,
            idle,
            header_read,
            armed: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            lingered: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Timed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if let Poll::Ready(result) = Pin::new(&mut this.io).poll_read(cx, buf) {
            if buf.filled().len() > before {
                this.phase.bytes_read();
            }
            return Poll::Ready(result);
        }
        let word = this.phase.word();
        let (limit, what) = match (word & STATE, this.phase.0.protocol) {
            (HEADERS, _) => (this.header_read, TimedOut::Headers),
            (IDLE, Protocol::Http1) => (this.idle, TimedOut::Idle),
            _ => return Poll::Pending,
        };
        if this.armed != Some(word) {
            this.armed = Some(word);
            this.timer.as_mut().reset(Instant::now() + limit);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Timed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// Shuts the write side, then drops what the client still sends until it
    /// closes too, for at most [`LINGER`] and [`LINGER_BYTES`]: closing a
    /// socket with unread data resets it, and the client would lose the
    /// answer it has not read yet.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.lingered.is_none() {
            std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.lingered = Some(0);
            this.timer.as_mut().reset(Instant::now() + LINGER);
        }
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    let lingered = this.lingered.get_or_insert(0);
                    *lingered += buf.filled().len();
                    if *lingered >= LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn timed(phase: &Phase) -> (Timed<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(64);
        let io = Timed::new(
            server,
            phase.clone(),
            Duration::from_secs(60),
            Duration::from_secs(5),
        );
        (io, client)
    }

    /// Reads from `io` until it times out on `what`, `after` from `started`.
    async fn times_out(
        io: &mut Timed<tokio::io::DuplexStream>,
        started: Instant,
        after: u64,
        what: TimedOut,
    ) {
        let error = io.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            error.get_ref().and_then(|e| e.downcast_ref::<TimedOut>()),
            Some(&what)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(after));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_header_read_time() {
        for protocol in [Protocol::Http1, Protocol::Http2] {
            let phase = Phase::new(protocol);
            let (mut io, _client) = timed(&phase);
            times_out(&mut io, Instant::now(), 5, TimedOut::Headers).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_the_idle_time_then_headers_from_the_first_byte() {
        let phase = Phase::new(Protocol::Http1);
        let (mut io, mut client) = timed(&phase);
        phase.handling();
        phase.answered();
        let started = Instant::now();
        let waiting = tokio::spawn(async move {
            let mut buf = [0; 8];
            let n = io.read(&mut buf).await.unwrap();
            (io, n)
        });
        tokio::time::sleep(Duration::from_secs(50)).await;
        client.write_all(b"POST").await.unwrap();
        let (mut io, n) = waiting.await.unwrap();
        assert_eq!(n, 4);
        // Headers begun at 50 s: 5 s more, not what is left of the idle time.
        times_out(&mut io, started, 55, TimedOut::Headers).await;
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_close_after_the_idle_time() {
        let phase = Phase::new(Protocol::Http1);
        let (mut io, _client) = timed(&phase);
        phase.handling();
        phase.answered();
        times_out(&mut io, Instant::now(), 60, TimedOut::Idle).await;
    }

    #[tokio::test(start_paused = true)]
    async fn no_timeout_while_the_service_has_the_request() {
        let phase = Phase::new(Protocol::Http1);
        let (mut io, mut client) = timed(&phase);
        phase.handling();
        let reading = tokio::spawn(async move { io.read(&mut [0; 8]).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!reading.is_finished());
        client.write_all(b"{}").await.unwrap();
        reading.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn http2_preface_then_idle_by_streams_not_by_frames() {
        let phase = Phase::new(Protocol::Http2);
        let (mut io, mut client) = timed(&phase);
        let started = Instant::now();
        // The preface arrives: from then on only the idle timeout applies,
        // and it is the listener's (graceful), not the I/O's.
        client.write_all(b"PRI * HTTP/2.0").await.unwrap();
        assert!(io.read(&mut [0; 64]).await.unwrap() > 0);
        let idle = phase.clone();
        let idled = tokio::spawn(async move {
            idle.idle_for(Duration::from_secs(60)).await;
            Instant::now()
        });
        let reading = tokio::spawn(async move { io.read(&mut [0; 8]).await.map(|_| ()) });
        // A stream from 10 s to 30 s, PINGs all along: idle from 30 s.
        tokio::time::sleep(Duration::from_secs(10)).await;
        phase.handling();
        tokio::time::sleep(Duration::from_secs(20)).await;
        phase.answered();
        client.write_all(b"ping").await.unwrap();
        let idle_at = idled.await.unwrap();
        assert_eq!(idle_at - started, Duration::from_secs(90));
        assert!(
            reading.await.unwrap().is_ok(),
            "reads never time out once idle"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_streams_in_flight_keep_the_connection_busy() {
        let phase = Phase::new(Protocol::Http2);
        phase.bytes_read();
        phase.handling();
        phase.handling();
        phase.answered();
        let idle = phase.clone();
        let idled = tokio::spawn(async move { idle.idle_for(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!idled.is_finished(), "one stream is still in flight");
        phase.answered();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(idled.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn closing_drains_what_the_client_still_sends() {
        let phase = Phase::new(Protocol::Http1);
        let (mut io, mut client) = timed(&phase);
        let sender = tokio::spawn(async move {
            // More than the pipe holds: it only gets through if the server reads.
            client.write_all(&[b'x'; 4096]).await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            answer
        });
        io.write_all(b"413").await.unwrap();
        let started = Instant::now();
        io.shutdown().await.unwrap();
        // The client's end closed: no need to wait the whole linger.
        assert_eq!(sender.await.unwrap(), b"413");
        assert!(started.elapsed() < LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn lingering_is_bounded_in_time() {
        let phase = Phase::new(Protocol::Http1);
        let (mut io, _client) = timed(&phase);
        let started = Instant::now();
        io.shutdown().await.unwrap();
        assert_eq!(started.elapsed(), LINGER);
    }
}
