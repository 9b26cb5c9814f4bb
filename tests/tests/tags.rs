//! Tags on Redis and on the embedded backend: `invalidate_tag` removes every entry carrying
//! a tag, whichever function wrote it; a load that began before it stores nothing; tag sets
//! forget expired entries and expire with their last one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cache_aside_runtime::batch::Batch;
use cache_aside_runtime::tag::Tag;
use cache_aside_runtime::{Cache, cache_evict, cache_put, cached};
use cache_aside_tests::RedisServer;
use redis::Commands;
use tokio::sync::Notify;

/// Rows by id, counting reads; a read can be held inside the body.
#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<u64, String>>,
    reads: AtomicU64,
    /// When set, the next read says it started, then waits for `go`.
    hold: Mutex<bool>,
    started: Notify,
    go: Notify,
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

    async fn read(&self, id: u64) -> String {
        self.reads.fetch_add(1, SeqCst);
        let value = self
            .rows
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_default();
        let hold = std::mem::take(&mut *self.hold.lock().unwrap());
        if hold {
            self.started.notify_one();
            self.go.notified().await;
        }
        value
    }

    fn reads(&self) -> u64 {
        self.reads.load(SeqCst)
    }

    /// Once a held read started: the row becomes "new", its tag `user:{id}` is invalidated,
    /// and the read goes on.
    async fn rewrite_while_held(&self, cache: &Cache, id: u64) {
        self.started.notified().await;
        self.set(id, "new");
        cache.invalidate_tag(&tag("user", id)).await.unwrap();
        self.go.notify_one();
    }
}

#[cached(ttl = 600, prefix = "t-user", tags = ["user:{id}"], cache = cache, skip(cache, db))]
async fn user(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).await
}

#[cached(
    ttl = 600,
    prefix = "t-posts",
    tags = ["user:{user}", "page:{page}", "feed"],
    cache = cache,
    skip(cache, db)
)]
async fn posts(cache: &Cache, db: &Db, user: u64, page: u32) -> String {
    format!("{}/{page}", db.read(user).await)
}

#[cached(ttl = 600, prefix = "t-plain", cache = cache, skip(cache, db))]
async fn untagged(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).await
}

#[cached(ttl = 600, prefix = "t-name", tags = ["name:{name}"], cache = cache, skip(cache, db))]
async fn by_name(cache: &Cache, db: &Db, name: &str) -> String {
    db.read(name.len() as u64).await
}

#[cache_put(user(cache, id))]
async fn save(cache: &Cache, db: &Db, id: u64, name: &str) -> String {
    db.set(id, name);
    name.to_owned()
}

/// Renames a user: every entry tagged with them goes, after the write succeeds.
#[cache_evict(tag = "user:{id}", cache = cache)]
async fn rename(cache: &Cache, db: &Db, id: u64, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    db.set(id, name);
    Ok(())
}

fn caches(server: &RedisServer) -> [Cache; 2] {
    [Cache::redis(&server.url()).unwrap(), Cache::memory()]
}

/// The old path, without leases, on Redis and embedded: to show a race scenario catches.
fn unleased(server: &RedisServer) -> [Cache; 2] {
    let builder = || Cache::builder().__without_leases();
    [
        builder().redis(&server.url()).unwrap(),
        builder().memory().unwrap(),
    ]
}

