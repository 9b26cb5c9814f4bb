//! Probes of the batch-read promises (`#[cached(batch)]`, `Cache::get_many`), written as a
//! demanding user and an adversary would: exactness, key shapes, sharing with one-key
//! functions, absences, odd bodies, outages, concurrency, cancellation, counters, options.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_aside_runtime::batch::Batch;
use cache_aside_runtime::{Cache, cache_evict, cache_put, cached};
use cache_aside_tests::RedisServer;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio::time::timeout;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
struct PErr;

/// The probes' "database": counts body calls, which keys each asked for, and how often each
/// key was loaded; can delay, gate, hang, fail or panic the next bodies.
#[derive(Default)]
struct Probe {
    calls: AtomicU64,
    asked: Mutex<Vec<Vec<String>>>,
    per_key: Mutex<HashMap<String, u64>>,
    /// Overrides of a row's name (`None`: the row does not exist).
    names: Mutex<HashMap<u64, Option<String>>>,
    delay_ms: AtomicU64,
    /// Each body says it started (one permit per body).
    started: Notify,
    /// The next `gate_next` bodies wait for a permit of `go`.
    gate_next: AtomicU64,
    go: Gate,
    /// The next `hang_next` bodies never return.
    hang_next: AtomicU64,
    /// The next `fail_next` bodies fail.
    fail_next: AtomicU64,
    /// The next `panic_next` bodies panic.
    panic_next: AtomicU64,
}

/// A semaphore with no permits to begin with.
struct Gate(Semaphore);

impl Default for Gate {
    fn default() -> Self {
        Gate(Semaphore::new(0))
    }
}

impl Gate {
    fn add_permits(&self, n: usize) {
        self.0.add_permits(n);
    }
}

fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Probe {
    fn new() -> Arc<Probe> {
        Arc::new(Probe::default())
    }

    fn note<K: Debug>(&self, keys: impl IntoIterator<Item = K>) {
        self.calls.fetch_add(1, SeqCst);
        let mut keys: Vec<String> = keys.into_iter().map(|k| format!("{k:?}")).collect();
        keys.sort();
        {
            let mut per_key = self.per_key.lock().unwrap();
            for k in &keys {
                *per_key.entry(k.clone()).or_default() += 1;
            }
        }
        self.asked.lock().unwrap().push(keys);
    }

    /// What every body does first.
    async fn enter<K: Debug>(&self, keys: impl IntoIterator<Item = K>) -> Result<(), PErr> {
        self.note(keys);
        // What this body will do is decided as it starts: the first body takes the flags.
        let gated = take_one(&self.gate_next);
        let hang = take_one(&self.hang_next);
        let panic = take_one(&self.panic_next);
        let fail = take_one(&self.fail_next);
        self.started.notify_one();
        let delay = self.delay_ms.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if gated {
            self.go.0.acquire().await.unwrap().forget();
        }
        if hang {
            std::future::pending::<()>().await;
        }
        if panic {
            panic!("probe: the body panics");
        }
        if fail {
            return Err(PErr);
        }
        Ok(())
    }

    fn calls(&self) -> u64 {
        self.calls.load(SeqCst)
    }

    fn asked(&self) -> Vec<Vec<String>> {
        std::mem::take(&mut *self.asked.lock().unwrap())
    }

    fn loads_of(&self, key: impl Debug) -> u64 {
        let key = format!("{key:?}");
        self.per_key.lock().unwrap().get(&key).copied().unwrap_or(0)
    }

    fn item(&self, id: u64) -> Option<Item> {
        let name = match self.names.lock().unwrap().get(&id) {
            Some(name) => name.clone()?,
            None => format!("n{id}"),
        };
        Some(Item { id, name })
    }

    fn set(&self, id: u64, name: Option<&str>) {
        self.names
            .lock()
            .unwrap()
            .insert(id, name.map(str::to_owned));
    }
}

fn asked<K: Debug>(keys: &[K]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    keys.sort();
    keys
}

/// The probes' caches: Redis and the embedded backend, with a roomy `timeout` so that a
/// loaded test machine does not turn slow round trips into skipped writes (the outage
/// probes build their own, with the defaults).
fn caches(server: &RedisServer) -> [Cache; 2] {
    let builder = || Cache::builder().timeout(Duration::from_secs(2));
    [
        builder().redis(&server.url()).unwrap(),
        builder().memory().unwrap(),
    ]
}

const BOUND: Duration = Duration::from_secs(10);

/// Bounds a call: a probe must never hang.
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(BOUND, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {BOUND:?}"),
    }
}

