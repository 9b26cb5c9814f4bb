//! The cache-aside path end to end, through `#[cached]`, on a real `redis-server` per test
//! and on the embedded backend.
//!
//! Every cached function here takes its cache and a load counter as skipped arguments, so
//! each test has its own Redis, its own cache and its own count of body runs.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cached};
use cache_aside_tests::RedisServer;
use redis::Commands;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug, PartialEq)]
struct DbError;

fn loaded(counter: &AtomicU32) -> u32 {
    counter.fetch_add(1, SeqCst) + 1
}

#[cached(ttl = 60, prefix = "user", cache = cache, skip(cache, loads))]
async fn get_user(cache: &Cache, loads: &AtomicU32, id: u64) -> Result<User, DbError> {
    loaded(loads);
    Ok(User {
        id,
        name: format!("user-{id}"),
    })
}

#[cached(ttl = 60, prefix = "users", cache = cache, skip(cache, loads))]
async fn list_users(cache: &Cache, loads: &AtomicU32, page: u32) -> Vec<u64> {
    loaded(loads);
    vec![u64::from(page)]
}

#[cached(ttl = 60, none_ttl = "2s", prefix = "find", cache = cache, skip(cache, loads))]
async fn find_user(cache: &Cache, loads: &AtomicU32, email: &str) -> Result<Option<User>, DbError> {
    loaded(loads);
    Ok(email.starts_with("known").then(|| User {
        id: 1,
        name: email.to_owned(),
    }))
}

#[cached(ttl = 60, prefix = "lookup", cache = cache, skip(cache, loads))]
async fn lookup(cache: &Cache, loads: &AtomicU32, id: u64) -> Option<u64> {
    loaded(loads);
    (id > 0).then_some(id)
}

#[cached(ttl = 60, prefix = "flaky", cache = cache, skip(cache, loads))]
async fn flaky(cache: &Cache, loads: &AtomicU32, id: u64) -> Result<u64, DbError> {
    // Fails on the first call, succeeds after: an `Err` must not be cached.
    if loaded(loads) == 1 {
        Err(DbError)
    } else {
        Ok(id)
    }
}

#[cached(ttl = "300ms", prefix = "short", cache = cache, skip(cache, loads))]
async fn short_lived(cache: &Cache, loads: &AtomicU32, id: u64) -> u32 {
    let _ = id;
    loaded(loads)
}

#[cached(ttl = 60, key = "pair:{a}:{b}", cache = cache, skip(cache, loads))]
async fn pair(cache: &Cache, loads: &AtomicU32, a: &str, b: &str) -> String {
    loaded(loads);
    format!("{a}|{b}")
}

/// Users' tests often pause Tokio's clock. Single-flight compares a read's start with a
/// load's end; both must come from that clock, or a read after the end looks earlier and
/// takes the finished load's answer: here, the value from before the invalidation.
#[tokio::test(start_paused = true)]
async fn invalidation_holds_with_a_paused_clock() {
    let cache = Cache::memory();
    let loads = AtomicU32::new(0);
    get_user(&cache, &loads, 9).await.unwrap();
    assert!(get_user_invalidate(&cache, 9).await.unwrap());
    get_user(&cache, &loads, 9).await.unwrap();
    assert_eq!(
        loads.load(SeqCst),
        2,
        "the call after the invalidation loaded again"
    );
}

#[cached(prefix = "dflt", cache = cache, skip(cache))]
async fn by_default(cache: &Cache, id: u64) -> u64 {
    id
}

/// A function's policy is resolved once, with the first cache it runs with, and remembered:
/// a second cache with other settings must still get its own (here, its `default_ttl`).
#[tokio::test]
async fn each_cache_keeps_its_own_settings_for_one_function() {
    let short = Cache::builder()
        .default_ttl(Duration::from_secs(30))
        .memory()
        .unwrap();
    let long = Cache::builder()
        .default_ttl(Duration::from_secs(3000))
        .memory()
        .unwrap();
    for round in 0..2 {
        for (cache, ttl) in [(&short, 30), (&long, 3000)] {
            let id = round * 10 + ttl;
            by_default(cache, id).await;
            let key = by_default_cache_key(cache, id).unwrap();
            let left = cache.ttl_of(&key).await.unwrap().expect("stored");
            assert!(
                left <= Duration::from_secs(ttl) && left > Duration::from_secs(ttl - 5),
                "round {round}, default_ttl {ttl}s: {left:?}"
            );
        }
    }
}

