//! Batch reads, `#[cached(batch)]` and `Cache::get_many`, on Redis and on the embedded
//! backend: one read for every key, one body call for the keys that missed, each entry the
//! one-key function's, single-flight and leases per key.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cache_aside_runtime::batch::Batch;
use cache_aside_runtime::{Cache, cache_evict, cached};
use cache_aside_tests::RedisServer;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// A table of users, recording which ids each query asked for.
#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<u64, String>>,
    asked: Mutex<Vec<Vec<u64>>>,
    /// When set, each query waits for it, after saying it started.
    gate: Option<(Notify, Notify)>,
    queries: AtomicU64,
}

#[derive(Clone, Debug, PartialEq)]
struct DbError;

impl Db {
    fn with(rows: &[(u64, &str)]) -> Db {
        let db = Db::default();
        for &(id, name) in rows {
            db.rows.lock().unwrap().insert(id, name.to_owned());
        }
        db
    }

    fn gated(rows: &[(u64, &str)]) -> Db {
        Db {
            gate: Some((Notify::new(), Notify::new())),
            ..Db::with(rows)
        }
    }

    async fn users(&self, ids: &[u64]) -> HashMap<u64, User> {
        self.queries.fetch_add(1, SeqCst);
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        self.asked.lock().unwrap().push(sorted);
        let found = {
            let rows = self.rows.lock().unwrap();
            ids.iter()
                .filter_map(|&id| {
                    let name = rows.get(&id)?.clone();
                    Some((id, User { id, name }))
                })
                .collect()
        };
        if let Some((started, go)) = &self.gate {
            started.notify_one();
            go.notified().await;
        }
        found
    }

    fn asked(&self) -> Vec<Vec<u64>> {
        std::mem::take(&mut *self.asked.lock().unwrap())
    }

    fn rename(&self, id: u64, name: &str) {
        self.rows.lock().unwrap().insert(id, name.to_owned());
    }
}

#[cached(ttl = 600, none_ttl = 600, prefix = "b-user", cache = cache, skip(cache, db))]
async fn get_user(cache: &Cache, db: &Db, id: u64) -> Result<Option<User>, DbError> {
    Ok(db.users(&[id]).await.remove(&id))
}

#[cached(batch, ttl = 600, none_ttl = 600, prefix = "b-user", cache = cache, skip(cache, db))]
async fn get_users(cache: &Cache, db: &Db, ids: &[u64]) -> Result<HashMap<u64, User>, DbError> {
    Ok(db.users(ids).await)
}

/// No `none_ttl`: a key the body leaves out is asked again.
#[cached(batch, ttl = 600, prefix = "b-name", cache = cache, skip(cache, db))]
async fn names(cache: &Cache, db: &Db, ids: Vec<u64>) -> BTreeMap<u64, String> {
    db.users(&ids)
        .await
        .into_iter()
        .map(|(id, u)| (id, u.name))
        .collect()
}

#[cached(batch, ttl = 600, prefix = "b-set", cache = cache, skip(cache, db))]
async fn by_set(cache: &Cache, db: &Db, ids: HashSet<u64>) -> HashMap<u64, String> {
    let ids: Vec<u64> = ids.into_iter().collect();
    let users = db.users(&ids).await;
    users.into_iter().map(|(id, u)| (id, u.name)).collect()
}

#[cached(batch, ttl = 600, prefix = "b-bset", cache = cache, skip(cache, db))]
async fn by_ref_set(cache: &Cache, db: &Db, ids: &BTreeSet<u64>) -> HashMap<u64, String> {
    let ids: Vec<u64> = ids.iter().copied().collect();
    let users = db.users(&ids).await;
    users.into_iter().map(|(id, u)| (id, u.name)).collect()
}

#[cached(batch, ttl = 600, prefix = "b-fail", cache = cache, skip(cache, db, fail))]
async fn failing(
    cache: &Cache,
    db: &Db,
    fail: bool,
    ids: &Vec<u64>,
) -> Result<HashMap<u64, User>, DbError> {
    let users = db.users(ids).await;
    if fail {
        return Err(DbError);
    }
    Ok(users)
}

#[cache_evict(get_user(cache, id))]
async fn rename(cache: &Cache, db: &Db, id: u64, name: &str) {
    db.rename(id, name);
}

fn caches(server: &RedisServer) -> [Cache; 2] {
    [Cache::redis(&server.url()).unwrap(), Cache::memory()]
}

fn user(id: u64, name: &str) -> User {
    User {
        id,
        name: name.to_owned(),
    }
}