/// Waits (bounded) until `key` holds nothing (no value, no placeholder).
async fn until_empty(cache: &Cache, key: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if cache.ttl_of(key).await.ok().flatten().is_none() {
            return true;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

// ---------------------------------------------------------------------------------------
// The shared pair: one-key `item_one` and batch `item_many` under `p-item`
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
}

fn item(id: u64) -> Item {
    Item {
        id,
        name: format!("n{id}"),
    }
}

fn items(ids: &[u64]) -> HashMap<u64, Item> {
    ids.iter().map(|&id| (id, item(id))).collect()
}

#[cached(ttl = 600, none_ttl = 600, prefix = "p-item", cache = cache, skip(cache, p))]
async fn item_one(cache: &Cache, p: &Probe, id: u64) -> Result<Option<Item>, PErr> {
    p.enter([id]).await?;
    Ok(p.item(id))
}

#[cached(batch, ttl = 600, none_ttl = 600, prefix = "p-item", cache = cache, skip(cache, p))]
async fn item_many(cache: &Cache, p: &Probe, ids: &[u64]) -> Result<HashMap<u64, Item>, PErr> {
    p.enter(ids.iter()).await?;
    Ok(ids
        .iter()
        .filter_map(|&id| Some((id, p.item(id)?)))
        .collect())
}

#[cache_evict(item_one(cache, id))]
async fn item_rename(cache: &Cache, p: &Probe, id: u64, name: &str) -> Result<(), PErr> {
    p.set(id, Some(name));
    Ok(())
}

#[cache_put(item_one(cache, id))]
async fn item_save(
    cache: &Cache,
    p: &Probe,
    id: u64,
    name: Option<&str>,
) -> Result<Option<Item>, PErr> {
    p.set(id, name);
    Ok(name.map(|name| Item {
        id,
        name: name.to_owned(),
    }))
}

fn item_key(cache: &Cache, id: u64) -> String {
    item_one_cache_key(cache, id).unwrap()
}

// ---------------------------------------------------------------------------------------
// 1. Exactness: a hit returns exactly what the body returned
// ---------------------------------------------------------------------------------------

const STRS: [&str; 12] = [
    "",
    "a:b",
    "*",
    "{x}",
    "%41",
    "héllo ✓ 日本",
    "line\nbreak\t\"q\"\\",
    "null",
    "0",
    " ",
    "\u{0}nul",
    "~!#",
];

#[cached(batch, ttl = 600, prefix = "p-vstr", cache = cache, skip(cache, p))]
async fn v_strs(cache: &Cache, p: &Probe, ids: &[usize]) -> HashMap<usize, String> {
    let _ = p.enter(ids.iter()).await;
    ids.iter().map(|&i| (i, STRS[i].to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_strings_round_trip() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let p = Probe::new();
        let ids: Vec<usize> = (0..STRS.len()).collect();
        let want: HashMap<usize, String> = ids.iter().map(|&i| (i, STRS[i].to_owned())).collect();
        assert_eq!(v_strs(cache, &p, &ids).await, want, "miss");
        assert_eq!(v_strs(cache, &p, &ids).await, want, "hit");
        assert_eq!(
            p.calls(),
            1,
            "{}: the second call is all hits",
            cache.backend_name()
        );
    }
}

const FLOATS: [f64; 11] = [
    0.0,
    -0.0,
    0.1,
    1e300,
    -1e-300,
    f64::MIN_POSITIVE,
    5e-324,
    f64::MAX,
    1.0 / 3.0,
    123_456_789.123_456_79,
    -2.5,
];

#[cached(batch, ttl = 600, prefix = "p-vflt", cache = cache, skip(cache, p))]
async fn v_floats(cache: &Cache, p: &Probe, ids: Vec<usize>) -> BTreeMap<usize, f64> {
    let _ = p.enter(ids.iter()).await;
    ids.iter().map(|&i| (i, FLOATS[i])).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_floats_round_trip_bit_for_bit() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let p = Probe::new();
        let ids: Vec<usize> = (0..FLOATS.len()).collect();
        for round in ["miss", "hit"] {
            let got = v_floats(cache, &p, ids.clone()).await;
            assert_eq!(got.len(), FLOATS.len());
            for (i, v) in got {
                assert_eq!(
                    v.to_bits(),
                    FLOATS[i].to_bits(),
                    "{round} {}: {v:?} for {:?}",
                    cache.backend_name(),
                    FLOATS[i]
                );
            }
        }
        assert_eq!(p.calls(), 1, "{}", cache.backend_name());
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Unit,
    Tuple(u8, String),
    Struct { a: Option<u64>, b: bool },
    Newtype(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Inner {
    x: i32,
    s: String,
    f: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Nested {
    id: u64,
    tags: Vec<String>,
    inner: Option<Inner>,
    map: BTreeMap<String, i64>,
    kind: Kind,
    big: u64,
    small: i64,
    flag: bool,
    unit: (),
    empty: Vec<u8>,
    opt_empty: Option<String>,
}

fn nested(id: u64) -> Nested {
    let kind = match id % 4 {
        0 => Kind::Unit,
        1 => Kind::Tuple(0, String::new()),
        2 => Kind::Struct { a: None, b: false },
        _ => Kind::Newtype(vec![]),
    };
    Nested {
        id,
        tags: vec!["a:b".into(), String::new(), "{}".into()],
        inner: id.is_multiple_of(2).then(|| Inner {
            x: -(id as i32),
            s: "*?[]".into(),
            f: 0.1,
        }),
        map: BTreeMap::from([("".to_owned(), 0), ("k:v".to_owned(), i64::MIN)]),
        kind,
        big: u64::MAX,
        small: i64::MIN,
        flag: false,
        unit: (),
        empty: vec![],
        opt_empty: Some(String::new()),
    }
}

#[cached(batch, ttl = 600, prefix = "p-vnest", cache = cache, skip(cache, p))]
async fn v_nested(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, Nested> {
    let _ = p.enter(ids.iter()).await;
    ids.iter().map(|&i| (i, nested(i))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_nested_structs_and_enums_round_trip() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let p = Probe::new();
        let ids = [0, 1, 2, 3, 4, 5];
        let want: HashMap<u64, Nested> = ids.iter().map(|&i| (i, nested(i))).collect();
        assert_eq!(v_nested(cache, &p, &ids).await, want);
        assert_eq!(v_nested(cache, &p, &ids).await, want);
        assert_eq!(p.calls(), 1, "{}", cache.backend_name());
    }
}

#[cached(batch, ttl = 600, prefix = "p-vopt", cache = cache, skip(cache, p))]
async fn v_opts(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, Option<String>> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .map(|&i| {
            let v = match i {
                1 => None,
                2 => Some(String::new()),
                _ => Some(format!("s{i}")),
            };
            (i, v)
        })
        .collect()
}

#[cached(batch, ttl = 600, prefix = "p-vunit", cache = cache, skip(cache, p))]
async fn v_units(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, Option<()>> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .map(|&i| (i, if i == 1 { Some(()) } else { None }))
        .collect()
}

#[cached(batch, ttl = 600, prefix = "p-vint", cache = cache, skip(cache, p))]
async fn v_ints(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, i64> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .map(|&i| (i, [0, -1, i64::MIN, i64::MAX][i as usize]))
        .collect()
}

/// `Option` values inside the map: a `None` value is a value (the key is in the map), not an
/// absence; `Some("")`, `0` and `Some(())` are hits like any other value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_option_zero_and_unit_values() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        let want: HashMap<u64, Option<String>> = HashMap::from([
            (1, None),
            (2, Some(String::new())),
            (3, Some("s3".to_owned())),
        ]);
        assert_eq!(v_opts(cache, &p, &[1, 2, 3]).await, want, "{name} miss");
        assert_eq!(v_opts(cache, &p, &[1, 2, 3]).await, want, "{name} hit");
        assert_eq!(p.calls(), 1, "{name}: a None value inside the map is a hit");

        let p = Probe::new();
        let want = HashMap::from([(1, Some(())), (2, None)]);
        assert_eq!(v_units(cache, &p, &[1, 2]).await, want, "{name} miss");
        assert_eq!(
            v_units(cache, &p, &[1, 2]).await,
            want,
            "{name} second call"
        );

        let p = Probe::new();
        let want = HashMap::from([(0, 0), (1, -1), (2, i64::MIN), (3, i64::MAX)]);
        assert_eq!(v_ints(cache, &p, &[0, 1, 2, 3]).await, want);
        assert_eq!(v_ints(cache, &p, &[0, 1, 2, 3]).await, want);
        assert_eq!(p.calls(), 1, "{name}: zero is a hit");
    }
}

#[cached(batch, ttl = 600, prefix = "p-vnan", cache = cache, skip(cache, p))]
async fn v_nan(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, f64> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .map(|&i| (i, [1.5, f64::NAN, f64::INFINITY][i as usize]))
        .collect()
}

#[cached(batch, ttl = 600, prefix = "p-vsn", cache = cache, skip(cache, p))]
async fn v_some_none(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, Option<Option<u8>>> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .map(|&i| (i, [Some(Some(1)), Some(None), None][i as usize]))
        .collect()
}

/// Values JSON would not give back are returned but not stored (`stats().unstorable`);
/// the others of the batch are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_values_are_returned_not_stored() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        for round in 0..2 {
            let got = v_nan(cache, &p, &[0, 1, 2]).await;
            assert_eq!(got[&0], 1.5);
            assert!(got[&1].is_nan(), "{name} round {round}");
            assert_eq!(got[&2], f64::INFINITY, "{name} round {round}");
        }
        assert_eq!(
            p.asked(),
            vec![asked(&[0, 1, 2]), asked(&[1, 2])],
            "{name}: NaN and inf asked again"
        );
        assert!(cache.stats().unstorable >= 2, "{name}: {:?}", cache.stats());

        let p = Probe::new();
        let want = HashMap::from([(0, Some(Some(1))), (1, Some(None)), (2, None)]);
        for round in 0..2 {
            assert_eq!(
                v_some_none(cache, &p, &[0, 1, 2]).await,
                want,
                "{name} round {round}"
            );
        }
        assert_eq!(
            p.asked(),
            vec![asked(&[0, 1, 2]), asked(&[1])],
            "{name}: only Some(None) is asked again"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. Key shapes, shared with one-key functions
// ---------------------------------------------------------------------------------------

#[cached(ttl = 600, prefix = "p-skey", cache = cache, skip(cache, p))]
async fn skey_one(cache: &Cache, p: &Probe, name: &str) -> String {
    let _ = p.enter([name]).await;
    format!("v[{name}]")
}

#[cached(batch, ttl = 600, prefix = "p-skey", cache = cache, skip(cache, p))]
async fn skey_many(cache: &Cache, p: &Probe, names: Vec<String>) -> HashMap<String, String> {
    let _ = p.enter(names.iter()).await;
    names
        .iter()
        .map(|n| (n.clone(), format!("v[{n}]")))
        .collect()
}

fn odd_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        "a:b", "a", "b", "*", "a*", "{tag}", "}{", "", "42", "true", "~", "%3A", "é:ü", "a b",
        "(1,2)", "'", "?", "[x]", "k=v", "a\\b",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push("x".repeat(300));
    v.push(format!("{}:", "y".repeat(200)));
    v
}

/// String keys with reserved characters: each its own entry, and the one-key function's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_keys_with_reserved_characters_are_distinct_and_shared() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        let all = odd_strings();
        let (first, second) = all.split_at(all.len() / 2);
        // The batch loads the first half; the one-key function hits them.
        let got = skey_many(cache, &p, first.to_vec()).await;
        assert_eq!(got.len(), first.len());
        for k in first {
            assert_eq!(got[k], format!("v[{k}]"));
        }
        for k in first {
            assert_eq!(skey_one(cache, &p, k).await, format!("v[{k}]"));
        }
        assert_eq!(p.calls(), 1, "{name}: one-key hits on the batch's entries");
        // The one-key function loads the second half; the batch hits them.
        for k in second {
            assert_eq!(skey_one(cache, &p, k).await, format!("v[{k}]"));
        }
        p.asked();
        let got = skey_many(cache, &p, all.clone()).await;
        assert_eq!(got.len(), all.len(), "{name}");
        for k in &all {
            assert_eq!(got[k], format!("v[{k}]"), "{name}: key {k:?}");
        }
        assert!(
            p.asked().is_empty(),
            "{name}: the batch hits the one-key entries"
        );
        // And the keys are the ones the one-key companion names.
        for k in &all {
            let key = skey_one_cache_key(cache, k).unwrap();
            assert!(cache.ttl_of(&key).await.unwrap().is_some(), "{name}: {key}");
        }
    }
}

#[cached(ttl = 600, prefix = "p-tkey", cache = cache, skip(cache, p))]
async fn tkey_one(cache: &Cache, p: &Probe, pair: (u64, String)) -> String {
    let _ = p.enter([&pair]).await;
    format!("{}/{}", pair.0, pair.1)
}