/// `Duration::MAX` says "no timeout"; adding it to the clock must not panic.
#[tokio::test]
async fn a_timeout_of_duration_max_means_no_timeout() {
    let server = RedisServer::start();
    let build = || Cache::builder().timeout(Duration::MAX);
    for cache in [
        build().redis(&server.url()).unwrap(),
        build().memory().unwrap(),
    ] {
        let loads = AtomicU32::new(0);
        get_user(&cache, &loads, 3).await.unwrap();
        get_user(&cache, &loads, 3).await.unwrap();
        assert_eq!(loads.load(SeqCst), 1, "{}", cache.backend_name());
    }
}

fn redis_cache(server: &RedisServer) -> Cache {
    Cache::builder()
        .timeout(Duration::from_secs(2))
        .redis(&server.url())
        .expect("valid url")
}

/// Both backends, for the behaviours that must not depend on the backend.
fn both(server: &RedisServer) -> [Cache; 2] {
    [redis_cache(server), Cache::memory()]
}

#[tokio::test]
async fn miss_then_hit_loads_once() {
    let server = RedisServer::start();
    for cache in both(&server) {
        let loads = AtomicU32::new(0);
        let first = get_user(&cache, &loads, 7).await;
        let second = get_user(&cache, &loads, 7).await;
        assert_eq!(
            first,
            Ok(User {
                id: 7,
                name: "user-7".into()
            })
        );
        assert_eq!(second, first);
        assert_eq!(loads.load(SeqCst), 1, "{}", cache.backend_name());
        let stats = cache.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.loads, stats.errors),
            (1, 1, 1, 0)
        );
        assert_eq!(stats.hit_ratio(), 0.5);
        // Another argument is another key.
        get_user(&cache, &loads, 8).await.unwrap();
        assert_eq!(loads.load(SeqCst), 2);
    }
}

#[tokio::test]
async fn the_key_has_the_documented_format_and_a_real_ttl() {
    let server = RedisServer::start();
    let cache = redis_cache(&server);
    let loads = AtomicU32::new(0);
    get_user(&cache, &loads, 42).await.unwrap();
    let key = get_user_cache_key(&cache, 42).unwrap();
    assert_eq!(key, "ca:user:42");
    let pttl: i64 = server.conn().pttl(&key).unwrap();
    assert!((59_000..=60_000).contains(&pttl), "PTTL {pttl}");
    let left = cache.ttl_of(&key).await.unwrap().unwrap();
    assert!(
        left > Duration::from_secs(59) && left <= Duration::from_secs(60),
        "{left:?}"
    );

    let memory = Cache::builder().namespace("app").memory().unwrap();
    get_user(&memory, &loads, 42).await.unwrap();
    let key = get_user_cache_key(&memory, 42).unwrap();
    assert_eq!(key, "app:user:42");
    let left = memory.ttl_of(&key).await.unwrap().unwrap();
    assert!(
        left > Duration::from_secs(59) && left <= Duration::from_secs(60),
        "{left:?}"
    );
}

#[tokio::test]
async fn an_expired_entry_is_reloaded() {
    let server = RedisServer::start();
    for cache in both(&server) {
        let loads = AtomicU32::new(0);
        assert_eq!(short_lived(&cache, &loads, 1).await, 1);
        assert_eq!(short_lived(&cache, &loads, 1).await, 1, "hit before expiry");
        let key = short_lived_cache_key(&cache, 1).unwrap();
        // Wait for the backend to drop the key: the expiry itself is the signal.
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.ttl_of(&key).await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "key never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            short_lived(&cache, &loads, 1).await,
            2,
            "reloaded after expiry"
        );
    }
}

