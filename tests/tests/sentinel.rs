//! `#[cached]` on a Sentinel-managed primary (issue 13): one primary, one replica and three
//! sentinels started by the harness. Hits, misses and invalidation go to the primary the
//! sentinels name; when it is killed mid-run, the sentinels promote the replica and the
//! cache follows, and again when the old primary, back as a replica, is switched over to
//! primary (`SENTINEL FAILOVER`) mid-run: 0 failed calls, 0 wrong values, and hits resume
//! on the new primary. A frozen sentinel is passed over.
//! Its own binary with one test: it also sets the environment for `from_env`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, Error, cached};
use cache_aside_tests::{Db, RedisSentinels};
use redis::Commands;

/// What the loader returns for `id`: a pure function of it.
fn expected(id: u64) -> String {
    format!("value-{id}-{}", id.wrapping_mul(2_654_435_761) % 1000)
}

#[cached(ttl = 60, prefix = "item", cache = cache, skip(cache, db))]
async fn item(cache: &Cache, db: &Db, id: u64) -> String {
    db.loads.fetch_add(1, SeqCst);
    expected(id)
}

#[test]
fn sentinel_suite() {
    let mut set = RedisSentinels::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        bad_settings_are_config_errors();
        hits_misses_and_invalidation_reach_the_primary(&set).await;
        from_env_reads_the_sentinels(&set).await;
        a_sentinel_that_does_not_answer_is_passed_over(&set).await;
        a_failover_loses_no_call(&mut set).await;
    });
}

fn bad_settings_are_config_errors() {
    let none: [&str; 0] = [];
    let empty = Cache::builder().redis_sentinel(none, "svc");
    assert!(matches!(empty, Err(Error::Config(_))), "{empty:?}");
    let unnamed = Cache::builder().redis_sentinel(["redis://127.0.0.1:1"], " ");
    assert!(matches!(unnamed, Err(Error::Config(_))), "{unnamed:?}");
    let tls = Cache::builder().redis_sentinel(["rediss://127.0.0.1:1"], "svc");
    assert!(
        matches!(tls, Err(Error::Config(_))),
        "TLS to sentinels: {tls:?}"
    );
}

async fn hits_misses_and_invalidation_reach_the_primary(set: &RedisSentinels) {
    let cache = set.cache("s-basic");
    assert_eq!(cache.backend_name(), "redis-sentinel");
    let db = Db::new(Duration::ZERO);
    for id in 0..10 {
        assert_eq!(item(&cache, &db, id).await, expected(id));
    }
    for id in 0..10 {
        assert_eq!(item(&cache, &db, id).await, expected(id));
    }
    assert_eq!(db.loads(), 10, "{:?}", cache.stats());
    assert_eq!(cache.stats().hits, 10);
    let primary = &set.nodes()[set.primary()];
    let key = item_cache_key(&cache, 3).unwrap();
    let stored: bool = primary.conn().exists(&key).unwrap();
    assert!(stored, "the entry is on the primary the sentinels name");

    assert!(item_invalidate(&cache, 3).await.unwrap());
    assert_eq!(item(&cache, &db, 3).await, expected(3));
    assert_eq!(db.loads(), 11, "an invalidated entry is loaded again");
    assert_eq!(cache.invalidate_prefix("item").await.unwrap(), 10);
    assert_eq!(item(&cache, &db, 4).await, expected(4));
    assert_eq!(db.loads(), 12, "the prefix is gone from the primary");
}

async fn from_env_reads_the_sentinels(set: &RedisSentinels) {
    let urls = set.urls().join(", ");
    // SAFETY: the only test in this binary; nothing else reads the environment meanwhile.
    unsafe {
        std::env::remove_var("REDIS_CLUSTER_URLS");
        std::env::set_var("REDIS_SENTINEL_URLS", &urls);
        std::env::remove_var("REDIS_SENTINEL_SERVICE");
    }
    let unnamed = Cache::from_env();
    assert!(matches!(unnamed, Err(Error::Config(_))), "{unnamed:?}");
    // SAFETY: as above.
    unsafe {
        std::env::set_var(
            "REDIS_SENTINEL_SERVICE",
            cache_aside_tests::SENTINEL_SERVICE,
        )
    };
    let cache = Cache::from_env().unwrap();
    assert_eq!(cache.backend_name(), "redis-sentinel");
    let db = Db::new(Duration::ZERO);
    assert_eq!(item(&cache, &db, 99).await, expected(99));
    let key = item_cache_key(&cache, 99).unwrap();
    let stored: bool = set.nodes()[set.primary()].conn().exists(&key).unwrap();
    assert!(stored, "from_env's cache writes to the named primary");
    // SAFETY: as above.
    unsafe {
        std::env::remove_var("REDIS_SENTINEL_URLS");
        std::env::remove_var("REDIS_SENTINEL_SERVICE");
    }
}