#[cached(batch, ttl = 600, prefix = "p-tkey", cache = cache, skip(cache, p))]
async fn tkey_many(
    cache: &Cache,
    p: &Probe,
    pairs: &[(u64, String)],
) -> HashMap<(u64, String), String> {
    let _ = p.enter(pairs.iter()).await;
    pairs
        .iter()
        .map(|pair| (pair.clone(), format!("{}/{}", pair.0, pair.1)))
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
struct Sk {
    org: u32,
    name: String,
}

#[cached(ttl = 600, prefix = "p-stkey", cache = cache, skip(cache, p))]
async fn stkey_one(cache: &Cache, p: &Probe, k: Sk) -> String {
    let _ = p.enter([&k]).await;
    format!("{}@{}", k.name, k.org)
}

#[cached(batch, ttl = 600, prefix = "p-stkey", cache = cache, skip(cache, p))]
async fn stkey_many(cache: &Cache, p: &Probe, ks: &BTreeSet<Sk>) -> BTreeMap<Sk, String> {
    let _ = p.enter(ks.iter()).await;
    ks.iter()
        .map(|k| (k.clone(), format!("{}@{}", k.name, k.org)))
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
enum Ek {
    A,
    B(u32),
    C { s: String },
    D(u32, u32),
}

#[cached(ttl = 600, prefix = "p-ekey", cache = cache, skip(cache, p))]
async fn ekey_one(cache: &Cache, p: &Probe, k: Ek) -> String {
    let _ = p.enter([&k]).await;
    format!("{k:?}")
}

#[cached(batch, ttl = 600, prefix = "p-ekey", cache = cache, skip(cache, p))]
async fn ekey_many(cache: &Cache, p: &Probe, ks: HashSet<Ek>) -> HashMap<Ek, String> {
    let _ = p.enter(ks.iter()).await;
    ks.iter().map(|k| (k.clone(), format!("{k:?}"))).collect()
}

/// Tuples, structs and enums as batch keys: distinct entries, shared with one-key functions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuple_struct_and_enum_keys_are_shared_with_one_key_functions() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        // Tuples
        let p = Probe::new();
        let pairs: Vec<(u64, String)> = vec![
            (1, "a".into()),
            (1, "b".into()),
            (2, "a".into()),
            (1, "a:2".into()),
            (12, String::new()),
            (1, "2,a".into()),
        ];
        let got = tkey_many(cache, &p, &pairs).await;
        assert_eq!(got.len(), pairs.len(), "{name}");
        for pair in &pairs {
            assert_eq!(got[pair], format!("{}/{}", pair.0, pair.1));
            assert_eq!(
                tkey_one(cache, &p, pair.clone()).await,
                format!("{}/{}", pair.0, pair.1)
            );
        }
        assert_eq!(p.calls(), 1, "{name}: tuple entries shared");

        // Structs
        let p = Probe::new();
        let ks: Vec<Sk> = vec![
            Sk {
                org: 1,
                name: "x".into(),
            },
            Sk {
                org: 1,
                name: "y".into(),
            },
            Sk {
                org: 2,
                name: "x".into(),
            },
            Sk {
                org: 1,
                name: "x,org=2".into(),
            },
        ];
        for k in &ks[..2] {
            stkey_one(cache, &p, k.clone()).await;
        }
        p.asked();
        let set: BTreeSet<Sk> = ks.iter().cloned().collect();
        let got = stkey_many(cache, &p, &set).await;
        assert_eq!(got.len(), ks.len());
        for k in &ks {
            assert_eq!(got[k], format!("{}@{}", k.name, k.org), "{name}");
        }
        assert_eq!(
            p.asked(),
            vec![asked(&ks[2..])],
            "{name}: struct keys shared"
        );

        // Enums
        let p = Probe::new();
        let ks = vec![
            Ek::A,
            Ek::B(0),
            Ek::B(1),
            Ek::C { s: "A".into() },
            Ek::C { s: String::new() },
            Ek::D(1, 2),
        ];
        let got = ekey_many(cache, &p, ks.iter().cloned().collect()).await;
        assert_eq!(got.len(), ks.len());
        for k in &ks {
            assert_eq!(got[k], format!("{k:?}"));
            assert_eq!(
                ekey_one(cache, &p, k.clone()).await,
                format!("{k:?}"),
                "{name}"
            );
        }
        assert_eq!(p.calls(), 1, "{name}: enum entries shared");
    }
}

// ---------------------------------------------------------------------------------------
// 3. Sharing with the one-key function: companions, evict, put, invalidate
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_invalidate_companions_reach_batch_entries() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        assert_eq!(
            item_many(cache, &p, &[1, 2, 3, 4]).await,
            Ok(items(&[1, 2, 3, 4]))
        );
        // One-key hits on every batch entry.
        for id in [1, 2, 3, 4] {
            assert_eq!(item_one(cache, &p, id).await, Ok(Some(item(id))));
        }
        assert_eq!(p.calls(), 1, "{name}");
        p.asked();

        // f_invalidate(id)
        p.set(1, Some("renamed"));
        assert!(item_one_invalidate(cache, 1).await.unwrap(), "{name}");
        // Cache::invalidate(key)
        p.set(2, Some("renamed2"));
        assert!(cache.invalidate(&item_key(cache, 2)).await.unwrap());
        let got = item_many(cache, &p, &[1, 2, 3, 4]).await.unwrap();
        assert_eq!(got[&1].name, "renamed", "{name}");
        assert_eq!(got[&2].name, "renamed2", "{name}");
        assert_eq!(got[&3], item(3));
        assert_eq!(p.asked(), vec![asked(&[1, 2])], "{name}");

        // f_invalidate_all() covers the batch's entries.
        let removed = item_one_invalidate_all(cache).await.unwrap();
        assert!(removed >= 4, "{name}: removed {removed}");
        item_many(cache, &p, &[1, 2, 3, 4]).await.unwrap();
        assert_eq!(p.asked(), vec![asked(&[1, 2, 3, 4])], "{name}");

        // invalidate_prefix
        cache.invalidate_prefix("p-item").await.unwrap();
        item_many(cache, &p, &[3]).await.unwrap();
        assert_eq!(p.asked(), vec![asked(&[3])], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_evict_and_cache_put_reach_batch_entries() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        item_many(cache, &p, &[1, 2, 3]).await.unwrap();
        p.asked();
        // evict
        item_rename(cache, &p, 1, "evicted").await.unwrap();
        // put a value
        item_save(cache, &p, 2, Some("put")).await.unwrap();
        // put an absence
        item_save(cache, &p, 3, None).await.unwrap();
        let got = item_many(cache, &p, &[1, 2, 3]).await.unwrap();
        assert_eq!(
            got.get(&1).map(|u| u.name.as_str()),
            Some("evicted"),
            "{name}"
        );
        assert_eq!(got.get(&2).map(|u| u.name.as_str()), Some("put"), "{name}");
        assert_eq!(got.get(&3), None, "{name}: the put absence");
        assert_eq!(
            p.asked(),
            vec![asked(&[1])],
            "{name}: 2 and 3 are the puts' entries"
        );
        // A put after the batch loaded a key it never saw before.
        item_save(cache, &p, 9, Some("fresh-put")).await.unwrap();
        let got = item_many(cache, &p, &[9]).await.unwrap();
        assert_eq!(got[&9].name, "fresh-put");
        assert!(p.asked().is_empty(), "{name}");
    }
}

#[cached(ttl = 600, key = "p-tpl:{id}", cache = cache, skip(cache, p))]
async fn tpl_one(cache: &Cache, p: &Probe, id: u64) -> Option<Item> {
    let _ = p.enter([id]).await;
    p.item(id)
}

#[cached(batch, ttl = 600, prefix = "p-tpl", cache = cache, skip(cache, p))]
async fn tpl_many(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, Item> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .filter_map(|&id| Some((id, p.item(id)?)))
        .collect()
}

/// A one-key function keyed by a template `"p-tpl:{id}"` renders the same keys as the
/// prefix `p-tpl` with one argument: the batch's entries are its entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_keyed_one_key_function_shares_the_batch_entries() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        assert_eq!(tpl_one(cache, &p, 1).await, Some(item(1)));
        assert_eq!(tpl_many(cache, &p, &[1, 2]).await, items(&[1, 2]));
        assert_eq!(tpl_one(cache, &p, 2).await, Some(item(2)));
        assert_eq!(
            p.asked(),
            vec![asked(&[1]), asked(&[2])],
            "{name}: hits both ways"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Absences: none_ttl
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_ttl_absences_are_hits_both_ways() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        p.set(2, None);
        p.set(5, None);
        // The batch stores 2's absence with none_ttl; the one-key function reads it as None.
        assert_eq!(item_many(cache, &p, &[1, 2]).await, Ok(items(&[1])));
        let ttl = cache.ttl_of(&item_key(cache, 2)).await.unwrap();
        assert!(
            ttl.is_some_and(|t| t <= Duration::from_secs(600) && t > Duration::from_secs(590)),
            "{name}: {ttl:?}"
        );
        assert_eq!(item_one(cache, &p, 2).await, Ok(None));
        assert_eq!(p.asked(), vec![asked(&[1, 2])], "{name}");
        // The one-key function stores 5's absence; the batch leaves it out without asking.
        assert_eq!(item_one(cache, &p, 5).await, Ok(None));
        p.asked();
        assert_eq!(item_many(cache, &p, &[1, 2, 5]).await, Ok(items(&[1])));
        assert!(p.asked().is_empty(), "{name}");
        assert_eq!(cache.stats().hits, 1 + 3, "{name}: absences are hits");
    }
}

#[cached(batch, ttl = 600, prefix = "p-nonone", cache = cache, skip(cache, p))]
async fn no_none_ttl(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, String> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .filter(|&&id| id % 2 == 0)
        .map(|&id| (id, format!("e{id}")))
        .collect()
}

/// Without `none_ttl`, a key left out stores nothing (no entry, no placeholder left) and is
/// asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_none_ttl_a_left_out_key_stores_nothing() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        let want = HashMap::from([(2, "e2".to_owned())]);
        assert_eq!(no_none_ttl(cache, &p, &[1, 2, 3]).await, want);
        for id in [1, 3] {
            let key = format!("{}:p-nonone:{id}", cache.namespace());
            assert_eq!(cache.ttl_of(&key).await.unwrap(), None, "{name}: {key}");
        }
        assert_eq!(no_none_ttl(cache, &p, &[1, 2, 3]).await, want);
        assert_eq!(p.asked(), vec![asked(&[1, 2, 3]), asked(&[1, 3])], "{name}");
    }
}

