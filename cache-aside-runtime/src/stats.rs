//! Counters kept per [`Cache`](crate::Cache), read with [`Cache::stats`](crate::Cache::stats).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) waited: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            loads: self.loads.load(Relaxed),
            errors: self.errors.load(Relaxed),
            corrupt: self.corrupt.load(Relaxed),
            waited: self.waited.load(Relaxed),
        }
    }
}

/// A snapshot of one cache's counters since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that found nothing usable (absent, expired, corrupt, or the cache failed).
    pub misses: u64,
    /// Times a function body ran because of a miss.
    pub loads: u64,
    /// Cache operations that failed (Redis down, timeout, encode or key errors); the calls
    /// themselves still succeeded.
    pub errors: u64,
    /// Stored values that could not be decoded and were replaced.
    pub corrupt: u64,
    /// Misses that waited for another caller's load of the same key in this process
    /// (single-flight) instead of running their own.
    pub waited: u64,
}

impl Stats {
    /// `hits / (hits + misses)`, or 0 before the first call.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}