/// The first sentinel listed is frozen (SIGSTOP: connections open, nothing answered): a new
/// cache still finds the primary through the others, and its calls hit within 10 s.
async fn a_sentinel_that_does_not_answer_is_passed_over(set: &RedisSentinels) {
    set.sentinels()[0].pause();
    let cache = set.cache("s-paused");
    let db = Db::new(Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.stats().hits == 0 {
        assert_eq!(item(&cache, &db, 1).await, expected(1));
        assert!(
            Instant::now() < deadline,
            "no hit with a sentinel frozen: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set.sentinels()[0].resume();
}

/// Calls over 40 keys, each in its own task under a 3 s cap, for 6 s, while `fault` acts;
/// then hits must resume within 20 s. Returns the calls made. The calls run in a task of
/// their own, so that a fault blocking its thread (`block_in_place`) does not stop them.
async fn under_fault(
    name: &str,
    cache: &Cache,
    db: &Arc<Db>,
    fault: impl Future<Output = ()>,
) -> u64 {
    let load = tokio::spawn(run_calls(cache.clone(), db.clone()));
    fault.await;
    let (calls, failed, wrong) = load.await.expect("the calls' task");
    assert_eq!((failed, wrong), (0, 0), "{name}: {calls} calls");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = cache.stats().hits;
        for id in 0..40 {
            assert_eq!(item(cache, db, id).await, expected(id), "{name}");
        }
        if cache.stats().hits - before == 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: hits did not resume: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    calls
}

/// Calls for 6 s, one after another, each in its own task under a 3 s cap: (calls, failed,
/// wrong).
async fn run_calls(cache: Cache, db: Arc<Db>) -> (u64, u64, u64) {
    let (mut calls, mut failed, mut wrong) = (0, 0, 0);
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let (cache, db, id) = (cache.clone(), db.clone(), calls % 40);
        let call = tokio::spawn(async move { item(&cache, &db, id).await });
        calls += 1;
        match tokio::time::timeout(Duration::from_secs(3), call).await {
            Ok(Ok(value)) if value == expected(id) => {}
            Ok(Ok(_)) => wrong += 1,
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (calls, failed, wrong)
}

/// A new entry lands on the primary the sentinels name now: the cache follows it.
async fn writes_reach_the_named_primary(name: &str, set: &RedisSentinels, cache: &Cache, db: &Db) {
    assert!(
        item_invalidate(cache, 7).await.is_ok(),
        "{name}: the invalidation reached a primary"
    );
    assert_eq!(item(cache, db, 7).await, expected(7));
    let key = item_cache_key(cache, 7).unwrap();
    let stored: bool = set.nodes()[set.primary()].conn().exists(&key).unwrap();
    assert!(stored, "{name}: the new entry is on the named primary");
}

/// The primary is killed mid-run and the sentinels promote the replica; later, the old
/// primary restarts (the sentinels make it a replica) and is switched back to primary with
/// `SENTINEL FAILOVER` mid-run, so the cache's node answers `READONLY` to writes.
async fn a_failover_loses_no_call(set: &mut RedisSentinels) {
    let cache = set.cache("s-failover");
    let db = Db::new(Duration::ZERO);
    let victim = set.primary();
    let killed = {
        let set = &mut *set;
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            set.node_mut(victim).kill();
            tokio::task::block_in_place(|| set.wait_for_failover(victim));
        }
    };
    let calls = under_fault("killed", &cache, &db, killed).await;
    assert!(
        cache.stats().errors > 0,
        "calls ran while the primary was down: {:?}",
        cache.stats()
    );
    assert_ne!(set.primary(), victim, "the replica took over");
    writes_reach_the_named_primary("killed", set, &cache, &db).await;

    tokio::task::block_in_place(|| {
        set.node_mut(victim).restart();
        set.wait_until_replica(victim);
    });
    let promoted = set.primary();
    let switched = {
        let set = &*set;
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tokio::task::block_in_place(|| {
                set.switch_over();
                set.wait_for_failover(promoted);
            });
        }
    };
    let switched_calls = under_fault("switched", &cache, &db, switched).await;
    assert_eq!(set.primary(), victim, "the old primary is primary again");
    writes_reach_the_named_primary("switched", set, &cache, &db).await;
    // Straight to stderr, past the test harness's capture, as the fault suite's line.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "sentinel faults: killed {calls}/0/0, switched {switched_calls}/0/0 (calls/failed/wrong)"
    );
}