#[cached(ttl = 600, prefix = "p-plain", cache = cache, skip(cache, p))]
async fn plain_one(cache: &Cache, p: &Probe, id: u64) -> String {
    let _ = p.enter([id]).await;
    format!("plain{id}")
}

#[cached(batch, ttl = 600, none_ttl = 600, prefix = "p-plain", cache = cache, skip(cache, p))]
async fn plain_many(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, String> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .filter(|&&id| id != 2)
        .map(|&id| (id, format!("plain{id}")))
        .collect()
}

/// A one-key function that cannot say `None` (plain `String`) beside a batch storing
/// absences: it must still return its own body's value, never fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_one_key_function_reading_a_batch_absence_loads_its_value() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        assert_eq!(plain_many(cache, &p, &[1, 2]).await.len(), 1);
        assert_eq!(plain_one(cache, &p, 2).await, "plain2", "{name}");
        assert_eq!(plain_one(cache, &p, 1).await, "plain1", "{name}");
        assert_eq!(p.asked(), vec![asked(&[1, 2]), asked(&[2])], "{name}");
        // Whatever the batch returns for 2 now, it is never another key's value.
        let got = plain_many(cache, &p, &[1, 2]).await;
        assert!(got.get(&2).is_none_or(|v| v == "plain2"), "{name}: {got:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 5. Odd bodies: extra keys, fewer keys, repeats, empty input, errors
// ---------------------------------------------------------------------------------------

#[cached(batch, ttl = 600, prefix = "p-extra", cache = cache, skip(cache, p))]
async fn extra(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, String> {
    let _ = p.enter(ids.iter()).await;
    let mut map: HashMap<u64, String> = ids.iter().map(|&id| (id, format!("x{id}"))).collect();
    // Keys it was not asked for, one of them cached already.
    map.insert(999, "intruder".into());
    map.insert(1, "overwritten".into());
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_body_was_not_asked_for_are_ignored() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        let got = extra(cache, &p, &[1]).await;
        assert_eq!(got, HashMap::from([(1, "overwritten".to_owned())]));
        let got = extra(cache, &p, &[1, 2]).await;
        assert_eq!(
            got,
            HashMap::from([(1, "overwritten".to_owned()), (2, "x2".to_owned())]),
            "{name}: 1 is a hit, the body's other value for it is ignored; 999 is not returned"
        );
        let key = format!("{}:p-extra:999", cache.namespace());
        assert_eq!(
            cache.ttl_of(&key).await.unwrap(),
            None,
            "{name}: 999 not stored"
        );
        let got = extra(cache, &p, &[999]).await;
        assert_eq!(got, HashMap::from([(999, "intruder".to_owned())]));
        assert_eq!(p.calls(), 3, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_keys_in_every_collection_shape_are_loaded_once() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        let got = item_many(cache, &p, &[5, 5, 6, 5, 6, 6]).await.unwrap();
        assert_eq!(got, items(&[5, 6]));
        assert_eq!(p.asked(), vec![asked(&[5, 6])], "{name}");
        let got = skey_many(cache, &p, vec!["r".into(), "r".into(), "r".into()]).await;
        assert_eq!(got.len(), 1);
        assert_eq!(p.asked(), vec![asked(&["r"])], "{name}");
        // A repeat of a hit: one hit, no body.
        let before = cache.stats();
        let got = item_many(cache, &p, &[5, 5, 5]).await.unwrap();
        assert_eq!(got, items(&[5]));
        assert!(p.asked().is_empty());
        assert_eq!(cache.stats().hits - before.hits, 1, "{name}: read once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_input_never_calls_the_body_even_with_redis_down() {
    let server = RedisServer::start();
    let down = Cache::redis("redis://127.0.0.1:1/").unwrap();
    let [redis, memory] = caches(&server);
    for cache in [&redis, &memory, &down] {
        let p = Probe::new();
        let t = Instant::now();
        assert_eq!(item_many(cache, &p, &[]).await, Ok(HashMap::new()));
        assert!(skey_many(cache, &p, vec![]).await.is_empty());
        assert!(ekey_many(cache, &p, HashSet::new()).await.is_empty());
        assert!(stkey_many(cache, &p, &BTreeSet::new()).await.is_empty());
        let got: BTreeMap<u64, String> = cache
            .get_many(&GM_EMPTY, Vec::<u64>::new(), |missing| {
                let p = &p;
                async move {
                    p.note(missing.iter());
                    Ok::<_, PErr>(BTreeMap::new())
                }
            })
            .await
            .unwrap();
        assert!(got.is_empty());
        assert_eq!(p.calls(), 0, "{}", cache.backend_name());
        assert!(t.elapsed() < Duration::from_millis(200), "no round trip");
        assert_eq!(cache.stats().errors, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_body_stores_nothing_and_leaves_no_lease() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        item_many(cache, &p, &[1]).await.unwrap();
        p.fail_next.store(1, SeqCst);
        assert_eq!(item_many(cache, &p, &[1, 2, 3]).await, Err(PErr), "{name}");
        assert_eq!(p.asked(), vec![asked(&[1]), asked(&[2, 3])]);
        for id in [2, 3] {
            assert_eq!(
                cache.ttl_of(&item_key(cache, id)).await.unwrap(),
                None,
                "{name}: {id}"
            );
        }
        // The one-key function loads 2 normally, and stores it.
        let t = Instant::now();
        assert_eq!(item_one(cache, &p, 2).await, Ok(Some(item(2))));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{name}: no wait on a dead lease"
        );
        assert_eq!(item_one(cache, &p, 2).await, Ok(Some(item(2))));
        assert_eq!(p.asked(), vec![asked(&[2])], "{name}: stored");
        // 1 stayed cached.
        assert_eq!(
            item_many(cache, &p, &[1, 2, 3]).await,
            Ok(items(&[1, 2, 3]))
        );
        assert_eq!(p.asked(), vec![asked(&[3])], "{name}");
    }
}

/// A one-key call waiting for a batch's load of its key, when the batch body fails: the
/// one-key call loads by itself and gets its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_key_waiter_of_a_failed_batch_loads_by_itself() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let cache = Arc::new(cache);
        let name = cache.backend_name();
        let p = Probe::new();
        p.gate_next.store(1, SeqCst);
        p.fail_next.store(1, SeqCst);
        let batch = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { item_many(&cache, &p, &[1, 2]).await })
        };
        bounded("batch start", p.started.notified()).await;
        let one = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { item_one(&cache, &p, 1).await })
        };
        // Give the one-key call time to join the batch's flight; it must not run yet.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(p.calls(), 1, "{name}: the one-key call waits for the batch");
        p.go.add_permits(1);
        assert_eq!(bounded("batch", batch).await.unwrap(), Err(PErr));
        assert_eq!(
            bounded("one", one).await.unwrap(),
            Ok(Some(item(1))),
            "{name}"
        );
        assert_eq!(cache.stats().waited, 1, "{name}");
    }
}

