//! What the webhook holds at once, bounded so that no client can take the
//! process to its memory limit or its async workers away from others:
//!
//! - **Body bytes**: every request body being read reserves its bytes (its
//!   `Content-Length` up front, else as it grows) from one budget, and gives
//!   them back when the request is answered. Large bodies (over
//!   [`Limits::large_body_bytes`]) may use only the budget minus a quarter
//!   kept for small ones, so ordinary requests are still read while large
//!   ones hold all they may.
//! - **Large decisions**: reading a large body into a pod view and deciding
//!   on it costs CPU and memory in proportion to its size, so large bodies are
//!   decided a few at a time ([`Limits::max_large_decisions`]), on threads of
//!   their own, never on the async workers that serve small requests. Always
//!   the same threads: the memory one decision frees is reused by the next
//!   (a new thread would get a malloc arena of its own, and keep it).
//!
//! A request that cannot get its bytes, or waits too long for a decision
//! slot, is answered 503 with `Retry-After`, and counted.
//!
//! The bytes held are the `eci_profile_buffered_request_bytes` gauge itself:
//! reserving is one atomic add (and a subtraction when it does not fit),
//! releasing one atomic subtraction.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Limits;
use crate::metrics::Metrics;

/// Longest a large body waits for a decision slot (its request's deadline
/// may cut it shorter): a few large decisions in a row, not a queue that
/// outlives the API server's patience (its timeout is a few seconds).
pub const DECISION_WAIT: Duration = Duration::from_secs(1);

/// The body bytes and decision slots the webhook shares among its requests.
pub struct Budget {
    /// Bytes held: the gauge doubles as the counter.
    held: Gauge,
    /// What all bodies may hold together.
    total: i64,
    /// What large bodies may hold together with everything else.
    large_total: i64,
    /// Bodies up to this size are small.
    large_body: usize,
    decisions: Arc<Semaphore>,
    decisions_in_flight: Gauge,
    /// Work for the decision threads, started with the first large body;
    /// they stop when the budget is dropped.
    deciders: OnceLock<Sender<Job>>,
    slots: usize,
}

type Job = Box<dyn FnOnce() + Send>;

impl Budget {
    /// The budget `limits` set, reported in `metrics`.
    pub fn new(limits: &Limits, metrics: &Metrics) -> Self {
        let total = i64::try_from(limits.max_buffered_bytes).unwrap_or(i64::MAX);
        let slots = limits.max_large_decisions.max(1);
        Self {
            held: metrics.buffered_request_bytes.clone(),
            total,
            large_total: i64::try_from(limits.large_bodies_share()).unwrap_or(i64::MAX),
            large_body: limits.large_body_bytes,
            decisions: Arc::new(Semaphore::new(slots)),
            decisions_in_flight: metrics.large_decisions_in_flight.clone(),
            deciders: OnceLock::new(),
            slots,
        }
    }

    /// Whether a body of `bytes` is large: held within the large share and
    /// decided on the decision threads.
    pub fn is_large(&self, bytes: usize) -> bool {
        bytes > self.large_body
    }

    /// Reserves `bytes` for a body; `None` when they do not fit.
    pub fn reserve(&self, bytes: usize) -> Option<Reservation<'_>> {
        let mut reservation = Reservation {
            budget: self,
            bytes: 0,
        };
        reservation.cover(bytes).then_some(reservation)
    }

    /// Bytes held now.
    pub fn held(&self) -> i64 {
        self.held.get()
    }

    /// Adds `more` to what is held if the result fits what a body of
    /// `body` bytes may hold.
    fn take(&self, more: usize, body: usize) -> bool {
        let more = i64::try_from(more).unwrap_or(i64::MAX);
        let limit = match self.is_large(body) {
            true => self.large_total,
            false => self.total,
        };
        let before = self.held.inc_by(more);
        if before.saturating_add(more) > limit {
            self.held.dec_by(more);
            return false;
        }
        true
    }

    fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.held.dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// A decision slot for a large body, waiting at most `wait`.
    pub async fn decision_slot(&self, wait: Duration) -> Option<DecisionSlot> {
        let permit = tokio::time::timeout(wait, self.decisions.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        self.decisions_in_flight.inc();
        Some(DecisionSlot {
            _permit: permit,
            in_flight: self.decisions_in_flight.clone(),
        })
    }
}