fn tag(name: &str, value: u64) -> Tag {
    Tag::new(name).unwrap().value(&value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_removes_every_entry_carrying_it_and_nothing_else() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(7, "ada"), (8, "alan")]);
        for id in [7, 8] {
            user(cache, &db, id).await;
            untagged(cache, &db, id).await;
            for page in 1..=3 {
                posts(cache, &db, id, page).await;
            }
        }
        assert_eq!(db.reads(), 10);
        let removed = cache.invalidate_tag(&tag("user", 7)).await.unwrap();
        assert_eq!(
            removed,
            4,
            "user(7) and posts(7, 1..=3): {}",
            cache.backend_name()
        );
        db.set(7, "grace");
        assert_eq!(user(cache, &db, 7).await, "grace");
        assert_eq!(posts(cache, &db, 7, 2).await, "grace/2");
        assert_eq!(db.reads(), 12, "the two reloaded");
        // Everything else is still cached.
        assert_eq!(untagged(cache, &db, 7).await, "ada");
        assert_eq!(user(cache, &db, 8).await, "alan");
        assert_eq!(posts(cache, &db, 8, 1).await, "alan/1");
        assert_eq!(db.reads(), 12);
        // A constant tag covers every entry of `posts` still cached.
        assert_eq!(
            cache
                .invalidate_tag(&Tag::new("feed").unwrap())
                .await
                .unwrap(),
            4
        );
        assert_eq!(
            cache
                .invalidate_tag(&Tag::new("feed").unwrap())
                .await
                .unwrap(),
            0
        );
        // Another segment: the pages.
        posts(cache, &db, 8, 3).await;
        assert_eq!(cache.invalidate_tag(&tag("page", 3)).await.unwrap(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_from_code_names_what_the_template_renders() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::default();
        for name in ["a:b", "", "42", "{x}*"] {
            by_name(cache, &db, name).await;
            let tag = Tag::new("name").unwrap().value(name).unwrap();
            assert_eq!(
                cache.invalidate_tag(&tag).await.unwrap(),
                1,
                "{name:?} as {tag}"
            );
        }
        assert_eq!(
            Tag::new("name").unwrap().value("a:b").unwrap().as_str(),
            "name:a%3Ab"
        );
        assert!(Tag::new("a:b").is_err() && Tag::new("").is_err());
        assert!(Tag::new("a").unwrap().text("x y").is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_entry_carries_the_reads_tags() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::default();
        save(cache, &db, 20, "ada").await;
        assert_eq!(user(cache, &db, 20).await, "ada");
        assert_eq!(db.reads(), 0, "the put's entry");
        assert_eq!(cache.invalidate_tag(&tag("user", 20)).await.unwrap(), 1);
        db.set(20, "grace");
        assert_eq!(user(cache, &db, 20).await, "grace");
    }
}

/// The race leases close, for a tag: a load reads the old row and pauses; the row changes and
/// its tag is invalidated; the load resumes. Returns what the next read got.
async fn invalidation_during_a_load(cache: &Cache, id: u64) -> String {
    let db = Db::with(&[(id, "old")]);
    *db.hold.lock().unwrap() = true;
    let load = user(cache, &db, id);
    let write = db.rewrite_while_held(cache, id);
    let (paused, ()) = tokio::join!(load, write);
    assert_eq!(paused, "old", "its own caller gets what it read");
    user(cache, &db, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_overtaken_by_a_tag_invalidation_stores_nothing() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        assert_eq!(invalidation_during_a_load(cache, 30).await, "new");
        assert!(cache.stats().fills_dropped >= 1, "{:?}", cache.stats());
    }
}

/// The old path, to show the scenario catches the race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_leases_the_old_row_outlives_the_tag_invalidation() {
    let server = RedisServer::start();
    let caches = unleased(&server);
    for cache in &caches {
        assert_eq!(invalidation_during_a_load(cache, 31).await, "old");
    }
}

#[cached(ttl = "300ms", prefix = "t-short", tags = ["short:{group}"], cache = cache, skip(cache))]
async fn short(cache: &Cache, group: u64, id: u64) -> u64 {
    group * 1000 + id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_sets_forget_expired_entries_and_expire_with_the_last() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    let mut conn = server.conn();
    let set = format!("{}:#tag:short:1", cache.namespace());
    for id in 0..50 {
        short(&cache, 1, id).await;
    }
    let members: u64 = conn.zcard(&set).unwrap();
    assert_eq!(members, 50);
    let ttl: i64 = conn.pttl(&set).unwrap();
    // Its last entry's TTL, and the second of slack a member's score has.
    assert!(
        ttl > 300 && ttl <= 1300,
        "the set lives as long as its last entry: {ttl} ms"
    );
    // Waiting for the TTL itself: what is tested is expiry.
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let exists: bool = conn.exists(&set).unwrap();
    assert!(!exists, "the set expired with its entries");
    for id in 0..50 {
        short(&cache, 2, id).await;
    }
    tokio::time::sleep(Duration::from_millis(1400)).await;
    short(&cache, 2, 99).await;
    let set = format!("{}:#tag:short:2", cache.namespace());
    let members: u64 = conn.zcard(&set).unwrap();
    assert_eq!(members, 1, "expired members are dropped as new ones come");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidation_fails_like_any_cache_operation_when_redis_is_down() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .timeout(Duration::from_millis(200))
        .redis(&server.url())
        .unwrap();
    let db = Db::with(&[(40, "ada")]);
    assert_eq!(user(&cache, &db, 40).await, "ada");
    server.kill();
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        cache.invalidate_tag(&tag("user", 40)),
    )
    .await
    .expect("bounded");
    assert!(result.is_err());
    // Calls still succeed, uncached.
    assert_eq!(user(&cache, &db, 40).await, "ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_evict_of_a_tag_removes_its_entries_after_a_successful_write() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(50, "ada")]);
        user(cache, &db, 50).await;
        posts(cache, &db, 50, 1).await;
        let evictions = cache.stats().evictions;
        assert_eq!(rename(cache, &db, 50, "").await, Err("empty".into()));
        assert_eq!(cache.stats().evictions, evictions, "nothing evicted on Err");
        rename(cache, &db, 50, "grace").await.unwrap();
        assert_eq!(cache.stats().evictions, evictions + 1);
        assert_eq!(user(cache, &db, 50).await, "grace");
        assert_eq!(posts(cache, &db, 50, 1).await, "grace/1");
        assert_eq!(db.reads(), 4, "both reloaded: {}", cache.backend_name());
    }
}