/// A batch waiting for a one-key load that fails: the batch body runs a second time for
/// that key, returns its value, and does not store it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waiting_for_a_failed_one_key_load_loads_it_again() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let cache = Arc::new(cache);
        let name = cache.backend_name();
        let p = Probe::new();
        p.gate_next.store(1, SeqCst);
        p.fail_next.store(1, SeqCst);
        let one = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { item_one(&cache, &p, 1).await })
        };
        bounded("one start", p.started.notified()).await;
        let batch = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { item_many(&cache, &p, &[1, 2]).await })
        };
        bounded("batch start", p.started.notified()).await;
        p.go.add_permits(1);
        assert_eq!(bounded("one", one).await.unwrap(), Err(PErr));
        assert_eq!(
            bounded("batch", batch).await.unwrap(),
            Ok(items(&[1, 2])),
            "{name}"
        );
        let mut got = p.asked();
        got.sort();
        assert_eq!(got, vec![asked(&[1]), asked(&[1]), asked(&[2])], "{name}");
        // 2 stored, 1 (second run) not.
        assert!(cache.ttl_of(&item_key(&cache, 2)).await.unwrap().is_some());
        assert!(
            until_empty(&cache, &item_key(&cache, 1)).await,
            "{name}: the second run's value is not stored"
        );
        assert_eq!(item_one(&cache, &p, 1).await, Ok(Some(item(1))));
        assert_eq!(item_one(&cache, &p, 1).await, Ok(Some(item(1))));
        assert_eq!(
            p.asked(),
            vec![asked(&[1])],
            "{name}: loads and stores normally after"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 6. Redis down: fail open, never hang
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_every_key_is_loaded_by_the_body() {
    let cache = Cache::redis("redis://127.0.0.1:1/").unwrap();
    let p = Probe::new();
    p.set(3, None);
    for _ in 0..2 {
        let got = bounded("batch on a closed port", item_many(&cache, &p, &[1, 2, 3])).await;
        assert_eq!(got, Ok(items(&[1, 2])));
    }
    assert_eq!(p.asked(), vec![asked(&[1, 2, 3]), asked(&[1, 2, 3])]);
    let got: HashMap<u64, String> = bounded(
        "get_many on a closed port",
        cache.get_many(&GM_DOWN, [1u64, 2], |missing| {
            let p = &p;
            async move {
                p.note(missing.iter());
                Ok::<_, PErr>(missing.iter().map(|&id| (id, format!("g{id}"))).collect())
            }
        }),
    )
    .await
    .unwrap();
    assert_eq!(got, HashMap::from([(1, "g1".into()), (2, "g2".into())]));
    // A body error is still the body's.
    p.fail_next.store(1, SeqCst);
    assert_eq!(bounded("err", item_many(&cache, &p, &[1])).await, Err(PErr));
    let stats = cache.stats();
    assert!(stats.errors >= 1, "{stats:?}");
    assert_eq!(stats.hits, 0);
    assert_eq!(stats.misses, 3 + 3 + 2 + 1, "{stats:?}");
    assert_eq!(stats.loads, 4, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_life_the_batch_still_answers() {
    let mut server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    let p = Probe::new();
    assert_eq!(item_many(&cache, &p, &[1, 2]).await, Ok(items(&[1, 2])));
    server.kill();
    for _ in 0..3 {
        let t = Instant::now();
        let got = bounded("batch after kill", item_many(&cache, &p, &[1, 2, 3])).await;
        assert_eq!(got, Ok(items(&[1, 2, 3])));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    let got = bounded("one-key after kill", item_one(&cache, &p, 4)).await;
    assert_eq!(got, Ok(Some(item(4))));
}

#[cached(batch, ttl = 600, timeout = "150ms", prefix = "p-tmo", cache = cache, skip(cache, p))]
async fn quick(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, String> {
    let _ = p.enter(ids.iter()).await;
    ids.iter().map(|&id| (id, format!("q{id}"))).collect()
}

/// A hung Redis (SIGSTOP): the batch's `timeout` bounds its cache work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_a_batch_at_most_its_timeout() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    let p = Probe::new();
    assert_eq!(quick(&cache, &p, &[1]).await.len(), 1);
    server.pause();
    let t = Instant::now();
    let got = bounded("batch on a hung redis", quick(&cache, &p, &[1, 2, 3])).await;
    let took = t.elapsed();
    server.resume();
    assert_eq!(
        got,
        HashMap::from([(1, "q1".into()), (2, "q2".into()), (3, "q3".into())])
    );
    assert!(
        took < Duration::from_millis(600),
        "took {took:?} with timeout 150ms"
    );
}

// ---------------------------------------------------------------------------------------
// 7. Concurrency
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_batches_and_one_key_calls_load_each_key_once() {
    let server = RedisServer::start();
    let mut failures = Vec::new();
    for cache in caches(&server) {
        let cache = Arc::new(cache);
        let name = cache.backend_name();
        let p = Probe::new();
        p.delay_ms.store(30, SeqCst);
        // Rows 0..40 of each round; every fifth row absent.
        for id in (0..1000).step_by(5) {
            p.set(id, None);
        }
        for round in 0..4u64 {
            let base = round * 100;
            let mut tasks = tokio::task::JoinSet::new();
            for task in 0..24u64 {
                let (cache, p) = (cache.clone(), p.clone());
                tasks.spawn(async move {
                    let start = base + (task * 3) % 30;
                    let ids: Vec<u64> = (start..start + 10).collect();
                    if task % 3 == 0 {
                        for &id in &ids {
                            let got = item_one(&cache, &p, id).await.unwrap();
                            let want = (id % 5 != 0).then(|| item(id));
                            assert_eq!(got, want, "one-key {id}");
                        }
                    } else {
                        let got = item_many(&cache, &p, &ids).await.unwrap();
                        let want: HashMap<u64, Item> = ids
                            .iter()
                            .filter(|&&id| id % 5 != 0)
                            .map(|&id| (id, item(id)))
                            .collect();
                        assert_eq!(got, want, "batch {ids:?}");
                    }
                });
            }
            while let Some(done) = bounded("tasks", tasks.join_next()).await {
                done.unwrap();
            }
        }
        let mut twice = Vec::new();
        for round in 0..4u64 {
            for id in round * 100..round * 100 + 37 {
                let n = p.loads_of(id);
                if n != 1 {
                    twice.push((id, n));
                }
            }
        }
        if !twice.is_empty() {
            failures.push(format!(
                "{name}: {} of 148 keys loaded other than once (key, loads): {twice:?}; waited {}",
                twice.len(),
                cache.stats().waited
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[cached(ttl = 600, prefix = "p-race", cache = cache, skip(cache, p))]
async fn race_one(cache: &Cache, p: &Probe, id: u64) -> String {
    let _ = p.enter([id]).await;
    format!("r{id}")
}

#[cached(batch, ttl = 600, prefix = "p-race", cache = cache, skip(cache, p))]
async fn race_many(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, String> {
    let _ = p.enter(ids.iter()).await;
    ids.iter().map(|&id| (id, format!("r{id}"))).collect()
}

/// The narrow form of the race above, made deterministic: a batch and a one-key call of a
/// function that has been missing (so its read takes the lease, `SET NX GET`) start
/// together on one cold key, the batch first. Single-flight per key says one load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_and_a_one_key_call_starting_together_load_the_key_once() {
    let server = RedisServer::start();
    let mut doubled = Vec::new();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        // Misses make race_one's reads take the lease in the read.
        for id in 1000..1004 {
            race_one(cache, &p, id).await;
        }
        p.delay_ms.store(100, SeqCst);
        for id in 0..10u64 {
            let before = p.loads_of(id);
            let ids = [id];
            let (many, one) = tokio::join!(race_many(cache, &p, &ids), race_one(cache, &p, id));
            assert_eq!(many[&id], format!("r{id}"));
            assert_eq!(one, format!("r{id}"));
            let loads = p.loads_of(id) - before;
            if loads != 1 {
                doubled.push(format!("{name}: key {id} loaded {loads} times"));
            }
        }
    }
    assert!(doubled.is_empty(), "{doubled:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_batches_run_one_body() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let cache = Arc::new(cache);
        let name = cache.backend_name();
        let p = Probe::new();
        p.delay_ms.store(100, SeqCst);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (cache, p) = (cache.clone(), p.clone());
            tasks.spawn(async move { item_many(&cache, &p, &[100, 101, 102, 103]).await });
        }
        while let Some(done) = bounded("tasks", tasks.join_next()).await {
            assert_eq!(done.unwrap(), Ok(items(&[100, 101, 102, 103])));
        }
        assert_eq!(p.calls(), 1, "{name}: {:?}", p.asked());
    }
}

// ---------------------------------------------------------------------------------------
// 8. Cancellation and panics
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cancelled_mid_body_leaves_no_placeholder() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        p.hang_next.store(1, SeqCst);
        let cancelled = timeout(Duration::from_millis(300), item_many(cache, &p, &[1, 2, 3])).await;
        assert!(cancelled.is_err(), "the body hangs");
        for id in [1, 2, 3] {
            assert!(
                until_empty(cache, &item_key(cache, id)).await,
                "{name}: {id}'s lease given up"
            );
        }
        // A dropped holder gives its leases up from a spawned task (best effort, as for a
        // one-key load); the embedded backend's `ttl_of` does not show placeholders, so
        // give that task a moment rather than watch for it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        assert_eq!(item_one(cache, &p, 1).await, Ok(Some(item(1))));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{name}: {:?}",
            t.elapsed()
        );
        assert_eq!(item_one(cache, &p, 1).await, Ok(Some(item(1))));
        assert_eq!(
            item_many(cache, &p, &[1, 2, 3]).await,
            Ok(items(&[1, 2, 3]))
        );
        assert_eq!(
            item_many(cache, &p, &[1, 2, 3]).await,
            Ok(items(&[1, 2, 3]))
        );
        assert_eq!(
            p.asked(),
            vec![asked(&[1, 2, 3]), asked(&[1]), asked(&[2, 3])],
            "{name}: everything stored normally after the cancellation"
        );
    }
}

/// A batch cancelled while the keys it leads are waited for by one-key calls: the waiters
/// load by themselves, promptly (not after `flight_wait`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_a_cancelled_batch_load_by_themselves() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let cache = Arc::new(cache);
        let name = cache.backend_name();
        let p = Probe::new();
        p.hang_next.store(1, SeqCst);
        let batch = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { item_many(&cache, &p, &[1, 2]).await })
        };
        bounded("batch start", p.started.notified()).await;
        let one = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { item_one(&cache, &p, 2).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        batch.abort();
        assert_eq!(
            bounded("one", one).await.unwrap(),
            Ok(Some(item(2))),
            "{name}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{name}: {:?}",
            t.elapsed()
        );
    }
}

/// A one-key leader cancelled while a batch waits for its key: the batch loads the key in a
/// second body call and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waiting_for_a_cancelled_one_key_load_answers() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let cache = Arc::new(cache);
        let name = cache.backend_name();
        let p = Probe::new();
        p.hang_next.store(1, SeqCst);
        let one = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { item_one(&cache, &p, 1).await })
        };
        bounded("one start", p.started.notified()).await;
        p.delay_ms.store(100, SeqCst);
        let batch = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { item_many(&cache, &p, &[1, 2]).await })
        };
        bounded("batch start", p.started.notified()).await;
        one.abort();
        let t = Instant::now();
        assert_eq!(
            bounded("batch", batch).await.unwrap(),
            Ok(items(&[1, 2])),
            "{name}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{name}: {:?}",
            t.elapsed()
        );
        p.delay_ms.store(0, SeqCst);
        assert!(until_empty(&cache, &item_key(&cache, 1)).await, "{name}");
        assert_eq!(item_one(&cache, &p, 1).await, Ok(Some(item(1))));
        p.asked();
        assert_eq!(item_one(&cache, &p, 1).await, Ok(Some(item(1))));
        assert!(p.asked().is_empty(), "{name}: stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_batch_body_leaves_the_keys_usable() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let cache = Arc::new(cache);
        let name = cache.backend_name();
        let p = Probe::new();
        p.panic_next.store(1, SeqCst);
        let batch = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { item_many(&cache, &p, &[1, 2]).await })
        };
        let joined = bounded("batch", batch).await;
        assert!(joined.unwrap_err().is_panic());
        for id in [1, 2] {
            assert!(
                until_empty(&cache, &item_key(&cache, id)).await,
                "{name}: {id}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(item_one(&cache, &p, 1).await, Ok(Some(item(1))));
        assert_eq!(item_many(&cache, &p, &[1, 2]).await, Ok(items(&[1, 2])));
        assert_eq!(item_many(&cache, &p, &[1, 2]).await, Ok(items(&[1, 2])));
        assert_eq!(
            p.asked(),
            vec![asked(&[1, 2]), asked(&[1]), asked(&[2])],
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 9. Counters
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_per_key_hits_and_misses_and_one_load_per_body() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        p.set(4, None);
        let s = |c: &Cache| {
            let s = c.stats();
            (s.hits, s.misses, s.loads)
        };
        item_many(cache, &p, &[1, 2, 3, 4]).await.unwrap();
        assert_eq!(s(cache), (0, 4, 1), "{name}");
        item_many(cache, &p, &[1, 2, 3, 4]).await.unwrap();
        assert_eq!(s(cache), (4, 4, 1), "{name}: the absence is a hit");
        item_many(cache, &p, &[3, 4, 5, 6]).await.unwrap();
        assert_eq!(s(cache), (6, 6, 2), "{name}");
        item_many(cache, &p, &[7, 7, 7]).await.unwrap();
        assert_eq!(s(cache), (6, 7, 3), "{name}: a repeated key is one miss");
        item_one(cache, &p, 7).await.unwrap();
        assert_eq!(s(cache), (7, 7, 3), "{name}");
        p.fail_next.store(1, SeqCst);
        item_many(cache, &p, &[8, 9]).await.unwrap_err();
        assert_eq!(s(cache), (7, 9, 4), "{name}");
        assert_eq!(cache.stats().errors, 0, "{name}");
        let by_fn = cache.stats_by_function();
        let batch = by_fn
            .iter()
            .find(|f| f.function.contains("item_many"))
            .expect("item_many's figures");
        assert_eq!(
            (batch.stats.hits, batch.stats.misses, batch.stats.loads),
            (6, 9, 4),
            "{name}: {by_fn:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 10. Cache::get_many
// ---------------------------------------------------------------------------------------

static GM_EMPTY: Batch = Batch::new("p-gmempty").ttl(Duration::from_secs(600));
static GM_DOWN: Batch = Batch::new("p-gmdown").ttl(Duration::from_secs(600));

static GM_NAMES: Batch = Batch::new("p-gm")
    .ttl(Duration::from_secs(600))
    .none_ttl(Duration::from_secs(600));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_with_btreemap_and_string_keys() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        let load = |missing: Vec<String>| {
            let p = &p;
            async move {
                p.note(missing.iter());
                let mut map: BTreeMap<String, u64> = missing
                    .iter()
                    .filter(|k| !k.starts_with("absent"))
                    .map(|k| (k.clone(), k.len() as u64))
                    .collect();
                map.insert("not-asked".into(), 0);
                Ok::<_, PErr>(map)
            }
        };
        let keys = ["a:b", "{c}", "*", "", "absent1", "a:b"].map(String::from);
        let want = BTreeMap::from([
            ("".to_owned(), 0),
            ("*".to_owned(), 1),
            ("a:b".to_owned(), 3),
            ("{c}".to_owned(), 3),
        ]);
        let got: BTreeMap<String, u64> =
            cache.get_many(&GM_NAMES, keys.clone(), load).await.unwrap();
        assert_eq!(got, want, "{name}");
        let got: BTreeMap<String, u64> =
            cache.get_many(&GM_NAMES, keys.clone(), load).await.unwrap();
        assert_eq!(got, want, "{name}: hits and a cached absence");
        assert_eq!(
            p.asked(),
            vec![asked(&["", "*", "a:b", "absent1", "{c}"])],
            "{name}"
        );
        // The same key a one-key function with prefix "p-gm" and a &str argument uses.
        let key = gm_one_cache_key(cache, "a:b").unwrap();
        assert!(cache.ttl_of(&key).await.unwrap().is_some(), "{name}: {key}");
        assert_eq!(gm_one(cache, &p, "a:b").await, Some(3));
        assert_eq!(gm_one(cache, &p, "absent1").await, None);
        assert!(
            p.asked().is_empty(),
            "{name}: the one-key function hits get_many's entries"
        );
        // An error is the load's, as is.
        let got: Result<BTreeMap<String, u64>, &str> = cache
            .get_many(&GM_NAMES, ["new".to_owned()], |_| async { Err("db down") })
            .await;
        assert_eq!(got, Err("db down"));
    }
}

#[cached(ttl = 600, none_ttl = 600, prefix = "p-gm", cache = cache, skip(cache, p))]
async fn gm_one(cache: &Cache, p: &Probe, name: &str) -> Option<u64> {
    let _ = p.enter([name]).await;
    (!name.starts_with("absent")).then_some(name.len() as u64)
}

static GM_OPTS: Batch = Batch::new("p-gmopt")
    .ttl(Duration::from_secs(100))
    .jitter(0.5)
    .timeout(Duration::from_millis(500))
    .max_value_bytes(64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_options_jitter_and_max_value_bytes() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        let load = |missing: Vec<u64>| {
            let p = &p;
            async move {
                p.note(missing.iter());
                let map: HashMap<u64, String> = missing
                    .iter()
                    .map(|&id| {
                        let v = if id == 0 {
                            "L".repeat(200)
                        } else {
                            format!("s{id}")
                        };
                        (id, v)
                    })
                    .collect();
                Ok::<_, PErr>(map)
            }
        };
        let ids: Vec<u64> = (0..30).collect();
        for _ in 0..2 {
            let got: HashMap<u64, String> =
                cache.get_many(&GM_OPTS, ids.clone(), load).await.unwrap();
            assert_eq!(got.len(), 30);
            assert_eq!(got[&0], "L".repeat(200), "{name}: oversized is returned");
        }
        assert_eq!(
            p.asked(),
            vec![asked(&ids), asked(&[0])],
            "{name}: oversized not stored"
        );
        assert!(cache.stats().oversized >= 1, "{name}");
        let mut ttls = Vec::new();
        for id in 1..30 {
            let key = format!("{}:p-gmopt:{id}", cache.namespace());
            ttls.push(cache.ttl_of(&key).await.unwrap().expect("stored"));
        }
        let (lo, hi) = (ttls.iter().min().unwrap(), ttls.iter().max().unwrap());
        assert!(*lo >= Duration::from_secs(49), "{name}: {lo:?}");
        assert!(*hi <= Duration::from_secs(150), "{name}: {hi:?}");
        assert!(
            *hi - *lo > Duration::from_secs(5),
            "{name}: jitter spreads: {lo:?}..{hi:?}"
        );
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Price {
    cents: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Stock {
    cents: u64,
}

static GM_TWO: Batch = Batch::new("p-gm2").ttl(Duration::from_secs(600));
static GM_TWIN_A: Batch = Batch::new("p-gm3").ttl(Duration::from_secs(600));
static GM_TWIN_B: Batch = Batch::new("p-gm3").ttl(Duration::from_secs(600));

/// One `Batch` static used for two value types, and two statics of one prefix with two
/// value types: the entries of one type must never be handed out as the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_never_hands_one_types_entries_to_another() {
    let server = RedisServer::start();
    let mut wrong = Vec::new();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        for (a, b, label) in [
            (&GM_TWO, &GM_TWO, "one static, two types"),
            (
                &GM_TWIN_A,
                &GM_TWIN_B,
                "two statics of one prefix, two types",
            ),
        ] {
            let prices: HashMap<u64, Price> = cache
                .get_many(a, [1u64], |m| async move {
                    Ok::<_, PErr>(m.iter().map(|&id| (id, Price { cents: 100 })).collect())
                })
                .await
                .unwrap();
            assert_eq!(prices[&1], Price { cents: 100 });
            let stock: HashMap<u64, Stock> = cache
                .get_many(b, [1u64], |m| async move {
                    Ok::<_, PErr>(m.iter().map(|&id| (id, Stock { cents: 7 })).collect())
                })
                .await
                .unwrap();
            if stock[&1] != (Stock { cents: 7 }) {
                wrong.push(format!(
                    "{name}, {label}: got {:?}, the Price's entry",
                    stock[&1]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

// ---------------------------------------------------------------------------------------
// 11. Another type under the same keys
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Cents {
    cents: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Coins {
    cents: u64,
}

#[cached(batch, ttl = 600, prefix = "p-mm", cache = cache, skip(cache, p))]
async fn mm_many(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, Coins> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .map(|&id| (id, Coins { cents: id * 1000 }))
        .collect()
}

#[cached(ttl = 600, prefix = "p-mm", cache = cache, skip(cache, p))]
async fn mm_one(cache: &Cache, p: &Probe, id: u64) -> Option<Cents> {
    let _ = p.enter([id]).await;
    Some(Cents { cents: id * 10 })
}

/// The batch runs first this time; the types are alike in JSON, so a shared entry would
/// decode: only the check keeps the values apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_and_a_one_key_function_of_lookalike_types_never_mix() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        for _ in 0..3 {
            let got = mm_many(cache, &p, &[1, 2]).await;
            assert_eq!(got[&1], Coins { cents: 1000 }, "{name}");
            assert_eq!(got[&2], Coins { cents: 2000 }, "{name}");
            assert_eq!(
                mm_one(cache, &p, 1).await,
                Some(Cents { cents: 10 }),
                "{name}"
            );
            assert_eq!(
                mm_one(cache, &p, 2).await,
                Some(Cents { cents: 20 }),
                "{name}"
            );
        }
    }
}

#[cached(batch, ttl = 600, prefix = "p-bb", cache = cache, skip(cache, p))]
async fn bb_coins(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, Coins> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .map(|&id| (id, Coins { cents: id * 1000 }))
        .collect()
}

#[cached(batch, ttl = 600, prefix = "p-bb", cache = cache, skip(cache, p))]
async fn bb_cents(cache: &Cache, p: &Probe, ids: Vec<u64>) -> BTreeMap<u64, Cents> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .map(|&id| (id, Cents { cents: id * 10 }))
        .collect()
}

/// Two batch functions of one prefix, storing lookalike types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batches_of_one_prefix_and_lookalike_types_never_mix() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        for _ in 0..3 {
            assert_eq!(
                bb_coins(cache, &p, &[1]).await[&1],
                Coins { cents: 1000 },
                "{name}"
            );
            assert_eq!(
                bb_cents(cache, &p, vec![1]).await[&1],
                Cents { cents: 10 },
                "{name}"
            );
        }
    }
}

#[cached(ttl = 600, key = "p-mtpl:v{id}", cache = cache, skip(cache, p))]
async fn mtpl_one(cache: &Cache, p: &Probe, id: u64) -> Cents {
    let _ = p.enter([id]).await;
    Cents { cents: id * 10 }
}

#[cached(batch, ttl = 600, prefix = "p-mtpl", cache = cache, skip(cache, p))]
async fn mtpl_many(cache: &Cache, p: &Probe, names: &[String]) -> HashMap<String, Coins> {
    let _ = p.enter(names.iter()).await;
    names
        .iter()
        .map(|n| {
            (
                n.clone(),
                Coins {
                    cents: n.len() as u64,
                },
            )
        })
        .collect()
}

/// A batch keyed by strings beside a one-key template `"p-mtpl:v{id}"`: `"v7"` and `7`
/// render one key. Neither may return the other's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_keys_meet_another_layout_never_mixes() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        for _ in 0..2 {
            assert_eq!(mtpl_one(cache, &p, 7).await, Cents { cents: 70 }, "{name}");
            let got = mtpl_many(cache, &p, &["v7".to_owned()]).await;
            assert_eq!(got["v7"], Coins { cents: 2 }, "{name}");
        }
    }
}

