//! The figures of [`Stats`] through the [`metrics`] facade (cargo feature `metrics`), for
//! Prometheus (`metrics-exporter-prometheus`), StatsD or OpenTelemetry exporters.
//!
//! Counters are published when asked ([`Cache::record_metrics`](crate::Cache::record_metrics),
//! from a `/metrics` handler or a timer), as absolute values read from the counters the
//! cache keeps anyway. With the feature on, a hit also reads the clock once and adds one
//! to a bucket of its function's call times (striped over cache lines, as the hit counter
//! is): no allocation, no lock. Load times are recorded as they happen, off the hit path.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `cache_aside_{counter}_total` | counter | `namespace`, `function`, `prefix` | each [`Stats`] counter (`hits`, `misses`, `loads`, `stale_served`, `fail_safe`, `errors`, ...) per function; `function=""` counts what no function's call did (background failures) |
//! | `cache_aside_load_seconds` | histogram | `namespace`, `function` | how long each body run took (miss or refresh), in seconds |
//! | `cache_aside_call_seconds` | histogram | `namespace`, `function`, `outcome` | how long each call spent on the cache, in seconds (its whole time less its body's, which `cache_aside_load_seconds` records), by `outcome`: `hit`, `stale` (an expired value served while it refreshes) or `miss`; a batch call is one call, a hit if every key hit. Kept in power-of-two buckets of microseconds (1 µs to 8 s) and published with the counters, each sample at its bucket's middle |
//! | `cache_aside_time_saved_us_total` | counter | `namespace`, `function`, `prefix` | body time the hits saved, in microseconds, estimated from the function's recent loads ([`Stats::time_saved_us`]) |
//! | `cache_aside_breaker_open` | gauge | `namespace` | 1 while the circuit breaker is open, 0.5 half-open, 0 closed |
//! | `cache_aside_breaker_opened_total`, `cache_aside_breaker_skipped_total` | counter | `namespace` | the breaker's figures |
//!
//! Labels never carry a key or a value: keys hold user data.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::backend::redis::breaker::BreakerState;
use crate::stats::{FunctionStats, Stats};

/// Publishes `whole` and `functions` as absolute counters.
pub(crate) fn record(namespace: &str, whole: &Stats, functions: &[FunctionStats]) {
    let mut rest = *whole;
    for f in functions {
        let prefix = f.prefix.unwrap_or("");
        f.stats.each(|name, value| {
            counter(namespace, f.function, prefix, name, value);
        });
        rest.subtract(&f.stats);
    }
    rest.each(|name, value| {
        if value > 0 {
            counter(namespace, "", "", name, value);
        }
    });
    let open = match whole.breaker {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 0.5,
        BreakerState::Open => 1.0,
    };
    let ns = namespace.to_owned();
    ::metrics::gauge!("cache_aside_breaker_open", "namespace" => ns.clone()).set(open);
    ::metrics::counter!("cache_aside_breaker_opened_total", "namespace" => ns.clone())
        .absolute(whole.breaker_opened);
    ::metrics::counter!("cache_aside_breaker_skipped_total", "namespace" => ns)
        .absolute(whole.breaker_skipped);
}

fn counter(namespace: &str, function: &'static str, prefix: &'static str, name: &str, value: u64) {
    let metric = format!("cache_aside_{name}_total");
    ::metrics::counter!(
        metric,
        "namespace" => namespace.to_owned(),
        "function" => function,
        "prefix" => prefix
    )
    .absolute(value);
}

/// One body run of `function` took `took`.
pub(crate) fn loaded(namespace: &str, function: &'static str, took: Duration) {
    ::metrics::histogram!(
        "cache_aside_load_seconds",
        "namespace" => namespace.to_owned(),
        "function" => function
    )
    .record(took.as_secs_f64());
}

/// What a call's time is labelled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Hit = 0,
    Stale = 1,
    Miss = 2,
}

const OUTCOMES: [(Outcome, &str); 3] = [
    (Outcome::Hit, "hit"),
    (Outcome::Stale, "stale"),
    (Outcome::Miss, "miss"),
];

/// Buckets of call times: bucket `i` holds times of `2^(i-1)` to `2^i` microseconds (bucket
/// 0 under 1 µs), the last everything from about 4 s up.
const BUCKETS: usize = 24;
const STRIPES: usize = 4;

/// One stripe's buckets, on cache lines of its own.
#[derive(Default)]
#[repr(align(128))]
struct Stripe([[AtomicU64; BUCKETS]; 3]);

/// One function's call times in one cache, by outcome: counts per bucket, striped so that
/// concurrent hits do not write one cache line, and what was published of them.
#[derive(Default)]
pub(crate) struct CallTimes {
    stripes: [Stripe; STRIPES],
    published: Mutex<[[u64; BUCKETS]; 3]>,
}

impl CallTimes {
    #[inline]
    pub(crate) fn record(&self, outcome: Outcome, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        let stripe = crate::stats::stripe() % STRIPES;
        self.stripes[stripe].0[outcome as usize][bucket].fetch_add(1, Relaxed);
    }

    /// Records what came since the last call into the `cache_aside_call_seconds` histogram.
    pub(crate) fn publish(&self, namespace: &str, function: &'static str) {
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        for (outcome, label) in OUTCOMES {
            let o = outcome as usize;
            for bucket in 0..BUCKETS {
                let now: u64 = self
                    .stripes
                    .iter()
                    .map(|s| s.0[o][bucket].load(Relaxed))
                    .sum();
                let new = now.saturating_sub(published[o][bucket]);
                if new == 0 {
                    continue;
                }
                published[o][bucket] = now;
                // The bucket's middle: 0.5 µs for the first, 0.75 * 2^i µs for the others.
                let us = if bucket == 0 {
                    0.5
                } else {
                    0.75 * (1u64 << bucket) as f64
                };
                ::metrics::histogram!(
                    "cache_aside_call_seconds",
                    "namespace" => namespace.to_owned(),
                    "function" => function,
                    "outcome" => label
                )
                .record_many(us / 1e6, usize::try_from(new).unwrap_or(usize::MAX));
            }
        }
    }
}