#[cached(ttl = 600, prefix = "t-member", tags = ["user:{id}"], cache = cache, skip(cache, db))]
async fn member(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).await
}

/// The rows of `ids`, each read on its own.
async fn rows(db: &Db, ids: &[u64]) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    for &id in ids {
        out.insert(id, db.read(id).await);
    }
    out
}

/// Shares `member`'s keys without its tags.
#[cached(batch, ttl = 600, prefix = "t-member", cache = cache, skip(cache, db))]
async fn members(cache: &Cache, db: &Db, ids: &[u64]) -> HashMap<u64, String> {
    rows(db, ids).await
}

/// A batch beside a tagged function of its prefix would write entries that the tag's
/// invalidation misses: once both have run in the process, both run uncached (their bodies
/// run every time, they store nothing), on every cache. (The marks are the process's: the
/// functions' first calls decide, so the tagged function here is cached only until then.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_beside_a_tagged_function_runs_uncached() {
    let server = RedisServer::start();
    let [redis, memory] = caches(&server);
    // Before the pair is marked: after, the companions refuse (`SharedKeys`).
    let key = member_cache_key(&redis, 2).unwrap();
    let db = Db::with(&[(1, "ann"), (2, "bob")]);
    assert_eq!(member(&redis, &db, 1).await, "ann");
    assert_eq!(member(&redis, &db, 1).await, "ann");
    assert_eq!(
        db.reads(),
        1,
        "the tagged function is cached until the batch runs"
    );
    let got = members(&redis, &db, &[1, 2]).await;
    assert_eq!(got.get(&2).map(String::as_str), Some("bob"));
    for cache in [redis, memory] {
        let db = Db::with(&[(1, "ann"), (2, "bob")]);
        for _ in 0..2 {
            let got = members(&cache, &db, &[2]).await;
            assert_eq!(got.get(&2).map(String::as_str), Some("bob"));
            assert_eq!(member(&cache, &db, 2).await, "bob");
        }
        assert_eq!(db.reads(), 4, "both read their rows every time");
        assert!(member_cache_key(&cache, 2).is_err(), "the pair is marked");
        assert_eq!(cache.ttl_of(&key).await.unwrap(), None, "nothing stored");
        rename(&cache, &db, 2, "bob2").await.unwrap();
        assert_eq!(member(&cache, &db, 2).await, "bob2");
    }
}

#[cached(ttl = 600, prefix = "t-member2", tags = ["user:{id}"], cache = cache, skip(cache, db))]
async fn member2(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).await
}

#[cached(batch, ttl = 600, prefix = "t-member2", cache = cache, skip(cache, db))]
async fn members2(cache: &Cache, db: &Db, ids: &[u64]) -> HashMap<u64, String> {
    rows(db, ids).await
}

/// The batch first: it stores an entry without tags before the tagged function ever ran.
/// Once that function runs, it does not take that entry for a hit, so the tag's
/// invalidation (which cannot see the entry) leaves it nothing stale to serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tagged_function_after_a_batch_of_its_prefix_serves_nothing_the_batch_stored() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    let db = Db::with(&[(7, "old row")]);
    let got = members2(&cache, &db, &[7]).await;
    assert_eq!(got.get(&7).map(String::as_str), Some("old row"));
    // By hand: `member2_cache_key` would record `member2` before the batch ran.
    assert!(
        cache.ttl_of("ca:t-member2:7").await.unwrap().is_some(),
        "the batch stored it"
    );
    rename(&cache, &db, 7, "new row").await.unwrap();
    assert_eq!(member2(&cache, &db, 7).await, "new row");
}

#[cached(ttl = 600, prefix = "t-member3", tags = ["user:{id}"], cache = cache, skip(cache, db))]
async fn member3(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).await
}

/// Shares `member3`'s keys and tags them alike: `{ids}` stands for each key.
#[cached(batch, ttl = 600, prefix = "t-member3", tags = ["user:{ids}"], cache = cache, skip(cache, db))]
async fn members3(cache: &Cache, db: &Db, ids: &[u64]) -> HashMap<u64, String> {
    rows(db, ids).await
}

