//! Exact identity, end to end, on a real `redis-server` and on the embedded backend: two
//! different calls never share an entry, a function's `_invalidate_all` deletes exactly its
//! own entries, a cache handle deletes only in its namespace, and a hit returns exactly the
//! value the body returned (or the value is not stored).
//!
//! Each case reproduces a collision or a changed value the library once had; every test
//! runs once per backend (`on_both!`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_aside_runtime::{Cache, Error, cached};
use cache_aside_tests::RedisServer;
use redis::Commands;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Runs `check(&cache)` on a fresh Redis cache and on a fresh embedded cache.
macro_rules! on_both {
    ($($name:ident => $check:ident;)*) => {
        mod on_redis {
            $(#[tokio::test]
            async fn $name() {
                let server = cache_aside_tests::RedisServer::start();
                let cache = cache_aside_runtime::Cache::redis(&server.url()).unwrap();
                super::$check(&cache).await;
            })*
        }
        mod embedded {
            $(#[tokio::test]
            async fn $name() {
                super::$check(&cache_aside_runtime::Cache::memory()).await;
            })*
        }
    };
}

on_both! {
    template_values_cannot_run_into_each_other => template_values;
    an_untagged_string_never_takes_a_numbers_entry => untagged_arguments;
    json_values_of_different_kinds_get_different_entries => json_arguments;
    a_skipped_field_cannot_move_its_neighbour => skipped_fields;
    generic_functions_keep_one_entry_per_type => generic_functions;
    methods_of_a_generic_impl_keep_one_entry_per_type => generic_methods;
    nested_functions_of_one_name_keep_their_own_entries => nested_functions;
    functions_of_one_name_in_two_blocks_never_read_each_other => two_blocks;
    invalidate_all_spares_a_template_sharing_the_prefix => neighbours_sharing_a_prefix;
    invalidate_all_spares_long_hashed_keys_of_a_neighbour => hashed_neighbours;
    values_json_cannot_hold_are_returned_and_never_stored => unstorable_values;
    untagged_variants_that_serialize_alike_are_told_apart_by_partial_eq => alike_variants;
    set_arguments_in_btree_sets_are_one_entry => set_arguments;
    functions_whose_keys_can_meet_run_uncached => overlapping_layouts;
}

fn count(loads: &AtomicU32) -> u32 {
    loads.fetch_add(1, SeqCst) + 1
}

#[cached(ttl = 60, key = "t:{a}:v{b}.json", cache = cache, skip(cache))]
async fn joined(cache: &Cache, a: u32, b: String) -> String {
    format!("{a}|{b}")
}