fn map(pairs: &[(u64, &str)]) -> HashMap<u64, User> {
    pairs
        .iter()
        .map(|&(id, name)| (id, user(id, name)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_keys_that_missed_reach_the_body() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ada"), (2, "alan"), (3, "grace"), (4, "edsger")]);
        let got = get_users(cache, &db, &[1, 2]).await.unwrap();
        assert_eq!(got, map(&[(1, "ada"), (2, "alan")]));
        assert_eq!(db.asked(), vec![vec![1, 2]]);
        let got = get_users(cache, &db, &[1, 2, 3, 4]).await.unwrap();
        assert_eq!(
            got,
            map(&[(1, "ada"), (2, "alan"), (3, "grace"), (4, "edsger")])
        );
        assert_eq!(db.asked(), vec![vec![3, 4]], "{}", cache.backend_name());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (2, 4));
        // All hits: the body is not called.
        let got = get_users(cache, &db, &[4, 3, 2, 1]).await.unwrap();
        assert_eq!(got.len(), 4);
        assert!(db.asked().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_entries_are_the_one_key_functions_entries() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(10, "ada"), (11, "alan")]);
        // Loaded by the one-key function, hit by the batch.
        assert_eq!(get_user(cache, &db, 10).await, Ok(Some(user(10, "ada"))));
        db.asked();
        let got = get_users(cache, &db, &[10, 11]).await.unwrap();
        assert_eq!(got, map(&[(10, "ada"), (11, "alan")]));
        assert_eq!(db.asked(), vec![vec![11]]);
        // Loaded by the batch, hit by the one-key function.
        assert_eq!(get_user(cache, &db, 11).await, Ok(Some(user(11, "alan"))));
        assert!(db.asked().is_empty(), "a hit on the batch's entry");
        // Evicting one key through the one-key function's entry reaches the batch.
        rename(cache, &db, 11, "turing").await;
        let got = get_users(cache, &db, &[10, 11]).await.unwrap();
        assert_eq!(got, map(&[(10, "ada"), (11, "turing")]));
        assert_eq!(db.asked(), vec![vec![11]], "{}", cache.backend_name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_keys_are_cached_with_none_ttl_and_asked_again_without() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(20, "ada")]);
        let got = get_users(cache, &db, &[20, 21]).await.unwrap();
        assert_eq!(got, map(&[(20, "ada")]));
        assert_eq!(db.asked(), vec![vec![20, 21]]);
        let got = get_users(cache, &db, &[20, 21]).await.unwrap();
        assert_eq!(got, map(&[(20, "ada")]));
        assert!(db.asked().is_empty(), "21's absence is cached");
        // And the one-key function reads it as its `None`.
        assert_eq!(get_user(cache, &db, 21).await, Ok(None));
        assert!(db.asked().is_empty());

        let got = names(cache, &db, vec![20, 21]).await;
        assert_eq!(got, BTreeMap::from([(20, "ada".to_owned())]));
        assert_eq!(db.asked(), vec![vec![20, 21]]);
        names(cache, &db, vec![20, 21]).await;
        assert_eq!(db.asked(), vec![vec![21]], "no none_ttl: asked again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_keys_are_read_and_loaded_once() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(30, "ada"), (31, "alan")]);
        let got = get_users(cache, &db, &[30, 31, 30, 30]).await.unwrap();
        assert_eq!(got, map(&[(30, "ada"), (31, "alan")]));
        assert_eq!(db.asked(), vec![vec![30, 31]]);
        let got = get_users(cache, &db, &[]).await.unwrap();
        assert!(got.is_empty());
        assert!(db.asked().is_empty(), "no keys, no body");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_and_owned_collections_are_handed_only_the_missing_keys() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(40, "ada"), (41, "alan"), (42, "grace")]);
        by_set(cache, &db, HashSet::from([40])).await;
        by_ref_set(cache, &db, &BTreeSet::from([41])).await;
        db.asked();
        let got = by_set(cache, &db, HashSet::from([40, 41, 42])).await;
        assert_eq!(got.len(), 3);
        assert_eq!(db.asked(), vec![vec![41, 42]]);
        let got = by_ref_set(cache, &db, &BTreeSet::from([40, 41, 42])).await;
        assert_eq!(got.len(), 3);
        assert_eq!(db.asked(), vec![vec![40, 42]]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_body_stores_nothing() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(50, "ada"), (51, "alan")]);
        assert_eq!(failing(cache, &db, true, &vec![50, 51]).await, Err(DbError));
        assert_eq!(db.asked(), vec![vec![50, 51]]);
        let got = failing(cache, &db, false, &vec![50, 51]).await.unwrap();
        assert_eq!(got, map(&[(50, "ada"), (51, "alan")]));
        assert_eq!(db.asked(), vec![vec![50, 51]], "nothing was stored");
        let key = get_user_cache_key(cache, 50).unwrap();
        assert!(
            cache.ttl_of(&key).await.unwrap().is_none(),
            "no placeholder left"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_load_each_key_once() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::gated(&[(60, "ada"), (61, "alan"), (62, "grace")]);
        let (started, go) = db.gate.as_ref().unwrap();
        let first = get_users(cache, &db, &[60, 61]);
        let second = async {
            // Once the first batch's body runs, 60 and 61 are its flights.
            started.notified().await;
            get_users(cache, &db, &[61, 62]).await
        };
        let release = async {
            // The second batch's body (62 only) starts: let both finish.
            started.notified().await;
            go.notify_waiters();
            go.notify_one();
        };
        let (a, b, ()) = tokio::join!(first, second, release);
        go.notify_waiters();
        assert_eq!(a.unwrap(), map(&[(60, "ada"), (61, "alan")]));
        assert_eq!(b.unwrap(), map(&[(61, "alan"), (62, "grace")]));
        let mut asked = db.asked();
        asked.sort();
        assert_eq!(
            asked,
            vec![vec![60, 61], vec![62]],
            "{}",
            cache.backend_name()
        );
        assert_eq!(cache.stats().waited, 1);
    }
}

