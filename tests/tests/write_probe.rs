//! Adversarial probes of `#[cache_evict]` / `#[cache_put]`, written from their docs only.
//! Each test is bounded in time and talks only to 127.0.0.1.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cache_evict, cache_put, cached};
use cache_aside_tests::RedisServer;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

// ---------------------------------------------------------------------------------------
// A tiny database.

#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<u64, String>>,
    reads: AtomicU64,
}

impl Db {
    fn with(rows: &[(u64, &str)]) -> Db {
        let db = Db::default();
        for &(id, name) in rows {
            db.set(id, name);
        }
        db
    }
    fn set(&self, id: u64, name: &str) {
        self.rows.lock().unwrap().insert(id, name.to_owned());
    }
    fn read(&self, id: u64) -> Option<String> {
        self.reads.fetch_add(1, SeqCst);
        self.rows.lock().unwrap().get(&id).cloned()
    }
    fn reads(&self) -> u64 {
        self.reads.load(SeqCst)
    }
}

#[derive(Debug, PartialEq, Clone)]
struct DbError;

fn caches(server: &RedisServer) -> [Cache; 2] {
    [
        Cache::builder()
            .timeout(Duration::from_millis(300))
            .redis(&server.url())
            .unwrap(),
        Cache::memory(),
    ]
}

// ---------------------------------------------------------------------------------------
// 1. Generic reads named with a turbofish.

trait FromRow: Sized {
    fn from_row(s: String) -> Self;
}
impl FromRow for String {
    fn from_row(s: String) -> Self {
        s
    }
}
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Upper(String);
impl FromRow for Upper {
    fn from_row(s: String) -> Self {
        Upper(s.to_uppercase())
    }
}

#[cached(ttl = 600, prefix = "p-item", cache = cache, skip(cache, db))]
async fn get_item<T>(cache: &Cache, db: &Db, id: u64) -> Option<T>
where
    T: FromRow + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    db.read(id).map(T::from_row)
}

#[cache_put(get_item::<String>(cache, id))]
async fn put_item_string(cache: &Cache, id: u64, v: String) -> Option<String> {
    Some(v)
}

#[cache_evict(get_item::<T>(cache, id))]
async fn evict_item<T>(cache: &Cache, id: u64)
where
    T: FromRow + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
}

#[cache_evict(get_item::<T>(cache, ..))]
async fn evict_all_items<T>(cache: &Cache)
where
    T: FromRow + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_read_turbofish_targets_hit_only_their_instantiation() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ada"), (2, "bob")]);
        assert_eq!(get_item::<String>(cache, &db, 1).await, Some("ada".into()));
        assert_eq!(
            get_item::<Upper>(cache, &db, 1).await,
            Some(Upper("ADA".into()))
        );
        assert_eq!(db.reads(), 2);
        put_item_string(cache, 1, "put".into()).await;
        assert_eq!(
            get_item::<String>(cache, &db, 1).await,
            Some("put".into()),
            "hit on put"
        );
        assert_eq!(
            get_item::<Upper>(cache, &db, 1).await,
            Some(Upper("ADA".into()))
        );
        assert_eq!(db.reads(), 2, "both hits: {}", cache.backend_name());
        evict_item::<Upper>(cache, 1).await;
        assert_eq!(get_item::<String>(cache, &db, 1).await, Some("put".into()));
        assert_eq!(db.reads(), 2, "String entry kept");
        assert_eq!(
            get_item::<Upper>(cache, &db, 1).await,
            Some(Upper("ADA".into()))
        );
        assert_eq!(db.reads(), 3, "Upper entry evicted");
        get_item::<String>(cache, &db, 2).await;
        assert_eq!(db.reads(), 4);
        evict_all_items::<String>(cache).await;
        assert_eq!(
            get_item::<Upper>(cache, &db, 1).await,
            Some(Upper("ADA".into()))
        );
        assert_eq!(db.reads(), 4, "Upper kept by String's (..)");
        assert_eq!(get_item::<String>(cache, &db, 1).await, Some("ada".into()));
        assert_eq!(get_item::<String>(cache, &db, 2).await, Some("bob".into()));
        assert_eq!(
            db.reads(),
            6,
            "every String entry evicted: {}",
            cache.backend_name()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. Key templates over struct fields.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Query {
    id: u64,
    verbose: bool,
}

#[cached(ttl = 600, key = "p-q:{q.id}", cache = cache, skip(cache, db))]
async fn by_query(cache: &Cache, db: &Db, q: Query) -> Option<String> {
    db.read(q.id)
        .map(|n| if q.verbose { format!("{n}!") } else { n })
}

#[cache_evict(by_query(cache, Query { id, verbose: false }))]
async fn evict_query(cache: &Cache, id: u64) -> Result<(), DbError> {
    Ok(())
}

#[cache_put(by_query(cache, q.clone()))]
async fn put_query(cache: &Cache, q: Query, name: String) -> Result<Option<String>, DbError> {
    let _moved: Query = q; // the body moves the argument its target used
    Ok(Some(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_template_over_a_field_writes_the_reads_key() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ada")]);
        let q = Query {
            id: 1,
            verbose: true,
        };
        assert_eq!(by_query(cache, &db, q.clone()).await, Some("ada!".into()));
        assert_eq!(by_query(cache, &db, q.clone()).await, Some("ada!".into()));
        assert_eq!(db.reads(), 1);
        evict_query(cache, 1).await.unwrap();
        assert_eq!(by_query(cache, &db, q.clone()).await, Some("ada!".into()));
        assert_eq!(
            db.reads(),
            2,
            "evicted through another value of the unkeyed field"
        );
        put_query(
            cache,
            Query {
                id: 1,
                verbose: false,
            },
            "grace".into(),
        )
        .await
        .unwrap();
        assert_eq!(by_query(cache, &db, q.clone()).await, Some("grace".into()));
        assert_eq!(db.reads(), 2, "hit on the put: {}", cache.backend_name());
    }
}

// ---------------------------------------------------------------------------------------
// 3. `cache = ctx.cache` with `skip(ctx)`, and every entry through `f(ctx, ..)`.

struct Ctx {
    cache: Cache,
    db: Db,
}

#[cached(ttl = 600, prefix = "p-ctx", cache = ctx.cache, skip(ctx))]
async fn ctx_read(ctx: &Ctx, id: u64, lang: &str) -> String {
    format!("{}-{lang}", ctx.db.read(id).unwrap_or_default())
}

#[cache_evict(ctx_read(ctx, id, "en"), ctx_read(ctx, ..))]
async fn ctx_write(ctx: &Ctx, id: u64) -> Result<(), DbError> {
    Ok(())
}

#[cache_put(ctx_read(ctx, id, &lang))]
async fn ctx_put(ctx: &Ctx, id: u64, lang: String) -> Result<String, DbError> {
    Ok(format!("put-{lang}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_expression_reading_a_skipped_argument() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let ctx = Ctx {
            cache,
            db: Db::with(&[(1, "ada")]),
        };
        ctx_read(&ctx, 1, "en").await;
        ctx_read(&ctx, 1, "fr").await;
        assert_eq!(ctx.db.reads(), 2);
        let evictions = ctx.cache.stats().evictions;
        ctx_write(&ctx, 1).await.unwrap();
        assert_eq!(ctx.cache.stats().evictions, evictions + 2, "one per target");
        ctx_read(&ctx, 1, "en").await;
        ctx_read(&ctx, 1, "fr").await;
        assert_eq!(ctx.db.reads(), 4);
        ctx_put(&ctx, 1, "de".into()).await.unwrap();
        assert_eq!(ctx_read(&ctx, 1, "de").await, "put-de");
        assert_eq!(ctx.db.reads(), 4, "{}", ctx.cache.backend_name());
    }
}

// ---------------------------------------------------------------------------------------
// 4. Shapes: every read shape with each write shape the docs allow.

#[cached(ttl = 600, prefix = "p-plain", cache = cache, skip(cache, db))]
async fn r_plain(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).unwrap_or_default()
}
#[cached(ttl = 600, prefix = "p-opt", cache = cache, skip(cache, db))]
async fn r_opt(cache: &Cache, db: &Db, id: u64) -> Option<String> {
    db.read(id)
}
#[cached(ttl = 600, prefix = "p-res", cache = cache, skip(cache, db))]
async fn r_res(cache: &Cache, db: &Db, id: u64) -> Result<String, DbError> {
    db.read(id).ok_or(DbError)
}
#[cached(ttl = 600, none_ttl = 600, prefix = "p-resopt", cache = cache, skip(cache, db))]
async fn r_res_opt(cache: &Cache, db: &Db, id: u64) -> Result<Option<String>, DbError> {
    Ok(db.read(id))
}

#[cache_put(r_plain(cache, id))]
async fn w_plain_from_res(cache: &Cache, id: u64, v: Option<String>) -> Result<String, String> {
    v.ok_or_else(|| "no".to_owned())
}
#[cache_put(r_opt(cache, id))]
async fn w_opt(cache: &Cache, id: u64, v: Option<String>) -> Option<String> {
    v
}
#[cache_put(r_res(cache, id))]
async fn w_res_from_plain(cache: &Cache, id: u64, v: String) -> String {
    v
}
#[cache_put(r_res_opt(cache, id))]
async fn w_res_opt(cache: &Cache, id: u64, v: Option<String>) -> std::io::Result<Option<String>> {
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_pair_puts_what_the_read_returns() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Db::with(&[(1, "ada")]);
        // plain read, Result write: Ok is put, Err is not.
        r_plain(cache, &db, 1).await;
        assert_eq!(
            w_plain_from_res(cache, 1, Some("p".into())).await,
            Ok("p".into())
        );
        assert_eq!(r_plain(cache, &db, 1).await, "p");
        assert!(w_plain_from_res(cache, 1, None).await.is_err());
        assert_eq!(r_plain(cache, &db, 1).await, "p", "Err put nothing: {name}");
        assert_eq!(db.reads(), 1);
        // Option read without none_ttl: Some is put, None deletes.
        r_opt(cache, &db, 1).await;
        w_opt(cache, 1, Some("o".into())).await;
        assert_eq!(r_opt(cache, &db, 1).await, Some("o".into()));
        assert_eq!(db.reads(), 2);
        w_opt(cache, 1, None).await;
        assert_eq!(
            r_opt(cache, &db, 1).await,
            Some("ada".into()),
            "None deleted: {name}"
        );
        assert_eq!(db.reads(), 3);
        // Result read, plain write.
        r_res(cache, &db, 1).await.unwrap();
        w_res_from_plain(cache, 1, "r".into()).await;
        assert_eq!(r_res(cache, &db, 1).await, Ok("r".into()));
        assert_eq!(db.reads(), 4);
        // Result<Option> read with none_ttl, io::Result<Option> write: None is a cached absence.
        r_res_opt(cache, &db, 1).await.unwrap();
        w_res_opt(cache, 1, None).await.unwrap();
        assert_eq!(r_res_opt(cache, &db, 1).await, Ok(None), "{name}");
        w_res_opt(cache, 1, Some("ro".into())).await.unwrap();
        assert_eq!(r_res_opt(cache, &db, 1).await, Ok(Some("ro".into())));
        assert_eq!(db.reads(), 5, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// 5. Bodies with `?` and early `return`; a body that moves the argument a target uses.

#[cached(ttl = 600, prefix = "p-early", cache = cache, skip(cache, db))]
async fn early_read(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).unwrap_or_default()
}

#[derive(Debug, PartialEq)]
struct ParseErr;
impl From<std::num::ParseIntError> for ParseErr {
    fn from(_: std::num::ParseIntError) -> Self {
        ParseErr
    }
}

#[cache_evict(early_read(cache, id))]
async fn early_write(cache: &Cache, id: u64, input: &str) -> Result<u64, ParseErr> {
    if input.is_empty() {
        return Ok(0);
    }
    if input == "fail" {
        return Err(ParseErr);
    }
    let n: u64 = input.parse()?;
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_return_and_question_mark() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ada")]);
        early_read(cache, &db, 1).await;
        assert_eq!(early_write(cache, 1, "x").await, Err(ParseErr), "`?` error");
        early_read(cache, &db, 1).await;
        assert_eq!(db.reads(), 1, "no eviction on `?`");
        assert_eq!(early_write(cache, 1, "fail").await, Err(ParseErr));
        early_read(cache, &db, 1).await;
        assert_eq!(db.reads(), 1, "no eviction on `return Err`");
        assert_eq!(early_write(cache, 1, "").await, Ok(0));
        early_read(cache, &db, 1).await;
        assert_eq!(db.reads(), 2, "evicted on early `return Ok`");
        assert_eq!(early_write(cache, 1, "7").await, Ok(7));
        early_read(cache, &db, 1).await;
        assert_eq!(db.reads(), 3, "{}", cache.backend_name());
    }
}

#[cached(ttl = 600, prefix = "p-name", cache = cache, skip(cache, db))]
async fn by_name(cache: &Cache, db: &Db, name: &str) -> usize {
    db.read(0);
    name.len()
}
#[cached(ttl = 600, prefix = "p-owned", cache = cache, skip(cache, db))]
async fn by_owned(cache: &Cache, db: &Db, name: String) -> usize {
    db.read(0);
    name.len()
}

fn consume(_: String) {}

#[cache_evict(by_name(cache, &name), by_owned(cache, name.clone()))]
async fn rename_moving(cache: &Cache, name: String) -> Result<(), DbError> {
    consume(name);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_moving_the_targets_argument_still_evicts_its_key() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::default();
        // Characters the key encoding escapes.
        let name = "a:b*c{d}\\e[f] g?";
        by_name(cache, &db, name).await;
        by_owned(cache, &db, name.to_owned()).await;
        by_name(cache, &db, name).await;
        assert_eq!(db.reads(), 2);
        rename_moving(cache, name.to_owned()).await.unwrap();
        by_name(cache, &db, name).await;
        by_owned(cache, &db, name.to_owned()).await;
        assert_eq!(db.reads(), 4, "{}", cache.backend_name());
    }
}