impl Budget {
    /// Runs `job` on a decision thread (hold a [`DecisionSlot`] first: with
    /// one, a thread is free), inside the caller's span and with its log
    /// subscriber; `None` if it panicked.
    pub async fn on_decision_thread<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let logs = tracing::dispatcher::get_default(Clone::clone);
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            let done = tracing::dispatcher::with_default(&logs, || span.in_scope(job));
            let _ = answer.send(done);
        });
        let deciders = self.deciders.get_or_init(|| start_deciders(self.slots));
        deciders.send(job).ok()?;
        answered.await.ok()
    }
}

/// Starts `count` decision threads; they stop when the sender is dropped.
fn start_deciders(count: usize) -> Sender<Job> {
    let (deciders, jobs) = std::sync::mpsc::channel();
    let jobs = Arc::new(Mutex::new(jobs));
    for _ in 0..count {
        let jobs = jobs.clone();
        std::thread::Builder::new()
            .name("large-decisions".into())
            .spawn(move || decide_until_closed(&jobs))
            .expect("cannot start a decision thread");
    }
    deciders
}

/// A decision thread: runs jobs until the budget is gone.
fn decide_until_closed(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A panic is the job's answer (none); the thread stays.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

/// Body bytes held by a request; given back when dropped.
pub struct Reservation<'a> {
    budget: &'a Budget,
    bytes: usize,
}

