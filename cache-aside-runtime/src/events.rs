//! Every observable event of the engine goes through [`Events`]: it feeds the counters of
//! [`Stats`](crate::Stats), cache-wide and per function, and the logs (every failure at
//! `debug`, a rate-limited `warn`). Stage code says what happened, for which function
//! (`events.of(spec).hit()`, `events.of(spec).failed(..)`), and never bumps a counter or
//! writes a log line of its own, so metrics can later be added here, in one place.
//!
//! A function's counters for a cache live in its spec when it is the first cache the
//! function counted in (the common case: one cache per process), found with one load and
//! compare; for another cache, in that cache's list, behind a lock. The hit path's event,
//! [`Scoped::hit`], is two striped adds (see `stats::Striped`); everything else is off the
//! hit path.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::backend::BreakerFigures;
use crate::envelope::unix_ms;
use crate::error::{Chain, Error};
use crate::report::{Reporter, key_prefix};
use crate::spec::FnCounters;
use crate::spec::FnSpec;
use crate::stats::{Counters, FunctionStats, Stats};

/// One cache's counters and log.
pub(crate) struct Events {
    /// The cache's id: which function counters in a spec are this cache's.
    id: u64,
    /// The cache's namespace, for the `metrics` feature's labels.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    namespace: String,
    /// Whether calls record their time (feature `metrics`).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    timed: bool,
    counters: Counters,
    reporter: Reporter,
    /// Every function that counted here, with its counters.
    functions: Mutex<Vec<(&'static FnSpec, Arc<FnCounters>)>>,
}

/// The events of one function's calls: they count for the cache and for the function.
pub(crate) struct Scoped<'a> {
    events: &'a Events,
    spec: &'static FnSpec,
    function: FunctionCounters<'a>,
}

enum FunctionCounters<'a> {
    /// In the spec: the function's first cache.
    InSpec(&'a FnCounters),
    /// In the cache's list.
    Listed(Arc<FnCounters>),
}

impl std::ops::Deref for FunctionCounters<'_> {
    type Target = FnCounters;

    #[inline]
    fn deref(&self) -> &FnCounters {
        match self {
            FunctionCounters::InSpec(c) => c,
            FunctionCounters::Listed(c) => c,
        }
    }
}

/// Records a call's outcome in its `cache_aside.call` span, when one is being traced (a
/// batch records its own once every key is decided).
#[inline]
pub(crate) fn outcome(outcome: &'static str) {
    if tracing::level_enabled!(tracing::Level::TRACE) {
        tracing::Span::current().record("outcome", outcome);
    }
}

/// Failures that happen before there is a cache to count them in: no default cache set.
static UNCACHED: Reporter = Reporter::new();

/// A call that found no cache to use.
pub(crate) fn uncached(op: &'static str, error: &Error) {
    UNCACHED.report(op, "", error);
}

impl Events {
    pub(crate) fn new(id: u64, namespace: &str, timed: bool) -> Events {
        Events {
            id,
            namespace: namespace.to_owned(),
            timed,
            counters: Counters::default(),
            reporter: Reporter::new(),
            functions: Mutex::new(Vec::new()),
        }
    }

    /// A snapshot of the counters, with the backend's breaker figures.
    pub(crate) fn snapshot(&self, breaker: BreakerFigures) -> Stats {
        let mut stats = self.counters.snapshot(breaker);
        // Each function's hits at its own load time, not the cache's mix of them.
        let functions = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        stats.time_saved_us = functions
            .iter()
            .map(|(_, c)| c.saved())
            .fold(0, u64::saturating_add);
        stats
    }