// ---------------------------------------------------------------------------------------
// 6. `before` and `always`; a panicking body.

#[cached(ttl = 600, prefix = "p-when", cache = cache, skip(cache, db))]
async fn when_read(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).unwrap_or_default()
}

#[cache_evict(when_read(cache, id), before = true)]
async fn before_err(cache: &Cache, id: u64) -> Result<(), DbError> {
    Err(DbError)
}

#[cache_evict(when_read(cache, id), always = true)]
async fn always_plain(cache: &Cache, id: u64) -> u8 {
    1
}

#[cache_evict(when_read(&cache, id))]
async fn panicking(cache: Cache, id: u64) -> Result<(), DbError> {
    panic!("the write panics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_always_and_panics() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ada")]);
        when_read(cache, &db, 1).await;
        assert_eq!(before_err(cache, 1).await, Err(DbError));
        when_read(cache, &db, 1).await;
        assert_eq!(
            db.reads(),
            2,
            "before = true evicts whatever the body returns"
        );
        assert_eq!(always_plain(cache, 1).await, 1);
        when_read(cache, &db, 1).await;
        assert_eq!(db.reads(), 3);
        let joined = tokio::spawn(panicking(cache.clone(), 1)).await;
        assert!(joined.is_err(), "panicked");
        when_read(cache, &db, 1).await;
        assert_eq!(
            db.reads(),
            3,
            "a panicking body evicts nothing: {}",
            cache.backend_name()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 7. Writes in other modules naming the read by path.

mod reads {
    use super::*;
    #[cached(ttl = 600, prefix = "p-mod", cache = cache, skip(cache, db))]
    pub async fn mod_read(cache: &Cache, db: &Db, id: u64) -> String {
        db.read(id).unwrap_or_default()
    }
    #[cached(ttl = 600, prefix = "p-priv", cache = cache, skip(cache, db))]
    async fn private_read(cache: &Cache, db: &Db, id: u64) -> String {
        db.read(id).unwrap_or_default()
    }
    pub async fn call_private(cache: &Cache, db: &Db, id: u64) -> String {
        private_read(cache, db, id).await
    }

    pub mod writes {
        use super::super::*;
        #[cache_put(super::mod_read(cache, id))]
        pub async fn via_super(cache: &Cache, id: u64, v: String) -> String {
            v
        }
        #[cache_evict(crate::reads::mod_read(cache, id), super::private_read(cache, ..))]
        pub async fn via_crate(cache: &Cache, id: u64) {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_other_modules_name_the_read_by_path() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ada")]);
        reads::mod_read(cache, &db, 1).await;
        reads::call_private(cache, &db, 1).await;
        reads::writes::via_super(cache, 1, "put".into()).await;
        assert_eq!(reads::mod_read(cache, &db, 1).await, "put");
        assert_eq!(db.reads(), 2);
        reads::writes::via_crate(cache, 1).await;
        assert_eq!(reads::mod_read(cache, &db, 1).await, "ada");
        reads::call_private(cache, &db, 1).await;
        assert_eq!(db.reads(), 4, "{}", cache.backend_name());
    }
}

// ---------------------------------------------------------------------------------------
// 8. Values that cannot be stored: NaN, oversized (cache-wide limit), a memory store too small.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Score {
    id: u64,
    value: f64,
}

#[cached(ttl = 600, prefix = "p-score", cache = cache, skip(cache, db))]
async fn score(cache: &Cache, db: &Db, id: u64) -> Result<Score, DbError> {
    db.read(id);
    Ok(Score { id, value: 1.5 })
}

#[cache_put(score(cache, id))]
async fn put_score(cache: &Cache, id: u64, value: f64) -> Result<Score, DbError> {
    Ok(Score { id, value })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_of_nan_deletes_the_old_entry_and_counts_unstorable() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::default();
        score(cache, &db, 1).await.unwrap();
        let before = cache.stats();
        let put = put_score(cache, 1, f64::NAN).await.unwrap();
        assert!(put.value.is_nan(), "the write returns its value");
        let after = cache.stats();
        assert_eq!(
            after.unstorable,
            before.unstorable + 1,
            "counted unstorable"
        );
        assert_eq!(after.puts, before.puts + 1, "a deletion counts as a put");
        let read = score(cache, &db, 1).await.unwrap();
        assert_eq!(read.value, 1.5, "reloaded, never the old entry nor a null");
        assert_eq!(db.reads(), 2, "{}", cache.backend_name());
        // And an exact value round-trips bit for bit.
        let v = 0.1 + 0.2;
        put_score(cache, 1, v).await.unwrap();
        assert_eq!(
            score(cache, &db, 1).await.unwrap().value.to_bits(),
            v.to_bits()
        );
        put_score(cache, 1, -0.0).await.unwrap();
        assert!(score(cache, &db, 1).await.unwrap().value.is_sign_negative());
        assert_eq!(db.reads(), 2, "both hits: {}", cache.backend_name());
    }
}

