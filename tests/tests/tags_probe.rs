//! Adversarial probes of tags (`#[cached(tags = [..])]`, `Cache::invalidate_tag`,
//! `#[cache_evict(tag = ..)]`), written from their docs. Each probe checks one promise, on
//! Redis and on the embedded backend where it applies. Bodies are held with semaphores, not
//! sleeps; a probe sleeps only where expiry itself is what it tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_aside_runtime::tag::Tag;
use cache_aside_runtime::{Cache, cache_evict, cache_put, cached};
use cache_aside_tests::RedisServer;
use redis::Commands;
use serde::Serialize;
use tokio::sync::Semaphore;

// ---------------------------------------------------------------------------------------
// A database whose reads can be held inside the body.

struct Rows {
    rows: Mutex<HashMap<u64, String>>,
    reads: AtomicU64,
    /// Reads still to hold: each says it started, then waits for `go`.
    hold: AtomicU32,
    started: Semaphore,
    go: Semaphore,
    /// `try_read` fails while set.
    fail: AtomicBool,
}

impl Rows {
    fn new() -> Rows {
        Rows {
            rows: Mutex::new(HashMap::new()),
            reads: AtomicU64::new(0),
            hold: AtomicU32::new(0),
            started: Semaphore::new(0),
            go: Semaphore::new(0),
            fail: AtomicBool::new(false),
        }
    }

    fn with(rows: &[(u64, &str)]) -> Rows {
        let db = Rows::new();
        for &(id, v) in rows {
            db.set(id, v);
        }
        db
    }

    fn set(&self, id: u64, v: &str) {
        self.rows.lock().unwrap().insert(id, v.to_owned());
    }

    fn remove(&self, id: u64) {
        self.rows.lock().unwrap().remove(&id);
    }

    fn get(&self, id: u64) -> Option<String> {
        self.rows.lock().unwrap().get(&id).cloned()
    }

    /// Reads the row first, then (if held) waits: what it returns is what it read.
    async fn find(&self, id: u64) -> Option<String> {
        self.reads.fetch_add(1, SeqCst);
        let value = self.get(id);
        let held = self
            .hold
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if held {
            self.started.add_permits(1);
            self.go.acquire().await.unwrap().forget();
        }
        value
    }

    async fn read(&self, id: u64) -> String {
        self.find(id).await.unwrap_or_else(|| "-".to_owned())
    }

    async fn try_read(&self, id: u64) -> Result<String, String> {
        if self.fail.load(SeqCst) {
            self.reads.fetch_add(1, SeqCst);
            return Err("db down".into());
        }
        Ok(self.read(id).await)
    }

    fn reads(&self) -> u64 {
        self.reads.load(SeqCst)
    }

    /// The next `n` reads are held.
    fn hold_next(&self, n: u32) {
        self.hold.store(n, SeqCst);
    }

    /// Waits until a held read started.
    async fn wait_started(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.started.acquire())
            .await
            .expect("a held read started")
            .unwrap()
            .forget();
    }

    /// Lets one held read go on.
    fn release(&self) {
        self.go.add_permits(1);
    }
}

fn redis_cache(server: &RedisServer) -> Cache {
    Cache::builder()
        .timeout(Duration::from_millis(500))
        .redis(&server.url())
        .unwrap()
}

fn caches(server: &RedisServer) -> [Cache; 2] {
    [redis_cache(server), Cache::memory()]
}

fn tag(name: &str, value: impl Serialize) -> Tag {
    Tag::new(name).unwrap().value(&value).unwrap()
}

async fn inv(cache: &Cache, t: &Tag) -> u64 {
    cache
        .invalidate_tag(t)
        .await
        .unwrap_or_else(|e| panic!("invalidate_tag({t}) on {}: {e}", cache.backend_name()))
}

/// Polls `cond` (no fixed sleep: a bounded wait for something to happen).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Is `bytes` a lease's placeholder (PENDING and EMPTY)?
fn is_placeholder(bytes: &[u8]) -> bool {
    bytes.len() >= 20 && bytes[0] == 0xCA && bytes[2] & 0b110 == 0b110
}

/// Every key of `pattern` holding a value (placeholders left out).
fn values_matching(conn: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let keys: Vec<String> = conn
        .scan_match::<_, String>(pattern)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    keys.into_iter()
        .filter(|k| {
            let v: Option<Vec<u8>> = conn.get(k).unwrap();
            v.is_some_and(|v| !is_placeholder(&v))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Functions.

#[cached(ttl = 600, prefix = "pu", tags = ["user:{id}"], cache = cache, skip(cache, db))]
async fn user(cache: &Cache, db: &Rows, id: u64) -> String {
    db.read(id).await
}

#[cached(
    ttl = 600,
    prefix = "pm",
    tags = ["user:{id}", "team:{team}", "all"],
    cache = cache,
    skip(cache, db)
)]
async fn member(cache: &Cache, db: &Rows, team: u32, id: u64) -> String {
    format!("{}@{team}", db.read(id).await)
}

#[cached(ttl = 600, prefix = "pt", tags = ["team:{team}"], cache = cache, skip(cache, db))]
async fn team(cache: &Cache, db: &Rows, team: u32) -> String {
    db.read(1000 + u64::from(team)).await
}

#[cached(ttl = 600, prefix = "pp", cache = cache, skip(cache, db))]
async fn plain(cache: &Cache, db: &Rows, id: u64) -> String {
    db.read(id).await
}

// ---------------------------------------------------------------------------------------
// 1. Several functions share a tag; a function carries several tags.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p01_shared_tags_across_functions_and_each_of_several_tags() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Rows::with(&[(1, "a"), (2, "b"), (3, "c"), (1001, "T1"), (1002, "T2")]);
        let fill = || async {
            user(cache, &db, 1).await;
            user(cache, &db, 2).await;
            member(cache, &db, 1, 1).await;
            member(cache, &db, 1, 2).await;
            member(cache, &db, 2, 3).await;
            member(cache, &db, 2, 1).await;
            team(cache, &db, 1).await;
            team(cache, &db, 2).await;
            plain(cache, &db, 1).await;
        };
        fill().await;
        assert_eq!(db.reads(), 9);
        assert_eq!(
            inv(cache, &tag("team", 1)).await,
            3,
            "member(1,1), member(1,2), team(1): {name}"
        );
        assert_eq!(
            inv(cache, &tag("user", 1)).await,
            2,
            "user(1), member(2,1): {name}"
        );
        assert_eq!(
            inv(cache, &Tag::new("all").unwrap()).await,
            1,
            "member(2,3): {name}"
        );
        assert_eq!(inv(cache, &tag("team", 2)).await, 1, "team(2): {name}");
        // Untouched: user(2), plain(1).
        let before = db.reads();
        assert_eq!(user(cache, &db, 2).await, "b");
        assert_eq!(plain(cache, &db, 1).await, "a");
        assert_eq!(
            db.reads(),
            before,
            "user(2) and plain(1) still cached: {name}"
        );
        // Everything invalidated reloads.
        db.set(1, "A");
        assert_eq!(member(cache, &db, 2, 1).await, "A@2");
        assert_eq!(user(cache, &db, 1).await, "A");
        assert_eq!(db.reads(), before + 2);
        // The untagged function's entry survives every tag.
        assert_eq!(plain(cache, &db, 1).await, "a");
    }
}

// ---------------------------------------------------------------------------------------
// 2. String values: reserved characters, empty, unicode, long.

#[cached(ttl = 600, prefix = "pn", tags = ["name:{name}"], cache = cache, skip(cache, db))]
async fn by_name(cache: &Cache, db: &Rows, name: &str) -> String {
    db.read(0).await;
    name.to_owned()
}