static NAMES: Batch = Batch::new("b-api")
    .ttl(Duration::from_secs(600))
    .none_ttl(Duration::from_secs(600));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_serves_code_that_is_not_a_function() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(70, "ada"), (71, "alan")]);
        let load = |missing: Vec<u64>| {
            let db = &db;
            async move {
                let users = db.users(&missing).await;
                Ok::<_, DbError>(users.into_iter().map(|(id, u)| (id, u.name)).collect())
            }
        };
        let got: HashMap<u64, String> = cache.get_many(&NAMES, [70, 71, 72], load).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(db.asked(), vec![vec![70, 71, 72]]);
        let got: HashMap<u64, String> = cache.get_many(&NAMES, [70, 72], load).await.unwrap();
        assert_eq!(got, HashMap::from([(70, "ada".to_owned())]));
        assert!(db.asked().is_empty());
        // The same key a `#[cached(prefix = "b-api")]` function with one key argument uses.
        let key = format!("{}:b-api:70", cache.namespace());
        assert!(cache.ttl_of(&key).await.unwrap().is_some());
    }
}

/// What the invalidation race did to a batch: what the paused batch returned for the key,
/// what a one-key reader that started after the invalidation got (`None`: it joined the
/// paused batch and was still waiting), and what the next read of the key returned.
async fn invalidation_during_a_batch(cache: &Cache, id: u64) -> (String, Option<String>, String) {
    let db = Db::gated(&[(id, "old"), (id + 1, "other")]);
    let (started, go) = db.gate.as_ref().unwrap();
    let ids = [id, id + 1];
    let batch = get_users(cache, &db, &ids);
    let driver = async {
        started.notified().await;
        // The write: the row changes, then its entry is evicted.
        rename(cache, &db, id, "new").await;
        let later = async {
            let read = get_user(cache, &db, id).await;
            read.unwrap().map(|u| u.name)
        };
        let release = async {
            // The later reader runs a body of its own; joining the paused batch, it would
            // not, and the bound ends the wait.
            let own = tokio::time::timeout(Duration::from_secs(2), started.notified()).await;
            go.notify_waiters();
            own.is_ok()
        };
        let (later, ran) = tokio::join!(later, release);
        (later.filter(|_| ran), ran)
    };
    let (batch, (later, ran)) = tokio::join!(batch, driver);
    if !ran {
        go.notify_waiters();
    }
    let paused = batch
        .unwrap()
        .remove(&id)
        .map(|u| u.name)
        .unwrap_or_default();
    let next = get_user(cache, &db, id).await.unwrap().map(|u| u.name);
    (paused, later, next.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_during_a_batch_wins() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let (paused, later, next) = invalidation_during_a_batch(cache, 80).await;
        assert_eq!(paused, "old", "its own caller gets what it read");
        assert_eq!(later.as_deref(), Some("new"), "{}", cache.backend_name());
        assert_eq!(next, "new", "the batch did not store the old row");
        // The other key of the batch was stored.
        let db = Db::default();
        let got = get_users(cache, &db, &[81]).await.unwrap();
        assert_eq!(got, map(&[(81, "other")]));
        assert!(db.asked().is_empty());
    }
}

/// The old path, to show the scenario catches the race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_leases_a_batch_stores_the_old_row() {
    let server = RedisServer::start();
    let builder = || Cache::builder().__without_leases();
    let caches = [
        builder().redis(&server.url()).unwrap(),
        builder().memory().unwrap(),
    ];
    for cache in &caches {
        let (_, _, next) = invalidation_during_a_batch(cache, 90).await;
        assert_eq!(next, "old", "{}", cache.backend_name());
    }
}

