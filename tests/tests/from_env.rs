//! `Cache::from_env`: a Redis Cluster when `REDIS_CLUSTER_URLS` is set, Redis when
//! `REDIS_URL` is, the embedded backend otherwise.
//! Its own test binary with one test, because it changes the process environment.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_aside_runtime::{Cache, cached};
use cache_aside_tests::{RedisCluster, RedisServer};
use redis::Commands;

#[cached(ttl = 60, prefix = "env", cache = cache, skip(cache, loads))]
async fn double(cache: &Cache, loads: &AtomicU32, n: u64) -> u64 {
    loads.fetch_add(1, SeqCst);
    n * 2
}

#[tokio::test]
async fn from_env_uses_redis_url_when_set_and_memory_otherwise() {
    let server = RedisServer::start();
    // SAFETY: the only test in this binary, on a current-thread runtime: nothing else reads
    // the environment while it changes.
    unsafe { std::env::remove_var("REDIS_URL") };
    let memory = Cache::from_env().unwrap();
    assert_eq!(memory.backend_name(), "memory");

    // Blank is unset, as for the cluster's and sentinels' variables.
    // SAFETY: as above.
    unsafe { std::env::set_var("REDIS_URL", "  ") };
    let blank = Cache::from_env().unwrap();
    assert_eq!(blank.backend_name(), "memory");

    // SAFETY: as above.
    unsafe { std::env::set_var("REDIS_URL", format!(" {} ", server.url())) };
    let redis = Cache::from_env().unwrap();
    assert_eq!(redis.backend_name(), "redis");
    let loads = AtomicU32::new(0);
    assert_eq!(double(&redis, &loads, 21).await, 42);
    assert_eq!(double(&redis, &loads, 21).await, 42);
    assert_eq!(loads.load(SeqCst), 1);
    let exists: bool = server.conn().exists("ca:env:21").unwrap();
    assert!(exists, "the value went to the server named by REDIS_URL");

    // The cluster wins over `REDIS_URL`; seeds are separated by commas, spaces allowed.
    let cluster = RedisCluster::start(3, 0);
    let seeds = cluster.urls().join(", ");
    // SAFETY: as above.
    unsafe { std::env::set_var("REDIS_CLUSTER_URLS", &seeds) };
    let clustered = Cache::from_env().unwrap();
    assert_eq!(clustered.backend_name(), "redis-cluster");
    assert_eq!(double(&clustered, &loads, 8).await, 16);
    assert_eq!(double(&clustered, &loads, 8).await, 16);
    assert_eq!(loads.load(SeqCst), 2, "one load for 21, one for 8");
    let holder = cluster.primary_of("ca:env:8");
    let exists: bool = cluster.nodes()[holder].conn().exists("ca:env:8").unwrap();
    assert!(
        exists,
        "the value went to the cluster, on its slot's primary"
    );
    // SAFETY: as above.
    unsafe {
        std::env::remove_var("REDIS_CLUSTER_URLS");
        std::env::remove_var("REDIS_URL");
    };
}