#[tokio::test]
async fn none_is_cached_only_with_none_ttl() {
    let server = RedisServer::start();
    for cache in both(&server) {
        let loads = AtomicU32::new(0);
        assert_eq!(find_user(&cache, &loads, "ghost@x").await, Ok(None));
        assert_eq!(find_user(&cache, &loads, "ghost@x").await, Ok(None));
        assert_eq!(loads.load(SeqCst), 1, "Ok(None) cached with none_ttl");
        let key = find_user_cache_key(&cache, "ghost@x").unwrap();
        let left = cache.ttl_of(&key).await.unwrap().unwrap();
        assert!(
            left <= Duration::from_secs(2),
            "none_ttl applies, not ttl: {left:?}"
        );
        let known = find_user(&cache, &loads, "known@x").await.unwrap().unwrap();
        assert_eq!(known.name, "known@x");
        let key = find_user_cache_key(&cache, "known@x").unwrap();
        assert!(cache.ttl_of(&key).await.unwrap().unwrap() > Duration::from_secs(50));

        // Without none_ttl, None is not stored and every call loads.
        let loads = AtomicU32::new(0);
        assert_eq!(lookup(&cache, &loads, 0).await, None);
        assert_eq!(lookup(&cache, &loads, 0).await, None);
        assert_eq!(loads.load(SeqCst), 2);
        assert_eq!(
            cache
                .ttl_of(&lookup_cache_key(&cache, 0).unwrap())
                .await
                .unwrap(),
            None
        );
        assert_eq!(lookup(&cache, &loads, 5).await, Some(5));
        assert_eq!(lookup(&cache, &loads, 5).await, Some(5));
        assert_eq!(loads.load(SeqCst), 3);
    }
}

#[tokio::test]
async fn err_is_never_cached() {
    let server = RedisServer::start();
    for cache in both(&server) {
        let loads = AtomicU32::new(0);
        assert_eq!(flaky(&cache, &loads, 3).await, Err(DbError));
        assert_eq!(
            cache
                .ttl_of(&flaky_cache_key(&cache, 3).unwrap())
                .await
                .unwrap(),
            None
        );
        assert_eq!(flaky(&cache, &loads, 3).await, Ok(3));
        assert_eq!(flaky(&cache, &loads, 3).await, Ok(3));
        assert_eq!(loads.load(SeqCst), 2);
    }
}

macro_rules! edge_value_fn {
    ($name:ident, $ty:ty, $value:expr) => {
        #[cached(ttl = 60, cache = cache, skip(cache, loads))]
        async fn $name(cache: &Cache, loads: &AtomicU32) -> $ty {
            loaded(loads);
            $value
        }
    };
}

edge_value_fn!(empty_string, String, String::new());
edge_value_fn!(zero, i64, 0);
edge_value_fn!(falsy, bool, false);
edge_value_fn!(empty_vec, Vec<String>, Vec::new());
edge_value_fn!(unit, (), ());
edge_value_fn!(some_none, Option<Option<u8>>, Some(None));
edge_value_fn!(
    ok_some_none,
    Result<Option<Option<u8>>, DbError>,
    Ok(Some(None))
);

#[tokio::test]
async fn falsy_and_empty_values_are_hits() {
    let server = RedisServer::start();
    for cache in both(&server) {
        let loads = AtomicU32::new(0);
        for _ in 0..2 {
            assert_eq!(empty_string(&cache, &loads).await, "");
            assert_eq!(zero(&cache, &loads).await, 0);
            assert!(!falsy(&cache, &loads).await);
            assert_eq!(empty_vec(&cache, &loads).await, Vec::<String>::new());
            unit(&cache, &loads).await;
            assert_eq!(some_none(&cache, &loads).await, Some(None));
            assert_eq!(ok_some_none(&cache, &loads).await, Ok(Some(None)));
        }
        assert_eq!(
            loads.load(SeqCst),
            7,
            "{}: each value loaded once",
            cache.backend_name()
        );
        assert_eq!(cache.stats().hits, 7);
    }
}

#[tokio::test]
async fn companion_invalidates_exactly_one_key() {
    let server = RedisServer::start();
    for cache in both(&server) {
        let loads = AtomicU32::new(0);
        get_user(&cache, &loads, 1).await.unwrap();
        get_user(&cache, &loads, 2).await.unwrap();
        assert!(get_user_invalidate(&cache, 1).await.unwrap());
        assert!(
            !get_user_invalidate(&cache, 1).await.unwrap(),
            "already gone"
        );
        get_user(&cache, &loads, 1).await.unwrap();
        get_user(&cache, &loads, 2).await.unwrap();
        assert_eq!(loads.load(SeqCst), 3, "1 reloaded, 2 still cached");
    }
}

