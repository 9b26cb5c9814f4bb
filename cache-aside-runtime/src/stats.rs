//! Counters kept per [`Cache`](crate::Cache), read with [`Cache::stats`](crate::Cache::stats).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::backend::BreakerFigures;
use crate::backend::redis::breaker::BreakerState;

/// One counter per field of [`Stats`], except the breaker's, which the Redis backend keeps.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Default)]
        pub(crate) struct Counters {
            /// Every hit writes it, from every worker thread: striped (see [`Striped`]).
            pub(crate) hits: Striped,
            $(pub(crate) $name: AtomicU64,)*
        }

        impl Stats {
            /// Adds `other`'s counters to these (the breaker's figures stay).
            pub(crate) fn add(&mut self, other: &Stats) {
                self.hits += other.hits;
                self.time_saved_us += other.time_saved_us;
                $(self.$name += other.$name;)*
            }

            /// Takes `other`'s counters off these, stopping at 0.
            #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
            pub(crate) fn subtract(&mut self, other: &Stats) {
                self.hits = self.hits.saturating_sub(other.hits);
                self.time_saved_us = self.time_saved_us.saturating_sub(other.time_saved_us);
                $(self.$name = self.$name.saturating_sub(other.$name);)*
            }

            /// Each counter with its field's name (the breaker's figures left out).
            #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
            pub(crate) fn each(&self, mut f: impl FnMut(&'static str, u64)) {
                f("hits", self.hits);
                $(f(stringify!($name), self.$name);)*
                f("time_saved_us", self.time_saved_us);
            }
        }

        impl Counters {
            /// A snapshot, `time_saved_us` left at 0: only a function's counters know
            /// what its hits saved ([`crate::spec::FnCounters::snapshot`]).
            pub(crate) fn snapshot(&self, breaker: BreakerFigures) -> Stats {
                Stats {
                    hits: self.hits.load(),
                    time_saved_us: 0,
                    $($name: self.$name.load(Relaxed),)*
                    breaker: breaker.state,
                    breaker_opened: breaker.opened,
                    breaker_skipped: breaker.skipped,
                }
            }
        }

        /// A snapshot of one cache's counters since it was built.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            /// Calls answered from the cache, stale-while-revalidate answers included.
            pub hits: u64,
            $($(#[$doc])* pub $name: u64,)*
            /// Body time the hits saved, in microseconds: an estimate, each hit counted at
            /// its function's recent load time (an average over this process's last loads,
            /// taken when the figures are read). A function that has not loaded in this
            /// process saves nothing by this count. Never decreases.
            pub time_saved_us: u64,
            /// The circuit breaker's state now (always `Closed` for the embedded backend).
            pub breaker: BreakerState,
            /// Times the circuit breaker opened because Redis was unreachable or too slow.
            pub breaker_opened: u64,
            /// Cache operations skipped, without touching the network, while it was open.
            pub breaker_skipped: u64,
        }
    };
}

counters! {
    /// Calls that found nothing usable (absent, expired, corrupt, or the cache failed).
    misses,
    /// Times a function body ran because of a miss, in the caller or as a refresh.
    loads,
    /// Cache operations that failed (Redis down, timeout, circuit open, encode or key
    /// errors); the calls themselves still succeeded.
    errors,
    /// Stored values that could not be decoded and were replaced.
    corrupt,
    /// Misses that waited for another caller's load of the same key in this process
    /// (single-flight) instead of running their own.
    waited,
    /// Waits for another caller's load of the same key that reached `flight_wait`, after
    /// which the waiter loaded by itself.
    flight_timeouts,
    /// Expired values returned: within the `stale` window, or by fail-safe.
    stale_served,
    /// Calls whose body failed and that got the last good value instead (`fail_safe`).
    fail_safe,
    /// Background refreshes started (`stale`, `refresh_ahead`, `xfetch`).
    refreshes,
    /// Background refreshes whose body returned an error or panicked.
    refresh_failures,
    /// Refreshes not started because `max_refreshes` were already running.
    refreshes_dropped,
    /// Misses that waited for another process holding the key's lock (`lock`).
    lock_waits,
    /// Lock waits that reached `lock_wait` and loaded without the lock.
    lock_timeouts,
    /// Values larger than `max_value_bytes`: returned, not stored; and entries found larger
    /// (written by someone else), read as misses and replaced.
    oversized,
    /// Values returned but not stored because the codec would not give them back exactly
    /// (JSON holds no `NaN`, `±inf`, or `Some(None)` inside a value; an untagged enum may
    /// read back as another variant). Logged once per function.
    unstorable,
    /// Loaded values not stored because an invalidation (or a newer write) reached their
    /// key while they loaded: they may predate it (see the guide's stampedes page, on
    /// leases). Each was still returned to its own caller.
    fills_dropped,
    /// Writes that failed or were refused (a full Redis with `noeviction` answers `OOM`);
    /// also counted in `errors`.
    store_errors,
    /// Entries written by `#[cache_put]` (a value that could not be stored deletes the
    /// entry instead, and counts too).
    puts,
    /// Entries removed by `#[cache_evict]`, counted per target evicted (one key, or every
    /// entry of a function), whether an entry was there or not.
    evictions,
    /// Microseconds the loads took, in total: `load_time_us / loads` is the mean body time.
    load_time_us,
}