#[cached(ttl = 600, prefix = "pc", tags = ["name:{c}"], cache = cache, skip(cache, db))]
async fn by_char(cache: &Cache, db: &Rows, c: char) -> String {
    db.read(0).await;
    c.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p02_string_values_name_the_same_tag_in_template_and_builder() {
    let server = RedisServer::start();
    let long = "x:y*".repeat(300);
    let values: Vec<&str> = vec![
        ":",
        "*",
        "{",
        "}",
        "{x}",
        " ",
        "",
        "a b",
        "a:b",
        "ü日本🎉",
        "\n",
        "%",
        "%3A",
        "'",
        "42",
        "true",
        "~",
        "!~",
        "()",
        "(,)",
        "a,b",
        "a=b",
        "#tag",
        "\\",
        "\"",
        "\t",
        &long,
    ];
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Rows::new();
        for v in &values {
            by_name(cache, &db, v).await;
        }
        let loaded = db.reads();
        assert_eq!(
            loaded,
            values.len() as u64,
            "each value its own entry: {name}"
        );
        // Each value's tag names exactly its own entry: no two values share a tag.
        for (i, v) in values.iter().enumerate() {
            // Alternate builder forms: &str, String, Some(&str).
            let t = match i % 3 {
                0 => tag("name", v),
                1 => tag("name", v.to_string()),
                _ => tag("name", Some(*v)),
            };
            assert_eq!(inv(cache, &t).await, 1, "{v:?} as {t} on {name}");
        }
        for v in &values {
            by_name(cache, &db, v).await;
        }
        assert_eq!(db.reads(), 2 * loaded, "all reloaded: {name}");
        // A char is a one-character string.
        by_char(cache, &db, 'é').await;
        by_name(cache, &db, "é").await;
        assert_eq!(
            inv(cache, &tag("name", "é")).await,
            2,
            "by_char('é') and by_name(\"é\")?: {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 3. Numbers: the value, not the type.

#[cached(ttl = 600, prefix = "pi", tags = ["n:{n}"], cache = cache, skip(cache))]
async fn by_int(cache: &Cache, n: i64) -> i64 {
    n
}

#[cached(ttl = 600, prefix = "pf", tags = ["f:{x}"], cache = cache, skip(cache))]
async fn by_float(cache: &Cache, x: f64) -> String {
    x.to_string()
}

#[cached(ttl = 600, prefix = "po", tags = ["o:{id}"], cache = cache, skip(cache))]
async fn by_opt(cache: &Cache, id: Option<u64>) -> u64 {
    id.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p03_numbers_of_different_types_name_the_same_tag() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        for n in [5i64, -7, i64::MAX, 0] {
            by_int(cache, n).await;
        }
        assert_eq!(inv(cache, &tag("n", 5u8)).await, 1, "5u8: {name}");
        assert_eq!(inv(cache, &tag("n", -7i8)).await, 1, "-7i8: {name}");
        assert_eq!(
            inv(cache, &tag("n", i64::MAX as u64)).await,
            1,
            "u64: {name}"
        );
        assert_eq!(
            inv(cache, &tag("n", Some(0u16))).await,
            1,
            "Some(0u16): {name}"
        );
        by_float(cache, 1.5).await;
        by_float(cache, 0.1).await;
        by_float(cache, 2.0).await;
        assert_eq!(inv(cache, &tag("f", 1.5f32)).await, 1, "1.5f32: {name}");
        assert_eq!(
            inv(cache, &tag("f", 0.1f32)).await,
            1,
            "0.1f32 (documented alike): {name}"
        );
        assert_eq!(
            inv(cache, &tag("f", 2i32)).await,
            0,
            "an int is not a float: {name}"
        );
        assert_eq!(inv(cache, &tag("f", 2.0f64)).await, 1, "{name}");
        by_opt(cache, None).await;
        by_opt(cache, Some(9)).await;
        assert_eq!(inv(cache, &tag("o", None::<u64>)).await, 1, "None: {name}");
        assert_eq!(inv(cache, &tag("o", 9u32)).await, 1, "Some(9) is 9: {name}");
    }
}

// ---------------------------------------------------------------------------------------
// 4. `{arg.field}`, nested and tuple fields, `{self.field}` in a keyed method.

#[derive(Serialize, Clone)]
struct Q {
    team: u32,
    user: u64,
}

#[derive(Serialize, Clone)]
struct W {
    inner: Q,
    pair: (u32, String),
}

#[cached(
    ttl = 600,
    prefix = "pq",
    tags = ["qt:{q.team}", "qu:{q.user}"],
    cache = cache,
    skip(cache)
)]
async fn by_q(cache: &Cache, q: Q) -> u64 {
    q.user
}

#[cached(
    ttl = 600,
    prefix = "pw",
    tags = ["wi:{w.inner.user}", "wp:{w.pair.1}"],
    cache = cache,
    skip(cache)
)]
async fn by_w(cache: &Cache, w: &W) -> u64 {
    w.inner.user
}

struct Repo {
    cache: Cache,
    tenant: u64,
    db: Arc<Rows>,
}

impl Repo {
    #[cached(
        ttl = 600,
        cache = self.cache,
        key = "repo-t:{self.tenant}:{id}",
        tags = ["tenant:{self.tenant}"]
    )]
    async fn item(&self, id: u64) -> String {
        format!("t{}:{}", self.tenant, self.db.read(id).await)
    }

    #[cache_evict(tag = "tenant:{self.tenant}", cache = self.cache)]
    async fn touch_tenant(&self) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p04_field_and_self_field_templates() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        for (team, user) in [(3, 10), (3, 11), (4, 12)] {
            by_q(cache, Q { team, user }).await;
        }
        assert_eq!(inv(cache, &tag("qt", 3u8)).await, 2, "{name}");
        assert_eq!(inv(cache, &tag("qu", 12)).await, 1, "{name}");
        let w = W {
            inner: Q { team: 1, user: 77 },
            pair: (5, "p:q".into()),
        };
        by_w(cache, &w).await;
        assert_eq!(
            inv(cache, &tag("wp", "p:q")).await,
            1,
            "{{w.pair.1}}: {name}"
        );
        by_w(cache, &w).await;
        assert_eq!(
            inv(cache, &tag("wi", 77)).await,
            1,
            "{{w.inner.user}}: {name}"
        );

        let db = Arc::new(Rows::with(&[(1, "x")]));
        let a = Repo {
            cache: cache.clone(),
            tenant: 1,
            db: db.clone(),
        };
        let b = Repo {
            cache: cache.clone(),
            tenant: 2,
            db: db.clone(),
        };
        assert_eq!(a.item(1).await, "t1:x");
        assert_eq!(b.item(1).await, "t2:x");
        assert_eq!(inv(cache, &tag("tenant", 1)).await, 1, "{name}");
        db.set(1, "y");
        assert_eq!(a.item(1).await, "t1:y", "tenant 1 reloaded: {name}");
        assert_eq!(b.item(1).await, "t2:x", "tenant 2 kept: {name}");
        // `#[cache_evict(tag = "tenant:{self.tenant}")]`.
        b.touch_tenant().await.unwrap();
        assert_eq!(
            b.item(1).await,
            "t2:y",
            "tenant 2 evicted by its method: {name}"
        );
        assert_eq!(a.item(1).await, "t1:y");
    }
}

// ---------------------------------------------------------------------------------------
// 5. `{self.field}` when `self` is not part of the key: two instances share one entry.

// p05 (a `{self.field}` tag when `self` is not in the key) is now a compile error:
// tests/ui/fail/tags-misuse.rs.

// ---------------------------------------------------------------------------------------
// 6. Multi-segment templates.