#[tokio::test]
async fn prefix_invalidation_leaves_other_prefixes_alone() {
    let server = RedisServer::start();
    for cache in both(&server) {
        let user_loads = AtomicU32::new(0);
        let list_loads = AtomicU32::new(0);
        for id in 0..1200 {
            get_user(&cache, &user_loads, id).await.unwrap();
        }
        list_users(&cache, &list_loads, 1).await;
        // Another namespace on the same backend must not be touched either.
        let other = Cache::builder().namespace("other");
        let other = match cache.backend_name() {
            "redis" => other.redis(&server.url()).unwrap(),
            _ => other.memory().unwrap(),
        };
        get_user(&other, &user_loads, 1).await.unwrap();
        assert_eq!(user_loads.load(SeqCst), 1201);

        // 1200 keys: several SCAN/UNLINK batches.
        assert_eq!(get_user_invalidate_all(&cache).await.unwrap(), 1200);
        get_user(&cache, &user_loads, 5).await.unwrap();
        assert_eq!(user_loads.load(SeqCst), 1202, "user:* was invalidated");
        list_users(&cache, &list_loads, 1).await;
        assert_eq!(list_loads.load(SeqCst), 1, "users:* survived");
        get_user(&other, &user_loads, 1).await.unwrap();
        assert_eq!(user_loads.load(SeqCst), 1202, "other namespace survived");

        assert_eq!(cache.invalidate_prefix("users").await.unwrap(), 1);
        assert!(
            cache.invalidate_prefix("user:*").await.is_err(),
            "patterns are not prefixes"
        );
    }
}

#[tokio::test]
async fn separators_and_globs_in_arguments_cannot_collide() {
    let server = RedisServer::start();
    for cache in both(&server) {
        let loads = AtomicU32::new(0);
        assert_eq!(pair(&cache, &loads, "a:b", "c").await, "a:b|c");
        assert_eq!(pair(&cache, &loads, "a", "b:c").await, "a|b:c");
        assert_eq!(pair(&cache, &loads, "*", "x").await, "*|x");
        assert_eq!(loads.load(SeqCst), 3);
        assert_eq!(
            pair_cache_key(&cache, "a:b", "c").unwrap(),
            "ca:pair:a%3Ab:c"
        );
        // Invalidating `pair` with a glob-looking argument removes exactly that entry.
        assert!(pair_invalidate(&cache, "*", "x").await.unwrap());
        assert_eq!(pair(&cache, &loads, "a", "b:c").await, "a|b:c");
        assert_eq!(loads.load(SeqCst), 3);
    }
}

#[tokio::test]
async fn a_corrupt_entry_is_a_miss_and_gets_replaced() {
    let server = RedisServer::start();
    let cache = redis_cache(&server);
    let loads = AtomicU32::new(0);
    let key = get_user_cache_key(&cache, 9).unwrap();
    let mut conn = server.conn();
    let garbage: [&[u8]; 3] = [
        b"not an envelope",
        b"\xCA\x01\x00\x01\0\0\0\0\0\0\0\0{\"id\":",
        b"\xCA\x01\x00\x01\0\0\0\0\0\0\0\0\"a string\"",
    ];
    for (i, bytes) in garbage.into_iter().enumerate() {
        let _: () = conn.set(&key, bytes).unwrap();
        assert_eq!(get_user(&cache, &loads, 9).await.unwrap().id, 9);
        assert_eq!(loads.load(SeqCst) as usize, i + 1, "garbage #{i} reloaded");
        let stored: Vec<u8> = conn.get(&key).unwrap();
        assert_eq!(stored[0], 0xCA, "garbage #{i} overwritten");
        assert_eq!(get_user(&cache, &loads, 9).await.unwrap().id, 9);
        assert_eq!(loads.load(SeqCst) as usize, i + 1, "replacement is a hit");
    }
    assert_eq!(cache.stats().corrupt, 3);
}