async fn template_values(cache: &Cache) {
    // `t:{a}{b}` no longer compiles (tests/ui/fail/key-template-values-not-separated.rs):
    // with a `:` between values, (1, "23") and (12, "3") stay apart.
    assert_eq!(joined(cache, 1, "23".into()).await, "1|23");
    assert_eq!(joined(cache, 12, "3".into()).await, "12|3");
    assert_eq!(joined(cache, 1, "2.json:v3".into()).await, "1|2.json:v3");
    assert_eq!(joined(cache, 1, "23".into()).await, "1|23");
    assert_eq!(
        joined_cache_key(cache, 1, "2.json:v3".into()).unwrap(),
        "ca:t:1:v2.json%3Av3.json"
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum UserRef {
    Id(u64),
    Login(String),
}

#[cached(ttl = 60, prefix = "who", cache = cache, skip(cache))]
async fn who(cache: &Cache, user: UserRef) -> String {
    format!("{user:?}")
}

async fn untagged_arguments(cache: &Cache) {
    assert_eq!(who(cache, UserRef::Id(42)).await, "Id(42)");
    assert_eq!(
        who(cache, UserRef::Login("42".into())).await,
        "Login(\"42\")"
    );
    assert_eq!(who(cache, UserRef::Id(42)).await, "Id(42)");
    assert_eq!(who_cache_key(cache, UserRef::Id(42)).unwrap(), "ca:who:42");
    assert_eq!(
        who_cache_key(cache, UserRef::Login("alice".into())).unwrap(),
        "ca:who:alice"
    );
}

#[cached(ttl = 60, prefix = "json", cache = cache, skip(cache))]
async fn echo(cache: &Cache, v: Value) -> String {
    v.to_string()
}

async fn json_arguments(cache: &Cache) {
    let values = [
        json!(42),
        json!("42"),
        json!(42.0),
        json!(true),
        json!("true"),
        json!(null),
        json!([]),
        json!({}),
        json!(""),
        json!([1]),
        json!(["1"]),
        json!([[]]),
        json!({"a": 1}),
        json!({"a": "1"}),
    ];
    // Twice over: the second round is all hits, each with its own value.
    for _ in 0..2 {
        for v in &values {
            assert_eq!(echo(cache, v.clone()).await, v.to_string());
        }
    }
    assert_eq!(cache.stats().loads, values.len() as u64);
}

#[derive(Debug, Clone, Serialize)]
struct Range {
    #[serde(skip_serializing_if = "Option::is_none")]
    min: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u32>,
}

#[cached(ttl = 60, prefix = "range", cache = cache, skip(cache))]
async fn in_range(cache: &Cache, range: Range) -> String {
    format!("{range:?}")
}

async fn skipped_fields(cache: &Cache) {
    let low = Range {
        min: Some(100),
        max: None,
    };
    let high = Range {
        min: None,
        max: Some(100),
    };
    assert_eq!(in_range(cache, low.clone()).await, format!("{low:?}"));
    assert_eq!(in_range(cache, high.clone()).await, format!("{high:?}"));
    assert_eq!(
        in_range_cache_key(cache, low).unwrap(),
        "ca:range:(min=100)"
    );
}

trait Table {
    const NAME: &'static str;
}
struct Orders;
struct Users;
impl Table for Orders {
    const NAME: &'static str = "orders";
}
impl Table for Users {
    const NAME: &'static str = "users";
}

#[cached(ttl = 60, prefix = "rows", cache = cache, skip(cache))]
async fn row_count<T: Table>(cache: &Cache, tenant: u64) -> String {
    format!("{}:{tenant}", T::NAME)
}

#[cached(ttl = 60, cache = cache, skip(cache))]
async fn sized<const N: usize>(cache: &Cache, id: u64) -> usize {
    N + id as usize
}

async fn generic_functions(cache: &Cache) {
    assert_eq!(row_count::<Orders>(cache, 7).await, "orders:7");
    assert_eq!(row_count::<Users>(cache, 7).await, "users:7");
    assert_eq!(row_count::<Orders>(cache, 7).await, "orders:7");
    assert_eq!(sized::<1>(cache, 10).await, 11);
    assert_eq!(sized::<2>(cache, 10).await, 12);
    assert_eq!(cache.stats().hits, 1);
    assert_eq!(
        row_count_cache_key::<Orders>(cache, 7).unwrap(),
        "ca:rows-3Cidentity.Orders-3E:7"
    );
    // Each instantiation's `_invalidate_all` is its own.
    assert_eq!(row_count_invalidate_all::<Users>(cache).await.unwrap(), 1);
    assert_eq!(row_count::<Orders>(cache, 7).await, "orders:7");
    assert_eq!(cache.stats().hits, 2, "Orders kept its entry");
}

struct Repo<T> {
    cache: Cache,
    loads: AtomicU32,
    _table: std::marker::PhantomData<T>,
}

impl<T: Table> Repo<T> {
    fn new(cache: &Cache) -> Self {
        Repo {
            cache: cache.clone(),
            loads: AtomicU32::new(0),
            _table: std::marker::PhantomData,
        }
    }

    #[cached(ttl = 60, cache = self.cache)]
    async fn count(&self, tenant: u64) -> String {
        count(&self.loads);
        format!("{}:{tenant}", T::NAME)
    }

    #[cached(ttl = 60, prefix = "repo", cache = self.cache)]
    async fn named(&self, tenant: u64) -> String {
        format!("{}:{tenant}", T::NAME)
    }
}

async fn generic_methods(cache: &Cache) {
    let orders = Repo::<Orders>::new(cache);
    let users = Repo::<Users>::new(cache);
    assert_eq!(orders.count(7).await, "orders:7");
    assert_eq!(users.count(7).await, "users:7");
    assert_eq!(orders.named(7).await, "orders:7");
    assert_eq!(users.named(7).await, "users:7");
    assert_eq!(orders.count(7).await, "orders:7");
    assert_eq!(orders.loads.load(SeqCst), 1);
    assert_eq!(
        orders.named_cache_key(7).unwrap(),
        "ca:repo-3Cidentity.Orders-3E:7"
    );
    assert_eq!(
        orders.count_cache_key(7).unwrap(),
        "ca:identity.Repo-3Cidentity.Orders-3E.count:7"
    );
}

async fn nested_one(cache: &Cache) -> (String, String) {
    #[cached(ttl = 60, cache = cache, skip(cache))]
    async fn inner(cache: &Cache, id: u64) -> String {
        format!("one:{id}")
    }
    (inner(cache, 1).await, inner_cache_key(cache, 1).unwrap())
}

async fn nested_two(cache: &Cache) -> (String, String) {
    #[cached(ttl = 60, cache = cache, skip(cache))]
    async fn inner(cache: &Cache, id: u64) -> String {
        format!("two:{id}")
    }
    (inner(cache, 1).await, inner_cache_key(cache, 1).unwrap())
}

async fn nested_functions(cache: &Cache) {
    let (one, one_key) = nested_one(cache).await;
    let (two, two_key) = nested_two(cache).await;
    assert_eq!((one.as_str(), two.as_str()), ("one:1", "two:1"));
    // Items in an `async fn` body sit in its closure; the path says so.
    assert_eq!(
        one_key,
        "ca:identity.nested_one.-7B-7Bclosure-7D-7D.inner:1"
    );
    assert_ne!(one_key, two_key);
}

/// Two blocks of one function each declare an `inner`: `type_name` gives both one path, so
/// one prefix and one layout. Told apart by where they are written, they run uncached
/// rather than read each other's entries.
async fn two_blocks(cache: &Cache) {
    for _ in 0..2 {
        let a = {
            #[cached(ttl = 60, cache = cache, skip(cache))]
            async fn inner(cache: &Cache, id: u64) -> String {
                format!("a:{id}")
            }
            inner(cache, 1).await
        };
        let b = {
            #[cached(ttl = 60, cache = cache, skip(cache))]
            async fn inner(cache: &Cache, id: u64) -> String {
                format!("b:{id}")
            }
            inner(cache, 1).await
        };
        assert_eq!((a.as_str(), b.as_str()), ("a:1", "b:1"));
    }
}

#[cached(ttl = 60, prefix = "user", cache = cache, skip(cache))]
async fn get_user(cache: &Cache, id: String) -> String {
    format!("user {id}")
}

#[cached(ttl = 60, key = "user:{id}:posts:{page}", cache = cache, skip(cache))]
async fn posts(cache: &Cache, id: String, page: u32) -> String {
    format!("posts of {id}, page {page}")
}

async fn neighbours_sharing_a_prefix(cache: &Cache) {
    for id in ["1", "2", "3"] {
        get_user(cache, id.into()).await;
        posts(cache, id.into(), 1).await;
        posts(cache, id.into(), 2).await;
    }
    assert_eq!(get_user_invalidate_all(cache).await.unwrap(), 3);
    assert_eq!(posts_invalidate_all(cache).await.unwrap(), 6);
    for id in ["1", "2"] {
        get_user(cache, id.into()).await;
        posts(cache, id.into(), 1).await;
    }
    assert_eq!(posts_invalidate_all(cache).await.unwrap(), 2);
    assert_eq!(get_user_invalidate_all(cache).await.unwrap(), 2);
}

async fn hashed_neighbours(cache: &Cache) {
    let long = "x".repeat(300);
    get_user(cache, long.clone()).await;
    posts(cache, long.clone(), 1).await;
    let user_key = get_user_cache_key(cache, long.clone()).unwrap();
    let posts_key = posts_cache_key(cache, long, 1).unwrap();
    assert!(user_key.starts_with("ca:user:#"), "{user_key}");
    assert!(posts_key.starts_with("ca:user:#"), "{posts_key}");
    assert_ne!(user_key[..25], posts_key[..25], "the layout tags differ");
    assert_eq!(get_user_invalidate_all(cache).await.unwrap(), 1);
    assert_eq!(posts_invalidate_all(cache).await.unwrap(), 1);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stats {
    mean: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Patch {
    name: Option<Option<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Num {
    Small(u8),
    Big(u16),
}

#[cached(ttl = 60, prefix = "stats", cache = cache, skip(cache, loads))]
async fn stats(cache: &Cache, loads: &AtomicU32, case: u32) -> Stats {
    count(loads);
    Stats {
        mean: [Some(f64::NAN), Some(f64::INFINITY), Some(1.5), None][case as usize],
    }
}

#[cached(ttl = 60, prefix = "patch", cache = cache, skip(cache, loads))]
async fn patch(cache: &Cache, loads: &AtomicU32, case: u32) -> Patch {
    count(loads);
    Patch {
        name: [Some(None), None, Some(Some("x".into()))][case as usize].clone(),
    }
}

#[cached(ttl = 60, prefix = "num", cache = cache, skip(cache, loads))]
async fn num(cache: &Cache, loads: &AtomicU32, big: u16) -> Num {
    count(loads);
    Num::Big(big)
}

#[cached(ttl = 60, prefix = "infs", cache = cache, skip(cache, loads))]
async fn infs(cache: &Cache, loads: &AtomicU32) -> Option<Vec<Option<f64>>> {
    count(loads);
    Some(vec![Some(f64::INFINITY)])
}

async fn unstorable_values(cache: &Cache) {
    let loads = AtomicU32::new(0);
    // Twice each: the second call must load again rather than get a changed value.
    for _ in 0..2 {
        assert!(stats(cache, &loads, 0).await.mean.unwrap().is_nan());
        assert_eq!(stats(cache, &loads, 1).await.mean, Some(f64::INFINITY));
        assert_eq!(patch(cache, &loads, 0).await.name, Some(None));
        assert!(matches!(num(cache, &loads, 5).await, Num::Big(5)));
        assert_eq!(infs(cache, &loads).await, Some(vec![Some(f64::INFINITY)]));
    }
    assert_eq!(loads.load(SeqCst), 10, "none of them was stored");
    assert_eq!(cache.stats().unstorable, 10);
    assert_eq!(cache.stats().hits, 0);
    // Values JSON does hold are stored as usual.
    for _ in 0..2 {
        assert_eq!(stats(cache, &loads, 2).await.mean, Some(1.5));
        assert_eq!(stats(cache, &loads, 3).await.mean, None);
        assert_eq!(patch(cache, &loads, 1).await.name, None);
        assert_eq!(patch(cache, &loads, 2).await.name, Some(Some("x".into())));
        assert!(matches!(num(cache, &loads, 500).await, Num::Big(500)));
    }
    assert_eq!(loads.load(SeqCst), 15);
    assert_eq!(cache.stats().hits, 5);
    assert_eq!(cache.stats().unstorable, 10);
}

/// Variants an untagged enum serializes alike: JSON gives back the first, and only
/// `PartialEq` can tell. Types with it are compared so; see the README for types without.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Contact {
    Login(String),
    Email(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Flag {
    On,
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Counted {
    name: String,
    #[serde(skip)]
    dirty: bool,
}

#[cached(ttl = 60, prefix = "contact", cache = cache, skip(cache, loads))]
async fn contact(cache: &Cache, loads: &AtomicU32, email: bool) -> Result<Contact, String> {
    count(loads);
    Ok(if email {
        Contact::Email("a@b".into())
    } else {
        Contact::Login("a@b".into())
    })
}

#[cached(ttl = 60, prefix = "flag", cache = cache, skip(cache, loads))]
async fn flag(cache: &Cache, loads: &AtomicU32, on: bool) -> Option<Flag> {
    count(loads);
    Some(if on { Flag::On } else { Flag::Off })
}

#[cached(ttl = 60, prefix = "counted", cache = cache, skip(cache, loads))]
async fn counted(cache: &Cache, loads: &AtomicU32, dirty: bool) -> Counted {
    count(loads);
    Counted {
        name: "n".into(),
        dirty,
    }
}

async fn alike_variants(cache: &Cache) {
    let loads = AtomicU32::new(0);
    for _ in 0..2 {
        assert_eq!(
            contact(cache, &loads, true).await,
            Ok(Contact::Email("a@b".into()))
        );
        assert_eq!(flag(cache, &loads, false).await, Some(Flag::Off));
        assert!(counted(cache, &loads, true).await.dirty);
    }
    assert_eq!(loads.load(SeqCst), 6, "none of them was stored");
    assert_eq!(cache.stats().unstorable, 6);
    // The first variant, and a skipped field at its default, do come back as they were.
    for _ in 0..2 {
        assert_eq!(
            contact(cache, &loads, false).await,
            Ok(Contact::Login("a@b".into()))
        );
        assert_eq!(flag(cache, &loads, true).await, Some(Flag::On));
        assert!(!counted(cache, &loads, false).await.dirty);
    }
    assert_eq!(loads.load(SeqCst), 9);
    assert_eq!(cache.stats().hits, 3);
}

#[cached(ttl = 60, prefix = "set", cache = cache, skip(cache, loads))]
async fn in_set(cache: &Cache, loads: &AtomicU32, ids: BTreeSet<u32>) -> usize {
    count(loads);
    ids.len()
}

async fn set_arguments(cache: &Cache) {
    let loads = AtomicU32::new(0);
    let a: BTreeSet<u32> = (0..50).collect();
    let b: BTreeSet<u32> = (0..50).rev().collect();
    assert_eq!(in_set(cache, &loads, a.clone()).await, 50);
    assert_eq!(in_set(cache, &loads, b.clone()).await, 50);
    assert_eq!(loads.load(SeqCst), 1);
    assert!(in_set_invalidate(cache, b).await.unwrap());
}

#[cached(ttl = 60, prefix = "doc", cache = cache, skip(cache))]
async fn by_name(cache: &Cache, name: String) -> String {
    format!("by name {name}")
}

#[cached(ttl = 60, key = "doc:v{version}.json", cache = cache, skip(cache))]
async fn by_version(cache: &Cache, version: u32) -> String {
    format!("by version {version}")
}

/// `by_name("v7.json")` and `by_version(7)` would both be `ca:doc:v7.json`: once both
/// have run in this process, neither reads the cache, and each returns its own body's value.
async fn overlapping_layouts(cache: &Cache) {
    for _ in 0..2 {
        assert_eq!(by_version(cache, 7).await, "by version 7");
        assert_eq!(by_name(cache, "v7.json".into()).await, "by name v7.json");
        assert_eq!(by_version(cache, 7).await, "by version 7");
    }
    let error = by_name_cache_key(cache, "v7.json".into()).unwrap_err();
    assert!(matches!(error, Error::SharedKeys { .. }), "{error}");
    assert!(by_version_invalidate_all(cache).await.is_err());
    assert!(cache.stats().errors >= 4, "{:?}", cache.stats());
}

/// A handle for `shop` refuses to delete `blog:post:1`, and says why.
#[tokio::test]
async fn a_cache_deletes_only_keys_of_its_own_namespace() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let _: () = conn.set("blog:post:1", "theirs").unwrap();
    let _: () = conn.set("shopping:x", "theirs").unwrap();
    let shop = Cache::builder()
        .namespace("shop")
        .redis(&server.url())
        .unwrap();
    for key in ["blog:post:1", "shopping:x", "shop", ""] {
        let error = shop.invalidate(key).await.unwrap_err();
        assert!(
            matches!(&error, Error::OutsideNamespace { namespace, .. } if namespace == "shop"),
            "{error}"
        );
        assert!(shop.ttl_of(key).await.is_err());
    }
    let still: Vec<String> = conn.keys("*").unwrap();
    assert_eq!(still.len(), 2, "{still:?}");
    assert!(!shop.invalidate("shop:post:1").await.unwrap());
    let memory = Cache::builder().namespace("shop").memory().unwrap();
    assert!(memory.invalidate("blog:post:1").await.is_err());
}

/// Entries written by the previous key and envelope format (version 1) read as misses:
/// the format change cannot turn an old entry into a wrong value.
#[tokio::test]
async fn entries_of_the_previous_format_are_misses() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    let mut conn = server.conn();
    // Version 1 wrote `Login("42")`'s entry at the key `Id(42)` now owns.
    let mut old = vec![0xCA, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    old.extend_from_slice(br#""Login(\"42\")""#);
    let _: () = conn.set_ex("ca:who:42", old, 60).unwrap();
    assert_eq!(who(&cache, UserRef::Id(42)).await, "Id(42)");
    assert_eq!(cache.stats().corrupt, 1);
    assert_eq!(who(&cache, UserRef::Id(42)).await, "Id(42)");
    assert_eq!(cache.stats().hits, 1);
}