#[cached(
    ttl = 600,
    prefix = "prole",
    tags = ["team:{t}:role:{r}", "x:fixed:{t}:end"],
    cache = cache,
    skip(cache)
)]
async fn role(cache: &Cache, t: u64, r: &str) -> String {
    format!("{t}:{r}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p06_multi_segment_templates_match_the_builder() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        for r in ["admin", "a:b", "", "{r}"] {
            role(cache, 1, r).await;
        }
        role(cache, 2, "admin").await;
        let team = Tag::new("team").unwrap();
        // Not prefixes of each other.
        assert_eq!(inv(cache, &team).await, 0, "{name}");
        assert_eq!(
            inv(cache, &team.clone().value(&1).unwrap()).await,
            0,
            "{name}"
        );
        assert_eq!(
            inv(
                cache,
                &team.clone().value(&1).unwrap().text("role").unwrap()
            )
            .await,
            0,
            "{name}"
        );
        for r in ["admin", "a:b", "", "{r}"] {
            let t = team
                .clone()
                .value(&1u8)
                .unwrap()
                .text("role")
                .unwrap()
                .value(r)
                .unwrap();
            assert_eq!(inv(cache, &t).await, 1, "{t} on {name}");
        }
        let fixed = Tag::new("x")
            .unwrap()
            .text("fixed")
            .unwrap()
            .value(&2)
            .unwrap()
            .text("end")
            .unwrap();
        assert_eq!(fixed.as_str(), "x:fixed:2:end");
        assert_eq!(inv(cache, &fixed).await, 1, "{name}");
        // Builder text and value of the same plain word name the same tag.
        assert_eq!(
            Tag::new("a").unwrap().text("b").unwrap(),
            Tag::new("a").unwrap().value("b").unwrap()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 7. The builder's checks.

#[test]
fn p07_builder_rejects_what_a_template_cannot_render() {
    for ok in ["user", "a.b", "a-b", "a_b", "a/b", "A9"] {
        assert!(Tag::new(ok).is_ok(), "{ok:?}");
        assert!(Tag::new("t").unwrap().text(ok).is_ok(), "{ok:?}");
    }
    for bad in ["", "a:b", "a*", "a b", "ü", "{a}", "a\n", "#tag"] {
        assert!(Tag::new(bad).is_err(), "{bad:?}");
        assert!(Tag::new("t").unwrap().text(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        Tag::new("user").unwrap().value(&7).unwrap().to_string(),
        "user:7"
    );
}

// ---------------------------------------------------------------------------------------
// 8. Counts: a tag nobody carries, twice, expired entries.

#[cached(ttl = "150ms", prefix = "pe", tags = ["exp:{g}"], cache = cache, skip(cache))]
async fn short_lived(cache: &Cache, g: u32, id: u32) -> u32 {
    g + id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p08_counts_nobody_twice_and_expired() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        assert_eq!(inv(cache, &tag("nobody", 1)).await, 0, "{name}");
        assert_eq!(inv(cache, &Tag::new("nobody").unwrap()).await, 0, "{name}");
        for id in 0..3 {
            short_lived(cache, 1, id).await;
        }
        assert_eq!(inv(cache, &tag("exp", 1)).await, 3, "{name}");
        assert_eq!(inv(cache, &tag("exp", 1)).await, 0, "twice: {name}");
        for id in 0..3 {
            short_lived(cache, 2, id).await;
        }
        // Expiry itself is what is tested.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            inv(cache, &tag("exp", 2)).await,
            0,
            "expired entries are not counted: {name}"
        );
    }
}

/// A lease is not an entry: "how many entries there were".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p08b_a_load_in_progress_counts_as_its_placeholder_and_stores_nothing() {
    let server = RedisServer::start();
    let mut failures = Vec::new();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Rows::with(&[(5, "v")]);
        db.hold_next(1);
        let load = user(cache, &db, 5);
        let check = async {
            db.wait_started().await;
            let n = inv(cache, &tag("user", 5)).await;
            db.release();
            n
        };
        let (_, removed) = tokio::join!(load, check);
        // The count is of keys deleted: the load's placeholder (its lease) is one.
        if removed != 1 {
            failures.push(format!("{name}: removed {removed}"));
        }
        // And the load stored nothing.
        if cache
            .ttl_of(&user_cache_key(cache, 5).unwrap())
            .await
            .unwrap()
            .is_some()
        {
            failures.push(format!("{name}: the overtaken load stored its value"));
        }
    }
    assert!(
        failures.is_empty(),
        "only a lease was taken, and it was revoked: {failures:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 9. Race-freedom, plain loads: the second of several tags, a reader during the paused
// load, and another handle (another process) invalidating.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p09_a_paused_load_overtaken_by_any_of_its_tags_stores_nothing() {
    let server = RedisServer::start();
    let other = redis_cache(&server);
    let cases: [(Cache, Option<&Cache>); 3] = [
        (redis_cache(&server), None),
        (redis_cache(&server), Some(&other)),
        (Cache::memory(), None),
    ];
    for (i, (cache, invalidator)) in cases.iter().enumerate() {
        let invalidator = invalidator.unwrap_or(cache);
        let name = format!("{} case {i}", cache.backend_name());
        let id = 9 + i as u64;
        let db = Rows::with(&[(id, "old")]);
        db.hold_next(1);
        let load = member(cache, &db, 4, id);
        let write = async {
            db.wait_started().await;
            db.set(id, "new");
            // The second tag of three.
            inv(invalidator, &tag("team", 4)).await;
            // A reader that starts after the invalidation, while the old load is paused (it
            // may wait for that load, which must then not hand it the old row).
            let (during, ()) = tokio::join!(member(cache, &db, 4, id), async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                db.release();
            });
            during
        };
        let (paused, during) = tokio::join!(load, write);
        assert_eq!(paused, "old@4", "its own caller gets what it read: {name}");
        assert_eq!(during, "new@4", "a reader after the invalidation: {name}");
        assert_eq!(
            member(cache, &db, 4, id).await,
            "new@4",
            "later reads: {name}"
        );
        assert_eq!(db.reads(), 2, "the paused load and the reader's: {name}");
    }
}

// ---------------------------------------------------------------------------------------
// 10. `lock = true`: another process waiting for the paused load's value.

#[cached(
    ttl = 600,
    prefix = "pl",
    tags = ["user:{id}"],
    lock = true,
    cache = cache,
    skip(cache, db)
)]
async fn locked(cache: &Cache, db: &Rows, id: u64) -> String {
    db.read(id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p10_lock_waiters_and_a_tag_invalidation() {
    let server = RedisServer::start();
    let a = redis_cache(&server);
    let b = redis_cache(&server);
    let c = redis_cache(&server);
    let db = Rows::with(&[(3, "old")]);
    db.hold_next(1);
    let load_a = locked(&a, &db, 3);
    let waiter_b = async {
        db.wait_started().await;
        // b finds a's lease and waits for its value.
        let (res, ()) = tokio::join!(locked(&b, &db, 3), async {
            eventually("b waiting on the lock", || b.stats().lock_waits >= 1).await;
            db.set(3, "new");
            inv(&c, &tag("user", 3)).await;
        });
        res
    };
    let release = async {
        // Let a go only once b has its answer, or after a while if b waits for a.
        tokio::time::sleep(Duration::from_millis(600)).await;
        db.release();
    };
    let (old, waited, ()) = tokio::join!(load_a, waiter_b, release);
    assert_eq!(old, "old");
    assert_eq!(
        waited, "new",
        "b waited past the invalidation: it must not get the old row"
    );
    for cache in [&a, &b, &c] {
        assert_eq!(locked(cache, &db, 3).await, "new");
    }
    // Memory: no other process; the same scenario is p09's.
    let m = Cache::memory();
    let db = Rows::with(&[(3, "old")]);
    db.hold_next(1);
    let (old, during) = tokio::join!(locked(&m, &db, 3), async {
        db.wait_started().await;
        db.set(3, "new");
        inv(&m, &tag("user", 3)).await;
        let during = locked(&m, &db, 3).await;
        db.release();
        during
    });
    assert_eq!((old.as_str(), during.as_str()), ("old", "new"));
    assert_eq!(locked(&m, &db, 3).await, "new");
}

// ---------------------------------------------------------------------------------------
// 11-12. Background refreshes (`stale`, `refresh_ahead`) overtaken by a tag invalidation.

#[cached(
    ttl = "150ms",
    stale = "30s",
    prefix = "ps",
    tags = ["user:{id}"],
    cache = cache,
    skip(cache, db)
)]
async fn stale_user(cache: Cache, db: Arc<Rows>, id: u64) -> String {
    db.read(id).await
}