    /// A snapshot per function: the specs that are one function's (its wrapper's and its
    /// companions') summed, in the order they first counted.
    pub(crate) fn snapshot_by_function(&self, breaker: BreakerFigures) -> Vec<FunctionStats> {
        let functions = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(&'static FnSpec, FunctionStats)> = Vec::new();
        for (spec, counters) in functions.iter() {
            let stats = counters.snapshot(breaker);
            match out.iter_mut().find(|(other, _)| spec.same_function(other)) {
                Some((_, seen)) => {
                    seen.stats.add(&stats);
                    if seen.prefix.is_none() {
                        seen.prefix = spec.prefix_seen();
                    }
                }
                None => out.push((
                    spec,
                    FunctionStats {
                        function: spec.name(),
                        prefix: spec.prefix_seen(),
                        stats,
                    },
                )),
            }
        }
        out.into_iter().map(|(_, stats)| stats).collect()
    }

    #[cfg(feature = "metrics")]
    fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Publishes every function's call times (feature `metrics`).
    #[cfg(feature = "metrics")]
    pub(crate) fn publish_call_times(&self) {
        let functions = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        for (spec, counters) in functions.iter() {
            counters.calls.publish(&self.namespace, spec.name());
        }
    }

    /// The events of `spec`'s calls.
    #[inline]
    pub(crate) fn of(&self, spec: &'static FnSpec) -> Scoped<'_> {
        let function = match spec.counters.get() {
            Some((id, counters)) if *id == self.id => FunctionCounters::InSpec(counters),
            _ => self.listed(spec),
        };
        Scoped {
            events: self,
            spec,
            function,
        }
    }

    #[cold]
    fn listed(&self, spec: &'static FnSpec) -> FunctionCounters<'static> {
        let mut functions = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, counters)) = functions.iter().find(|(s, _)| std::ptr::eq(*s, spec)) {
            return FunctionCounters::Listed(Arc::clone(counters));
        }
        let counters = Arc::new(FnCounters::default());
        functions.push((spec, Arc::clone(&counters)));
        // The spec keeps the first cache's counters, so that its calls find them unlocked.
        let _ = spec.counters.set((self.id, Arc::clone(&counters)));
        FunctionCounters::Listed(counters)
    }

    /// A `#[cache_evict(tag = ..)]` target evicted: counted for the cache, no function's.
    pub(crate) fn tag_evicted(&self) {
        Counters::bump(&self.counters.evictions);
    }

    /// A kept entry marked fresh for the back-off.
    pub(crate) fn backing_off(&self, key: &str, until: SystemTime) {
        tracing::trace!(key, until = unix_ms(until), "cache-aside: backing off");
    }

    /// The lock expired or was taken while this process loaded under it.
    #[cold]
    pub(crate) fn lock_lost(&self, lock: &str) {
        tracing::debug!(lock, "cache-aside: lease lost");
        tracing::warn!(
            key_prefix = key_prefix(lock),
            "cache-aside: lease expired or was taken while loading; the value will not be stored"
        );
    }

    /// An entry over `max_value_bytes` whose reads timed out, deleted by a size check.
    #[cold]
    pub(crate) fn huge_entry_deleted(&self, key: &str, bytes: u64) {
        tracing::debug!(key, bytes, "cache-aside: huge entry deleted");
        tracing::warn!(
            key_prefix = key_prefix(key),
            bytes,
            "cache-aside: an entry over max_value_bytes made its reads time out; deleted it"
        );
    }

    /// A background refresh whose body failed: the kept entry backs off.
    pub(crate) fn refresh_backing_off(&self, key: &str) {
        tracing::debug!(key, "cache-aside: background refresh failed; backing off");
    }

    /// A cache operation that failed outside any function's call (a release in the
    /// background, a size check); the call goes on without it.
    #[cold]
    pub(crate) fn failed(&self, op: &'static str, key: &str, error: &Error) {
        Counters::bump(&self.counters.errors);
        self.reporter.report(op, key, error);
    }

    /// Bumps `counter` of the cache and of the function.
    fn both(scoped: &Scoped<'_>, counter: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) {
        Counters::bump(counter(&scoped.events.counters));
        Counters::bump(counter(&scoped.function));
    }
}

impl Scoped<'_> {
    /// The call's outcome in its span; a batch's keys leave theirs to the batch.
    #[inline]
    fn call_outcome(&self, what: &'static str) {
        if !self.spec.batch {
            outcome(what);
        }
    }

    #[inline]
    fn count_hit(&self) {
        self.events.counters.hits.bump();
        self.function.hits.bump();
    }

    /// A call answered from the cache.
    #[inline]
    pub(crate) fn hit(&self) {
        self.count_hit();
        tracing::trace!(
            function = self.spec.name(),
            outcome = "hit",
            "cache-aside: call"
        );
        self.call_outcome("hit");
    }

    /// A hit on an expired entry within `stale`, served while a refresh runs: counted as a
    /// hit and as served stale, traced as `stale` alone.
    pub(crate) fn served_stale(&self) {
        self.count_hit();
        Events::both(self, |c| &c.stale_served);
        tracing::trace!(
            function = self.spec.name(),
            outcome = "stale",
            "cache-aside: call"
        );
        self.call_outcome("stale");
    }

    /// A call that found nothing usable.
    pub(crate) fn miss(&self) {
        Events::both(self, |c| &c.misses);
        tracing::trace!(
            function = self.spec.name(),
            outcome = "miss",
            "cache-aside: call"
        );
        self.call_outcome("miss");
    }

    /// An entry that does not decode: a miss, overwritten by the load.
    #[cold]
    pub(crate) fn corrupt(&self, key: &str, error: &Error) {
        let error = Chain(error);
        tracing::debug!(key, %error, "cache-aside: corrupt entry; reloading");
        Events::both(self, |c| &c.corrupt);
    }

    /// A miss that waited for another caller's load of its key in this process.
    pub(crate) fn waited(&self) {
        Events::both(self, |c| &c.waited);
    }

    /// A wait for another caller's load that reached `flight_wait`.
    #[cold]
    pub(crate) fn flight_timeout(&self, key: &str) {
        Events::both(self, |c| &c.flight_timeouts);
        tracing::debug!(
            key,
            "cache-aside: the load this call waited for is taking longer than flight_wait; loading without it"
        );
    }