/// A key holding a list (written by something else): every call returns the body's value,
/// and the key is replaced by an entry, as garbage is.
#[tokio::test]
async fn a_key_of_another_type_is_replaced() {
    let server = RedisServer::start();
    let cache = redis_cache(&server);
    let loads = AtomicU32::new(0);
    let key = get_user_cache_key(&cache, 10).unwrap();
    let mut conn = server.conn();
    let _: () = conn.rpush(&key, "x").unwrap();
    assert_eq!(get_user(&cache, &loads, 10).await.unwrap().id, 10);
    // The list is deleted beside the call; a later load stores the entry.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(get_user(&cache, &loads, 10).await.unwrap().id, 10);
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
        if kind == "string" {
            break;
        }
        assert!(Instant::now() < deadline, "the key is still a {kind}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = loads.load(SeqCst);
    assert_eq!(get_user(&cache, &loads, 10).await.unwrap().id, 10);
    assert_eq!(loads.load(SeqCst), before, "the replacement is a hit");
}

/// A lease placeholder with no expiry, written by hand: calls load beside it (nothing to
/// store under another's lease), and the first of them gives the key `lock_ttl`, so the key
/// is cached again once that ends instead of never.
#[tokio::test]
async fn a_lease_without_an_expiry_is_given_one() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .lock_ttl(Duration::from_millis(300))
        .redis(&server.url())
        .unwrap();
    let loads = AtomicU32::new(0);
    let key = get_user_cache_key(&cache, 11).unwrap();
    let mut conn = server.conn();
    let mut placeholder = vec![0xCA, 0x03, 0x06, 0x00];
    placeholder.extend([0; 8]);
    placeholder.extend(7u64.to_be_bytes());
    let _: () = conn.set(&key, &placeholder).unwrap();
    assert_eq!(get_user(&cache, &loads, 11).await.unwrap().id, 11);
    let pttl: i64 = conn.pttl(&key).unwrap();
    assert!((1..=300).contains(&pttl), "the lease's expiry: {pttl} ms");
    // Past it: waiting for the lease to expire is the scenario itself.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(get_user(&cache, &loads, 11).await.unwrap().id, 11);
    let before = loads.load(SeqCst);
    assert_eq!(get_user(&cache, &loads, 11).await.unwrap().id, 11);
    assert_eq!(loads.load(SeqCst), before, "cached again");
}

#[tokio::test]
async fn redis_down_at_call_time_returns_the_loaders_value() {
    let mut server = RedisServer::start();
    let cache = redis_cache(&server);
    let loads = AtomicU32::new(0);
    get_user(&cache, &loads, 1).await.unwrap();
    server.kill();
    for id in [1, 2] {
        assert_eq!(get_user(&cache, &loads, id).await.unwrap().id, id);
    }
    assert_eq!(
        loads.load(SeqCst),
        3,
        "both calls loaded: the cache is unreachable"
    );
    let stats = cache.stats();
    assert!(stats.errors >= 2, "failures are counted: {stats:?}");
    assert!(
        cache.invalidate("ca:user:1").await.is_err(),
        "cache APIs do surface errors"
    );
}

#[tokio::test]
async fn redis_never_up_still_serves_calls() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let cache = Cache::builder()
        .timeout(Duration::from_millis(200))
        .redis(&url)
        .unwrap();
    let loads = AtomicU32::new(0);
    let start = Instant::now();
    assert_eq!(get_user(&cache, &loads, 1).await.unwrap().id, 1);
    assert_eq!(list_users(&cache, &loads, 4).await, [4]);
    assert_eq!(loads.load(SeqCst), 2);
    // Each call waits at most the get and set timeouts.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

struct Users {
    cache: Cache,
    loads: AtomicU32,
}

impl Users {
    #[cached(ttl = 60, cache = self.cache)]
    async fn name(&self, id: u64) -> String {
        loaded(&self.loads);
        format!("user-{id}")
    }
}

#[tokio::test]
async fn methods_use_their_own_cache_and_a_type_derived_prefix() {
    let server = RedisServer::start();
    let users = Users {
        cache: redis_cache(&server),
        loads: AtomicU32::new(0),
    };
    assert_eq!(users.name(3).await, "user-3");
    assert_eq!(users.name(3).await, "user-3");
    assert_eq!(users.loads.load(SeqCst), 1);
    let key = users.name_cache_key(3).unwrap();
    assert_eq!(key, "ca:cache_aside.Users.name:3");
    let exists: bool = server.conn().exists(&key).unwrap();
    assert!(exists);
    assert_eq!(users.name_invalidate_all().await.unwrap(), 1);
}

#[cached(ttl = 60, prefix = "default")]
async fn uses_default(id: u64) -> u64 {
    id * 2
}

#[tokio::test]
async fn without_a_default_cache_calls_run_uncached_and_companions_say_why() {
    // This test binary never calls `set_default`.
    assert_eq!(uses_default(21).await, 42);
    let error = uses_default_cache_key(21).unwrap_err();
    assert!(
        error.to_string().contains("no default cache is set"),
        "{error}"
    );
    assert!(uses_default_invalidate(21).await.is_err());
}