#[cached(
    ttl = "1s",
    refresh_ahead = 0.2,
    prefix = "pa",
    tags = ["user:{id}"],
    cache = cache,
    skip(cache, db)
)]
async fn ahead_user(cache: Cache, db: Arc<Rows>, id: u64) -> String {
    db.read(id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p11_a_stale_refresh_overtaken_by_a_tag_stores_nothing() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Arc::new(Rows::with(&[(1, "old")]));
        assert_eq!(stale_user(cache.clone(), db.clone(), 1).await, "old");
        // Past the TTL, within `stale`: expiry is what is tested.
        tokio::time::sleep(Duration::from_millis(250)).await;
        db.hold_next(1);
        assert_eq!(
            stale_user(cache.clone(), db.clone(), 1).await,
            "old",
            "stale served: {name}"
        );
        db.wait_started().await; // the refresh's body read "old" and is held
        db.set(1, "new");
        assert_eq!(inv(cache, &tag("user", 1)).await, 1, "{name}");
        let dropped = cache.stats().fills_dropped;
        assert_eq!(
            stale_user(cache.clone(), db.clone(), 1).await,
            "new",
            "a reader after the invalidation, refresh still held: {name}"
        );
        db.release();
        eventually("the refresh to end", || {
            cache.stats().fills_dropped > dropped || cache.stats().refresh_failures > 0
        })
        .await;
        for _ in 0..3 {
            assert_eq!(
                stale_user(cache.clone(), db.clone(), 1).await,
                "new",
                "after the refresh ended: {name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p12_a_refresh_ahead_overtaken_by_a_tag_stores_nothing() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Arc::new(Rows::with(&[(1, "old")]));
        assert_eq!(ahead_user(cache.clone(), db.clone(), 1).await, "old");
        tokio::time::sleep(Duration::from_millis(350)).await;
        db.hold_next(1);
        let refreshes = cache.stats().refreshes;
        assert_eq!(
            ahead_user(cache.clone(), db.clone(), 1).await,
            "old",
            "{name}"
        );
        assert_eq!(
            cache.stats().refreshes,
            refreshes + 1,
            "a refresh started: {name}"
        );
        db.wait_started().await;
        db.set(1, "new");
        assert_eq!(inv(cache, &tag("user", 1)).await, 1, "{name}");
        assert_eq!(
            ahead_user(cache.clone(), db.clone(), 1).await,
            "new",
            "reader after the invalidation: {name}"
        );
        let dropped = cache.stats().fills_dropped;
        db.release();
        eventually("the refresh to end", || {
            cache.stats().fills_dropped > dropped
        })
        .await;
        assert_eq!(
            ahead_user(cache.clone(), db.clone(), 1).await,
            "new",
            "after the refresh ended: {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 13. `#[cache_put]` entries carry every tag of the read.

#[cache_put(member(cache, team, id))]
async fn save_member(cache: &Cache, db: &Rows, team: u32, id: u64, name: &str) -> String {
    db.set(id, name);
    format!("{name}@{team}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p13_put_entries_carry_each_tag_of_the_read() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Rows::new();
        for t in [tag("user", 8), tag("team", 6), Tag::new("all").unwrap()] {
            save_member(cache, &db, 6, 8, "ada").await;
            assert_eq!(member(cache, &db, 6, 8).await, "ada@6");
            assert_eq!(db.reads(), 0, "the put's entry: {name}");
            assert_eq!(inv(cache, &t).await, 1, "{t} on {name}");
            db.set(8, "eve");
            assert_eq!(member(cache, &db, 6, 8).await, "eve@6", "{t} on {name}");
            db.reads.store(0, SeqCst);
            db.remove(8);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 14. `none_ttl` absences carry tags, and their set lives as long as they do.

#[cached(
    ttl = "200ms",
    none_ttl = "3s",
    prefix = "px",
    tags = ["user:{id}"],
    cache = cache,
    skip(cache, db)
)]
async fn find_user(cache: &Cache, db: &Rows, id: u64) -> Option<String> {
    db.find(id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p14_cached_absences_carry_tags() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Rows::new();
        assert_eq!(find_user(cache, &db, 4).await, None);
        assert_eq!(find_user(cache, &db, 4).await, None);
        assert_eq!(db.reads(), 1, "the absence is cached: {name}");
        if cache.backend_name() == "redis" {
            let set = format!("{}:#tag:user:4", cache.namespace());
            let pttl: i64 = conn.pttl(&set).unwrap();
            assert!(
                pttl > 2500,
                "the set lives as long as the absence (3s): {pttl} ms"
            );
        }
        // Past `ttl`, within `none_ttl`; another member joins and drops expired ones.
        tokio::time::sleep(Duration::from_millis(300)).await;
        member(cache, &db, 1, 4).await; // carries user:4 too
        assert_eq!(
            inv(cache, &tag("user", 4)).await,
            2,
            "the absence and member(1, 4): {name}"
        );
        db.set(4, "found");
        assert_eq!(
            find_user(cache, &db, 4).await.as_deref(),
            Some("found"),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 15. Redis sets: removed by the invalidation, live as long as their longest entry
// (stale window included), drop expired members as new ones come.

#[cached(ttl = "150ms", prefix = "py1", tags = ["grp:{g}"], cache = cache, skip(cache))]
async fn grp_short(cache: &Cache, g: u32, id: u32) -> u32 {
    id
}

#[cached(
    ttl = "150ms",
    stale = "2s",
    prefix = "py2",
    tags = ["grp:{g}"],
    cache = cache,
    skip(cache)
)]
async fn grp_stale(cache: Cache, g: u32, id: u32) -> u32 {
    id
}

/// Every member's entry expires no later than its score and than the set.
fn assert_set_covers_members(conn: &mut redis::Connection, set: &str, what: &str) {
    let set_exp: i64 = redis::cmd("PEXPIRETIME").arg(set).query(conn).unwrap();
    let members: Vec<(String, f64)> = conn.zrange_withscores(set, 0, -1).unwrap();
    for (key, score) in members {
        let exp: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(conn).unwrap();
        if exp < 0 {
            continue; // gone
        }
        assert!(
            exp <= score as i64 && exp <= set_exp,
            "{what}: entry {key} expires at {exp}, after its score {score} / the set's expiry \
             {set_exp} ({} ms late): invalidate_tag can miss it once the set forgets it",
            exp - (score as i64).min(set_exp)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p15_redis_sets_follow_their_entries() {
    let server = RedisServer::start();
    let cache = redis_cache(&server);
    let mut conn = server.conn();
    let set = format!("{}:#tag:grp:1", cache.namespace());
    grp_short(&cache, 1, 1).await;
    grp_stale(cache.clone(), 1, 2).await;
    let pttl: i64 = conn.pttl(&set).unwrap();
    assert!(pttl > 1800, "the stale entry lives 2.15 s: set PTTL {pttl}");
    // Past the short entry's expiry and the second of slack its score has.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    grp_short(&cache, 1, 3).await;
    let members: Vec<String> = conn.zrange(&set, 0, -1).unwrap();
    assert_eq!(
        members.len(),
        2,
        "short 1 dropped, stale 2 kept (still readable): {members:?}"
    );
    assert_eq!(inv(&cache, &tag("grp", 1)).await, 2);
    let exists: bool = conn.exists(&set).unwrap();
    assert!(!exists, "the set goes with its entries");
    // A set nobody tags again still expires.
    grp_short(&cache, 2, 1).await;
    let set2 = format!("{}:#tag:grp:2", cache.namespace());
    let pttl: i64 = conn.pttl(&set2).unwrap();
    // Its entry's 150 ms, and the second of slack a member's score has.
    assert!(pttl > 0 && pttl <= 1150, "{pttl}");
}

// ---------------------------------------------------------------------------------------
// 16. A slow body: its entry is stored after the set's score was computed.

#[cached(ttl = "300ms", prefix = "pz", tags = ["slow:{g}"], cache = cache, skip(cache, db))]
async fn slow(cache: &Cache, db: &Rows, g: u32, id: u64) -> String {
    db.read(id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p16_an_entry_whose_body_was_slow_is_still_invalidated() {
    let server = RedisServer::start();
    let mut failures = Vec::new();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Rows::with(&[(1, "old"), (2, "other")]);
        db.hold_next(1);
        let started = Instant::now();
        let (v, ()) = tokio::join!(slow(cache, &db, 1, 1), async {
            db.wait_started().await;
            // The body takes 600 ms (what is tested is the entry's lifetime against it).
            tokio::time::sleep(Duration::from_millis(600)).await;
            db.release();
        });
        assert_eq!(v, "old");
        // Now ~600 ms: the entry lives until ~900 ms; its tag's score said ~300 ms.
        // Another entry joins the tag (dropping members it thinks expired).
        slow(cache, &db, 1, 2).await;
        db.set(1, "new");
        let removed = inv(cache, &tag("slow", 1)).await;
        let after = slow(cache, &db, 1, 1).await;
        let at = started.elapsed();
        assert!(
            at < Duration::from_millis(850),
            "probe too slow to be meaningful: {at:?}"
        );
        if after != "new" {
            failures.push(format!(
                "{name}: invalidate_tag removed {removed} at {at:?}, then the read got {after:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "the slow load's entry (stored at ~600 ms, expiring at ~900 ms) outlived its tag \
         membership (scored from when its body started, ~300 ms): {failures:#?}"
    );
}

/// Redis side of p16, for any body: an entry must never outlive its tag membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p16b_redis_members_expire_no_later_than_their_score() {
    let server = RedisServer::start();
    let cache = redis_cache(&server);
    let mut conn = server.conn();
    let db = Rows::with(&[(1, "a")]);
    for id in 0..20 {
        slow(&cache, &db, 7, id).await;
    }
    let set = format!("{}:#tag:slow:7", cache.namespace());
    assert_set_covers_members(&mut conn, &set, "twenty quick loads");
}

// ---------------------------------------------------------------------------------------
// 17. fail-safe back-off: the kept entry's life is pushed past its tag's score.

#[cached(
    ttl = "200ms",
    fail_safe = "1s",
    prefix = "pb",
    tags = ["fs:{id}"],
    cache = cache,
    skip(cache, db)
)]
async fn failing(cache: &Cache, db: &Rows, id: u64) -> Result<String, String> {
    db.try_read(id).await
}

#[cached(
    ttl = "200ms",
    fail_safe = "1s",
    prefix = "pb2",
    tags = ["fs:{id}"],
    cache = cache,
    skip(cache, db)
)]
async fn failing_peer(cache: &Cache, db: &Rows, id: u64, n: u32) -> Result<String, String> {
    let _ = n;
    db.try_read(id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p17_a_fail_safe_back_off_outliving_its_tag() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Rows::with(&[(1, "old")]);
        assert_eq!(failing(cache, &db, 1).await.unwrap(), "old");
        // Past the TTL, within fail_safe: the body fails, the kept value answers and backs
        // off for the default 5 s.
        tokio::time::sleep(Duration::from_millis(300)).await;
        db.fail.store(true, SeqCst);
        assert_eq!(
            failing(cache, &db, 1).await.unwrap(),
            "old",
            "fail-safe: {name}"
        );
        db.fail.store(false, SeqCst);
        // Past the tag's score (load + 200 ms + 1 s); the entry is alive until ~6.3 s.
        tokio::time::sleep(Duration::from_millis(1400)).await;
        failing_peer(cache, &db, 1, 1).await.unwrap(); // joins the tag, drops "expired" members
        db.set(1, "new");
        let removed = inv(cache, &tag("fs", 1)).await;
        let after = failing(cache, &db, 1).await.unwrap();
        assert_eq!(
            after, "new",
            "{name}: invalidate_tag removed {removed}, and the backed-off entry still answers"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 18. The embedded backend's tag map under its byte cap (measured in a child process).

#[cached(ttl = "1h", prefix = "pk", tags = ["item:{id}"], cache = cache, skip(cache))]
async fn tagged_item(cache: &Cache, id: u64) -> u64 {
    id
}

#[cached(ttl = "1h", prefix = "pk2", cache = cache, skip(cache))]
async fn untagged_item(cache: &Cache, id: u64) -> u64 {
    id
}

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

const CHILD_ENV: &str = "TAGS_PROBE_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p18_memory_tag_map_stays_within_the_cap() {
    const MIB: u64 = 1 << 20;
    const CAP: u64 = 4 * MIB;
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        let (mode, keys) = mode.split_once(':').unwrap();
        let keys: u64 = keys.parse().unwrap();
        let cache = Cache::builder().memory_max_bytes(CAP).memory().unwrap();
        let before = rss();
        for id in 0..keys {
            if mode == "tagged" {
                tagged_item(&cache, id).await;
            } else {
                untagged_item(&cache, id).await;
            }
        }
        println!("RESULT grown={}", rss().saturating_sub(before));
        return;
    }
    let grown = |mode: &str, keys: u64| -> u64 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "p18_memory_tag_map_stays_within_the_cap",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, format!("{mode}:{keys}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.split("RESULT grown=").nth(1)?.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "child {mode}: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    };
    // The cap holds about 8,000 of these entries; the tag map should hold as many members,
    // whatever the number of keys that went through. Were it to keep evicted entries' keys,
    // the 100,000 more keys of the second tagged run would add about 15 MiB.
    let untagged = grown("untagged", 150_000);
    let few = grown("tagged", 50_000);
    let many = grown("tagged", 150_000);
    assert!(
        many <= few + 3 * MIB,
        "tagged keys under a {} MiB cap: resident memory grew by {} MiB after 50,000 keys and \
         {} MiB after 150,000: the tag map keeps evicted entries' keys",
        CAP / MIB,
        few / MIB,
        many / MIB,
    );
    // Beyond the store, the map costs a few hundred bytes per live tagged entry.
    assert!(
        many <= untagged + 6 * MIB,
        "150,000 tagged keys under a {} MiB cap grew resident memory by {} MiB, untagged ones \
         by {} MiB: the tag map costs more than a few hundred bytes per live entry",
        CAP / MIB,
        many / MIB,
        untagged / MIB,
    );
}

// ---------------------------------------------------------------------------------------
// 19. Redis flapping (SIGSTOP/SIGCONT) during tagged misses and puts: every call succeeds
// in bounded time; afterwards every entry is in its tag's set, and invalidating the tags
// removes every entry.

#[cached(
    ttl = 600,
    prefix = "pch",
    tags = ["chaos:{g}", "chaos-all"],
    cache = cache,
    skip(cache)
)]
async fn chaos(cache: &Cache, g: u32, id: u32) -> u32 {
    g * 1000 + id
}

#[cache_put(chaos(cache, g, id))]
async fn chaos_put(cache: &Cache, g: u32, id: u32) -> u32 {
    g * 1000 + id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p19_redis_flapping_during_tagged_misses_leaves_nothing_untagged() {
    let server = Arc::new(RedisServer::start());
    let cache = Cache::builder()
        .timeout(Duration::from_millis(40))
        .breaker(1000, Duration::from_millis(50))
        .redis(&server.url())
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flapper = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(SeqCst) {
                n += 1;
                server.pause();
                std::thread::sleep(Duration::from_millis(3 + n * 7 % 41));
                server.resume();
                std::thread::sleep(Duration::from_millis(2 + n * 11 % 29));
            }
            server.resume();
        })
    };
    let worst = Arc::new(Mutex::new(Duration::ZERO));
    let mut tasks = Vec::new();
    for w in 0..6u32 {
        let (cache, stop, worst) = (cache.clone(), stop.clone(), worst.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(SeqCst) {
                i = i.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let (g, id) = (i % 4, (i >> 8) % 40);
                let t = Instant::now();
                let v = match i % 5 {
                    0 => chaos_put(&cache, g, id).await,
                    _ => chaos(&cache, g, id).await,
                };
                assert_eq!(v, g * 1000 + id);
                let took = t.elapsed();
                let mut worst = worst.lock().unwrap();
                *worst = (*worst).max(took);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    flapper.join().unwrap();
    let worst = *worst.lock().unwrap();
    assert!(worst < Duration::from_millis(1500), "a call took {worst:?}");
    // Let queued commands land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conn = server.conn();
    let ns = cache.namespace().to_owned();
    let entries = values_matching(&mut conn, &format!("{ns}:pch:*"));
    let mut untagged = Vec::new();
    for key in &entries {
        let g: u32 = key.rsplit(':').nth(1).unwrap().parse().unwrap();
        for set in [
            format!("{ns}:#tag:chaos:{g}"),
            format!("{ns}:#tag:chaos-all"),
        ] {
            let score: Option<f64> = conn.zscore(&set, key).unwrap();
            if score.is_none() {
                untagged.push(format!("{key} not in {set}"));
            }
        }
    }
    assert!(
        untagged.is_empty(),
        "{} of {} entries: {untagged:?}",
        untagged.len(),
        entries.len()
    );
    let healthy = redis_cache(&server);
    inv(&healthy, &Tag::new("chaos-all").unwrap()).await;
    let left = values_matching(&mut conn, &format!("{ns}:pch:*"));
    assert!(
        left.is_empty(),
        "entries left after invalidate_tag(chaos-all): {left:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 20. Redis down: invalidate_tag errs in bounded time; `#[cache_evict(tag)]` fails open.

#[cache_evict(tag = "user:{id}", cache = cache)]
async fn rename(cache: &Cache, db: &Rows, id: u64, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    db.set(id, name);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p20_redis_down_invalidation_errs_in_bounded_time_and_evict_fails_open() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .timeout(Duration::from_millis(200))
        .redis(&server.url())
        .unwrap();
    let db = Rows::with(&[(1, "a")]);
    assert_eq!(user(&cache, &db, 1).await, "a");
    server.pause();
    let t = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        cache.invalidate_tag(&tag("user", 1)),
    )
    .await
    .expect("bounded while Redis is frozen");
    assert!(r.is_err(), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    let errors = cache.stats().errors;
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(3), rename(&cache, &db, 1, "b"))
        .await
        .expect("the write is bounded");
    assert_eq!(r, Ok(()), "the write returns its body's result");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    assert!(
        cache.stats().errors > errors,
        "the failed eviction is counted"
    );
    // A tagged miss while frozen still answers.
    let t = Instant::now();
    assert_eq!(user(&cache, &db, 2).await, "-");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    server.resume();
    server.kill();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        cache.invalidate_tag(&tag("user", 1)),
    )
    .await
    .expect("bounded while Redis is down");
    assert!(r.is_err());
}

// ---------------------------------------------------------------------------------------
// 21. Many entries per tag: more than one step of the invalidation loop.

#[cached(ttl = 600, prefix = "pmany", tags = ["many:{g}", "catalog"], cache = cache, skip(cache))]
async fn many(cache: &Cache, g: u32, id: u32) -> u32 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p21_thousands_of_entries_per_tag_all_go() {
    const N: u32 = 2500;
    let server = RedisServer::start();
    let mut conn = server.conn();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
            futures_join(chunk.iter().map(|&id| many(cache, 1, id))).await;
        }
        many(cache, 2, 0).await;
        let t = Instant::now();
        assert_eq!(inv(cache, &tag("many", 1)).await, u64::from(N), "{name}");
        let took = t.elapsed();
        if name == "redis" {
            let pattern = format!("{}:pmany:1:*", cache.namespace());
            let left = values_matching(&mut conn, &pattern);
            assert!(left.is_empty(), "{} left", left.len());
            let exists: bool = conn
                .exists(format!("{}:#tag:many:1", cache.namespace()))
                .unwrap();
            assert!(!exists);
        }
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(
            inv(cache, &Tag::new("catalog").unwrap()).await,
            1,
            "many(2, 0): {name}"
        );
    }
}

async fn futures_join<F: Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let set: Vec<_> = futs.collect();
    // Run them concurrently without an extra dependency.
    let mut pinned: Vec<_> = set.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    for v in done {
        out.push(v.unwrap());
    }
    out
}

// ---------------------------------------------------------------------------------------
// 22. Many tagged loads and invalidations interleaved, on two handles: a read that starts
// after an invalidation returned never gets a row older than that invalidation.

struct Versions {
    current: AtomicU64,
}

#[cached(ttl = 600, prefix = "pv", tags = ["ver:{g}"], cache = cache, skip(cache, v))]
async fn versioned(cache: &Cache, v: &Versions, g: u32, id: u32) -> u64 {
    let seen = v.current.load(SeqCst);
    for _ in 0..(id % 4) {
        tokio::task::yield_now().await;
    }
    seen
}

async fn versioned_run(handles: Vec<Cache>, secs: f64) -> (u64, Vec<String>) {
    let v = Arc::new(Versions {
        current: AtomicU64::new(0),
    });
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let reads = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for r in 0..6u32 {
        let cache = handles[r as usize % handles.len()].clone();
        let (v, done, stop, violations, reads) = (
            v.clone(),
            done.clone(),
            stop.clone(),
            violations.clone(),
            reads.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = r + 1;
            while !stop.load(SeqCst) {
                i = i.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let id = (i >> 8) % 12;
                let floor = done.load(SeqCst);
                let got = versioned(&cache, &v, 1, id).await;
                reads.fetch_add(1, SeqCst);
                // An embedded hit never yields: let the timer and the others run.
                tokio::task::yield_now().await;
                if got < floor {
                    violations.lock().unwrap().push(format!(
                        "{} id {id}: got v{got} after v{floor} was invalidated",
                        cache.backend_name()
                    ));
                }
            }
        }));
    }
    let invalidator = {
        let cache = handles[0].clone();
        let (v, done, stop) = (v.clone(), done.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(SeqCst) {
                let next = v.current.fetch_add(1, SeqCst) + 1;
                cache.invalidate_tag(&tag("ver", 1)).await.unwrap();
                done.store(next, SeqCst);
                n += 1;
                for _ in 0..(n % 5) {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, SeqCst);
    invalidator.await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    // Quiet now: one last write and invalidation; every key on every handle is current.
    let last = v.current.fetch_add(1, SeqCst) + 1;
    handles[0].invalidate_tag(&tag("ver", 1)).await.unwrap();
    let mut violations = std::mem::take(&mut *violations.lock().unwrap());
    for cache in &handles {
        for id in 0..12 {
            let got = versioned(cache, &v, 1, id).await;
            if got != last {
                violations.push(format!(
                    "final: id {id} on a handle got v{got}, not v{last}"
                ));
            }
        }
    }
    (reads.load(SeqCst), violations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p22_interleaved_loads_and_invalidations_never_serve_an_invalidated_row() {
    let server = RedisServer::start();
    let (reads, violations) =
        versioned_run(vec![redis_cache(&server), redis_cache(&server)], 2.0).await;
    assert!(reads > 500, "{reads}");
    let mut conn = server.conn();
    let set = "ca:#tag:ver:1".to_owned();
    let entries = values_matching(&mut conn, "ca:pv:*");
    let untracked: Vec<&String> = entries
        .iter()
        .filter(|k| {
            conn.zscore::<_, _, Option<f64>>(&set, *k)
                .unwrap()
                .is_none()
        })
        .collect();
    assert!(
        violations.is_empty(),
        "redis, {reads} reads, {} violations: {:?}; entries not in the tag set after the run: {untracked:?}",
        violations.len(),
        &violations[..violations.len().min(8)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p22b_memory_interleaved_loads_and_invalidations() {
    let (reads, violations) = versioned_run(vec![Cache::memory()], 1.5).await;
    assert!(reads > 500, "{reads}");
    assert!(
        violations.is_empty(),
        "memory, {reads} reads: {:?}",
        &violations[..violations.len().min(10)]
    );
}

// ---------------------------------------------------------------------------------------
// 23. Puts and loads racing invalidations of a tag: afterwards every entry is in its set.

#[cached(ttl = 600, prefix = "pzr", tags = ["zr"], cache = cache, skip(cache))]
async fn zr(cache: &Cache, id: u32, pad: u32) -> String {
    "x".repeat(64 * 1024 + pad as usize)
}

#[cache_put(zr(cache, id, pad))]
async fn zr_put(cache: &Cache, id: u32, pad: u32) -> String {
    "x".repeat(64 * 1024 + pad as usize)
}

/// `puts`: the writers are `#[cache_put]`s; else loads.
async fn racing_writes(puts: bool) {
    let server = RedisServer::start();
    let cache = redis_cache(&server);
    let other = redis_cache(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let cache = if w % 2 == 0 {
            cache.clone()
        } else {
            other.clone()
        };
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w + 7;
            while !stop.load(SeqCst) {
                i = i.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let id = (i >> 8) % 300;
                if puts {
                    zr_put(&cache, id, 1).await;
                } else {
                    zr(&cache, id, 1).await;
                }
            }
        }));
    }
    let inv_task = {
        let (cache, stop) = (cache.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(SeqCst) {
                cache
                    .invalidate_tag(&Tag::new("zr").unwrap())
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, SeqCst);
    let rounds = inv_task.await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let mut conn = server.conn();
    let ns = cache.namespace().to_owned();
    let set = format!("{ns}:#tag:zr");
    let entries = values_matching(&mut conn, &format!("{ns}:pzr:*"));
    let missing: Vec<&String> = entries
        .iter()
        .filter(|k| {
            conn.zscore::<_, _, Option<f64>>(&set, *k)
                .unwrap()
                .is_none()
        })
        .collect();
    let what = if puts { "puts" } else { "loads" };
    assert!(
        missing.is_empty(),
        "{what}: after {rounds} invalidations, {} of {} entries are not in {set}, so no \
         invalidation will ever remove them: {:?}",
        missing.len(),
        entries.len(),
        &missing[..missing.len().min(5)]
    );
    inv(&cache, &Tag::new("zr").unwrap()).await;
    let left = values_matching(&mut conn, &format!("{ns}:pzr:*"));
    assert!(
        left.is_empty(),
        "{} entries survive invalidate_tag",
        left.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p23_loads_racing_an_invalidation_stay_in_the_tag_set() {
    racing_writes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p23b_puts_racing_an_invalidation_stay_in_the_tag_set() {
    racing_writes(true).await;
}

// ---------------------------------------------------------------------------------------
// 24. Namespaces: a tag of namespace A never touches namespace B.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p24_namespaces_are_separate() {
    let server = RedisServer::start();
    let pairs = [
        (
            Cache::builder()
                .namespace("a")
                .redis(&server.url())
                .unwrap(),
            Cache::builder()
                .namespace("b")
                .redis(&server.url())
                .unwrap(),
        ),
        (
            Cache::builder()
                .namespace("a")
                .redis(&server.url())
                .unwrap(),
            Cache::builder()
                .namespace("a.b")
                .redis(&server.url())
                .unwrap(),
        ),
    ];
    for (a, b) in &pairs {
        let db = Rows::with(&[(1, "x")]);
        user(a, &db, 1).await;
        user(b, &db, 1).await;
        assert_eq!(inv(a, &tag("user", 1)).await, 1, "{}", a.namespace());
        let reads = db.reads();
        user(b, &db, 1).await;
        assert_eq!(db.reads(), reads, "{} kept its entry", b.namespace());
        assert_eq!(inv(b, &tag("user", 1)).await, 1, "{}", b.namespace());
    }
}

// ---------------------------------------------------------------------------------------
// 25. `#[cache_evict(tag = ..)]`: after Ok only; `always`; `before`; several targets;
// `cache = Arc<Cache>`; a panicking body.

#[cache_evict(tag = "user:{id}", cache = cache, always = true)]
async fn rename_always(cache: &Cache, db: &Rows, id: u64, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    db.set(id, name);
    Ok(())
}

/// Before the body: the body itself sees the entries gone.
#[cache_evict(tag = "user:{id}", cache = cache, before = true)]
async fn rename_before(cache: &Cache, db: &Rows, id: u64, name: &str) -> Result<String, String> {
    let seen = db.reads();
    let now = user(cache, db, id).await;
    db.set(id, name);
    if db.reads() == seen {
        return Err(format!("the body still hit {now:?}"));
    }
    Err("failed after the eviction".into())
}

#[cache_evict(plain(cache, id), tag = "user:{id}", tag = "team:{team}", cache = cache)]
async fn move_member(cache: &Cache, db: &Rows, id: u64, team: u32) -> Result<(), String> {
    db.set(id, "moved");
    Ok(())
}

#[cache_evict(tag = "user:{id}", cache = cache)]
async fn rename_arc(cache: Arc<Cache>, db: &Rows, id: u64, name: &str) -> Result<(), String> {
    db.set(id, name);
    Ok(())
}

#[cache_evict(tag = "user:{id}", cache = cache)]
async fn boom(cache: Cache, id: u64) -> Result<(), String> {
    let _ = (&cache, id);
    panic!("body panicked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p25_cache_evict_tag_targets() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Rows::with(&[(1, "a")]);
        user(cache, &db, 1).await;
        member(cache, &db, 2, 1).await;
        assert_eq!(db.reads(), 2, "{name}");
        // Default: Err evicts nothing.
        assert!(rename(cache, &db, 1, "").await.is_err());
        user(cache, &db, 1).await;
        assert_eq!(db.reads(), 2, "nothing evicted on Err: {name}");
        // always: Err evicts.
        let ev = cache.stats().evictions;
        assert!(rename_always(cache, &db, 1, "").await.is_err());
        assert_eq!(cache.stats().evictions, ev + 1, "{name}");
        assert_eq!(user(cache, &db, 1).await, "a");
        assert_eq!(member(cache, &db, 2, 1).await, "a@2");
        assert_eq!(db.reads(), 4, "{name}");
        // before: the body sees the entry gone (its own read misses), and Err keeps it evicted.
        let r = rename_before(cache, &db, 1, "b").await;
        assert_eq!(r, Err("failed after the eviction".into()), "{name}");
        // The body's own read cached "a" again between the eviction and its write: the
        // documented caveat of `before`.
        // Several targets at once: a function target and two tags.
        plain(cache, &db, 1).await;
        user(cache, &db, 1).await;
        member(cache, &db, 2, 1).await;
        let ev = cache.stats().evictions;
        move_member(cache, &db, 1, 2).await.unwrap();
        assert_eq!(cache.stats().evictions, ev + 3, "one per target: {name}");
        assert_eq!(plain(cache, &db, 1).await, "moved");
        assert_eq!(user(cache, &db, 1).await, "moved");
        assert_eq!(member(cache, &db, 2, 1).await, "moved@2");
        // cache = an Arc<Cache> argument.
        rename_arc(Arc::new(cache.clone()), &db, 1, "arc")
            .await
            .unwrap();
        assert_eq!(user(cache, &db, 1).await, "arc", "{name}");
        // A body that panics evicts nothing.
        let owned = cache.clone();
        let r = tokio::spawn(async move { boom(owned, 1).await }).await;
        assert!(r.is_err(), "panicked");
        let before = db.reads();
        assert_eq!(user(cache, &db, 1).await, "arc");
        assert_eq!(
            db.reads(),
            before,
            "still cached after a panicking write: {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 26. A tag set Redis cannot update (a foreign value at its key): the load stores nothing,
// a put deletes instead, and `on_cache_error = "fail"` says so.

#[derive(Debug, PartialEq)]
enum AppError {
    Cache(String),
}

impl From<cache_aside_runtime::Error> for AppError {
    fn from(e: cache_aside_runtime::Error) -> Self {
        AppError::Cache(e.to_string())
    }
}

#[cached(
    ttl = 600,
    prefix = "pfail",
    tags = ["user:{id}"],
    on_cache_error = "fail",
    cache = cache,
    skip(cache, db)
)]
async fn strict_user(cache: &Cache, db: &Rows, id: u64) -> Result<String, AppError> {
    Ok(db.read(id).await)
}

#[cache_put(user(cache, id))]
async fn put_user(cache: &Cache, db: &Rows, id: u64, name: &str) -> String {
    db.set(id, name);
    name.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p26_a_tag_set_that_cannot_be_written() {
    let server = RedisServer::start();
    let cache = redis_cache(&server);
    let mut conn = server.conn();
    let set = format!("{}:#tag:user:1", cache.namespace());
    let _: () = conn.set(&set, "not a zset").unwrap();
    let db = Rows::with(&[(1, "a")]);
    // The miss answers, and stores nothing (it could not join its tag).
    assert_eq!(user(&cache, &db, 1).await, "a");
    assert_eq!(user(&cache, &db, 1).await, "a");
    assert_eq!(db.reads(), 2, "nothing stored");
    let errors = cache.stats().errors;
    assert!(errors >= 2, "counted: {:?}", cache.stats());
    // A put deletes the old entry instead: no old value survives it.
    let _: () = conn.del(&set).unwrap();
    assert_eq!(user(&cache, &db, 1).await, "a");
    let _: () = conn.set(&set, "not a zset").unwrap();
    put_user(&cache, &db, 1, "b").await;
    assert_eq!(
        user(&cache, &db, 1).await,
        "b",
        "the put's old entry is gone"
    );
    // invalidate_tag on it errs.
    assert!(cache.invalidate_tag(&tag("user", 1)).await.is_err());
    // "fail": a cache failure is returned as the call's Err instead of running uncached.
    let r = strict_user(&cache, &db, 1).await;
    assert!(
        matches!(r, Err(AppError::Cache(_))),
        "on_cache_error = \"fail\" with the tag set unwritable: got {r:?} (the body ran, \
         uncached, and the call said nothing)"
    );
}

// ---------------------------------------------------------------------------------------
// 28. The embedded backend: a miss's cost must not grow with its tag's size. Counted, not
// timed: `backend::memory`'s unit test `sweeps_cost_what_the_additions_since_the_last_one_did`.

// ---------------------------------------------------------------------------------------
// 23c. The embedded backend: puts racing invalidations; afterwards one invalidation must
// leave nothing cached.

#[cached(ttl = 600, prefix = "pzm", tags = ["zm"], cache = cache, skip(cache, n))]
async fn zm(cache: &Cache, n: &AtomicU64, id: u32) -> u32 {
    n.fetch_add(1, SeqCst);
    id
}

#[cache_put(zm(cache, id))]
async fn zm_put(cache: &Cache, id: u32) -> u32 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p23c_memory_puts_racing_an_invalidation_stay_invalidatable() {
    let cache = Cache::memory();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..3u32 {
        let (cache, stop) = (cache.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w + 3;
            while !stop.load(SeqCst) {
                i = i.wrapping_mul(1_103_515_245).wrapping_add(12345);
                zm_put(&cache, (i >> 8) % 200).await;
                tokio::task::yield_now().await;
            }
        }));
    }
    let inv_task = {
        let (cache, stop) = (cache.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(SeqCst) {
                cache
                    .invalidate_tag(&Tag::new("zm").unwrap())
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, SeqCst);
    inv_task.await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    inv(&cache, &Tag::new("zm").unwrap()).await;
    let loads = AtomicU64::new(0);
    for id in 0..200 {
        zm(&cache, &loads, id).await;
    }
    assert_eq!(
        loads.load(SeqCst),
        200,
        "entries put while invalidations ran survived the last invalidate_tag"
    );
}

// ---------------------------------------------------------------------------------------
// 27. A tag that does not render: the call runs uncached; the eviction fails open.

struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("no"))
    }
}

struct BadRepo {
    cache: Cache,
    bad: Unserializable,
    loads: AtomicU64,
}

impl BadRepo {
    #[cached(
        ttl = 600,
        key = "pbad:{self.bad}:{id}",
        cache = self.cache,
        tags = ["bad:{self.bad}"]
    )]
    async fn get(&self, id: u64) -> u64 {
        self.loads.fetch_add(1, SeqCst);
        id
    }

    #[cache_evict(tag = "bad:{self.bad}", cache = self.cache)]
    async fn write(&self) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p27_a_tag_that_does_not_render_runs_uncached_and_evicts_fail_open() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let name = cache.backend_name();
        let repo = BadRepo {
            cache: cache.clone(),
            bad: Unserializable,
            loads: AtomicU64::new(0),
        };
        assert_eq!(repo.get(1).await, 1);
        assert_eq!(repo.get(1).await, 1);
        assert_eq!(repo.loads.load(SeqCst), 2, "uncached: {name}");
        assert!(cache.stats().errors >= 2, "{name}: {:?}", cache.stats());
        let errors = cache.stats().errors;
        assert_eq!(repo.write().await, Ok(()));
        assert!(cache.stats().errors > errors, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// 29. Redis Cluster: entries in every slot, the set in one.

#[cached(ttl = 600, prefix = "pcl", tags = ["cl:{g}"], cache = cache, skip(cache))]
async fn clustered(cache: &Cache, g: u32, id: u32) -> u32 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p29_cluster_invalidation_reaches_every_slot() {
    let cluster = cache_aside_tests::RedisCluster::start(3, 0);
    let cache = Cache::builder()
        .timeout(Duration::from_millis(500))
        .redis_cluster(cluster.urls())
        .unwrap();
    for id in 0..1200 {
        clustered(&cache, 1, id).await;
    }
    let slots: std::collections::HashSet<u16> = (0..1200)
        .map(|id| cache_aside_tests::slot_of(&format!("{}:pcl:1:{id}", cache.namespace())))
        .collect();
    assert!(slots.len() > 500, "{}", slots.len());
    assert_eq!(inv(&cache, &tag("cl", 1)).await, 1200);
    let loads_before = cache.stats().loads;
    for id in (0..1200).step_by(97) {
        clustered(&cache, 1, id).await;
    }
    assert_eq!(cache.stats().loads - loads_before, 13, "all reloaded");
}
