//! The timeouts of an HTTP/1.1 connection, as Go's `net/http` server keeps
//! them: between requests a kept-alive connection may wait `idle` for the
//! next one; once a request has begun (or the connection is new), its
//! headers must be complete within `header_read`.
//!
//! hyper's own header-read timeout also runs while a connection is idle, so
//! it would close kube-apiserver's kept-alive connections (its client keeps
//! them 90 s) after a few seconds, and every call after a pause would pay a
//! new TLS handshake: about ten times the CPU and latency of the call.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Reading a request's headers (a new connection starts here).
const HEADERS: u32 = 0;
/// The service has the request; its own deadline applies.
const HANDLING: u32 = 1;
/// Answered: waiting for the next request.
const IDLE: u32 = 2;

/// Where an HTTP/1.1 connection is, shared by its I/O ([`Timed`]) and its
/// service. Each change also counts up, so a timer is never left over from an
/// earlier request.
#[derive(Clone, Debug, Default)]
pub struct Phase(Arc<AtomicU32>);

impl Phase {
    /// The request's headers are read: the service has it.
    pub fn handling(&self) {
        self.set(HANDLING);
    }

    /// The request is answered: the connection waits for the next one.
    pub fn idle(&self) {
        self.set(IDLE);
    }

    fn set(&self, phase: u32) {
        let state = self.0.load(Ordering::Relaxed);
        self.0
            .store((state & !3).wrapping_add(4) | phase, Ordering::Relaxed);
    }

    fn state(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A connection's I/O, failing reads with `TimedOut` when the phase's time is up.
#[derive(Debug)]
pub struct Timed<T> {
    io: T,
    phase: Phase,
    idle: Duration,
    header_read: Duration,
    /// The phase state the timer runs for.
    armed: Option<u32>,
    timer: Pin<Box<Sleep>>,
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
            if buf.filled().len() > before && this.phase.state() & 3 == IDLE {
                // The next request has begun.
                this.phase.set(HEADERS);
            }
            return Poll::Ready(result);
        }
        let state = this.phase.state();
        let limit = match state & 3 {
            IDLE => this.idle,
            HEADERS => this.header_read,
            _ => return Poll::Pending,
        };
        if this.armed != Some(state) {
            this.armed = Some(state);
            this.timer.as_mut().reset(Instant::now() + limit);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                if state & 3 == IDLE {
                    "idle connection timed out"
                } else {
                    "request headers not received in time"
                },
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Timed<T> {
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

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
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

    /// Reads from `io` until it times out, `after` from `started`.
    async fn times_out(io: &mut Timed<tokio::io::DuplexStream>, started: Instant, after: u64) {
        let error = io.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(after));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_header_read_time() {
        let phase = Phase::default();
        let (mut io, _client) = timed(&phase);
        times_out(&mut io, Instant::now(), 5).await;
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_the_idle_time_then_headers_from_the_first_byte() {
        let phase = Phase::default();
        let (mut io, mut client) = timed(&phase);
        phase.handling();
        phase.idle();
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
        times_out(&mut io, started, 55).await;
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_close_after_the_idle_time() {
        let phase = Phase::default();
        let (mut io, _client) = timed(&phase);
        phase.idle();
        times_out(&mut io, Instant::now(), 60).await;
    }

    #[tokio::test(start_paused = true)]
    async fn no_timeout_while_the_service_has_the_request() {
        let phase = Phase::default();
        let (mut io, mut client) = timed(&phase);
        phase.handling();
        let reading = tokio::spawn(async move { io.read(&mut [0; 8]).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!reading.is_finished());
        client.write_all(b"{}").await.unwrap();
        reading.await.unwrap().unwrap();
    }
}
