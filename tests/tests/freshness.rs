//! Freshness: fail-safe, TTL jitter, stale-while-revalidate and refresh-ahead.
//!
//! Waiting for an entry to expire is the scenario itself here, so these tests do wait for
//! short TTLs to pass; everything else is synchronised on counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cached};
use cache_aside_tests::RedisServer;

/// A database that can be told to fail, and counts its queries.
#[derive(Default)]
struct Db {
    failing: AtomicBool,
    queries: AtomicU32,
    version: AtomicU32,
}

impl Db {
    fn query(&self, id: u64) -> Result<String, String> {
        self.queries.fetch_add(1, SeqCst);
        if self.failing.load(SeqCst) {
            return Err("database down".into());
        }
        Ok(format!("{id}-v{}", self.version.load(SeqCst)))
    }
}

#[cached(ttl = "150ms", prefix = "fs", cache = cache, skip(cache, db))]
async fn lookup(cache: &Cache, db: &Db, id: u64) -> Result<String, String> {
    db.query(id)
}

fn both_backends(
    server: &RedisServer,
    build: impl Fn() -> cache_aside_runtime::CacheBuilder,
) -> [Cache; 2] {
    [
        build().redis(&server.url()).unwrap(),
        build().memory().unwrap(),
    ]
}

async fn wait_past(ttl: Duration) {
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
}

#[tokio::test]
async fn fail_safe_answers_a_failing_body_with_the_last_value_and_backs_off() {
    let server = RedisServer::start();
    let caches = both_backends(&server, || {
        Cache::builder()
            .fail_safe(Duration::from_secs(3600))
            .fail_safe_backoff(Duration::from_millis(400))
    });
    for cache in caches {
        let db = Db::default();
        assert_eq!(lookup(&cache, &db, 1).await.unwrap(), "1-v0");
        wait_past(Duration::from_millis(150)).await;

        db.failing.store(true, SeqCst);
        let answered = lookup(&cache, &db, 1).await;
        assert_eq!(answered.as_deref(), Ok("1-v0"), "{}", cache.backend_name());
        assert_eq!(db.queries.load(SeqCst), 2, "the body was tried once");
        let stats = cache.stats();
        assert_eq!((stats.fail_safe, stats.stale_served), (1, 1), "{stats:?}");

        // Backing off: the kept value answers without running the failing body.
        for _ in 0..5 {
            assert_eq!(lookup(&cache, &db, 1).await.as_deref(), Ok("1-v0"));
        }
        assert_eq!(db.queries.load(SeqCst), 2, "no retries during the back-off");

        // Without a kept value, the error is the answer.
        assert_eq!(lookup(&cache, &db, 2).await, Err("database down".into()));

        // After the back-off, a recovered database is asked again.
        db.failing.store(false, SeqCst);
        db.version.store(1, SeqCst);
        wait_past(Duration::from_millis(400)).await;
        assert_eq!(lookup(&cache, &db, 1).await.as_deref(), Ok("1-v1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_safe_serves_every_waiter_of_a_failed_load() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .fail_safe(Duration::from_secs(3600))
        .redis(&server.url())
        .unwrap();
    let db = Arc::new(Db::default());
    assert_eq!(lookup(&cache, &db, 5).await.unwrap(), "5-v0");
    wait_past(Duration::from_millis(150)).await;
    db.failing.store(true, SeqCst);
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (cache, db) = (cache.clone(), db.clone());
            tokio::spawn(async move { lookup(&cache, &db, 5).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().as_deref(), Ok("5-v0"));
    }
    assert_eq!(db.queries.load(SeqCst), 2, "{:?}", cache.stats());
}

#[cached(ttl = 100, prefix = "jit", cache = cache, skip(cache))]
async fn spread(cache: &Cache, id: u64) -> u64 {
    id
}

#[tokio::test]
async fn jitter_spreads_expiries_within_its_band() {
    let server = RedisServer::start();
    let cache = Cache::builder().jitter(0.2).redis(&server.url()).unwrap();
    let mut ttls = Vec::new();
    for id in 0..200 {
        spread(&cache, id).await;
        let key = spread_cache_key(&cache, id).unwrap();
        ttls.push(cache.ttl_of(&key).await.unwrap().expect("stored"));
    }
    let (lo, hi) = (Duration::from_secs(79), Duration::from_secs(121));
    assert!(ttls.iter().all(|t| (lo..hi).contains(t)), "{ttls:?}");
    let below = ttls
        .iter()
        .filter(|t| **t < Duration::from_secs(95))
        .count();
    let above = ttls
        .iter()
        .filter(|t| **t > Duration::from_secs(105))
        .count();
    assert!(
        below > 20 && above > 20,
        "spread both ways: {below} below, {above} above"
    );
}

#[tokio::test]
async fn without_jitter_every_ttl_is_exact() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    let start = Instant::now();
    for id in 0..20 {
        spread(&cache, id).await;
        let key = spread_cache_key(&cache, id).unwrap();
        let ttl = cache.ttl_of(&key).await.unwrap().expect("stored");
        assert!(
            ttl <= Duration::from_secs(100)
                && ttl + start.elapsed() + Duration::from_millis(5) >= Duration::from_secs(100),
            "{ttl:?}"
        );
    }
}