#[cached(ttl = 600, prefix = "b-mix", cache = cache, skip(cache, db))]
async fn mix_one(cache: &Cache, db: &Db, id: u64) -> Option<User> {
    db.users(&[id]).await.remove(&id)
}

/// Under `mix_one`'s keys, but storing names, not users.
#[cached(batch, ttl = 600, prefix = "b-mix", cache = cache, skip(cache, db))]
async fn mix_many(cache: &Cache, db: &Db, ids: &[u64]) -> HashMap<u64, String> {
    let users = db.users(ids).await;
    users.into_iter().map(|(id, u)| (id, u.name)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_storing_another_type_under_the_same_keys_runs_uncached() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    let db = Db::with(&[(100, "ada")]);
    assert_eq!(mix_one(&cache, &db, 100).await, Some(user(100, "ada")));
    assert_eq!(mix_one(&cache, &db, 100).await, Some(user(100, "ada")));
    assert_eq!(db.asked().len(), 1, "cached until the batch shows up");
    let errors = cache.stats().errors;
    for _ in 0..2 {
        let got = mix_many(&cache, &db, &[100]).await;
        assert_eq!(
            got,
            HashMap::from([(100, "ada".to_owned())]),
            "not a User's bytes"
        );
    }
    assert_eq!(db.asked().len(), 2, "the batch ran uncached");
    assert_eq!(mix_one(&cache, &db, 100).await, Some(user(100, "ada")));
    assert_eq!(db.asked().len(), 1, "and so does the one-key function now");
    assert!(cache.stats().errors >= errors + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_batch_is_read_in_parts_and_keeps_its_order() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let rows: Vec<(u64, String)> = (1000..2300).map(|id| (id, format!("u{id}"))).collect();
        let rows: Vec<(u64, &str)> = rows.iter().map(|(id, n)| (*id, n.as_str())).collect();
        let db = Db::with(&rows);
        let odd: Vec<u64> = (1000..2300).filter(|id| id % 2 == 1).collect();
        assert_eq!(get_users(cache, &db, &odd).await.unwrap().len(), odd.len());
        db.asked();
        let all: Vec<u64> = (1000..2300).rev().collect();
        let got = get_users(cache, &db, &all).await.unwrap();
        assert_eq!(got.len(), all.len());
        assert!(
            got.iter()
                .all(|(id, u)| u.id == *id && u.name == format!("u{id}"))
        );
        let asked = db.asked();
        assert_eq!(asked.len(), 1);
        let even: Vec<u64> = (1000..2300).filter(|id| id % 2 == 0).collect();
        assert_eq!(asked[0], even, "{}", cache.backend_name());
    }
}

/// What `on_cache_error = "fail"` batches return: the body's error, or the cache's.
#[derive(Debug)]
enum StrictError {
    Db,
    Cache(cache_aside_runtime::Error),
}

impl From<cache_aside_runtime::Error> for StrictError {
    fn from(error: cache_aside_runtime::Error) -> Self {
        StrictError::Cache(error)
    }
}

#[cached(batch, ttl = 600, prefix = "b-strict", on_cache_error = "fail", timeout = "300ms", cache = cache, skip(cache, db))]
async fn strict_users(
    cache: &Cache,
    db: &Db,
    ids: &[u64],
) -> Result<HashMap<u64, User>, StrictError> {
    Ok(db.users(ids).await)
}

#[cached(batch, ttl = 600, prefix = "b-open", timeout = "300ms", cache = cache, skip(cache, db))]
async fn open_users(
    cache: &Cache,
    db: &Db,
    ids: &[u64],
) -> Result<HashMap<u64, User>, StrictError> {
    let _ = StrictError::Db;
    Ok(db.users(ids).await)
}

/// With `on_cache_error = "fail"`, a batch whose cache fails returns that failure as its
/// `Err` and does not run its body: a read that fails (Redis stopped), a lease refused (a
/// full Redis). The same batch fails open without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_batch_surfaces_cache_failures() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .breaker(1_000, Duration::from_secs(1))
        .redis(&server.url())
        .unwrap();
    let db = Db::with(&[(1, "ann"), (2, "bob"), (3, "cy")]);
    let got = strict_users(&cache, &db, &[1, 2]).await.unwrap();
    assert_eq!(got, map(&[(1, "ann"), (2, "bob")]));
    assert_eq!(strict_users(&cache, &db, &[1, 2]).await.unwrap().len(), 2);
    assert_eq!(db.queries.load(SeqCst), 1, "the second batch hit");

    // Full: reads work, the lease of a missing key is refused.
    let mut conn = server.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    let hits = strict_users(&cache, &db, &[1, 2]).await.unwrap();
    assert_eq!(hits.len(), 2, "hits need no write");
    let refused = strict_users(&cache, &db, &[1, 3]).await;
    assert!(
        matches!(&refused, Err(StrictError::Cache(e)) if format!("{e:?}").contains("OOM")),
        "{refused:?}"
    );
    assert_eq!(db.queries.load(SeqCst), 1, "the body did not run");
    let open = open_users(&cache, &db, &[1, 3]).await.unwrap();
    assert_eq!(open.len(), 2, "fail-open: the body answers");
    assert_eq!(db.queries.load(SeqCst), 2);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut conn)
        .unwrap();

    server.kill();
    let down = strict_users(&cache, &db, &[1, 3]).await;
    assert!(matches!(&down, Err(StrictError::Cache(_))), "{down:?}");
    assert_eq!(db.queries.load(SeqCst), 2, "the body did not run");
    let open = open_users(&cache, &db, &[1, 3]).await.unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(db.queries.load(SeqCst), 3);
}

