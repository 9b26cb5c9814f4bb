//! The circuit breaker in front of Redis: after `failures` consecutive connection failures
//! or timeouts, every operation is refused in-process for `cooldown`; then one probe goes
//! through (half-open) and its outcome closes or re-opens the circuit.
//!
//! Closed is the hot path: one atomic load to admit, one to note a success. Only failures
//! that say "Redis is unreachable or too slow" count; an error reply (`OOM`, a bad command)
//! means the server answered, so it resets the count like a success.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

tokio::task_local! {
    /// Set while one call's many operations run (a batch's reads, leases, tags and stores):
    /// however many of them fail, they count as one failure towards the breaker, as the
    /// one call they are. A batch of thousands of keys whose stores outlast its `timeout`
    /// is one slow call, not a Redis that is down for everyone.
    static ONE_CALL: Cell<Group>;
}

#[derive(Clone, Copy)]
enum Group {
    /// Not part of a call's group (its body's own cache calls count as theirs).
    Apart,
    /// A group that has not failed yet.
    Clean,
    /// A group whose failure has been counted.
    Counted,
}

/// Runs `f` with the failures of its operations counted once, as one call's.
pub(crate) fn as_one_call<F: Future>(f: F) -> impl Future<Output = F::Output> {
    ONE_CALL.scope(Cell::new(Group::Clean), f)
}

/// Runs `f` (a body) outside its caller's group: its own cache calls count as usual.
pub(crate) fn apart<F: Future>(f: F) -> impl Future<Output = F::Output> {
    ONE_CALL.scope(Cell::new(Group::Apart), f)
}

/// Is this failure its group's second (or later)? Marks the group as counted. Only
/// failures ask.
#[cold]
fn counted_already() -> bool {
    ONE_CALL
        .try_with(|group| match group.get() {
            Group::Clean => {
                group.set(Group::Counted);
                false
            }
            Group::Counted => true,
            Group::Apart => false,
        })
        .unwrap_or(false)
}

/// Where the breaker stands, as reported by [`Stats::breaker`](crate::Stats::breaker).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BreakerState {
    /// Operations go to Redis.
    #[default]
    Closed,
    /// Operations are refused without touching the network until the cool-down ends.
    Open,
    /// One probe operation is testing whether Redis is back.
    HalfOpen,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    epoch: Instant,
    state: AtomicU8,
    failures: AtomicU32,
    /// Milliseconds after `epoch` when an open circuit lets a probe through.
    retry_at: AtomicU64,
    pub(crate) opened: AtomicU64,
    pub(crate) skipped: AtomicU64,
    /// Bumped by [`forgive`](Breaker::forgive): a failure of an operation admitted before
    /// it was the forgiven entry's doing too (a read queued behind its reply), and counts
    /// for nothing.
    pardons: AtomicU32,
    /// When the last pardon was, in ms after `epoch` (plus one; 0 for never): for one
    /// cool-down after it, failures count for nothing either, as the connection drains
    /// what was queued behind the forgiven entry's reply.
    pardoned_at: AtomicU64,
}

/// Permission to run one operation. A probe that is dropped without an outcome (its future
/// was cancelled) re-opens the circuit with no cool-down, so the next call probes again.
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
    pardons: u32,
}

impl Breaker {
    /// `threshold` is at least 1: the builder refuses 0 (`BREAKER_FAILURES` in
    /// `cache-aside-settings`).
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        debug_assert!(threshold >= 1);
        Breaker {
            threshold,
            cooldown,
            epoch: Instant::now(),
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            retry_at: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            pardons: AtomicU32::new(0),
            pardoned_at: AtomicU64::new(0),
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Relaxed) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch
            .elapsed()
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// `None`: the circuit is open, skip Redis.
    pub(crate) fn admit(&self) -> Option<Permit<'_>> {
        let probe = match self.state.load(Relaxed) {
            CLOSED => false,
            OPEN if self.now_ms() >= self.retry_at.load(Relaxed) => self
                .state
                .compare_exchange(OPEN, HALF_OPEN, Relaxed, Relaxed)
                .is_ok(),
            _ => false,
        };
        if !probe && self.state.load(Relaxed) != CLOSED {
            self.skipped.fetch_add(1, Relaxed);
            return None;
        }
        Some(Permit {
            breaker: self,
            probe,
            done: false,
            pardons: self.pardons.load(Relaxed),
        })
    }

    /// The failures were one entry's doing (too large to read within the timeout), and it
    /// is gone: close the circuit and clear the streak, so the other keys go back to Redis
    /// at once rather than after the cool-down.
    pub(crate) fn forgive(&self) {
        self.pardons.fetch_add(1, Relaxed);
        self.pardoned_at.store(self.now_ms() + 1, Relaxed);
        self.failures.store(0, Relaxed);
        if self.state.swap(CLOSED, Relaxed) != CLOSED {
            tracing::info!("cache-aside: the oversized entry is deleted; circuit closed");
        }
    }

    /// Is a failure of an operation admitted at pardon count `pardons` forgiven? Read only
    /// on failures: the hit path never comes here.
    #[cold]
    fn pardoned(&self, pardons: u32) -> bool {
        if pardons != self.pardons.load(Relaxed) {
            return true;
        }
        let at = self.pardoned_at.load(Relaxed);
        at != 0 && self.now_ms() < (at - 1).saturating_add(self.cooldown.as_millis() as u64)
    }

    fn open(&self, from: u8, cooldown: Duration) {
        // Only from `from`: a late failure of an operation admitted before the circuit
        // opened must not push the cool-down out (the probe would come late).
        if self.state.load(Relaxed) != from {
            return;
        }
        let retry_at = self.now_ms().saturating_add(cooldown.as_millis() as u64);
        self.retry_at.store(retry_at, Relaxed);
        if self
            .state
            .compare_exchange(from, OPEN, Relaxed, Relaxed)
            .is_ok()
            && from == CLOSED
        {
            self.opened.fetch_add(1, Relaxed);
            tracing::warn!(
                failures = self.threshold,
                cooldown = ?self.cooldown,
                "cache-aside: Redis unreachable; circuit open, calls skip the cache"
            );
        }
    }
}