/// A batch running uncached (another type under its keys) still keeps its promises about
/// what it returns: only keys asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncached_batch_returns_only_the_keys_asked_for() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    let p = Probe::new();
    // Make p-xu's pair mismatch (see xu_one / xu_many).
    xu_one(&cache, &p, 1).await;
    let got = xu_many(&cache, &p, &[1, 1, 2]).await;
    assert_eq!(p.calls(), 2);
    assert_eq!(p.asked()[1], asked(&[1, 2]), "repeated keys loaded once");
    assert_eq!(
        got.keys().copied().collect::<BTreeSet<u64>>(),
        BTreeSet::from([1, 2]),
        "a key the body returned but was not asked for is ignored: {got:?}"
    );
}

#[cached(ttl = 600, prefix = "p-xu", cache = cache, skip(cache, p))]
async fn xu_one(cache: &Cache, p: &Probe, id: u64) -> u64 {
    let _ = p.enter([id]).await;
    id
}

#[cached(batch, ttl = 600, prefix = "p-xu", cache = cache, skip(cache, p))]
async fn xu_many(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, String> {
    let _ = p.enter(ids.iter()).await;
    let mut map: HashMap<u64, String> = ids.iter().map(|&id| (id, format!("u{id}"))).collect();
    map.insert(999, "intruder".into());
    map
}

// ---------------------------------------------------------------------------------------
// 12. Options on the attribute: ttl, none_ttl expiry, jitter, max_value_bytes
// ---------------------------------------------------------------------------------------

#[cached(batch, ttl = "200ms", none_ttl = "200ms", prefix = "p-short", cache = cache, skip(cache, p))]
async fn short(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, String> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .filter(|&&id| id != 2)
        .map(|&id| (id, format!("s{id}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_and_none_ttl_expire() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        short(cache, &p, &[1, 2]).await;
        short(cache, &p, &[1, 2]).await;
        assert_eq!(p.calls(), 1, "{name}: both cached (2 as an absence)");
        tokio::time::sleep(Duration::from_millis(450)).await;
        let got = short(cache, &p, &[1, 2]).await;
        assert_eq!(got, HashMap::from([(1, "s1".to_owned())]));
        assert_eq!(p.calls(), 2, "{name}: both expired");
    }
}

#[cached(batch, ttl = 100, jitter = 0.5, max_value_bytes = 64, prefix = "p-opt", cache = cache, skip(cache, p))]
async fn with_opts(cache: &Cache, p: &Probe, ids: BTreeSet<u64>) -> HashMap<u64, String> {
    let _ = p.enter(ids.iter()).await;
    ids.iter()
        .map(|&id| {
            (
                id,
                if id == 0 {
                    "L".repeat(300)
                } else {
                    format!("o{id}")
                },
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_and_max_value_bytes_on_the_attribute() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        let ids: BTreeSet<u64> = (0..30).collect();
        for _ in 0..2 {
            let got = with_opts(cache, &p, ids.clone()).await;
            assert_eq!(got.len(), 30);
            assert_eq!(got[&0].len(), 300, "{name}");
        }
        assert_eq!(
            p.asked(),
            vec![asked(&(0..30).collect::<Vec<_>>()), asked(&[0])],
            "{name}"
        );
        assert!(cache.stats().oversized >= 1);
        let mut ttls = Vec::new();
        for id in 1..30 {
            let key = format!("{}:p-opt:{id}", cache.namespace());
            ttls.push(cache.ttl_of(&key).await.unwrap().expect("stored"));
        }
        let (lo, hi) = (ttls.iter().min().unwrap(), ttls.iter().max().unwrap());
        assert!(*lo >= Duration::from_secs(49), "{name}: {lo:?}");
        assert!(*hi <= Duration::from_secs(151), "{name}: {hi:?}");
        assert!(*hi - *lo > Duration::from_secs(5), "{name}: {lo:?}..{hi:?}");
    }
}

#[cached(batch, ttl = 600, prefix = "p-nodef", skip(p))]
async fn nodefault_many(p: &Probe, ids: &[u64]) -> HashMap<u64, String> {
    let _ = p.enter(ids.iter()).await;
    ids.iter().map(|&id| (id, format!("d{id}"))).collect()
}

/// No default cache is ever set in this test binary: the batch runs uncached. A key
/// repeated in the argument is still "loaded once".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_default_cache_repeated_keys_still_reach_the_body_once() {
    let p = Probe::new();
    let got = nodefault_many(&p, &[1, 1, 2]).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        p.asked(),
        vec![asked(&[1, 2])],
        "the body was handed the repeat"
    );
}

// ---------------------------------------------------------------------------------------
// 13. More: flight_wait, methods, corrupt entries
// ---------------------------------------------------------------------------------------

#[cached(ttl = 600, prefix = "p-fw", cache = cache, skip(cache, p))]
async fn fw_one(cache: &Cache, p: &Probe, id: u64) -> String {
    let _ = p.enter([id]).await;
    format!("f{id}")
}

#[cached(batch, ttl = 600, flight_wait = "200ms", prefix = "p-fw", cache = cache, skip(cache, p))]
async fn fw_many(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, String> {
    let _ = p.enter(ids.iter()).await;
    ids.iter().map(|&id| (id, format!("f{id}"))).collect()
}

/// A one-key load that never ends (its caller stopped polling it is not cancelled): the
/// batch waits `flight_wait` for that key, then loads it itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_wait_bounds_a_batch_waiting_for_a_stuck_load() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let cache = Arc::new(cache);
        let name = cache.backend_name();
        let p = Probe::new();
        p.hang_next.store(1, SeqCst);
        let stuck = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { fw_one(&cache, &p, 1).await })
        };
        bounded("stuck start", p.started.notified()).await;
        let t = Instant::now();
        let got = bounded("batch", fw_many(&cache, &p, &[1, 2])).await;
        let took = t.elapsed();
        assert_eq!(
            got,
            HashMap::from([(1, "f1".into()), (2, "f2".into())]),
            "{name}"
        );
        assert!(
            took >= Duration::from_millis(190),
            "{name}: waited {took:?}"
        );
        assert!(
            took < Duration::from_millis(1500),
            "{name}: waited {took:?}"
        );
        assert!(
            cache.stats().flight_timeouts >= 1,
            "{name}: {:?}",
            cache.stats()
        );
        stuck.abort();
    }
}

