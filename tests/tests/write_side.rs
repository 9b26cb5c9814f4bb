//! `#[cache_evict]` and `#[cache_put]` on Redis and on the embedded backend: a write evicts
//! or writes the entries its target calls name, under the read's own keys; only after a
//! success unless asked; and a put wins over a load that began before it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use cache_aside_runtime::{Cache, cache_evict, cache_put, cached};
use cache_aside_tests::RedisServer;
use cache_aside_tests::race::{Reader, Seen, put_during_a_load};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// A table of users, counting the reads that reach it.
#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<u64, String>>,
    reads: AtomicU64,
}

impl Db {
    fn with(rows: &[(u64, &str)]) -> Db {
        let db = Db::default();
        for &(id, name) in rows {
            db.rows.lock().unwrap().insert(id, name.to_owned());
        }
        db
    }

    fn read(&self, id: u64) -> Option<User> {
        self.reads.fetch_add(1, SeqCst);
        let name = self.rows.lock().unwrap().get(&id).cloned()?;
        Some(User { id, name })
    }

    fn reads(&self) -> u64 {
        self.reads.load(SeqCst)
    }
}

#[derive(Debug, PartialEq)]
struct DbError;

#[cached(ttl = 600, none_ttl = 600, prefix = "w-user", cache = cache, skip(cache, db))]
async fn get_user(cache: &Cache, db: &Db, id: u64) -> Result<Option<User>, DbError> {
    Ok(db.read(id))
}

#[cached(ttl = 600, prefix = "w-name", cache = cache, skip(cache, db))]
async fn user_name(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).map(|u| u.name).unwrap_or_default()
}

/// Renames after the write succeeds; `fail` makes the write fail after changing the row
/// (a write that half happened, to tell "evicted on Err" from "not").
#[cache_evict(get_user(cache, id), user_name(cache, id))]
async fn rename(cache: &Cache, db: &Db, id: u64, name: &str, fail: bool) -> Result<(), DbError> {
    db.rows.lock().unwrap().insert(id, name.to_owned());
    if fail {
        return Err(DbError);
    }
    Ok(())
}

#[cache_evict(get_user(cache, id), always = true)]
async fn rename_always(cache: &Cache, db: &Db, id: u64, name: &str) -> Result<(), DbError> {
    db.rows.lock().unwrap().insert(id, name.to_owned());
    Err(DbError)
}

/// Evicts before its body, which reports whether the entry was still there.
#[cache_evict(get_user(cache, id), before = true)]
async fn rename_before(cache: &Cache, db: &Db, id: u64, name: &str) -> bool {
    db.rows.lock().unwrap().insert(id, name.to_owned());
    let key = get_user_cache_key(cache, id).unwrap();
    cache.ttl_of(&key).await.unwrap().is_some()
}

/// Every entry of `get_user`, and a plain (non-`Result`) return: always evicts.
#[cache_evict(get_user(cache, ..))]
async fn rename_everyone(cache: &Cache, db: &Db, name: &str) -> usize {
    let mut rows = db.rows.lock().unwrap();
    rows.values_mut().for_each(|n| *n = name.to_owned());
    rows.len()
}

/// Writes through: the returned user becomes `get_user`'s entry.
#[cache_put(get_user(cache, id))]
async fn save(
    cache: &Cache,
    db: &Db,
    id: u64,
    name: &str,
    fail: bool,
) -> Result<Option<User>, DbError> {
    db.rows.lock().unwrap().insert(id, name.to_owned());
    if fail {
        return Err(DbError);
    }
    Ok(Some(User {
        id,
        name: name.to_owned(),
    }))
}

/// Deletes the row and puts the absence: the next read is a cached `None`.
#[cache_put(get_user(cache, id))]
async fn remove(cache: &Cache, db: &Db, id: u64) -> Result<Option<User>, DbError> {
    db.rows.lock().unwrap().remove(&id);
    Ok(None)
}

#[cached(ttl = 600, prefix = "w-small", max_value_bytes = 64, cache = cache, skip(cache, db))]
async fn small(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).map(|u| u.name).unwrap_or_default()
}

/// A value too large for `small`'s entries: the put deletes the entry instead.
#[cache_put(small(cache, id))]
async fn save_small(cache: &Cache, db: &Db, id: u64, name: &str) -> String {
    db.rows.lock().unwrap().insert(id, name.to_owned());
    name.to_owned()
}

fn caches(server: &RedisServer) -> [Cache; 2] {
    [Cache::redis(&server.url()).unwrap(), Cache::memory()]
}

