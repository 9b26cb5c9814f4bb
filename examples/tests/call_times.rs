//! The `metrics` feature's call-time histogram: a call's time on the cache, without its
//! body's, by outcome; read back through a Prometheus recorder local to this test.

use std::time::Duration;

use cache_aside_runtime::{Cache, cached};
use metrics_exporter_prometheus::PrometheusBuilder;

#[cached(ttl = 600, prefix = "ct-slow", cache = cache, skip(cache))]
async fn slow(cache: &Cache, id: u64) -> u64 {
    // The body's own time, which the call-time histogram leaves out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    id
}

/// The sum of `metric`'s samples for `outcome` (any when `None`) in Prometheus text.
fn sum(text: &str, metric: &str, outcome: Option<&str>) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| l.contains("function=\"slow\""))
        .find(|l| outcome.is_none_or(|o| l.contains(&format!("outcome=\"{o}\""))))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "current_thread")]
async fn a_miss_counts_its_time_on_the_cache_not_its_body() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let cache = Cache::memory();
    assert_eq!(slow(&cache, 1).await, 1);
    assert_eq!(slow(&cache, 1).await, 1);
    cache.record_metrics();
    let text = handle.render();
    let count = |outcome| sum(&text, "cache_aside_call_seconds_count", Some(outcome));
    assert_eq!(count("miss"), Some(1.0), "{text}");
    assert_eq!(count("hit"), Some(1.0), "{text}");
    let miss = sum(&text, "cache_aside_call_seconds_sum", Some("miss")).unwrap();
    assert!(
        miss < 0.05,
        "a miss's time on the cache, not its 300 ms body: {miss}"
    );
    let load = sum(&text, "cache_aside_load_seconds_sum", None).unwrap();
    assert!(load >= 0.3, "the body's time is the load's: {load}");
    // Published once: a second publication adds nothing.
    cache.record_metrics();
    let again = handle.render();
    assert_eq!(
        sum(&again, "cache_aside_call_seconds_count", Some("miss")),
        Some(1.0)
    );
}