impl Permit<'_> {
    /// Records the operation's outcome: `reachable` is false for connection failures and
    /// timeouts.
    pub(crate) fn record(mut self, reachable: bool) {
        self.done = true;
        let b = self.breaker;
        if !reachable && b.pardoned(self.pardons) {
            return;
        }
        match (self.probe, reachable) {
            (true, true) => {
                b.failures.store(0, Relaxed);
                b.state.store(CLOSED, Relaxed);
                tracing::info!("cache-aside: Redis reachable again; circuit closed");
            }
            (true, false) => b.open(HALF_OPEN, b.cooldown),
            (false, true) => {
                if b.failures.load(Relaxed) != 0 {
                    b.failures.store(0, Relaxed);
                }
            }
            (false, false) => {
                if counted_already() {
                    return;
                }
                if b.failures.fetch_add(1, Relaxed) + 1 >= b.threshold {
                    b.open(CLOSED, b.cooldown);
                }
            }
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.done {
            self.breaker.open(HALF_OPEN, Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_failure_does_not_push_the_cooldown_out() {
        let b = Breaker::new(1, Duration::from_millis(1_000));
        let late = b.admit().unwrap();
        b.admit().unwrap().record(false);
        assert_eq!(b.state(), BreakerState::Open);
        let retry_at = b.retry_at.load(Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        late.record(false);
        assert_eq!(b.retry_at.load(Relaxed), retry_at, "the cool-down stands");
    }

    #[tokio::test]
    async fn a_call_counts_its_failures_once_and_its_body_apart() {
        let b = Breaker::new(3, Duration::from_secs(60));
        as_one_call(async {
            for _ in 0..10 {
                b.admit().unwrap().record(false);
            }
            apart(async { b.admit().unwrap().record(false) }).await;
        })
        .await;
        assert_eq!(
            b.failures.load(Relaxed),
            2,
            "the call's ten, and its body's"
        );
        assert_eq!(b.state(), BreakerState::Closed);
        b.admit().unwrap().record(false);
        assert_eq!(b.state(), BreakerState::Open, "three calls failed");
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_and_closes() {
        let b = Breaker::new(3, Duration::ZERO);
        for _ in 0..2 {
            b.admit().unwrap().record(false);
        }
        b.admit().unwrap().record(true);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a success resets the count"
        );
        for _ in 0..3 {
            b.admit().unwrap().record(false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.opened.load(Relaxed), 1);
        // Cool-down of zero: the next call is the probe; others are refused meanwhile.
        let probe = b.admit().expect("probe admitted");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit().is_none());
        assert_eq!(b.skipped.load(Relaxed), 1);
        probe.record(false);
        assert_eq!(b.state(), BreakerState::Open, "a failed probe re-opens");
        b.admit().unwrap().record(true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(
            b.opened.load(Relaxed),
            1,
            "re-opening from half-open is one outage"
        );
    }

    #[test]
    fn forgiving_closes_an_open_circuit_and_clears_the_streak() {
        let b = Breaker::new(2, Duration::from_secs(3600));
        for _ in 0..2 {
            b.admit().unwrap().record(false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        b.forgive();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit().is_some(), "admitted before the cool-down ends");
        // Failures of operations admitted before the pardon, and for one cool-down after
        // it, count for nothing: the connection is draining what queued behind the entry.
        let early = b.admit().unwrap();
        b.forgive();
        early.record(false);
        for _ in 0..3 {
            b.admit().unwrap().record(false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // After that cool-down (none here), failures count again, from zero.
        let quick = Breaker::new(2, Duration::ZERO);
        quick.admit().unwrap().record(false);
        quick.forgive();
        quick.admit().unwrap().record(false);
        assert_eq!(
            quick.state(),
            BreakerState::Closed,
            "the streak started again"
        );
        quick.admit().unwrap().record(false);
        assert_eq!(quick.state(), BreakerState::Open);
    }

    #[test]
    fn open_circuit_refuses_until_the_cooldown_ends() {
        let b = Breaker::new(1, Duration::from_secs(3600));
        b.admit().unwrap().record(false);
        assert!(b.admit().is_none());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_cancelled_probe_lets_the_next_call_probe() {
        let b = Breaker::new(1, Duration::ZERO);
        b.admit().unwrap().record(false);
        drop(b.admit().expect("probe"));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_some(), "no cool-down after a cancelled probe");
    }
}