#[cached(batch, ttl = 600, prefix = "b-paced", on_cache_error = "fail", timeout = "600ms", cache = cache, skip(cache, pause))]
async fn paced_users(
    cache: &Cache,
    pause: &dyn Fn(),
    ids: &[u64],
) -> Result<HashMap<u64, User>, StrictError> {
    pause();
    Ok(ids.iter().map(|&id| (id, user(id, "x"))).collect())
}

/// Holds the server's writes for `ms` (`CLIENT PAUSE .. WRITE`); reads go on.
fn pause_writes(server: &RedisServer, ms: u64) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query(&mut server.conn())
        .unwrap();
}

/// A batch's writes share one `timeout`, as a one-key call's do: with writes stalled for
/// 400 ms before the lease and again inside the body, the lease takes 400 ms of the
/// 600 ms, and the store, stalled as long, times out (`on_cache_error = "fail"` shows it).
/// Before, each phase had the whole 600 ms and the call spent twice its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_spends_one_timeout_on_its_writes() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .breaker(1_000, Duration::from_secs(1))
        .redis(&server.url())
        .unwrap();
    let stall = || pause_writes(&server, 400);
    let ran = AtomicU64::new(0);
    let pause = || {
        ran.fetch_add(1, SeqCst);
        stall();
    };
    stall();
    let got = paced_users(&cache, &pause, &[1, 2]).await;
    assert_eq!(ran.load(SeqCst), 1, "the lease was in time: {got:?}");
    assert!(
        matches!(&got, Err(StrictError::Cache(e)) if e.is_timeout()),
        "{got:?}"
    );
}

/// A one-key function whose type has no absence (`String`), sharing a batch's entries.
#[cached(ttl = 600, prefix = "b-label", cache = cache, skip(cache, db))]
async fn label(cache: &Cache, db: &Db, id: u64) -> String {
    let found = db.users(&[id]).await.remove(&id);
    found.map_or_else(|| "nobody".to_owned(), |u| u.name)
}

#[cached(batch, ttl = 600, none_ttl = 600, prefix = "b-label", cache = cache, skip(cache, db))]
async fn labels(cache: &Cache, db: &Db, ids: &[u64]) -> HashMap<u64, String> {
    db.users(ids)
        .await
        .into_iter()
        .map(|(id, u)| (id, u.name))
        .collect()
}

/// The batch stores an absence for a key it did not find; the one-key function, which
/// cannot return one, reads it as a miss and loads (not as a corrupt entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absence_is_a_miss_for_a_function_that_cannot_return_one() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ann")]);
        let got = labels(cache, &db, &[1, 2]).await;
        assert_eq!(got.len(), 1, "2 is absent");
        assert_eq!(label(cache, &db, 2).await, "nobody");
        assert_eq!(db.queries.load(SeqCst), 2, "the absence was a miss");
        assert_eq!(cache.stats().corrupt, 0, "{:?}", cache.stats());
        assert_eq!(label(cache, &db, 2).await, "nobody");
        assert_eq!(
            db.queries.load(SeqCst),
            2,
            "its own entry replaced the absence"
        );
    }
}

#[cached(batch, ttl = 600, prefix = "b-slow", timeout = "300ms", cache = cache, skip(cache, pause))]
async fn slow_users(cache: &Cache, pause: &dyn Fn(), ids: &[u64]) -> HashMap<u64, User> {
    pause();
    ids.iter().map(|&id| (id, user(id, "x"))).collect()
}

