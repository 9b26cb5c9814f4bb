//! The figures of [`Stats`] through the [`metrics`] facade (cargo feature `metrics`), for
//! Prometheus (`metrics-exporter-prometheus`), StatsD or OpenTelemetry exporters.
//!
//! Counters are published when asked ([`Cache::record_metrics`](crate::Cache::record_metrics),
//! from a `/metrics` handler or a timer), as absolute values read from the counters the
//! cache keeps anyway: the hit path does no more work with the feature on than without.
//! Load times are recorded as they happen, off the hit path.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `cache_aside_{counter}_total` | counter | `namespace`, `function`, `prefix` | each [`Stats`] counter (`hits`, `misses`, `loads`, `stale_served`, `fail_safe`, `errors`, ...) per function; `function=""` counts what no function's call did (background failures) |
//! | `cache_aside_load_seconds` | histogram | `namespace`, `function` | how long each body run took (miss or refresh), in seconds |
//! | `cache_aside_breaker_open` | gauge | `namespace` | 1 while the circuit breaker is open, 0.5 half-open, 0 closed |
//! | `cache_aside_breaker_opened_total`, `cache_aside_breaker_skipped_total` | counter | `namespace` | the breaker's figures |
//!
//! Labels never carry a key or a value: keys hold user data.

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