#[tokio::test]
async fn a_hung_redis_costs_the_timeout_not_the_call() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .timeout(Duration::from_millis(200))
        .redis(&server.url())
        .unwrap();
    let loads = AtomicU32::new(0);
    get_user(&cache, &loads, 1).await.unwrap(); // connected and cached
    server.pause(); // SIGSTOP: requests hang instead of failing
    let start = Instant::now();
    assert_eq!(get_user(&cache, &loads, 1).await.unwrap().id, 1);
    let elapsed = start.elapsed();
    server.resume();
    assert_eq!(loads.load(SeqCst), 2, "the hung read was a miss");
    // One bounded read and one bounded write; generous for a loaded machine.
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert!(cache.stats().errors >= 1);
}

#[tokio::test]
async fn hits_resume_by_themselves_after_a_redis_restart() {
    let mut server = RedisServer::start();
    let cache = redis_cache(&server);
    let loads = AtomicU32::new(0);
    get_user(&cache, &loads, 1).await.unwrap();
    server.kill();
    assert_eq!(
        get_user(&cache, &loads, 1).await.unwrap().id,
        1,
        "down: loader value"
    );
    server.restart(); // same port, empty dataset
    // Bounded: the connection manager reconnects on its own; no user code is involved.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = cache.stats().hits;
        assert_eq!(get_user(&cache, &loads, 1).await.unwrap().id, 1);
        if cache.stats().hits > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no hit within 10 s of the restart: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pttl: i64 = server
        .conn()
        .pttl(get_user_cache_key(&cache, 1).unwrap())
        .unwrap();
    assert!(pttl > 0, "the entry was written again after the restart");
}

struct Tenant {
    cache: Cache,
    name: String,
}

impl Tenant {
    #[cached(ttl = 60, key = "tenant:{self.name}:{id}", cache = self.cache)]
    async fn item(&self, id: u64) -> String {
        format!("{}-{id}", self.name)
    }
}

#[tokio::test]
async fn key_templates_can_read_the_receiver() {
    let cache = Cache::memory();
    let a = Tenant {
        cache: cache.clone(),
        name: "acme:eu".into(),
    };
    let b = Tenant {
        cache,
        name: "globex".into(),
    };
    assert_eq!(a.item(1).await, "acme:eu-1");
    assert_eq!(
        b.item(1).await,
        "globex-1",
        "receivers with other fields get other keys"
    );
    assert_eq!(a.item_cache_key(1).unwrap(), "ca:tenant:acme%3Aeu:1");
    assert_eq!(a.cache.stats().loads, 2);
}

#[cached(ttl = 600, prefix = "replica", cache = cache, skip(cache, loads))]
async fn on_replica(cache: &Cache, loads: &AtomicU32, id: u64) -> u64 {
    loaded(loads);
    id * 2
}

/// A cache pointed at a replica keeps its hits: the read that would take a lease (`SET ..
/// NX GET`, used once a function has been missing) is refused with `READONLY` there, and
/// is a plain `GET` instead. Misses run their bodies and store nothing (a probe: every
/// read failed after two misses).
#[tokio::test]
async fn hits_keep_working_on_a_replica() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    let filler = Cache::redis(&primary.url()).unwrap();
    let loads = AtomicU32::new(0);
    for id in 1..=3 {
        assert_eq!(on_replica(&filler, &loads, id).await, id * 2);
    }
    let mut conn = replica.conn();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port())
        .query(&mut conn)
        .unwrap();
    let synced = Instant::now();
    loop {
        let keys: Vec<String> = conn.keys("ca:replica:*").unwrap();
        if keys.len() == 3 {
            break;
        }
        assert!(
            synced.elapsed() < Duration::from_secs(20),
            "no sync: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reader = Cache::redis(&replica.url()).unwrap();
    let loads = AtomicU32::new(0);
    for id in 10..=13 {
        assert_eq!(on_replica(&reader, &loads, id).await, id * 2);
    }
    assert_eq!(loads.load(SeqCst), 4, "misses run their bodies");
    for id in 1..=3 {
        assert_eq!(on_replica(&reader, &loads, id).await, id * 2);
    }
    assert_eq!(loads.load(SeqCst), 4, "the replicated entries are hits");
    assert_eq!(reader.stats().hits, 3, "{:?}", reader.stats());
}