/// A batch whose stores all time out is one failed call for the breaker, not one per key:
/// 40 stores stalled past the `timeout` leave a breaker of 3 failures closed. Separate
/// calls still open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_counts_once_towards_the_breaker() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .breaker(3, Duration::from_secs(60))
        .redis(&server.url())
        .unwrap();
    let stall = || pause_writes(&server, 500);
    let ids: Vec<u64> = (1..=40).collect();
    let got = slow_users(&cache, &stall, &ids).await;
    assert_eq!(got.len(), 40, "the call succeeds");
    let stats = cache.stats();
    assert_eq!(stats.store_errors, 40, "every store timed out: {stats:?}");
    assert_eq!(stats.breaker_opened, 0, "{stats:?}");
    for round in 1..=3u64 {
        let got = slow_users(&cache, &stall, &[100 + round]).await;
        assert_eq!(got.len(), 1);
    }
    assert_eq!(cache.stats().breaker_opened, 1, "three calls failed");
}

#[cached(ttl = 600, prefix = "b-locked", cache = cache, skip(cache, db))]
async fn locked_user(cache: &Cache, db: &Db, id: u64) -> Option<User> {
    db.users(&[id]).await.remove(&id)
}

#[cached(batch, ttl = 600, prefix = "b-locked", lock = true, cache = cache, skip(cache, db, started))]
async fn locked_users(cache: &Cache, db: &Db, started: &Notify, ids: &[u64]) -> HashMap<u64, User> {
    started.notify_one();
    db.users(ids).await
}

/// `locked_users` through `Cache::get_many`, with a `Batch` that takes the lock.
static LOCKED: Batch = Batch::new("b-locked")
    .ttl(Duration::from_secs(600))
    .lock(true);

type LockedBatch = for<'a> fn(
    &'a Cache,
    &'a Db,
    &'a Notify,
    &'a [u64],
) -> Pin<Box<dyn Future<Output = HashMap<u64, User>> + Send + 'a>>;

fn through_the_attribute<'a>(
    cache: &'a Cache,
    db: &'a Db,
    started: &'a Notify,
    ids: &'a [u64],
) -> Pin<Box<dyn Future<Output = HashMap<u64, User>> + Send + 'a>> {
    Box::pin(locked_users(cache, db, started, ids))
}

fn through_get_many<'a>(
    cache: &'a Cache,
    db: &'a Db,
    started: &'a Notify,
    ids: &'a [u64],
) -> Pin<Box<dyn Future<Output = HashMap<u64, User>> + Send + 'a>> {
    Box::pin(async move {
        let load = |missing: Vec<u64>| async move {
            started.notify_one();
            Ok::<_, DbError>(db.users(&missing).await)
        };
        cache
            .get_many(&LOCKED, ids.iter().copied(), load)
            .await
            .unwrap()
    })
}

/// With `lock = true`, a key another process is loading (its lease in the key) is waited
/// for beside the batch's body, not loaded again: the batch's body gets the other keys,
/// and the other process's value for the held one. Their load is let go only once the
/// batch's body runs, so the batch has seen the lease. Through `#[cached(batch, lock =
/// true)]` and through `get_many` with `Batch::lock(true)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_batch_waits_for_another_processs_load() {
    let server = RedisServer::start();
    let batches: [LockedBatch; 2] = [through_the_attribute, through_get_many];
    for (round, locked_batch) in batches.into_iter().enumerate() {
        let url = server.url();
        let (ours, theirs) = (Cache::redis(&url).unwrap(), Cache::redis(&url).unwrap());
        let key = 2 + 10 * round as u64;
        let their_db = Db::gated(&[(key, "theirs")]);
        let our_db = Db::with(&[(1, "a"), (key, "ours"), (3, "c")]);
        let (their_start, their_go) = their_db.gate.as_ref().unwrap();
        let body_ran = Notify::new();
        let their_load = locked_user(&theirs, &their_db, key);
        let our_batch = async {
            their_start.notified().await;
            let ids = [1, key, 3];
            let batch = locked_batch(&ours, &our_db, &body_ran, &ids);
            let release = async {
                body_ran.notified().await;
                their_go.notify_one();
            };
            tokio::join!(batch, release).0
        };
        let (their_value, got) = tokio::join!(their_load, our_batch);
        assert_eq!(their_value, Some(user(key, "theirs")));
        let asked = our_db.asked();
        assert_eq!(
            asked,
            vec![vec![1, 3]],
            "round {round}: the held key was not loaded"
        );
        assert_eq!(got.get(&key), Some(&user(key, "theirs")), "{got:?}");
        assert_eq!(got.len(), 3);
        let stats = ours.stats();
        assert_eq!((stats.lock_waits, stats.lock_timeouts), (1, 0), "{stats:?}");
        ours.invalidate_prefix("b-locked").await.unwrap();
    }
}

