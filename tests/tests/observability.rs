//! Per-function figures: `Cache::stats_by_function` counts each function's calls apart,
//! its writes (`#[cache_put]`, `#[cache_evict]`) under it, and sums to `Cache::stats`.

use cache_aside_runtime::{Cache, FunctionStats, cache_evict, cache_put, cached};
use cache_aside_tests::RedisServer;

#[cached(ttl = 600, prefix = "obs-a", cache = cache, skip(cache))]
async fn alpha(cache: &Cache, id: u64) -> u64 {
    id * 2
}

#[cached(ttl = 600, prefix = "obs-b", cache = cache, skip(cache))]
async fn beta(cache: &Cache, id: u64) -> Result<String, String> {
    match id {
        0 => Err("no zero".into()),
        _ => Ok(id.to_string()),
    }
}

#[cache_put(alpha(cache, id))]
async fn set_alpha(cache: &Cache, id: u64, value: u64) -> u64 {
    value
}

#[cache_evict(beta(cache, id))]
async fn drop_beta(cache: &Cache, id: u64) {}

fn of<'a>(all: &'a [FunctionStats], name: &str) -> &'a FunctionStats {
    let found: Vec<_> = all.iter().filter(|f| f.function == name).collect();
    assert_eq!(found.len(), 1, "one entry for {name} in {all:?}");
    found[0]
}

async fn run(cache: &Cache) {
    for id in 1..=3 {
        alpha(cache, id).await;
        alpha(cache, id).await;
    }
    beta(cache, 5).await.unwrap();
    assert!(beta(cache, 0).await.is_err());
    set_alpha(cache, 9, 100).await;
    assert_eq!(alpha(cache, 9).await, 100);
    drop_beta(cache, 5).await;
    beta(cache, 5).await.unwrap();

    let all = cache.stats_by_function();
    assert_eq!(all.len(), 2, "{all:?}");
    let (a, b) = (of(&all, "alpha"), of(&all, "beta"));
    assert_eq!(a.prefix, Some("obs-a"));
    assert_eq!(b.prefix, Some("obs-b"));
    assert_eq!(
        (a.stats.hits, a.stats.misses, a.stats.loads),
        (4, 3, 3),
        "{a:?}"
    );
    assert_eq!((a.stats.puts, a.stats.evictions), (1, 0));
    assert_eq!(
        (b.stats.hits, b.stats.misses, b.stats.loads),
        (0, 3, 3),
        "{b:?}"
    );
    assert_eq!((b.stats.puts, b.stats.evictions), (0, 1));
    let sum = a.stats;
    let whole = cache.stats();
    for field in [
        (sum.hits + b.stats.hits, whole.hits),
        (sum.misses + b.stats.misses, whole.misses),
        (sum.loads + b.stats.loads, whole.loads),
        (sum.puts + b.stats.puts, whole.puts),
        (sum.evictions + b.stats.evictions, whole.evictions),
        (sum.errors + b.stats.errors, whole.errors),
    ] {
        assert_eq!(field.0, field.1, "{all:?} against {whole:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_counts_apart_and_they_sum_to_the_cache() {
    let server = RedisServer::start();
    // The first cache keeps its counters in the functions' specs, the second in its list:
    // both ways count the same, and neither sees the other's calls.
    for cache in [Cache::memory(), Cache::redis(&server.url()).unwrap()] {
        run(&cache).await;
    }
}