#[cached(ttl = 600, prefix = "p-big", cache = cache, skip(cache, db))]
async fn big(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).unwrap_or_default()
}

#[cache_put(big(cache, id))]
async fn put_big(cache: &Cache, id: u64, v: String) -> String {
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_put_against_the_caches_limit_deletes_the_entry() {
    let server = RedisServer::start();
    let small = [
        Cache::builder()
            .max_value_bytes(64)
            .redis(&server.url())
            .unwrap(),
        Cache::builder().max_value_bytes(64).memory().unwrap(),
    ];
    for cache in &small {
        let db = Db::with(&[(1, "ada")]);
        big(cache, &db, 1).await;
        let before = cache.stats();
        let long = "x".repeat(500);
        assert_eq!(put_big(cache, 1, long.clone()).await, long);
        assert!(
            cache.stats().oversized > before.oversized,
            "counted oversized"
        );
        db.set(1, "grace");
        assert_eq!(
            big(cache, &db, 1).await,
            "grace",
            "{}",
            cache.backend_name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_larger_than_the_memory_store_never_leaves_the_old_entry() {
    let cache = Cache::builder().memory_max_bytes(4096).memory().unwrap();
    let db = Db::with(&[(1, "ada")]);
    big(&cache, &db, 1).await;
    let long = "y".repeat(20_000);
    put_big(&cache, 1, long.clone()).await;
    db.set(1, "grace");
    let got = big(&cache, &db, 1).await;
    assert!(
        got == long || got == "grace",
        "the old entry outlived the put: {got:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 9. Redis down or hung: the write returns its result quickly, failures counted.

#[cached(ttl = 600, prefix = "p-down", cache = cache, skip(cache))]
async fn down_read(cache: &Cache, id: u64) -> Result<Option<String>, DbError> {
    Ok(Some(id.to_string()))
}

#[cache_put(down_read(cache, id))]
async fn down_put(cache: &Cache, id: u64) -> Result<Option<String>, DbError> {
    Ok(Some("new".into()))
}

#[cache_evict(down_read(cache, id), down_read(cache, ..))]
async fn down_evict(cache: &Cache, id: u64) -> Result<u8, DbError> {
    Ok(7)
}

async fn bounded<F: Future>(what: &str, limit: Duration, f: F) -> F::Output {
    let start = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: did not return within 10 s"));
    let took = start.elapsed();
    assert!(took <= limit, "{what}: took {took:?}, more than {limit:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fail_open_when_redis_is_killed() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .timeout(Duration::from_millis(200))
        .redis(&server.url())
        .unwrap();
    down_read(&cache, 1).await.unwrap();
    server.kill();
    let before = cache.stats();
    let limit = Duration::from_millis(1500);
    let put = bounded("put, redis killed", limit, down_put(&cache, 1)).await;
    assert_eq!(put, Ok(Some("new".into())));
    let after_put = cache.stats();
    assert!(
        after_put.errors > before.errors,
        "put counted in errors: {after_put:?}"
    );
    assert!(
        after_put.store_errors > before.store_errors,
        "and in store_errors"
    );
    assert_eq!(
        after_put.puts, before.puts,
        "no put was made: {after_put:?}"
    );
    let evicted = bounded("evict, redis killed", limit, down_evict(&cache, 1)).await;
    assert_eq!(evicted, Ok(7));
    let after = cache.stats();
    assert!(
        after.errors > after_put.errors,
        "evict counted in errors: {after:?}"
    );
    assert_eq!(
        after.evictions, before.evictions,
        "nothing was evicted: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fail_open_when_redis_hangs() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .timeout(Duration::from_millis(200))
        .redis(&server.url())
        .unwrap();
    down_read(&cache, 1).await.unwrap();
    server.pause();
    let before = cache.stats();
    let limit = Duration::from_millis(1500);
    let put = bounded("put, redis hung", limit, down_put(&cache, 1)).await;
    assert_eq!(put, Ok(Some("new".into())));
    let evicted = bounded("evict, redis hung", limit, down_evict(&cache, 1)).await;
    assert_eq!(evicted, Ok(7));
    let after = cache.stats();
    assert!(after.errors >= before.errors + 2, "counted: {after:?}");
    server.resume();
}

// ---------------------------------------------------------------------------------------
// 10. Send futures: spawned writes, free functions and `self: Arc<Self>` methods.

#[cached(ttl = 600, prefix = "p-spawn", cache = cache, skip(cache, db))]
async fn spawn_read(cache: &Cache, db: &Db, id: u64) -> Result<String, DbError> {
    Ok(db.read(id).unwrap_or_default())
}

#[cache_put(spawn_read(&cache, id))]
async fn spawn_put(cache: Cache, id: u64, v: String) -> Result<String, DbError> {
    tokio::task::yield_now().await;
    Ok(v)
}

#[cache_evict(spawn_read(&cache, id), spawn_read(&cache, ..))]
async fn spawn_evict(cache: Cache, id: u64) -> Result<(), DbError> {
    tokio::task::yield_now().await;
    Ok(())
}

struct Svc {
    cache: Cache,
    db: Db,
}

impl Svc {
    #[cached(ttl = 600, prefix = "p-svc", cache = self.cache)]
    async fn find(&self, id: u64) -> String {
        self.db.read(id).unwrap_or_default()
    }

    #[cache_put(self.find(id))]
    async fn store(self: Arc<Self>, id: u64, v: String) -> String {
        tokio::task::yield_now().await;
        self.db.set(id, &v);
        v
    }

    #[cache_evict(self.find(id))]
    async fn forget(self: Arc<Self>, id: u64) {
        tokio::task::yield_now().await;
    }

    /// A read with `self: Arc<Self>` (what `stale` needs); the write must pass a clone
    /// (see the report: `self.find_arc(id)` does not compile when the body uses `self`).
    #[cached(ttl = 600, prefix = "p-svc-arc", stale = "1m", cache = self.cache)]
    async fn find_arc(self: Arc<Self>, id: u64) -> String {
        self.db.read(id).unwrap_or_default()
    }

    #[cache_put(self.clone().find_arc(id))]
    async fn store_arc(self: Arc<Self>, id: u64, v: String) -> String {
        self.db.set(id, &v);
        v
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_writes() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let db = Db::with(&[(1, "ada")]);
        spawn_read(&cache, &db, 1).await.unwrap();
        tokio::spawn(spawn_put(cache.clone(), 1, "put".into()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(spawn_read(&cache, &db, 1).await, Ok("put".into()));
        tokio::spawn(spawn_evict(cache.clone(), 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(spawn_read(&cache, &db, 1).await, Ok("ada".into()));
        assert_eq!(db.reads(), 2);
        let svc = Arc::new(Svc {
            cache,
            db: Db::with(&[(1, "ada")]),
        });
        svc.find(1).await;
        tokio::spawn(svc.clone().store(1, "s".into()))
            .await
            .unwrap();
        assert_eq!(svc.find(1).await, "s");
        assert_eq!(svc.db.reads(), 1);
        tokio::spawn(svc.clone().forget(1)).await.unwrap();
        assert_eq!(svc.find(1).await, "s");
        assert_eq!(svc.db.reads(), 2);
        svc.clone().find_arc(2).await;
        tokio::spawn(svc.clone().store_arc(2, "arc".into()))
            .await
            .unwrap();
        assert_eq!(svc.clone().find_arc(2).await, "arc");
        assert_eq!(svc.db.reads(), 3, "{}", svc.cache.backend_name());
    }
}

// ---------------------------------------------------------------------------------------
// 11. Stacking `#[cache_put]` and `#[cache_evict]`; counters, per function too.

#[cached(ttl = 600, prefix = "p-stack-user", cache = cache, skip(cache, db))]
async fn stack_user(cache: &Cache, db: &Db, id: u64) -> Option<String> {
    db.read(id)
}
#[cached(ttl = 600, prefix = "p-stack-list", cache = cache, skip(cache, db))]
async fn stack_list(cache: &Cache, db: &Db, page: u32) -> Vec<String> {
    db.read(u64::from(page) + 1000);
    db.rows.lock().unwrap().values().cloned().collect()
}

#[cache_put(stack_user(cache, id))]
#[cache_evict(stack_list(cache, ..))]
async fn stack_save(
    cache: &Cache,
    db: &Db,
    id: u64,
    name: &str,
) -> Result<Option<String>, DbError> {
    db.set(id, name);
    Ok(Some(name.to_owned()))
}

#[cache_evict(stack_list(cache, ..))]
#[cache_put(stack_user(cache, id))]
async fn stack_save2(cache: &Cache, db: &Db, id: u64, name: &str) -> Option<String> {
    db.set(id, name);
    Some(name.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacked_put_and_evict_both_happen_and_are_counted() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ada")]);
        stack_user(cache, &db, 1).await;
        stack_list(cache, &db, 0).await;
        assert_eq!(db.reads(), 2);
        let before = cache.stats();
        stack_save(cache, &db, 1, "grace").await.unwrap();
        let after = cache.stats();
        assert_eq!(after.puts, before.puts + 1);
        assert_eq!(after.evictions, before.evictions + 1);
        assert_eq!(stack_user(cache, &db, 1).await, Some("grace".into()));
        assert_eq!(db.reads(), 2, "user: a hit on the put");
        assert_eq!(stack_list(cache, &db, 0).await, vec!["grace".to_owned()]);
        assert_eq!(db.reads(), 3, "list evicted");
        stack_save2(cache, &db, 1, "edsger").await;
        assert_eq!(stack_user(cache, &db, 1).await, Some("edsger".into()));
        assert_eq!(stack_list(cache, &db, 0).await, vec!["edsger".to_owned()]);
        assert_eq!(db.reads(), 4, "{}", cache.backend_name());
        let by_fn = cache.stats_by_function();
        let of = |name: &str| {
            by_fn
                .iter()
                .find(|f| f.function.ends_with(name))
                .unwrap_or_else(|| panic!("no stats for {name}: {by_fn:?}"))
                .stats
        };
        assert_eq!(
            of("stack_user").puts,
            2,
            "puts counted under the read: {by_fn:?}"
        );
        assert_eq!(of("stack_list").evictions, 2, "evictions under the read");
    }
}

// ---------------------------------------------------------------------------------------
// 12. A put's TTL is the read's: `ttl` for a value, `none_ttl` for an absence.

#[cached(ttl = 600, none_ttl = 20, prefix = "p-ttl", cache = cache, skip(cache, db))]
async fn ttl_read(cache: &Cache, db: &Db, id: u64) -> Result<Option<String>, DbError> {
    Ok(db.read(id))
}

#[cache_put(ttl_read(cache, id))]
async fn ttl_put(cache: &Cache, id: u64, v: Option<String>) -> Result<Option<String>, DbError> {
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_takes_the_reads_ttl_and_none_ttl() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Db::with(&[(1, "ada")]);
        ttl_read(cache, &db, 1).await.unwrap();
        ttl_read(cache, &db, 2).await.unwrap();
        let loaded_some = cache
            .ttl_of(&ttl_read_cache_key(cache, 1).unwrap())
            .await
            .unwrap()
            .unwrap();
        let loaded_none = cache
            .ttl_of(&ttl_read_cache_key(cache, 2).unwrap())
            .await
            .unwrap()
            .unwrap();
        ttl_put(cache, 3, Some("x".into())).await.unwrap();
        ttl_put(cache, 4, None).await.unwrap();
        let put_some = cache
            .ttl_of(&ttl_read_cache_key(cache, 3).unwrap())
            .await
            .unwrap()
            .unwrap();
        let put_none = cache
            .ttl_of(&ttl_read_cache_key(cache, 4).unwrap())
            .await
            .unwrap()
            .unwrap();
        let close =
            |a: Duration, b: Duration| a.abs_diff(b) < a.max(b) / 4 + Duration::from_secs(2);
        assert!(
            close(loaded_some, put_some),
            "{name}: load {loaded_some:?}, put {put_some:?}"
        );
        assert!(
            close(loaded_none, put_none),
            "{name}: load {loaded_none:?}, put {put_none:?}"
        );
        assert!(
            put_none < Duration::from_secs(100),
            "{name}: absence under none_ttl: {put_none:?}"
        );
        assert_eq!(ttl_read(cache, &db, 3).await, Ok(Some("x".into())));
        assert_eq!(ttl_read(cache, &db, 4).await, Ok(None));
        assert_eq!(db.reads(), 2, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// 13. An eviction during a load that read the old row: the load's value never lands, and
// no caller after the eviction joins it.

struct Row {
    value: Mutex<String>,
    reads: AtomicU64,
    pause_next: AtomicBool,
    paused: Notify,
    resume: Semaphore,
}

impl Row {
    fn new(v: &str) -> Arc<Row> {
        Arc::new(Row {
            value: Mutex::new(v.to_owned()),
            reads: AtomicU64::new(0),
            pause_next: AtomicBool::new(false),
            paused: Notify::new(),
            resume: Semaphore::new(0),
        })
    }
    async fn read(&self) -> String {
        self.reads.fetch_add(1, SeqCst);
        let v = self.value.lock().unwrap().clone();
        if self.pause_next.swap(false, SeqCst) {
            self.paused.notify_one();
            self.resume.acquire().await.unwrap().forget();
        }
        v
    }
}

#[cached(ttl = 600, prefix = "p-race", cache = cache, skip(cache, row))]
async fn race_read(cache: Cache, row: Arc<Row>, id: u64) -> String {
    row.read().await
}

#[cached(ttl = 600, prefix = "p-race-lock", lock = true, cache = cache, skip(cache, row))]
async fn race_read_locked(cache: Cache, row: Arc<Row>, id: u64) -> String {
    row.read().await
}

#[cache_evict(race_read(cache.clone(), id), race_read_locked(cache.clone(), id))]
async fn race_write(cache: Cache, row: Arc<Row>, id: u64, v: &str) -> Result<(), DbError> {
    *row.value.lock().unwrap() = v.to_owned();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_eviction_during_a_load_wins_over_it() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        for locked in [false, true] {
            let id = u64::from(locked);
            let row = Row::new("old");
            let read = {
                let (cache, row) = (cache.clone(), row.clone());
                move || {
                    let (cache, row) = (cache.clone(), row.clone());
                    async move {
                        if locked {
                            race_read_locked(cache, row, id).await
                        } else {
                            race_read(cache, row, id).await
                        }
                    }
                }
            };
            row.pause_next.store(true, SeqCst);
            let paused = row.paused.notified();
            let a = tokio::spawn(read());
            tokio::time::timeout(Duration::from_secs(5), paused)
                .await
                .unwrap();
            race_write(cache.clone(), row.clone(), id, "new")
                .await
                .unwrap();
            let later = tokio::spawn(read());
            tokio::time::sleep(Duration::from_millis(100)).await;
            row.resume.add_permits(1);
            let a = tokio::time::timeout(Duration::from_secs(10), a)
                .await
                .unwrap()
                .unwrap();
            let later = tokio::time::timeout(Duration::from_secs(10), later)
                .await
                .unwrap()
                .unwrap();
            let next = tokio::time::timeout(Duration::from_secs(10), read())
                .await
                .unwrap();
            let name = cache.backend_name();
            assert_eq!(a, "old", "{name} locked={locked}");
            assert_eq!(
                later, "new",
                "a caller after the eviction joined the old load: {name} locked={locked}"
            );
            assert_eq!(
                next, "new",
                "the old load's value landed after the eviction: {name} locked={locked}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 14. The default cache (no `cache = ...`).

fn default_cache() -> &'static Cache {
    static SET: OnceLock<()> = OnceLock::new();
    SET.get_or_init(|| Cache::memory().set_default().unwrap());
    Cache::get_default().unwrap()
}

static DEFAULT_DB: OnceLock<Db> = OnceLock::new();
fn ddb() -> &'static Db {
    DEFAULT_DB.get_or_init(|| Db::with(&[(1, "ada")]))
}

#[cached(ttl = 600, prefix = "p-default")]
async fn default_read(id: u64) -> Option<String> {
    ddb().read(id)
}

#[cache_put(default_read(id))]
async fn default_put(id: u64, v: String) -> Option<String> {
    Some(v)
}

#[cache_evict(default_read(id))]
async fn default_evict(id: u64) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_default_cache() {
    let cache = default_cache();
    default_read(1).await;
    default_put(1, "put".into()).await;
    assert_eq!(default_read(1).await, Some("put".into()));
    assert_eq!(ddb().reads(), 1);
    default_evict(1).await;
    assert_eq!(default_read(1).await, Some("ada".into()));
    assert_eq!(ddb().reads(), 2);
    assert!(cache.stats().puts >= 1);
}

// ---------------------------------------------------------------------------------------
// 15. A key argument that cannot be encoded: the write still returns, the failure counted.

#[cached(ttl = 600, prefix = "p-price", cache = cache, skip(cache))]
async fn price(cache: &Cache, x: f64) -> String {
    x.to_string()
}

#[cache_put(price(cache, x))]
async fn put_price(cache: &Cache, x: f64) -> String {
    "p".into()
}

#[cache_evict(price(cache, x))]
async fn evict_price(cache: &Cache, x: f64) -> u8 {
    3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_cannot_be_built_fails_open() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let before = cache.stats();
        assert_eq!(put_price(cache, f64::NAN).await, "p");
        assert_eq!(evict_price(cache, f64::NAN).await, 3);
        let after = cache.stats();
        // Whether NaN is a key error is the key format's business; either way nothing panics.
        let _ = (before, after);
        // A normal key still works afterwards.
        put_price(cache, 1.5).await;
        assert_eq!(price(cache, 1.5).await, "p", "{}", cache.backend_name());
    }
}

// ---------------------------------------------------------------------------------------
// 16. A `Result` behind an alias is a `Result` to the write attributes (they look at the
// type, not its spelling): an `Err` evicts nothing.

type DbResult<T> = Result<T, DbError>;

#[cached(ttl = 600, prefix = "p-alias", cache = cache, skip(cache, db))]
async fn alias_read(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).unwrap_or_default()
}

#[cache_evict(alias_read(cache, id))]
async fn alias_write(cache: &Cache, id: u64) -> DbResult<()> {
    Err(DbError)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_alias_evicts_nothing_on_err() {
    let cache = Cache::memory();
    let db = Db::with(&[(1, "ada")]);
    alias_read(&cache, &db, 1).await;
    assert_eq!(alias_write(&cache, 1).await, Err(DbError));
    alias_read(&cache, &db, 1).await;
    assert_eq!(db.reads(), 1, "an Err behind an alias evicts nothing");
}

// ---------------------------------------------------------------------------------------
// 17. A put on a read with `stale` / `fail_safe` is served as a fresh hit; a put on a read
// with `lock = true`.

#[cached(ttl = 600, stale = "5m", fail_safe = "1h", lock = true, prefix = "p-fancy", cache = cache, skip(cache, db))]
async fn fancy(cache: Cache, db: Arc<Db>, id: u64) -> Result<String, DbError> {
    db.read(id).ok_or(DbError)
}

#[cache_put(fancy(cache.clone(), id))]
async fn put_fancy(cache: &Cache, id: u64, v: &str) -> Result<String, DbError> {
    Ok(v.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_on_a_stale_fail_safe_locked_read() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Arc::new(Db::with(&[(1, "ada")]));
        fancy(cache.clone(), db.clone(), 1).await.unwrap();
        put_fancy(cache, 1, "new").await.unwrap();
        put_fancy(cache, 2, "never read").await.unwrap();
        let hits = cache.stats().hits;
        assert_eq!(fancy(cache.clone(), db.clone(), 1).await, Ok("new".into()));
        assert_eq!(
            fancy(cache.clone(), db.clone(), 2).await,
            Ok("never read".into())
        );
        assert_eq!(cache.stats().hits, hits + 2);
        assert_eq!(cache.stats().stale_served, 0);
        assert_eq!(db.reads(), 1, "{}", cache.backend_name());
    }
}

// ---------------------------------------------------------------------------------------
// 18. Default prefixes (no `prefix =`): the write's companion must derive the read's.

static PLAIN_DB: OnceLock<Db> = OnceLock::new();
fn pdb() -> &'static Db {
    PLAIN_DB.get_or_init(Db::default)
}

#[cached(ttl = 600, cache = cache, skip(cache))]
async fn dp_free(cache: &Cache, id: u64) -> String {
    pdb().read(id);
    format!("free{id}")
}
#[cache_put(dp_free(cache, id))]
async fn dp_free_put(cache: &Cache, id: u64) -> String {
    "put".into()
}
#[cache_evict(dp_free(cache, id))]
async fn dp_free_evict(cache: &Cache, id: u64) {}

#[cached(ttl = 600, cache = cache, skip(cache))]
async fn dp_generic<
    T: Default + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
>(
    cache: &Cache,
    id: u64,
) -> T {
    pdb().read(id);
    T::default()
}
#[cache_put(dp_generic::<u32>(cache, id))]
async fn dp_generic_put(cache: &Cache, id: u64) -> u32 {
    42
}

struct DpRepo<T> {
    cache: Cache,
    t: std::marker::PhantomData<T>,
}
impl<T: Send + Sync + 'static> DpRepo<T> {
    #[cached(ttl = 600, cache = self.cache)]
    async fn get(&self, id: u64) -> String {
        pdb().read(id);
        std::any::type_name::<T>().to_owned()
    }
    #[cache_put(self.get(id))]
    async fn put(&self, id: u64, v: String) -> String {
        v
    }
    #[cache_evict(self.get(..))]
    async fn clear(&self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_prefixes_match_between_read_and_write() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = pdb();
        // A put before the read ever ran, on a fresh id.
        let base = db.reads();
        let id = if name == "redis" { 1 } else { 2 };
        dp_free_put(cache, id).await;
        assert_eq!(
            dp_free(cache, id).await,
            "put",
            "{name}: put before any read"
        );
        assert_eq!(dp_free(cache, id).await, "put");
        assert_eq!(db.reads(), base, "{name}");
        dp_free_evict(cache, id).await;
        assert_eq!(dp_free(cache, id).await, format!("free{id}"));
        assert_eq!(dp_free(cache, id).await, format!("free{id}"));
        assert_eq!(
            db.reads(),
            base + 1,
            "{name}: evicted once, then cached again"
        );

        dp_generic::<u32>(cache, id).await;
        dp_generic::<u64>(cache, id).await;
        dp_generic_put(cache, id).await;
        assert_eq!(dp_generic::<u32>(cache, id).await, 42, "{name}");
        assert_eq!(
            dp_generic::<u64>(cache, id).await,
            0,
            "{name}: u64 untouched"
        );
        assert_eq!(db.reads(), base + 3);

        let r8 = DpRepo::<u8> {
            cache: cache.clone(),
            t: Default::default(),
        };
        let r16 = DpRepo::<u16> {
            cache: cache.clone(),
            t: Default::default(),
        };
        r8.get(id).await;
        r16.get(id).await;
        r8.put(id, "put8".into()).await;
        assert_eq!(r8.get(id).await, "put8", "{name}");
        assert_eq!(r16.get(id).await, "u16", "{name}");
        assert_eq!(db.reads(), base + 5);
        r16.clear().await;
        assert_eq!(r8.get(id).await, "put8", "{name}: r8 kept");
        assert_eq!(r16.get(id).await, "u16");
        assert_eq!(db.reads(), base + 6, "{name}: r16 cleared");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_nested_in_a_function_body() {
    #[cached(ttl = 600, cache = cache, skip(cache, db))]
    async fn nested(cache: &Cache, db: &Db, id: u64) -> String {
        db.read(id).unwrap_or_default()
    }
    #[cache_put(nested(cache, id))]
    async fn nested_put(cache: &Cache, id: u64, v: &str) -> String {
        v.to_owned()
    }
    #[cache_evict(nested(cache, ..))]
    async fn nested_clear(cache: &Cache) {}

    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ada")]);
        nested(cache, &db, 1).await;
        nested_put(cache, 1, "put").await;
        assert_eq!(nested(cache, &db, 1).await, "put");
        assert_eq!(db.reads(), 1);
        nested_clear(cache).await;
        assert_eq!(nested(cache, &db, 1).await, "ada");
        assert_eq!(db.reads(), 2, "{}", cache.backend_name());
    }
}

// ---------------------------------------------------------------------------------------
// 19. The exactness check: a `#[serde(skip)]` field with `PartialEq`, `Some(())` inside,
// an untagged enum reading back as an earlier variant.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct WithSkip {
    id: u64,
    #[serde(skip)]
    extra: u8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Loose {
    Float(f64),
    Int(u64),
}

#[cached(ttl = 600, prefix = "p-skip", cache = cache, skip(cache, db))]
async fn skip_read(cache: &Cache, db: &Db, id: u64) -> WithSkip {
    db.read(id);
    WithSkip { id, extra: 0 }
}
#[cache_put(skip_read(cache, id))]
async fn skip_put(cache: &Cache, id: u64, extra: u8) -> WithSkip {
    WithSkip { id, extra }
}

#[cached(ttl = 600, prefix = "p-unit", cache = cache, skip(cache, db))]
async fn unit_read(cache: &Cache, db: &Db, id: u64) -> Vec<Option<()>> {
    db.read(id);
    vec![None]
}
#[cache_put(unit_read(cache, id))]
async fn unit_put(cache: &Cache, id: u64) -> Vec<Option<()>> {
    vec![Some(())]
}

#[cached(ttl = 600, prefix = "p-loose", cache = cache, skip(cache, db))]
async fn loose_read(cache: &Cache, db: &Db, id: u64) -> Loose {
    db.read(id);
    Loose::Float(1.5)
}
#[cache_put(loose_read(cache, id))]
async fn loose_put(cache: &Cache, id: u64) -> Loose {
    Loose::Int(3) // JSON `3` reads back as `Float(3.0)`
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_would_not_read_back_exactly_is_not_stored() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Db::default();
        skip_read(cache, &db, 1).await;
        assert_eq!(skip_put(cache, 1, 5).await.extra, 5);
        let got = skip_read(cache, &db, 1).await;
        assert_eq!(got.extra, 0, "{name}");
        assert_eq!(
            db.reads(),
            2,
            "{name}: #[serde(skip)] put deleted, reloaded"
        );
        skip_put(cache, 1, 0).await;
        skip_read(cache, &db, 1).await;
        assert_eq!(db.reads(), 2, "{name}: an exact one is stored");

        unit_read(cache, &db, 1).await;
        unit_put(cache, 1).await;
        assert_eq!(unit_read(cache, &db, 1).await, vec![None], "{name}");
        assert_eq!(db.reads(), 4, "{name}: [Some(())] put deleted, reloaded");

        loose_read(cache, &db, 1).await;
        loose_put(cache, 1).await;
        assert_eq!(
            loose_read(cache, &db, 1).await,
            Loose::Float(1.5),
            "{name}: never Float(3.0)"
        );
        assert_eq!(db.reads(), 6, "{name}: untagged put deleted, reloaded");
    }
}

// ---------------------------------------------------------------------------------------
// 20. `f(..)` during a load; an eviction or put from another `Cache` (another process)
// during a locked load; a put during a background (stale) refresh.

#[cache_evict(race_read(cache.clone(), ..), race_read_locked(cache.clone(), ..))]
async fn race_write_all(cache: Cache, row: Arc<Row>, v: &str) -> Result<(), DbError> {
    *row.value.lock().unwrap() = v.to_owned();
    Ok(())
}

#[cache_put(race_read_locked(cache.clone(), id))]
async fn race_put_locked(cache: Cache, row: Arc<Row>, id: u64, v: &str) -> String {
    *row.value.lock().unwrap() = v.to_owned();
    v.to_owned()
}

#[cache_evict(race_read_locked(cache.clone(), id))]
async fn race_evict_locked(cache: Cache, row: Arc<Row>, id: u64, v: &str) {
    *row.value.lock().unwrap() = v.to_owned();
}

async fn scenario<R, RF, W, WF>(row: &Arc<Row>, read: R, write: W) -> (String, String, String)
where
    R: Fn() -> RF,
    RF: Future<Output = String> + Send + 'static,
    W: FnOnce() -> WF,
    WF: Future<Output = ()>,
{
    row.pause_next.store(true, SeqCst);
    let paused = row.paused.notified();
    let a = tokio::spawn(read());
    tokio::time::timeout(Duration::from_secs(5), paused)
        .await
        .expect("the load paused");
    write().await;
    let later = tokio::spawn(read());
    tokio::time::sleep(Duration::from_millis(100)).await;
    row.resume.add_permits(1);
    let a = tokio::time::timeout(Duration::from_secs(10), a)
        .await
        .unwrap()
        .unwrap();
    let later = tokio::time::timeout(Duration::from_secs(10), later)
        .await
        .unwrap()
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), read())
        .await
        .unwrap();
    (a, later, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evicting_every_entry_during_a_load_wins_over_it() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        for locked in [false, true] {
            let id = 10 + u64::from(locked);
            let row = Row::new("old");
            let (c, r) = (cache.clone(), row.clone());
            let read = move || {
                let (c, r) = (c.clone(), r.clone());
                async move {
                    if locked {
                        race_read_locked(c, r, id).await
                    } else {
                        race_read(c, r, id).await
                    }
                }
            };
            let (c2, r2) = (cache.clone(), row.clone());
            let seen = scenario(&row, read, || async move {
                race_write_all(c2, r2, "new").await.unwrap();
            })
            .await;
            let name = cache.backend_name();
            assert_eq!(
                seen,
                ("old".into(), "new".into(), "new".into()),
                "(load, later caller, next read): {name} locked={locked}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_process_evicting_or_putting_during_a_locked_load() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    for put in [false, true] {
        let id = 20 + u64::from(put);
        let row = Row::new("old");
        let (c, r) = (here.clone(), row.clone());
        let read = move || race_read_locked(c.clone(), r.clone(), id);
        let (c2, r2) = (there.clone(), row.clone());
        let (a, _later, next) = scenario(&row, read, || async move {
            if put {
                race_put_locked(c2, r2, id, "new").await;
            } else {
                race_evict_locked(c2, r2, id, "new").await;
            }
        })
        .await;
        assert_eq!(a, "old");
        assert_eq!(
            next, "new",
            "another process's write lost to the older load: put={put}"
        );
        let there_read = race_read_locked(there.clone(), row.clone(), id).await;
        assert_eq!(there_read, "new", "put={put}");
    }
}

#[cached(ttl = "300ms", stale = "1m", prefix = "p-stale", cache = cache, skip(cache, row))]
async fn stale_read(cache: Cache, row: Arc<Row>, id: u64) -> String {
    row.read().await
}

#[cache_put(stale_read(cache.clone(), id))]
async fn stale_put(cache: Cache, row: Arc<Row>, id: u64, v: &str) -> String {
    *row.value.lock().unwrap() = v.to_owned();
    v.to_owned()
}

#[cache_evict(stale_read(cache.clone(), id))]
async fn stale_evict(cache: Cache, row: Arc<Row>, id: u64, v: &str) {
    *row.value.lock().unwrap() = v.to_owned();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_during_a_background_refresh_wins_over_it() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        for put in [false, true] {
            let name = cache.backend_name();
            let id = 30 + u64::from(put);
            let row = Row::new("old");
            assert_eq!(stale_read(cache.clone(), row.clone(), id).await, "old");
            tokio::time::sleep(Duration::from_millis(450)).await;
            row.pause_next.store(true, SeqCst);
            let paused = row.paused.notified();
            let refreshes = cache.stats().refreshes;
            // A stale hit: returns "old", refreshes in the background (paused after reading "old").
            assert_eq!(stale_read(cache.clone(), row.clone(), id).await, "old");
            tokio::time::timeout(Duration::from_secs(5), paused)
                .await
                .expect("refresh started");
            assert_eq!(cache.stats().refreshes, refreshes + 1);
            if put {
                stale_put(cache.clone(), row.clone(), id, "new").await;
            } else {
                stale_evict(cache.clone(), row.clone(), id, "new").await;
            }
            row.resume.add_permits(1);
            // Let the refresh finish.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let next = stale_read(cache.clone(), row.clone(), id).await;
            assert_eq!(
                next, "new",
                "{name} put={put}: the refresh stored the old row over the write"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 21. A waiter of another process (lock = true) polling a load when the write lands.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_waiter_elsewhere_sees_the_write_not_the_old_load() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    for put in [false, true] {
        let id = 40 + u64::from(put);
        let row = Row::new("old");
        row.pause_next.store(true, SeqCst);
        let paused = row.paused.notified();
        let a = tokio::spawn(race_read_locked(here.clone(), row.clone(), id));
        tokio::time::timeout(Duration::from_secs(5), paused)
            .await
            .unwrap();
        let waits = there.stats().lock_waits;
        let start = Instant::now();
        let b = tokio::spawn(race_read_locked(there.clone(), row.clone(), id));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(there.stats().lock_waits, waits + 1, "b waits for a's lock");
        if put {
            race_put_locked(here.clone(), row.clone(), id, "new").await;
        } else {
            race_evict_locked(here.clone(), row.clone(), id, "new").await;
        }
        let b = tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .unwrap()
            .unwrap();
        let took = start.elapsed();
        row.resume.add_permits(1);
        let a = tokio::time::timeout(Duration::from_secs(10), a)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a, "old");
        assert_eq!(b, "new", "put={put}");
        assert!(
            took < Duration::from_secs(2),
            "put={put}: the waiter took {took:?}"
        );
        assert_eq!(
            race_read_locked(there.clone(), row.clone(), id).await,
            "new"
        );
    }
}

// A put seen by another process, a later put wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_is_seen_by_another_process_and_the_later_put_wins() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    let db = Db::with(&[(1, "ada")]);
    assert_eq!(r_res_opt(&there, &db, 1).await, Ok(Some("ada".into())));
    w_res_opt(&here, 1, Some("one".into())).await.unwrap();
    w_res_opt(&there, 1, Some("two".into())).await.unwrap();
    assert_eq!(r_res_opt(&here, &db, 1).await, Ok(Some("two".into())));
    assert_eq!(r_res_opt(&there, &db, 1).await, Ok(Some("two".into())));
    assert_eq!(db.reads(), 1);
}

// ---------------------------------------------------------------------------------------
// 22. Redis never reachable: nothing listening, or a listener that never answers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fail_open_when_redis_was_never_up() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = Cache::builder()
        .timeout(Duration::from_millis(200))
        .redis(&format!("redis://127.0.0.1:{port}/"))
        .unwrap();
    // A listener that accepts and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    let acceptor = tokio::spawn(async move {
        while let Ok((socket, _)) = silent.accept().await {
            keep.lock().unwrap().push(socket);
        }
    });
    let blackhole = Cache::builder()
        .timeout(Duration::from_millis(200))
        .redis(&format!("redis://127.0.0.1:{silent_port}/"))
        .unwrap();
    for (what, cache) in [("refused", &refused), ("black hole", &blackhole)] {
        let limit = Duration::from_millis(1500);
        for _ in 0..3 {
            let put = bounded(&format!("put, {what}"), limit, down_put(cache, 1)).await;
            assert_eq!(put, Ok(Some("new".into())));
            let ev = bounded(&format!("evict, {what}"), limit, down_evict(cache, 1)).await;
            assert_eq!(ev, Ok(7));
        }
        let stats = cache.stats();
        assert!(stats.errors > 0, "{what}: {stats:?}");
        assert_eq!(stats.puts, 0, "{what}: no put made: {stats:?}");
        assert_eq!(stats.evictions, 0, "{what}: nothing evicted: {stats:?}");
    }
    acceptor.abort();
}

// ---------------------------------------------------------------------------------------
// 23. A value whose encoding fails (a map with non-string keys): the old entry goes.

#[cached(ttl = 600, prefix = "p-map", cache = cache, skip(cache, db))]
async fn map_read(cache: &Cache, db: &Db, id: u64) -> std::collections::BTreeMap<Vec<u8>, u8> {
    db.read(id);
    Default::default()
}

#[cache_put(map_read(cache, id))]
async fn map_put(cache: &Cache, id: u64) -> std::collections::BTreeMap<Vec<u8>, u8> {
    [(vec![1u8], 1u8)].into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_cannot_encode_deletes_the_old_entry() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::default();
        assert!(map_read(cache, &db, 1).await.is_empty());
        assert!(map_read(cache, &db, 1).await.is_empty());
        assert_eq!(db.reads(), 1);
        let errors = cache.stats().errors;
        assert_eq!(map_put(cache, 1).await.len(), 1);
        assert!(cache.stats().errors > errors, "encode failure counted");
        assert!(map_read(cache, &db, 1).await.is_empty());
        assert_eq!(
            db.reads(),
            2,
            "the old entry was deleted: {}",
            cache.backend_name()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 24. Target arguments are evaluated once, before the body.

#[cached(ttl = 600, prefix = "p-seq", cache = cache, skip(cache, db))]
async fn seq_read(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).unwrap_or_default()
}

fn next(seq: &AtomicU64) -> u64 {
    seq.fetch_add(1, SeqCst)
}

#[cache_evict(seq_read(cache, next(seq)), before = false)]
async fn seq_write(cache: &Cache, seq: &AtomicU64) -> u64 {
    seq.load(SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_arguments_are_evaluated_once_before_the_body() {
    let cache = Cache::memory();
    let db = Db::with(&[(0, "zero"), (1, "one")]);
    seq_read(&cache, &db, 0).await;
    seq_read(&cache, &db, 1).await;
    let seq = AtomicU64::new(0);
    assert_eq!(
        seq_write(&cache, &seq).await,
        1,
        "the body saw the target's increment"
    );
    assert_eq!(seq.load(SeqCst), 1, "evaluated once");
    seq_read(&cache, &db, 0).await;
    seq_read(&cache, &db, 1).await;
    assert_eq!(db.reads(), 3, "entry 0 evicted, entry 1 kept");
}

// ---------------------------------------------------------------------------------------
// 25. A written `Result` without type arguments (`fmt::Result`, or a crate's
// `type Result = std::result::Result<(), Error>`): is it "a written Result"?

mod zero_arg {
    #[derive(Debug, PartialEq)]
    pub struct SaveError;
    pub type Result = std::result::Result<(), SaveError>;
}

#[cached(ttl = 600, prefix = "p-zero", cache = cache, skip(cache, db))]
async fn zero_read(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).unwrap_or_default()
}

#[cache_evict(zero_read(cache, id))]
async fn zero_write(cache: &Cache, id: u64) -> zero_arg::Result {
    Err(zero_arg::SaveError)
}

#[cache_evict(zero_read(cache, id))]
async fn fmt_write(cache: &Cache, id: u64) -> std::fmt::Result {
    Err(std::fmt::Error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_result_without_type_arguments_evicts_on_err() {
    let cache = Cache::memory();
    let db = Db::with(&[(1, "ada")]);
    zero_read(&cache, &db, 1).await;
    assert!(zero_write(&cache, 1).await.is_err());
    zero_read(&cache, &db, 1).await;
    let after_zero = db.reads();
    assert!(fmt_write(&cache, 1).await.is_err());
    zero_read(&cache, &db, 1).await;
    let after_fmt = db.reads();
    assert_eq!(
        (after_zero, after_fmt),
        (1, 1),
        "reads after an Err of `-> zero_arg::Result` and `-> fmt::Result` (1 = not evicted)"
    );
}

// ---------------------------------------------------------------------------------------
// 26. `f(..)` under a prefix two functions share with layouts that keep their keys apart.

#[cached(ttl = 600, prefix = "p-sh", cache = cache, skip(cache, db))]
async fn sh_user(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).unwrap_or_default()
}
#[cached(ttl = 600, key = "p-sh:{id}:posts:{page}", cache = cache, skip(cache, db))]
async fn sh_posts(cache: &Cache, db: &Db, id: u64, page: u32) -> String {
    db.read(id)
        .map(|n| format!("{n}/{page}"))
        .unwrap_or_default()
}
#[cache_evict(sh_user(cache, ..))]
async fn sh_clear_users(cache: &Cache) {}
#[cache_evict(sh_posts(cache, ..))]
async fn sh_clear_posts(cache: &Cache) {}
#[cache_put(sh_posts(cache, id, page))]
async fn sh_put_post(cache: &Cache, id: u64, page: u32) -> String {
    "put".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_of_one_function_under_a_shared_prefix() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let db = Db::with(&[(1, "ada")]);
        sh_user(cache, &db, 1).await;
        sh_posts(cache, &db, 1, 2).await;
        assert_eq!(db.reads(), 2);
        sh_clear_users(cache).await;
        sh_posts(cache, &db, 1, 2).await;
        assert_eq!(db.reads(), 2, "{name}: posts kept");
        sh_user(cache, &db, 1).await;
        assert_eq!(db.reads(), 3, "{name}: user evicted");
        sh_clear_posts(cache).await;
        sh_user(cache, &db, 1).await;
        assert_eq!(db.reads(), 3, "{name}: user kept");
        sh_posts(cache, &db, 1, 2).await;
        assert_eq!(db.reads(), 4, "{name}: posts evicted");
        sh_put_post(cache, 1, 3).await;
        assert_eq!(sh_posts(cache, &db, 1, 3).await, "put");
        assert_eq!(sh_user(cache, &db, 1).await, "ada");
        assert_eq!(db.reads(), 4, "{name}: both still cached");
    }
}

// ---------------------------------------------------------------------------------------
// 27. On a Redis Cluster: puts and evictions on every primary, `f(..)` across nodes.

#[test]
fn writes_on_a_cluster() {
    let cluster = cache_aside_tests::RedisCluster::start(3, 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cache = Cache::builder()
            .timeout(Duration::from_millis(500))
            .redis_cluster(cluster.urls())
            .unwrap();
        let db = Db::default();
        for id in 0..30 {
            db.set(id, "old");
            assert_eq!(r_res_opt(&cache, &db, id).await, Ok(Some("old".into())));
        }
        for id in 0..30 {
            w_res_opt(&cache, id, Some(format!("put{id}")))
                .await
                .unwrap();
        }
        for id in 0..30 {
            assert_eq!(
                r_res_opt(&cache, &db, id).await,
                Ok(Some(format!("put{id}")))
            );
        }
        assert_eq!(db.reads(), 30, "every put a hit");
        let primaries: std::collections::BTreeSet<_> = (0..30)
            .map(|id| cluster.primary_of(&r_res_opt_cache_key(&cache, id).unwrap()))
            .collect();
        assert!(
            primaries.len() > 1,
            "keys on several primaries: {primaries:?}"
        );
        cluster_clear(&cache).await;
        for id in 0..30 {
            assert_eq!(r_res_opt(&cache, &db, id).await, Ok(Some("old".into())));
        }
        assert_eq!(db.reads(), 60, "every entry evicted on every node");
    });
}

#[cache_evict(r_res_opt(cache, ..))]
async fn cluster_clear(cache: &Cache) {}

// ---------------------------------------------------------------------------------------
// 28. Stress: readers loading while a writer updates the row and evicts / puts; once the
// writer is done, the cache must hold the last row, never an older one.

struct Counter {
    row: AtomicU64,
}

#[cached(ttl = 600, prefix = "p-stress", cache = cache, skip(cache, c))]
async fn stress_read(cache: Cache, c: Arc<Counter>, id: u64) -> u64 {
    let v = c.row.load(SeqCst);
    tokio::time::sleep(Duration::from_micros(200 + (v % 7) * 150)).await;
    v
}

#[cached(ttl = 600, prefix = "p-stress-lock", lock = true, cache = cache, skip(cache, c))]
async fn stress_read_locked(cache: Cache, c: Arc<Counter>, id: u64) -> u64 {
    let v = c.row.load(SeqCst);
    tokio::time::sleep(Duration::from_micros(200 + (v % 7) * 150)).await;
    v
}

#[cache_evict(stress_read(cache.clone(), id), stress_read_locked(cache.clone(), id))]
async fn stress_evict(cache: Cache, c: Arc<Counter>, id: u64, v: u64) -> Result<(), DbError> {
    c.row.store(v, SeqCst);
    Ok(())
}

#[cache_put(stress_read(cache.clone(), id), stress_read_locked(cache.clone(), id))]
async fn stress_put(cache: Cache, c: Arc<Counter>, id: u64, v: u64) -> Result<u64, DbError> {
    c.row.store(v, SeqCst);
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stress_the_cache_never_keeps_a_row_older_than_the_last_write() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        for put in [false, true] {
            let name = cache.backend_name();
            let id = u64::from(put);
            let c = Arc::new(Counter {
                row: AtomicU64::new(0),
            });
            let stop = Arc::new(AtomicBool::new(false));
            let mut readers = Vec::new();
            for r in 0..6 {
                let (cache, c, stop) = (cache.clone(), c.clone(), stop.clone());
                readers.push(tokio::spawn(async move {
                    while !stop.load(SeqCst) {
                        if r % 2 == 0 {
                            stress_read(cache.clone(), c.clone(), id).await;
                        } else {
                            stress_read_locked(cache.clone(), c.clone(), id).await;
                        }
                        // A memory hit never returns Pending: give the scheduler a turn.
                        tokio::task::yield_now().await;
                    }
                }));
            }
            let deadline = Instant::now() + Duration::from_millis(700);
            let mut v = 0;
            while Instant::now() < deadline {
                v += 1;
                if put {
                    stress_put(cache.clone(), c.clone(), id, v).await.unwrap();
                } else {
                    stress_evict(cache.clone(), c.clone(), id, v).await.unwrap();
                }
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
            // Let in-flight loads finish while readers continue.
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.store(true, SeqCst);
            for r in readers {
                tokio::time::timeout(Duration::from_secs(10), r)
                    .await
                    .unwrap()
                    .unwrap();
            }
            eprintln!("stress {name} put={put}: {v} writes");
            let plain = stress_read(cache.clone(), c.clone(), id).await;
            let locked = stress_read_locked(cache.clone(), c.clone(), id).await;
            assert_eq!(
                (plain, locked),
                (v, v),
                "{name} put={put}: after {v} writes the cache holds an older row"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 29. A read without `ttl`: a put takes the cache's `default_ttl`; with no TTL anywhere
// the put cannot store, and should say so like a read does.

#[cached(prefix = "p-nottl", cache = cache, skip(cache, db))]
async fn no_ttl_read(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).unwrap_or_default()
}

#[cache_put(no_ttl_read(cache, id))]
async fn no_ttl_put(cache: &Cache, id: u64) -> String {
    "put".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_on_a_read_without_ttl() {
    let with_default = Cache::builder()
        .default_ttl(Duration::from_secs(60))
        .memory()
        .unwrap();
    let db = Db::with(&[(1, "ada")]);
    no_ttl_put(&with_default, 1).await;
    assert_eq!(no_ttl_read(&with_default, &db, 1).await, "put");
    assert_eq!(db.reads(), 0, "a hit on the put, under default_ttl");
    let ttl = with_default
        .ttl_of(&no_ttl_read_cache_key(&with_default, 1).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        ttl <= Duration::from_secs(61) && ttl > Duration::from_secs(30),
        "{ttl:?}"
    );

    let without = Cache::memory();
    no_ttl_read(&without, &db, 2).await;
    let read_errors = without.stats().errors;
    no_ttl_put(&without, 2).await;
    let stats = without.stats();
    eprintln!("no ttl anywhere: read errors {read_errors}, after put {stats:?}");
    assert!(
        stats.errors > read_errors || stats.puts > 0,
        "a put that could not store left no trace in stats: {stats:?}"
    );
}