/// A waited-for load that ends without a value (its call is cancelled, and its lease given
/// up) ends the wait at once: the batch loads that key itself, in a second body call, and
/// does not wait out `lock_wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_batch_loads_a_key_whose_holder_gave_up() {
    let server = RedisServer::start();
    let (ours, theirs) = (
        Cache::redis(&server.url()).unwrap(),
        Cache::redis(&server.url()).unwrap(),
    );
    let their_db = std::sync::Arc::new(Db::gated(&[(2, "theirs")]));
    let our_db = Db::with(&[(1, "a"), (2, "ours"), (3, "c")]);
    let their_load = tokio::spawn({
        let db = std::sync::Arc::clone(&their_db);
        async move { locked_user(&theirs, &db, 2).await }
    });
    their_db.gate.as_ref().unwrap().0.notified().await;
    let body_ran = Notify::new();
    let batch = locked_users(&ours, &our_db, &body_ran, &[1, 2, 3]);
    let cancel = async {
        body_ran.notified().await;
        their_load.abort();
    };
    let got = tokio::join!(batch, cancel).0;
    assert_eq!(our_db.asked(), vec![vec![1, 3], vec![2]]);
    assert_eq!(got.get(&2), Some(&user(2, "ours")), "{got:?}");
    let stats = ours.stats();
    assert_eq!((stats.lock_waits, stats.lock_timeouts), (1, 0), "{stats:?}");
}

trait Named: Serialize + serde::de::DeserializeOwned + Clone + PartialEq + Send + Sync {
    fn named(id: u64) -> Self;
}

impl Named for String {
    fn named(id: u64) -> Self {
        format!("n{id}")
    }
}

impl Named for u64 {
    fn named(id: u64) -> Self {
        id * 10
    }
}

#[cached(batch, ttl = 600, prefix = "b-generic", cache = cache, skip(cache, db))]
async fn generic_names<V: Named>(cache: &Cache, db: &Db, ids: &[u64]) -> HashMap<u64, V> {
    db.users(ids).await;
    ids.iter().map(|&id| (id, V::named(id))).collect()
}

/// Each instantiation of a generic batch function is cached under its own prefix: the
/// second type was run uncached, as if it shared keys with the first (a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instantiation_of_a_generic_batch_is_cached() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::default();
        for _ in 0..2 {
            let numbers = generic_names::<u64>(cache, &db, &[1, 2]).await;
            assert_eq!(numbers, HashMap::from([(1, 10), (2, 20)]));
            let names = generic_names::<String>(cache, &db, &[1, 2]).await;
            assert_eq!(names[&2], "n2");
        }
        assert_eq!(
            db.asked(),
            vec![vec![1, 2], vec![1, 2]],
            "one load per type"
        );
        assert_eq!(cache.stats().errors, 0, "{:?}", cache.stats());
    }
}

#[cached(batch, ttl = 600, prefix = "b-huge", timeout = "1ms", cache = cache, skip(cache))]
async fn huge_batch(cache: &Cache, ids: &[u64]) -> HashMap<u64, u64> {
    ids.iter().map(|&id| (id, id + 1)).collect()
}

/// The embedded store has nothing to wait for: a batch whose own CPU time used up its
/// `timeout` (thousands of keys, a 1 ms timeout) still stores every key, where it counted
/// each store as timed out and stored none (a probe, with 20,000 keys at 250 ms in a debug
/// build).
#[tokio::test]
async fn an_embedded_batch_stores_every_key_whatever_its_timeout() {
    let cache = Cache::memory();
    let ids: Vec<u64> = (0..5_000).collect();
    assert_eq!(huge_batch(&cache, &ids).await.len(), 5_000);
    let stats = cache.stats();
    assert_eq!((stats.errors, stats.store_errors), (0, 0), "{stats:?}");
    assert_eq!(huge_batch(&cache, &ids).await.len(), 5_000);
    assert_eq!(cache.stats().hits, 5_000, "every key was stored");
}

static TWO_TYPES: Batch = Batch::new("b-two-types").ttl(Duration::from_secs(600));

/// One `Batch` static used with two value types: the second runs uncached (its values
/// would land in the first's entries), the first stays cached.
#[tokio::test]
async fn a_batch_static_used_with_a_second_type_runs_it_uncached() {
    let cache = Cache::memory();
    let loads = AtomicU64::new(0);
    for _ in 0..2 {
        let names: HashMap<u64, String> = cache
            .get_many(&TWO_TYPES, [1], |missing: Vec<u64>| {
                loads.fetch_add(1, SeqCst);
                async move {
                    Ok::<_, DbError>(missing.iter().map(|&id| (id, format!("n{id}"))).collect())
                }
            })
            .await
            .unwrap();
        assert_eq!(names[&1], "n1");
        let numbers: HashMap<u64, u64> = cache
            .get_many(&TWO_TYPES, [1], |missing: Vec<u64>| {
                loads.fetch_add(100, SeqCst);
                async move { Ok::<_, DbError>(missing.iter().map(|&id| (id, id)).collect()) }
            })
            .await
            .unwrap();
        assert_eq!(numbers[&1], 1);
    }
    assert_eq!(
        loads.load(SeqCst),
        201,
        "the strings once, the numbers each time"
    );
    assert_eq!(cache.stats().errors, 2, "{:?}", cache.stats());
}