fn named(id: u64, name: &str) -> Option<User> {
    Some(User {
        id,
        name: name.to_owned(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_after_a_successful_write_makes_the_next_read_load() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ada")]);
        assert_eq!(get_user(cache, &db, 1).await, Ok(named(1, "ada")));
        assert_eq!(user_name(cache, &db, 1).await, "ada");
        assert_eq!(get_user(cache, &db, 1).await, Ok(named(1, "ada")), "a hit");
        assert_eq!(db.reads(), 2);
        let evictions = cache.stats().evictions;
        rename(cache, &db, 1, "grace", false).await.unwrap();
        assert_eq!(cache.stats().evictions, evictions + 2, "both targets");
        assert_eq!(get_user(cache, &db, 1).await, Ok(named(1, "grace")));
        assert_eq!(user_name(cache, &db, 1).await, "grace");
        assert_eq!(db.reads(), 4, "both reads loaded: {}", cache.backend_name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_evicts_nothing_unless_always() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(2, "ada")]);
        assert_eq!(get_user(cache, &db, 2).await, Ok(named(2, "ada")));
        assert_eq!(rename(cache, &db, 2, "grace", true).await, Err(DbError));
        assert_eq!(get_user(cache, &db, 2).await, Ok(named(2, "ada")), "kept");
        assert_eq!(db.reads(), 1);
        assert_eq!(rename_always(cache, &db, 2, "edsger").await, Err(DbError));
        assert_eq!(get_user(cache, &db, 2).await, Ok(named(2, "edsger")));
        assert_eq!(db.reads(), 2, "{}", cache.backend_name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_evicts_ahead_of_the_body() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(3, "ada")]);
        assert_eq!(get_user(cache, &db, 3).await, Ok(named(3, "ada")));
        let key = get_user_cache_key(cache, 3).unwrap();
        assert!(cache.ttl_of(&key).await.unwrap().is_some());
        assert!(
            !rename_before(cache, &db, 3, "grace").await,
            "gone before the body"
        );
        assert_eq!(get_user(cache, &db, 3).await, Ok(named(3, "grace")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicting_a_whole_function_leaves_the_others() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(4, "ada"), (5, "alan")]);
        for id in [4, 5] {
            get_user(cache, &db, id).await.unwrap();
            user_name(cache, &db, id).await;
        }
        assert_eq!(db.reads(), 4);
        assert_eq!(rename_everyone(cache, &db, "x").await, 2);
        assert_eq!(get_user(cache, &db, 4).await, Ok(named(4, "x")));
        assert_eq!(get_user(cache, &db, 5).await, Ok(named(5, "x")));
        assert_eq!(
            user_name(cache, &db, 4).await,
            "ada",
            "another function's entry"
        );
        assert_eq!(db.reads(), 6, "{}", cache.backend_name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_makes_the_next_read_a_hit_on_the_written_value() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(6, "ada")]);
        assert_eq!(get_user(cache, &db, 6).await, Ok(named(6, "ada")));
        let puts = cache.stats().puts;
        assert_eq!(
            save(cache, &db, 6, "grace", false).await,
            Ok(named(6, "grace"))
        );
        assert_eq!(cache.stats().puts, puts + 1);
        // The row changes behind the cache's back: a hit shows the put's value.
        db.rows.lock().unwrap().insert(6, "behind".into());
        assert_eq!(get_user(cache, &db, 6).await, Ok(named(6, "grace")));
        assert_eq!(db.reads(), 1, "{}", cache.backend_name());
        // A put on a key never read: a hit too.
        save(cache, &db, 7, "alan", false).await.unwrap();
        assert_eq!(get_user(cache, &db, 7).await, Ok(named(7, "alan")));
        assert_eq!(db.reads(), 1);
        // A failed write puts nothing.
        assert_eq!(save(cache, &db, 6, "edsger", true).await, Err(DbError));
        assert_eq!(get_user(cache, &db, 6).await, Ok(named(6, "grace")));
        assert_eq!(cache.stats().puts, puts + 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_of_none_caches_the_absence() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(8, "ada")]);
        assert_eq!(get_user(cache, &db, 8).await, Ok(named(8, "ada")));
        assert_eq!(remove(cache, &db, 8).await, Ok(None));
        db.rows.lock().unwrap().insert(8, "behind".into());
        assert_eq!(get_user(cache, &db, 8).await, Ok(None), "the put absence");
        assert_eq!(db.reads(), 1, "{}", cache.backend_name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_cannot_be_stored_deletes_the_old_entry() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(9, "ada")]);
        assert_eq!(small(cache, &db, 9).await, "ada");
        let long = "g".repeat(200);
        assert_eq!(save_small(cache, &db, 9, &long).await, long);
        assert_eq!(
            small(cache, &db, 9).await,
            long,
            "reloaded, not the old entry"
        );
        assert_eq!(db.reads(), 2, "{}", cache.backend_name());
    }
}