/// A batch with the tags of the one-key function sharing its prefix: both stay cached and
/// share entries, and a tag's invalidation removes the entries the batch wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tagged_batch_tags_its_entries_as_the_one_key_function_does() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ann"), (2, "bob"), (3, "cy")]);
        let got = members3(cache, &db, &[1, 2, 3]).await;
        assert_eq!(got.get(&2).map(String::as_str), Some("bob"));
        assert_eq!(db.reads(), 3);
        assert_eq!(member3(cache, &db, 2).await, "bob");
        assert_eq!(
            db.reads(),
            3,
            "the batch's entry is the one-key function's hit"
        );
        // A write of row 2, evicting its tag, removes the entry the batch wrote.
        rename(cache, &db, 2, "bob2").await.unwrap();
        assert_eq!(member3(cache, &db, 2).await, "bob2");
        assert_eq!(db.reads(), 4);
        let removed = cache.invalidate_tag(&tag("user", 3)).await.unwrap();
        assert_eq!(removed, 1, "{}", cache.backend_name());
        let got = members3(cache, &db, &[1, 2, 3]).await;
        assert_eq!(got.get(&3).map(String::as_str), Some("cy"));
        assert_eq!(db.reads(), 5, "only row 3 was read again");
        assert!(
            member3_cache_key(cache, 1).is_ok(),
            "the pair is not marked"
        );
    }
}

/// A batch's load overtaken by a tag's invalidation: the batch's keys joined their tags'
/// sets before its body ran, so the invalidation revokes their leases and the old row read
/// before it is not stored. Returns what the next read got.
async fn invalidation_during_a_batch(cache: &Cache, id: u64) -> String {
    let db = Db::with(&[(id, "old"), (id + 1, "other")]);
    *db.hold.lock().unwrap() = true;
    let ids = [id, id + 1];
    let load = members3(cache, &db, &ids);
    let write = db.rewrite_while_held(cache, id);
    let (paused, ()) = tokio::join!(load, write);
    assert_eq!(paused.get(&id).map(String::as_str), Some("old"));
    member3(cache, &db, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_overtaken_by_a_tag_invalidation_stores_nothing_of_it() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        assert_eq!(invalidation_during_a_batch(cache, 40).await, "new");
    }
    let caches = unleased(&server);
    for cache in &caches {
        assert_eq!(
            invalidation_during_a_batch(cache, 50).await,
            "old",
            "without leases the scenario shows the race"
        );
    }
}

#[derive(Clone, serde::Serialize, PartialEq, Eq, Hash)]
struct Member {
    team: u32,
    id: u64,
}

/// A tag over a field of each key.
#[cached(batch, ttl = 600, prefix = "t-seat", tags = ["team:{members.team}"], cache = cache, skip(cache, db))]
async fn seats(cache: &Cache, db: &Db, members: &[Member]) -> HashMap<Member, String> {
    let mut out = HashMap::new();
    for member in members {
        out.insert(member.clone(), db.read(member.id).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_tag_over_a_field_of_each_key() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ann"), (2, "bob"), (3, "cy")]);
        let all = [
            Member { team: 7, id: 1 },
            Member { team: 7, id: 2 },
            Member { team: 8, id: 3 },
        ];
        assert_eq!(seats(cache, &db, &all).await.len(), 3);
        assert_eq!(seats(cache, &db, &all).await.len(), 3);
        assert_eq!(db.reads(), 3);
        let removed = cache.invalidate_tag(&tag("team", 7)).await.unwrap();
        assert_eq!(removed, 2, "{}", cache.backend_name());
        db.set(1, "ann2");
        let got = seats(cache, &db, &all).await;
        assert_eq!(got.get(&all[0]).map(String::as_str), Some("ann2"));
        assert_eq!(db.reads(), 5, "team 7's two rows again, team 8's a hit");
    }
}

#[cached(ttl = 600, prefix = "t-member4", tags = ["user:{id}"], cache = cache, skip(cache, db))]
async fn member4(cache: &Cache, db: &Db, id: u64) -> String {
    db.read(id).await
}

/// `get_many` with the tags `member4` renders: `{}` stands for each key.
static MEMBERS4: Batch = Batch::new("t-member4")
    .ttl(Duration::from_secs(600))
    .tags(&["user:{}"]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_tags_its_entries_as_its_templates_say() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let db = Db::with(&[(1, "ann"), (2, "bob")]);
        let load = |ids: Vec<u64>| {
            let db = &db;
            async move { Ok::<_, ()>(rows(db, &ids).await) }
        };
        let got: HashMap<u64, String> = cache.get_many(&MEMBERS4, [1, 2], load).await.unwrap();
        assert_eq!(got.get(&2).map(String::as_str), Some("bob"));
        assert_eq!(member4(cache, &db, 2).await, "bob");
        assert_eq!(db.reads(), 2, "the batch's entry is member4's hit");
        let removed = cache.invalidate_tag(&tag("user", 2)).await.unwrap();
        assert_eq!(removed, 1, "{}", cache.backend_name());
        db.set(2, "bob2");
        assert_eq!(member4(cache, &db, 2).await, "bob2");
        assert!(
            member4_cache_key(cache, 1).is_ok(),
            "the pair is not marked"
        );
    }
}