    /// A body run because of a miss, in the caller or as a refresh.
    pub(crate) fn load(&self) {
        Events::both(self, |c| &c.loads);
    }

    /// A body ran for `took`.
    pub(crate) fn loaded_in(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.events.counters.load_time_us.fetch_add(us, Relaxed);
        self.function.load_time_us.fetch_add(us, Relaxed);
        self.function.saving.loaded(us);
        #[cfg(feature = "metrics")]
        crate::metrics::loaded(self.events.namespace(), self.spec.name(), took);
    }

    /// A call ended with `outcome` after `took` (feature `metrics`: its histogram).
    #[cfg(feature = "metrics")]
    #[inline]
    pub(crate) fn call_took(&self, outcome: crate::metrics::Outcome, took: std::time::Duration) {
        self.function.calls.record(outcome, took);
    }

    /// Does this cache record call times?
    #[cfg(feature = "metrics")]
    #[inline]
    pub(crate) fn timed(&self) -> bool {
        self.events.timed
    }

    /// A call whose body failed answered with the kept value, as a waiter of that load.
    pub(crate) fn fail_safe(&self) {
        Events::both(self, |c| &c.stale_served);
        Events::both(self, |c| &c.fail_safe);
        tracing::trace!(
            function = self.spec.name(),
            outcome = "fail_safe",
            "cache-aside: call"
        );
        self.call_outcome("fail_safe");
    }

    /// A call whose body failed, answered with the kept value.
    pub(crate) fn fail_safe_answered(&self, key: &str) {
        self.fail_safe();
        tracing::debug!(
            key,
            "cache-aside: body failed; fail-safe serves the kept value"
        );
    }

    /// A miss that found another process holding its key's lock.
    pub(crate) fn lock_wait(&self) {
        Events::both(self, |c| &c.lock_waits);
    }

    /// A lock wait that reached `lock_wait`: the call loads without the lock.
    #[cold]
    pub(crate) fn lock_timeout(&self, key: &str) {
        Events::both(self, |c| &c.lock_timeouts);
        tracing::debug!(key, "cache-aside: lock wait ran out; loading without it");
    }

    /// A load's lease was revoked while it ran: its value is not stored.
    #[cold]
    pub(crate) fn fill_dropped(&self, key: &str) {
        Events::both(self, |c| &c.fills_dropped);
        tracing::debug!(
            key,
            "cache-aside: invalidated while loading; the value is not stored"
        );
    }

    /// A value larger than `max_value_bytes`: returned, not stored.
    #[cold]
    pub(crate) fn oversized_value(&self, key: &str, bytes: usize) {
        Events::both(self, |c| &c.oversized);
        tracing::debug!(
            key,
            bytes,
            "cache-aside: value above max_value_bytes; not stored"
        );
    }

    /// An entry larger than `max_value_bytes` found (someone else wrote it): a miss.
    #[cold]
    pub(crate) fn oversized_entry(&self, key: &str) {
        Events::both(self, |c| &c.oversized);
        tracing::debug!(
            key,
            "cache-aside: an entry over max_value_bytes is there; reading it as a miss"
        );
    }

    /// A value the codec would not give back exactly: returned, never stored. Logged once
    /// per function (`warned` is the function's flag).
    #[cold]
    pub(crate) fn unstorable(&self, function: &str, warned: &AtomicBool, key: &str) {
        Events::both(self, |c| &c.unstorable);
        if !warned.swap(true, Relaxed) {
            tracing::debug!(function, key, "cache-aside: unstorable value");
            tracing::warn!(
                function,
                key_prefix = key_prefix(key),
                "cache-aside: a returned value would not read back exactly from JSON (NaN, \
                 infinity, Some(None) inside it, or an untagged enum); such values are returned \
                 but not cached (stats().unstorable); logged once per function"
            );
        }
    }

    /// A write that failed or was refused (also a failure, reported by [`failed`](Self::failed)).
    pub(crate) fn store_failed(&self) {
        Events::both(self, |c| &c.store_errors);
    }

    /// A `#[cache_put]` write went through.
    pub(crate) fn put(&self) {
        Events::both(self, |c| &c.puts);
    }

    /// A `#[cache_evict]` target removed.
    pub(crate) fn evicted(&self) {
        Events::both(self, |c| &c.evictions);
    }

    /// A background refresh started.
    pub(crate) fn refresh_started(&self) {
        Events::both(self, |c| &c.refreshes);
    }

    /// A background refresh not started: `max_refreshes` are running.
    pub(crate) fn refresh_dropped(&self) {
        Events::both(self, |c| &c.refreshes_dropped);
    }

    /// A background refresh whose body failed or panicked.
    pub(crate) fn refresh_failed(&self) {
        Events::both(self, |c| &c.refresh_failures);
    }

    /// A cache operation that failed; the call goes on without it.
    #[cold]
    pub(crate) fn failed(&self, op: &'static str, key: &str, error: &Error) {
        Events::both(self, |c| &c.errors);
        self.events.reporter.report(op, key, error);
    }
}