impl Reservation<'_> {
    /// Grows the reservation to at least `bytes`; `false` (and unchanged)
    /// when that does not fit.
    pub fn cover(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        if !self.budget.take(bytes - self.bytes, bytes) {
            return false;
        }
        self.bytes = bytes;
        true
    }

    /// Bytes reserved.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The same reservation, movable to another thread.
    pub fn into_owned(self, budget: Arc<Budget>) -> OwnedReservation {
        let mut moved = self;
        let bytes = std::mem::take(&mut moved.bytes);
        OwnedReservation { budget, bytes }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// A [`Reservation`] that owns its budget.
pub struct OwnedReservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for OwnedReservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// The right to decide on a large body; given back when dropped.
pub struct DecisionSlot {
    _permit: OwnedSemaphorePermit,
    in_flight: Gauge,
}

impl Drop for DecisionSlot {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// Makes the allocator give large buffers back to the system when freed.
///
/// glibc's malloc raises its mmap threshold to the size of the largest
/// buffer freed (up to 32 MiB), after which large bodies are carved from
/// per-thread arenas that keep the memory once it is freed: under a stream of
/// large bodies, resident memory then grows with the number of threads, not
/// with the budget. A fixed threshold at the large-body size keeps every
/// large body in its own mapping, returned on free. (musl's malloc, that of
/// the container image, always does so.)
pub fn tune_allocator(limits: &Limits) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let threshold = i32::try_from(limits.large_body_bytes).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets a malloc parameter; any value is valid.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = limits;
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    fn budget(total: usize, large_body: usize, decisions: usize) -> (Budget, Metrics) {
        let metrics = Metrics::default();
        let limits = Limits {
            max_buffered_bytes: total,
            large_body_bytes: large_body,
            max_large_decisions: decisions,
            ..Limits::default()
        };
        (Budget::new(&limits, &metrics), metrics)
    }

    #[test]
    fn reserves_and_gives_back() {
        let (budget, metrics) = budget(1024 * KIB, 64 * KIB, 1);
        let a = budget.reserve(10 * KIB).unwrap();
        let b = budget.reserve(300 * KIB).unwrap();
        assert_eq!(budget.held(), 310 * KIB as i64);
        assert!(
            metrics
                .encode()
                .contains(&format!("eci_profile_buffered_request_bytes {}", 310 * KIB))
        );
        drop(a);
        assert_eq!(budget.held(), 300 * KIB as i64);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn refuses_what_does_not_fit_and_keeps_the_rest() {
        // 1 MiB in all; large bodies may hold 768 KiB.
        let (budget, _) = budget(1024 * KIB, 64 * KIB, 1);
        let first = budget.reserve(500 * KIB).unwrap();
        assert!(budget.reserve(300 * KIB).is_none());
        // A refusal takes nothing.
        assert_eq!(budget.held(), 500 * KIB as i64);
        let second = budget.reserve(268 * KIB).unwrap();
        assert!(budget.reserve(65 * KIB).is_none());
        drop(first);
        assert!(budget.reserve(300 * KIB).is_some());
        drop(second);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn small_bodies_have_a_reserve_large_ones_cannot_take() {
        let (budget, _) = budget(1024 * KIB, 64 * KIB, 1);
        let mut large = Vec::new();
        while let Some(r) = budget.reserve(100 * KIB) {
            large.push(r);
        }
        // Large bodies stop at 768 KiB.
        assert_eq!(large.len(), 7);
        // Small bodies still get the rest, up to the whole budget.
        let mut small = Vec::new();
        while let Some(r) = budget.reserve(64 * KIB) {
            small.push(r);
        }
        assert_eq!(small.len(), (1024 - 700) / 64);
        assert!(budget.reserve(5 * KIB).is_none());
        drop(small);
        drop(large);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_growing_body_becomes_large() {
        let (budget, _) = budget(1024 * KIB, 64 * KIB, 1);
        let _small = budget.reserve(200 * KIB).unwrap();
        let mut growing = budget.reserve(0).unwrap();
        assert!(growing.cover(64 * KIB));
        assert!(growing.cover(32 * KIB), "never shrinks");
        assert_eq!(growing.bytes(), 64 * KIB);
        // 200 + 568 = 768 KiB: the large share.
        assert!(growing.cover(568 * KIB));
        assert!(!growing.cover(569 * KIB));
        assert_eq!(growing.bytes(), 568 * KIB);
        assert_eq!(budget.held(), 768 * KIB as i64);
    }

    #[test]
    fn owned_reservations_give_back_to_their_budget() {
        let metrics = Metrics::default();
        let limits = Limits {
            max_buffered_bytes: 1024 * KIB,
            ..Limits::default()
        };
        let budget = Arc::new(Budget::new(&limits, &metrics));
        let owned = budget
            .reserve(300 * KIB)
            .unwrap()
            .into_owned(budget.clone());
        assert_eq!(budget.held(), 300 * KIB as i64);
        std::thread::spawn(move || drop(owned)).join().unwrap();
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn large_decisions_run_on_the_same_thread_of_their_own() {
        let (budget, _) = budget(1024 * KIB, 64 * KIB, 1);
        let thread = || std::thread::current().id();
        let first = budget.on_decision_thread(thread).await.unwrap();
        assert_ne!(first, thread());
        assert_eq!(budget.on_decision_thread(thread).await, Some(first));
        let panicked = budget.on_decision_thread(|| panic!("a bug")).await;
        assert_eq!(panicked, None::<()>);
        assert_eq!(budget.on_decision_thread(thread).await, Some(first));
    }

    #[tokio::test]
    async fn large_decisions_take_turns() {
        let (budget, metrics) = budget(1024 * KIB, 64 * KIB, 2);
        let a = budget.decision_slot(Duration::ZERO).await.unwrap();
        let _b = budget.decision_slot(Duration::ZERO).await.unwrap();
        assert!(
            metrics
                .encode()
                .contains("eci_profile_large_decisions_in_flight 2")
        );
        assert!(
            budget
                .decision_slot(Duration::from_millis(20))
                .await
                .is_none()
        );
        drop(a);
        assert!(budget.decision_slot(Duration::ZERO).await.is_some());
        assert!(
            metrics
                .encode()
                .contains("eci_profile_large_decisions_in_flight 1")
        );
    }
}