struct Repo {
    cache: Cache,
    p: Arc<Probe>,
}

impl Repo {
    #[cached(ttl = 600, prefix = "p-meth", cache = self.cache)]
    async fn one(&self, id: u64) -> Option<Item> {
        let _ = self.p.enter([id]).await;
        self.p.item(id)
    }

    #[cached(batch, ttl = 600, prefix = "p-meth", cache = self.cache)]
    async fn many(&self, ids: &BTreeSet<u64>) -> BTreeMap<u64, Item> {
        let _ = self.p.enter(ids.iter()).await;
        ids.iter()
            .filter_map(|&id| Some((id, self.p.item(id)?)))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_methods_share_entries_with_one_key_methods() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let name = cache.backend_name();
        let repo = Repo {
            cache,
            p: Probe::new(),
        };
        assert_eq!(repo.one(1).await, Some(item(1)));
        let got = repo.many(&BTreeSet::from([1, 2, 3])).await;
        assert_eq!(got.len(), 3);
        assert_eq!(repo.one(3).await, Some(item(3)));
        assert_eq!(repo.p.asked(), vec![asked(&[1]), asked(&[2, 3])], "{name}");
    }
}

/// A key of a batch holding a list (written by something else): the batch returns the
/// body's values, and the key is replaced by an entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_key_of_another_type_is_replaced() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    let p = Probe::new();
    let mut conn = server.conn();
    let key = item_key(&cache, 1);
    let _: () = redis::cmd("RPUSH")
        .arg(&key)
        .arg("x")
        .query(&mut conn)
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(item_many(&cache, &p, &[1, 2]).await, Ok(items(&[1, 2])));
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
        if kind == "string" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the key is still a {kind}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An entry that is not ours (written by hand) under a batch key: a miss, replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_entry_under_a_batch_key_is_a_miss_and_is_replaced() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    let p = Probe::new();
    let mut conn = server.conn();
    let key = item_key(&cache, 1);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("garbage")
        .query(&mut conn)
        .unwrap();
    // A valid envelope, but of another type (a bare string where an Item belongs).
    let other = cache_aside_runtime::inspect::encode(
        cache_aside_runtime::inspect::Codec::Json,
        Some(&"not an item".to_owned()),
        None,
    )
    .unwrap();
    let _: () = redis::cmd("SET")
        .arg(item_key(&cache, 2))
        .arg(other)
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        item_many(&cache, &p, &[1, 2, 3]).await,
        Ok(items(&[1, 2, 3]))
    );
    assert!(cache.stats().corrupt >= 2, "{:?}", cache.stats());
    assert_eq!(
        item_many(&cache, &p, &[1, 2, 3]).await,
        Ok(items(&[1, 2, 3]))
    );
    assert_eq!(p.asked(), vec![asked(&[1, 2, 3])], "replaced, then hits");
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Skippy {
    a: u32,
    #[serde(skip)]
    b: u32,
}

