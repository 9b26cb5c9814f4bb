//! Every observable event of the engine goes through [`Events`]: it feeds the counters of
//! [`Stats`](crate::Stats) and the logs (every failure at `debug`, a rate-limited `warn`).
//! Stage code says what happened (`events.hit()`, `events.failed(..)`) and never bumps a
//! counter or writes a log line of its own, so metrics and per-function labels can later be
//! added here, in one place.
//!
//! The hit path's event, [`Events::hit`], is one striped add (see `stats::Striped`);
//! everything else is off the hit path.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::SystemTime;

use crate::backend::BreakerFigures;
use crate::envelope::unix_ms;
use crate::error::{Chain, Error};
use crate::report::Reporter;
use crate::stats::{Counters, Stats};

/// One cache's counters and log.
#[derive(Default)]
pub(crate) struct Events {
    counters: Counters,
    reporter: Reporter,
}

/// Failures that happen before there is a cache to count them in: no default cache set.
static UNCACHED: Reporter = Reporter::new();

/// A call that found no cache to use.
pub(crate) fn uncached(op: &'static str, error: &Error) {
    UNCACHED.report(op, "", error);
}

impl Events {
    /// A snapshot of the counters, with the backend's breaker figures.
    pub(crate) fn snapshot(&self, breaker: BreakerFigures) -> Stats {
        self.counters.snapshot(breaker)
    }

    /// A call answered from the cache.
    #[inline]
    pub(crate) fn hit(&self) {
        self.counters.hits.bump();
    }

    /// A hit on an expired entry within `stale`, served while a refresh runs.
    pub(crate) fn served_stale(&self) {
        Counters::bump(&self.counters.stale_served);
    }

    /// A call that found nothing usable.
    pub(crate) fn miss(&self) {
        Counters::bump(&self.counters.misses);
    }

    /// An entry that does not decode: a miss, overwritten by the load.
    #[cold]
    pub(crate) fn corrupt(&self, key: &str, error: &Error) {
        let error = Chain(error);
        tracing::debug!(key, %error, "cache-aside: corrupt entry; reloading");
        Counters::bump(&self.counters.corrupt);
    }

    /// A miss that waited for another caller's load of its key in this process.
    pub(crate) fn waited(&self) {
        Counters::bump(&self.counters.waited);
    }

    /// A wait for another caller's load that reached `flight_wait`.
    #[cold]
    pub(crate) fn flight_timeout(&self, key: &str) {
        Counters::bump(&self.counters.flight_timeouts);
        tracing::debug!(
            key,
            "cache-aside: the load this call waited for is taking longer than flight_wait; loading without it"
        );
    }

    /// A body run because of a miss, in the caller or as a refresh.
    pub(crate) fn load(&self) {
        Counters::bump(&self.counters.loads);
    }

    /// A call whose body failed answered with the kept value, as a waiter of that load.
    pub(crate) fn fail_safe(&self) {
        Counters::bump(&self.counters.stale_served);
        Counters::bump(&self.counters.fail_safe);
    }

    /// A call whose body failed, answered with the kept value.
    pub(crate) fn fail_safe_answered(&self, key: &str) {
        self.fail_safe();
        tracing::debug!(
            key,
            "cache-aside: body failed; fail-safe serves the kept value"
        );
    }

    /// A kept entry marked fresh for the back-off.
    pub(crate) fn backing_off(&self, key: &str, until: SystemTime) {
        tracing::trace!(key, until = unix_ms(until), "cache-aside: backing off");
    }

    /// A miss that found another process holding its key's lock.
    pub(crate) fn lock_wait(&self) {
        Counters::bump(&self.counters.lock_waits);
    }

    /// A lock wait that reached `lock_wait`: the call loads without the lock.
    #[cold]
    pub(crate) fn lock_timeout(&self, key: &str) {
        Counters::bump(&self.counters.lock_timeouts);
        tracing::debug!(key, "cache-aside: lock wait ran out; loading without it");
    }

    /// A load's lease was revoked while it ran: its value is not stored.
    #[cold]
    pub(crate) fn fill_dropped(&self, key: &str) {
        Counters::bump(&self.counters.fills_dropped);
        tracing::debug!(
            key,
            "cache-aside: invalidated while loading; the value is not stored"
        );
    }

    /// The lock expired or was taken while this process loaded under it.
    #[cold]
    pub(crate) fn lock_lost(&self, lock: &str) {
        tracing::warn!(
            lock,
            "cache-aside: lease expired or was taken while loading; the value will not be stored"
        );
    }

    /// A value larger than `max_value_bytes`: returned, not stored.
    #[cold]
    pub(crate) fn oversized_value(&self, key: &str, bytes: usize) {
        Counters::bump(&self.counters.oversized);
        tracing::debug!(
            key,
            bytes,
            "cache-aside: value above max_value_bytes; not stored"
        );
    }

    /// An entry larger than `max_value_bytes` found (someone else wrote it): a miss.
    #[cold]
    pub(crate) fn oversized_entry(&self, key: &str) {
        Counters::bump(&self.counters.oversized);
        tracing::debug!(
            key,
            "cache-aside: an entry over max_value_bytes is there; reading it as a miss"
        );
    }

    /// An entry over `max_value_bytes` whose reads timed out, deleted by a size check.
    #[cold]
    pub(crate) fn huge_entry_deleted(&self, key: &str, bytes: u64) {
        tracing::warn!(
            key,
            bytes,
            "cache-aside: an entry over max_value_bytes made its reads time out; deleted it"
        );
    }

    /// A value the codec would not give back exactly: returned, never stored. Logged once
    /// per function (`warned` is the function's flag).
    #[cold]
    pub(crate) fn unstorable(&self, function: &str, warned: &AtomicBool, key: &str) {
        Counters::bump(&self.counters.unstorable);
        if !warned.swap(true, Relaxed) {
            tracing::warn!(
                function,
                key,
                "cache-aside: a returned value would not read back exactly from JSON (NaN, \
                 infinity, Some(None) inside it, or an untagged enum); such values are returned \
                 but not cached (stats().unstorable); logged once per function"
            );
        }
    }

    /// A write that failed or was refused (also a failure, reported by [`failed`](Self::failed)).
    pub(crate) fn store_failed(&self) {
        Counters::bump(&self.counters.store_errors);
    }

    /// A `#[cache_put]` write went through.
    pub(crate) fn put(&self) {
        Counters::bump(&self.counters.puts);
    }

    /// A `#[cache_evict]` target removed.
    pub(crate) fn evicted(&self) {
        Counters::bump(&self.counters.evictions);
    }

    /// A background refresh started.
    pub(crate) fn refresh_started(&self) {
        Counters::bump(&self.counters.refreshes);
    }

    /// A background refresh not started: `max_refreshes` are running.
    pub(crate) fn refresh_dropped(&self) {
        Counters::bump(&self.counters.refreshes_dropped);
    }

    /// A background refresh whose body failed or panicked.
    pub(crate) fn refresh_failed(&self) {
        Counters::bump(&self.counters.refresh_failures);
    }

    /// A background refresh whose body failed: the kept entry backs off.
    pub(crate) fn refresh_backing_off(&self, key: &str) {
        tracing::debug!(key, "cache-aside: background refresh failed; backing off");
    }

    /// A cache operation that failed; the call goes on without it.
    #[cold]
    pub(crate) fn failed(&self, op: &'static str, key: &str, error: &Error) {
        Counters::bump(&self.counters.errors);
        self.reporter.report(op, key, error);
    }
}