/// A lease placeholder left without a TTL (by hand) is given `lock_ttl` by the first locked
/// batch that meets it, as by a one-key miss, so the key is cached again once it expires;
/// the batch waited on it forever before (a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_batch_gives_a_placeholder_without_a_ttl_its_lock_ttl() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .lock_ttl(Duration::from_millis(300))
        .lock_wait(Duration::from_millis(100))
        .redis(&server.url())
        .unwrap();
    let key = locked_user_cache_key(&cache, 1).unwrap();
    let mut conn = server.conn();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(cache_aside_tests::placeholder(0x5eed))
        .query(&mut conn)
        .unwrap();
    let db = Db::with(&[(1, "a"), (2, "b")]);
    let got = locked_users(&cache, &db, &Notify::new(), &[1, 2]).await;
    assert_eq!(got.len(), 2);
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert!(pttl > 0 && pttl <= 300, "the placeholder's TTL: {pttl}");
}

/// A locked batch whose Redis stops answering while it polls spends one `timeout` on the
/// cache, not one for the polls and another for the re-read after them (a probe: twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_batch_spends_one_timeout_when_redis_hangs_while_it_polls() {
    let server = RedisServer::start();
    let url = server.url();
    let ours = Cache::builder()
        .timeout(Duration::from_millis(400))
        .breaker(1_000, Duration::from_secs(1))
        .redis(&url)
        .unwrap();
    let theirs = Cache::redis(&url).unwrap();
    let their_db = Db::gated(&[(1, "theirs")]);
    let our_db = Db::with(&[(1, "ours"), (2, "b")]);
    let (their_start, their_go) = their_db.gate.as_ref().unwrap();
    let body_ran = Notify::new();
    let their_load = locked_user(&theirs, &their_db, 1);
    let our_batch = async {
        their_start.notified().await;
        let ids = [1, 2];
        let batch = async {
            let started = std::time::Instant::now();
            let got = locked_users(&ours, &our_db, &body_ran, &ids).await;
            (got, started.elapsed())
        };
        let hang = async {
            body_ran.notified().await;
            server.pause();
        };
        let ((got, took), ()) = tokio::join!(batch, hang);
        server.resume();
        their_go.notify_one();
        (got, took)
    };
    let (_, (got, took)) = tokio::join!(their_load, our_batch);
    assert_eq!(got.len(), 2, "{got:?}");
    // One timeout is 400 ms; the defect cost two.
    assert!(took < Duration::from_millis(650), "{took:?}");
}

/// A held key whose holder is still loading when `lock_wait` ends is loaded by the batch in
/// a second body call, its value returned but not stored (the holder's lease still stands),
/// and counted as a lock timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_batch_loads_a_key_still_held_after_lock_wait() {
    let server = RedisServer::start();
    let url = server.url();
    let ours = Cache::builder()
        .lock_wait(Duration::from_millis(200))
        .redis(&url)
        .unwrap();
    let theirs = Cache::redis(&url).unwrap();
    let their_db = Db::gated(&[(1, "theirs")]);
    let our_db = Db::with(&[(1, "ours"), (2, "b")]);
    let (their_start, their_go) = their_db.gate.as_ref().unwrap();
    let their_load = locked_user(&theirs, &their_db, 1);
    let our_batch = async {
        their_start.notified().await;
        let got = locked_users(&ours, &our_db, &Notify::new(), &[1, 2]).await;
        their_go.notify_one();
        got
    };
    let (their_value, got) = tokio::join!(their_load, our_batch);
    assert_eq!(their_value, Some(user(1, "theirs")));
    assert_eq!(
        our_db.asked(),
        vec![vec![2], vec![1]],
        "waited, then loaded"
    );
    assert_eq!(got.get(&1), Some(&user(1, "ours")), "{got:?}");
    let stats = ours.stats();
    assert_eq!((stats.lock_waits, stats.lock_timeouts), (1, 1), "{stats:?}");
    assert_eq!(
        locked_user(&ours, &our_db, 1).await,
        Some(user(1, "theirs")),
        "the holder's value is the one stored"
    );
}