#[cached(batch, ttl = 600, prefix = "p-skip", cache = cache, skip(cache, p))]
async fn skippy_many(cache: &Cache, p: &Probe, ids: &[u64]) -> HashMap<u64, Skippy> {
    let _ = p.enter(ids.iter()).await;
    ids.iter().map(|&id| (id, Skippy { a: 1, b: 7 })).collect()
}

static GM_SKIP: Batch = Batch::new("p-gmskip").ttl(Duration::from_secs(600));

/// A value whose `#[serde(skip)]` field would come back as its default: "returned, not
/// stored, as for any function" — by `#[cached(batch)]` and by `Cache::get_many`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_would_not_read_back_exactly_is_never_a_hit() {
    let server = RedisServer::start();
    let mut wrong = Vec::new();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        for round in 0..2 {
            let got = skippy_many(cache, &p, &[1]).await;
            if got[&1] != (Skippy { a: 1, b: 7 }) {
                wrong.push(format!(
                    "{name} #[cached(batch)] round {round}: {:?}",
                    got[&1]
                ));
            }
            let got: HashMap<u64, Skippy> = cache
                .get_many(&GM_SKIP, [1u64], |m| async move {
                    Ok::<_, PErr>(m.iter().map(|&id| (id, Skippy { a: 1, b: 7 })).collect())
                })
                .await
                .unwrap();
            if got[&1] != (Skippy { a: 1, b: 7 }) {
                wrong.push(format!("{name} get_many round {round}: {:?}", got[&1]));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// A `#[cache_put]` while the batch body runs wins: the batch returns what its body read,
/// stores nothing over the put, and the next reads get the put value without a load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_during_a_batch_body_wins() {
    let server = RedisServer::start();
    for cache in caches(&server) {
        let cache = Arc::new(cache);
        let name = cache.backend_name();
        let p = Probe::new();
        p.gate_next.store(1, SeqCst);
        let batch = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { item_many(&cache, &p, &[1, 2]).await })
        };
        bounded("batch start", p.started.notified()).await;
        item_save(&cache, &p, 1, Some("put")).await.unwrap();
        // The body reads its rows after the gate: make what it reads differ from the put,
        // as a row read before the write would.
        p.set(1, Some("read-before-the-put"));
        p.go.add_permits(1);
        let got = bounded("batch", batch).await.unwrap().unwrap();
        assert_eq!(
            got[&1].name, "read-before-the-put",
            "{name}: its caller gets its body's value"
        );
        p.asked();
        let got = item_many(&cache, &p, &[1, 2]).await.unwrap();
        assert_eq!(got[&1].name, "put", "{name}: the put won");
        assert_eq!(item_one(&cache, &p, 1).await.unwrap().unwrap().name, "put");
        assert!(p.asked().is_empty(), "{name}: 2 stored, 1 is the put's");
        assert!(cache.stats().fills_dropped >= 1, "{name}");
    }
}

/// A body slower than `timeout`: the cache's time budget is not spent by the body, so the
/// values are still stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_timeout_still_stores() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let name = cache.backend_name();
        let p = Probe::new();
        p.delay_ms.store(400, SeqCst);
        assert_eq!(quick(cache, &p, &[7, 8]).await.len(), 2);
        p.delay_ms.store(0, SeqCst);
        assert_eq!(quick(cache, &p, &[7, 8]).await.len(), 2);
        assert_eq!(
            p.calls(),
            1,
            "{name}: stored after a 400 ms body with timeout 150 ms"
        );
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Unkeyable(u64);

impl Serialize for Unkeyable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this key does not serialize"))
    }
}

#[cached(batch, ttl = 600, prefix = "p-unkey", cache = cache, skip(cache, p))]
async fn unkeyable(cache: &Cache, p: &Probe, ks: &[Unkeyable]) -> HashMap<Unkeyable, u64> {
    let _ = p.enter(ks.iter()).await;
    ks.iter().map(|k| (k.clone(), k.0 * 2)).collect()
}

/// A key that fails to serialize: the batch runs uncached, the values are the body's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_serialize_runs_the_batch_uncached() {
    let server = RedisServer::start();
    for cache in &caches(&server) {
        let p = Probe::new();
        let got = unkeyable(cache, &p, &[Unkeyable(1), Unkeyable(2)]).await;
        assert_eq!(got, HashMap::from([(Unkeyable(1), 2), (Unkeyable(2), 4)]));
        unkeyable(cache, &p, &[Unkeyable(1), Unkeyable(2)]).await;
        assert_eq!(p.calls(), 2);
        assert!(cache.stats().errors >= 1, "{:?}", cache.stats());
    }
}

/// The body's second call (for a key whose waited-for load failed) fails: the call returns
/// the `Err`. "An `Err` from the body is returned as is, and nothing is stored."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_err_from_the_second_body_call_is_returned_and_stores_none_of_its_keys() {
    let server = RedisServer::start();
    let mut stored = Vec::new();
    for cache in caches(&server) {
        let cache = Arc::new(cache);
        let name = cache.backend_name();
        let p = Probe::new();
        p.gate_next.store(1, SeqCst);
        p.fail_next.store(1, SeqCst);
        let one = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { item_one(&cache, &p, 1).await })
        };
        bounded("one start", p.started.notified()).await;
        let batch = {
            let (cache, p) = (cache.clone(), p.clone());
            tokio::spawn(async move { item_many(&cache, &p, &[1, 2]).await })
        };
        bounded("batch start", p.started.notified()).await;
        // The batch's first body (key 2) has started: the next body, its second (key 1),
        // fails.
        p.fail_next.store(1, SeqCst);
        p.go.add_permits(1);
        assert_eq!(bounded("one", one).await.unwrap(), Err(PErr));
        assert_eq!(bounded("batch", batch).await.unwrap(), Err(PErr), "{name}");
        // Key 1, the failed second call's, is not stored; key 2, the first call's, was
        // stored when that call returned (as the docs say).
        if !until_empty(&cache, &item_key(&cache, 1)).await {
            stored.push(format!(
                "{name}: key 1 stored by the call that returned Err"
            ));
        }
        if cache.ttl_of(&item_key(&cache, 2)).await.unwrap().is_none() {
            stored.push(format!(
                "{name}: key 2, loaded by the first call, was not stored"
            ));
        }
    }
    assert!(stored.is_empty(), "{stored:#?}");
}