/// The put wins over a load that read the old row before it: the load's caller gets what
/// it read, a reader after the put gets the put's value, and the entry stays the put's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_wins_over_an_older_load() {
    let server = RedisServer::start();
    let won = |later: bool| Seen {
        paused_load: "old".into(),
        later_reader: later.then(|| "new".into()),
        next_read: "new".into(),
    };
    for cache in &caches(&server) {
        let readers: &[Reader] = match cache.backend_name() {
            "redis" => &[Reader::Plain, Reader::Locked, Reader::Eager],
            _ => &[Reader::Plain, Reader::Locked],
        };
        for (i, &reader) in readers.iter().enumerate() {
            for later in [false, true] {
                let id = 100 + 10 * i as u64 + u64::from(later);
                let seen = put_during_a_load(cache, reader, id, later).await;
                assert_eq!(
                    seen,
                    won(later),
                    "{reader:?} on {}, later: {later}",
                    cache.backend_name()
                );
            }
        }
        assert!(cache.stats().fills_dropped >= 2 * readers.len() as u64);
    }
}

/// Without leases the older load's fill lands on top of the put: the scenario can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_leases_an_older_load_overwrites_the_put() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .__without_leases()
        .redis(&server.url())
        .unwrap();
    let seen = put_during_a_load(&cache, Reader::Plain, 200, false).await;
    assert_eq!(seen.next_read, "old");
}

/// A method that writes through the same type's cached method, reached through `self`.
struct Users {
    cache: Cache,
    db: Db,
}

impl Users {
    #[cached(ttl = 600, prefix = "w-method", cache = self.cache)]
    async fn name(&self, id: u64) -> String {
        self.db.read(id).map(|u| u.name).unwrap_or_default()
    }

    #[cache_put(self.name(id))]
    async fn set_name(&self, id: u64, name: String) -> String {
        self.db.rows.lock().unwrap().insert(id, name.clone());
        name
    }

    #[cache_evict(self.name(id))]
    async fn forget(&self, id: u64) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_name_their_read_through_self() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let users = Users {
            cache,
            db: Db::with(&[(1, "ada")]),
        };
        assert_eq!(users.name(1).await, "ada");
        assert_eq!(users.set_name(1, "grace".into()).await, "grace");
        assert_eq!(users.name(1).await, "grace");
        assert_eq!(users.db.reads(), 1, "a hit on the put value");
        users.forget(1).await;
        assert_eq!(users.name(1).await, "grace");
        assert_eq!(users.db.reads(), 2, "evicted, loaded");
    }
}

/// A read that needs `self: Arc<Self>` (stale-while-revalidate), and writes whose bodies
/// still use `self` after naming its entry.
struct Shared {
    cache: Cache,
    db: Db,
}

impl Shared {
    #[cached(ttl = 600, stale = 60, prefix = "w-arc", cache = self.cache)]
    async fn name(self: std::sync::Arc<Self>, id: u64) -> String {
        self.db.read(id).map(|u| u.name).unwrap_or_default()
    }

    #[cache_put(self.name(id))]
    async fn set_name(self: std::sync::Arc<Self>, id: u64, name: String) -> String {
        self.db.rows.lock().unwrap().insert(id, name.clone());
        name
    }

    #[cache_evict(self.name(id))]
    async fn forget(self: std::sync::Arc<Self>, id: u64) {
        self.db.rows.lock().unwrap().remove(&id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_self_methods_keep_self_for_their_body() {
    let shared = std::sync::Arc::new(Shared {
        cache: Cache::memory(),
        db: Db::with(&[(1, "ada")]),
    });
    assert_eq!(shared.clone().name(1).await, "ada");
    assert_eq!(shared.clone().set_name(1, "grace".into()).await, "grace");
    assert_eq!(shared.clone().name(1).await, "grace");
    assert_eq!(shared.db.reads(), 1, "a hit on the put value");
    shared.clone().forget(1).await;
    assert_eq!(shared.clone().name(1).await, "");
    assert_eq!(shared.db.reads(), 2);
}
