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

/// A database whose answers (after the first) are held at a gate, so a test controls when
/// a refresh ends.
struct GatedDb {
    db: Db,
    gate: tokio::sync::Semaphore,
}

impl Default for GatedDb {
    fn default() -> Self {
        GatedDb {
            db: Db::default(),
            gate: tokio::sync::Semaphore::new(0),
        }
    }
}

#[cached(ttl = "200ms", stale = "1h", prefix = "swr", cache = cache, skip(cache, db))]
async fn swr(cache: Cache, db: Arc<GatedDb>, id: u64) -> Result<String, String> {
    if db.db.queries.load(SeqCst) > 0 {
        db.gate.acquire().await.expect("gate").forget();
    }
    db.db.query(id)
}

async fn until(what: &str, cache: &Cache, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_at_once_and_refreshes_once() {
    let server = RedisServer::start();
    for cache in both_backends(&server, Cache::builder) {
        let db = Arc::new(GatedDb::default());
        assert_eq!(swr(cache.clone(), db.clone(), 1).await.unwrap(), "1-v0");
        wait_past(Duration::from_millis(200)).await;
        db.db.version.store(1, SeqCst);

        // The refresh is held at the gate: every call still answers at once, stale.
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let (cache, db) = (cache.clone(), db.clone());
                tokio::spawn(async move { swr(cache, db, 1).await })
            })
            .collect();
        for call in calls {
            let answered = tokio::time::timeout(Duration::from_secs(5), call)
                .await
                .expect("a stale answer does not wait for the refresh");
            assert_eq!(answered.unwrap().as_deref(), Ok("1-v0"));
        }
        let stats = cache.stats();
        assert_eq!((stats.stale_served, stats.refreshes), (20, 1), "{stats:?}");
        assert_eq!(stats.misses, 1, "only the very first call missed");

        db.gate.add_permits(1);
        until("the refresh to land", &cache, || cache.stats().loads == 2).await;
        let refreshed = loop {
            let v = swr(cache.clone(), db.clone(), 1).await.unwrap();
            if v != "1-v0" {
                break v;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(refreshed, "1-v1", "{}", cache.backend_name());
        assert_eq!(db.db.queries.load(SeqCst), 2, "exactly one refresh ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_serving_stale_and_backs_off() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .fail_safe_backoff(Duration::from_secs(60))
        .redis(&server.url())
        .unwrap();
    let db = Arc::new(GatedDb::default());
    db.gate.add_permits(100);
    assert_eq!(swr(cache.clone(), db.clone(), 2).await.unwrap(), "2-v0");
    wait_past(Duration::from_millis(200)).await;
    db.db.failing.store(true, SeqCst);
    assert_eq!(
        swr(cache.clone(), db.clone(), 2).await.as_deref(),
        Ok("2-v0")
    );
    until("the refresh to fail", &cache, || {
        cache.stats().refresh_failures == 1
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            swr(cache.clone(), db.clone(), 2).await.as_deref(),
            Ok("2-v0")
        );
    }
    assert_eq!(
        db.db.queries.load(SeqCst),
        2,
        "backing off: no refresh per call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_beyond_max_refreshes_are_dropped_not_queued() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .max_refreshes(1)
        .redis(&server.url())
        .unwrap();
    let db = Arc::new(GatedDb::default());
    // The first query passes ungated; the second takes the one permit. The refreshes
    // below then wait at a closed gate.
    swr(cache.clone(), db.clone(), 3).await.unwrap();
    db.gate.add_permits(1);
    swr(cache.clone(), db.clone(), 4).await.unwrap();
    let queries_before = db.db.queries.load(SeqCst);
    wait_past(Duration::from_millis(200)).await;
    swr(cache.clone(), db.clone(), 3).await.unwrap();
    swr(cache.clone(), db.clone(), 4).await.unwrap();
    let stats = cache.stats();
    assert_eq!(
        (stats.refreshes, stats.refreshes_dropped),
        (1, 1),
        "{stats:?}"
    );
    db.gate.add_permits(1);
    until("the one refresh", &cache, || {
        db.db.queries.load(SeqCst) == queries_before + 1
    })
    .await;
}

#[cached(ttl = "600ms", refresh_ahead = 0.5, prefix = "ahead", cache = cache, skip(cache, db))]
async fn ahead(cache: Cache, db: Arc<Db>, id: u64) -> Result<String, String> {
    db.query(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_replaces_a_hot_key_before_it_expires() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    let db = Arc::new(Db::default());
    assert_eq!(ahead(cache.clone(), db.clone(), 1).await.unwrap(), "1-v0");
    db.version.store(1, SeqCst);
    // Before half the TTL: a plain hit.
    assert_eq!(ahead(cache.clone(), db.clone(), 1).await.unwrap(), "1-v0");
    assert_eq!(cache.stats().refreshes, 0);
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Past half the TTL: still the cached value, and a refresh starts.
    assert_eq!(ahead(cache.clone(), db.clone(), 1).await.unwrap(), "1-v0");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ahead(cache.clone(), db.clone(), 1).await.unwrap() != "1-v1" {
        assert!(
            Instant::now() < deadline,
            "no refresh landed: {:?}",
            cache.stats()
        );
        tokio::task::yield_now().await;
    }
    let key = ahead_cache_key(cache.clone(), 1).unwrap();
    let left = cache.ttl_of(&key).await.unwrap().expect("still cached");
    assert!(
        left > Duration::from_millis(400),
        "the TTL started over: {left:?}"
    );
    assert_eq!(db.queries.load(SeqCst), 2, "one refresh");
    assert_eq!(cache.stats().misses, 1, "the hot key never expired");
}

#[cached(ttl = "200ms", stale, refresh_ahead, prefix = "swrc", cache = cache, skip(cache, db))]
async fn swr_from_cache(cache: Cache, db: Arc<Db>, id: u64) -> Result<String, String> {
    db.query(id)
}

/// Bare `stale` and `refresh_ahead` take the cache's `.stale(..)` and `.refresh_ahead(..)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_stale_uses_the_caches_window_and_nothing_without_one() {
    let server = RedisServer::start();
    let with = Cache::builder().stale(Duration::from_secs(3600));
    let without = Cache::builder;
    // One id per cache: two of them share the Redis.
    for (id, cache, stale) in [
        (1, with.clone().redis(&server.url()).unwrap(), true),
        (2, with.memory().unwrap(), true),
        (3, without().redis(&server.url()).unwrap(), false),
    ] {
        let db = Arc::new(Db::default());
        assert_eq!(
            swr_from_cache(cache.clone(), db.clone(), id).await.unwrap(),
            format!("{id}-v0")
        );
        wait_past(Duration::from_millis(200)).await;
        db.version.store(1, SeqCst);
        let answer = swr_from_cache(cache.clone(), db.clone(), id).await.unwrap();
        let stats = cache.stats();
        if stale {
            assert_eq!(
                answer,
                format!("{id}-v0"),
                "served stale: {} {:?}",
                cache.backend_name(),
                cache.stats()
            );
            assert_eq!((stats.stale_served, stats.misses), (1, 1), "{stats:?}");
            until("the refresh", &cache, || db.queries.load(SeqCst) == 2).await;
        } else {
            assert_eq!(answer, format!("{id}-v1"), "expired: reloaded in the call");
            assert_eq!((stats.stale_served, stats.misses), (0, 2), "{stats:?}");
        }
        let key = swr_from_cache_cache_key(cache.clone(), id).unwrap();
        let left = cache.ttl_of(&key).await.unwrap().expect("cached");
        assert_eq!(
            left > Duration::from_secs(60),
            stale,
            "the physical TTL carries the cache's stale window: {left:?}"
        );
    }
}

#[test]
fn the_builder_checks_stale_and_refresh_ahead() {
    let bad = [
        Cache::builder().stale(Duration::ZERO).memory(),
        Cache::builder().refresh_ahead(1.0).memory(),
        Cache::builder().refresh_ahead(0.0).memory(),
    ];
    for built in bad {
        assert!(matches!(built, Err(cache_aside_runtime::Error::Config(_))));
    }
    assert!(
        Cache::builder()
            .stale(Duration::from_secs(1))
            .refresh_ahead(0.8)
            .memory()
            .is_ok()
    );
}

#[cached(ttl = "600ms", xfetch = 1.0, prefix = "xf", cache = cache, skip(cache, db))]
async fn early(cache: Cache, db: Arc<Db>, id: u64) -> Result<String, String> {
    // The load time XFetch scales its early refreshes by.
    tokio::time::sleep(Duration::from_millis(40)).await;
    db.query(id)
}

/// XFetch: a key read continuously is refreshed, once, before it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfetch_refreshes_a_hot_key_once_before_it_expires() {
    let server = RedisServer::start();
    for cache in both_backends(&server, Cache::builder) {
        let db = Arc::new(Db::default());
        assert_eq!(early(cache.clone(), db.clone(), 1).await.unwrap(), "1-v0");
        db.version.store(1, SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while early(cache.clone(), db.clone(), 1).await.unwrap() != "1-v1" {
            assert!(Instant::now() < deadline, "no refresh: {:?}", cache.stats());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let stats = cache.stats();
        assert_eq!(stats.misses, 1, "the key never expired: {stats:?}");
        assert_eq!(stats.stale_served, 0, "{stats:?}");
        assert_eq!(stats.refreshes, 1, "{stats:?}");
        assert_eq!(db.queries.load(SeqCst), 2, "one early refresh");
    }
}