/// What a function's hits saved: its recent load time (a moving average over loads), and
/// the hits credited with it so far. Hits are credited when the figures are read, at the
/// load time of that moment, so the hit path writes nothing more than its hit.
#[derive(Default)]
pub(crate) struct Saving {
    /// Microseconds; each load moves it an eighth of the way to its own time.
    recent_us: AtomicU64,
    /// Hits credited, and the microseconds credited to them.
    credited: std::sync::Mutex<(u64, u64)>,
}

impl Saving {
    /// A load took `us` microseconds.
    pub(crate) fn loaded(&self, us: u64) {
        let old = self.recent_us.load(Relaxed);
        let new = if old == 0 {
            us.max(1)
        } else {
            (old - old / 8).saturating_add(us / 8).max(1)
        };
        self.recent_us.store(new, Relaxed);
    }

    /// Credits the hits since the last reading (`hits` in all) with the recent load time;
    /// the total saved.
    pub(crate) fn credit(&self, hits: u64) -> u64 {
        let mut credited = self.credited.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, saved) = &mut *credited;
        if hits > *seen {
            let recent = self.recent_us.load(Relaxed);
            *saved = saved.saturating_add((hits - *seen).saturating_mul(recent));
            *seen = hits;
        }
        *saved
    }
}

/// One function's figures in one cache: [`Cache::stats_by_function`](crate::Cache::stats_by_function).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FunctionStats {
    /// The function's name as written (`get_user`); methods of different types may share
    /// one, so tell them apart by `prefix`.
    pub function: &'static str,
    /// The prefix its keys are under (`user`, or the derived `app.users.get_user`; for a
    /// generic function, its first instantiation's, and its figures cover all of them);
    /// `None` until a call built its first key.
    pub prefix: Option<&'static str>,
    /// Its counters, as [`Cache::stats`](crate::Cache::stats) counts them for the whole
    /// cache; the breaker's figures are the cache's.
    pub stats: Stats,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

/// How many cache lines a [`Striped`] counter spreads over.
const STRIPES: usize = 8;

/// One cache line (two, against adjacent-line prefetch) of a [`Striped`] counter.
#[derive(Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// A counter that threads add to without sharing a cache line: each thread adds to its own
/// stripe, and reading sums them. A single `AtomicU64` that every hit increments bounces
/// between the cores' caches under concurrent hits; the hit path should write nothing shared.
#[derive(Default)]
pub(crate) struct Striped([Stripe; STRIPES]);

impl Striped {
    pub(crate) fn bump(&self) {
        self.0[stripe()].0.fetch_add(1, Relaxed);
    }

    pub(crate) fn load(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

/// This thread's stripe: threads take stripes in turn as they first count.
pub(crate) fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) });
    // `try_with`: a hit counted while this thread's locals are torn down uses stripe 0.
    STRIPE
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT.fetch_add(1, Relaxed) % STRIPES;
                s.set(i);
            }
            i
        })
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_credited_once_at_the_recent_load_time() {
        let saving = Saving::default();
        assert_eq!(saving.credit(10), 0, "no load yet: nothing known to save");
        saving.loaded(800);
        assert_eq!(saving.credit(10), 0, "those hits came before the load");
        assert_eq!(saving.credit(12), 1_600);
        assert_eq!(saving.credit(12), 1_600, "credited once");
        // The average moves an eighth of the way to each load.
        saving.loaded(1_600);
        assert_eq!(saving.credit(13), 1_600 + 900);
        assert_eq!(saving.credit(11), 2_500, "never decreases");
    }
}
