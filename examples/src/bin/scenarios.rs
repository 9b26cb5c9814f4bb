//! The six scenarios of the specs' Python implementation, each printed with its timings:
//! `cargo run -p cache-aside-examples --bin scenarios`.
//!
//! 1. basic cache-aside (a miss, then a hit)   4. TTL expiry
//! 2. invalidation after an update             5. pattern (prefix) invalidation
//! 3. multiple keys                            6. error handling with Redis down
//!
//! Runs on the embedded cache, or on Redis with `REDIS_URL=redis://127.0.0.1:6379/`;
//! scenario 6 always points a second cache at a closed loopback port. Each scenario checks
//! what it shows: the process exits non-zero if one does not hold.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cached};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Product {
    id: u64,
    name: String,
    price_cents: u64,
}

/// The specs' mock data store: a slow table that counts its reads.
struct Store {
    rows: Mutex<HashMap<u64, Product>>,
    reads: AtomicU64,
    latency: Duration,
}

impl Store {
    fn new() -> Store {
        let rows = (1..=100)
            .map(|id| {
                let name = format!("product {id}");
                let product = Product {
                    id,
                    name,
                    price_cents: 100 * id,
                };
                (id, product)
            })
            .collect();
        Store {
            rows: Mutex::new(rows),
            reads: AtomicU64::new(0),
            latency: Duration::from_millis(20),
        }
    }

    async fn get(&self, id: u64) -> Option<Product> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.latency).await;
        self.rows.lock().unwrap().get(&id).cloned()
    }

    fn update(&self, id: u64, price_cents: u64) {
        if let Some(row) = self.rows.lock().unwrap().get_mut(&id) {
            row.price_cents = price_cents;
        }
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

#[cached(ttl = 300, none_ttl = 30, prefix = "product", cache = cache, skip(cache, store))]
async fn get_product(cache: &Cache, store: &Store, id: u64) -> Option<Product> {
    store.get(id).await
}

#[cached(ttl = "1s", prefix = "price", cache = cache, skip(cache, store))]
async fn get_price(cache: &Cache, store: &Store, id: u64) -> Option<u64> {
    store.get(id).await.map(|p| p.price_cents)
}

/// `f` timed.
async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Checks one claim of a scenario; a failed one is printed and fails the run.
fn check(ok: &mut bool, holds: bool, what: &str) {
    if !holds {
        println!("   FAILED: {what}");
        *ok = false;
    }
}

async fn basic(cache: &Cache, store: &Store) -> bool {
    let mut ok = true;
    let reads = store.reads();
    let (first, miss) = timed(get_product(cache, store, 1)).await;
    let (second, hit) = timed(get_product(cache, store, 1)).await;
    println!("   miss {} (the store was read), hit {}", ms(miss), ms(hit));
    check(
        &mut ok,
        first == second && first.is_some(),
        "the hit returns the miss's value",
    );
    check(
        &mut ok,
        store.reads() == reads + 1,
        "the store is read once",
    );
    ok
}

async fn invalidation(cache: &Cache, store: &Store) -> bool {
    let mut ok = true;
    let before = get_product(cache, store, 2).await.map(|p| p.price_cents);
    store.update(2, 999);
    let (removed, took) = timed(get_product_invalidate(cache, 2)).await;
    let after = get_product(cache, store, 2).await.map(|p| p.price_cents);
    println!(
        "   price {before:?} -> update -> invalidate ({}, removed: {removed:?}) -> {after:?}",
        ms(took)
    );
    check(
        &mut ok,
        removed.as_ref().is_ok_and(|r| *r),
        "the entry was there and is removed",
    );
    check(
        &mut ok,
        after == Some(999),
        "the next read has the new price",
    );
    ok
}

async fn multiple_keys(cache: &Cache, store: &Store) -> bool {
    let mut ok = true;
    let ids: Vec<u64> = (10..60).collect();
    let reads = store.reads();
    let ((), cold) = timed(async {
        for &id in &ids {
            get_product(cache, store, id).await;
        }
    })
    .await;
    let ((), warm) = timed(async {
        for &id in &ids {
            get_product(cache, store, id).await;
        }
    })
    .await;
    println!(
        "   {} keys: first pass {} (all misses), second {} (all hits)",
        ids.len(),
        ms(cold),
        ms(warm)
    );
    check(
        &mut ok,
        store.reads() == reads + ids.len() as u64,
        "one store read per key",
    );
    check(&mut ok, warm < cold, "the warm pass is faster");
    ok
}

async fn ttl_expiry(cache: &Cache, store: &Store) -> bool {
    let mut ok = true;
    get_price(cache, store, 3).await;
    let key = get_price_cache_key(cache, 3).unwrap();
    let left = cache.ttl_of(&key).await.ok().flatten();
    let reads = store.reads();
    get_price(cache, store, 3).await;
    let hit = store.reads() == reads;
    // Waiting out the 1 s TTL is the scenario.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, reload) = timed(get_price(cache, store, 3)).await;
    println!(
        "   key {key}: {left:?} left, a hit before expiry, a reload after ({})",
        ms(reload)
    );
    check(
        &mut ok,
        left.is_some_and(|l| l <= Duration::from_millis(1100)),
        "a TTL of about 1 s",
    );
    check(&mut ok, hit, "a hit before expiry");
    check(&mut ok, store.reads() == reads + 1, "a reload after expiry");
    ok
}

async fn pattern_invalidation(cache: &Cache, store: &Store) -> bool {
    let mut ok = true;
    for id in 70..80 {
        get_product(cache, store, id).await;
    }
    get_price(cache, store, 70).await;
    let (removed, took) = timed(get_product_invalidate_all(cache)).await;
    let reads = store.reads();
    get_product(cache, store, 75).await;
    let reloaded = store.reads() == reads + 1;
    get_price(cache, store, 70).await;
    let price_kept = store.reads() == reads + 1;
    println!(
        "   every `product` entry removed: {removed:?} in {}",
        ms(took)
    );
    check(
        &mut ok,
        removed.as_ref().is_ok_and(|n| *n >= 10),
        "at least the ten entries",
    );
    check(&mut ok, reloaded, "a removed entry reloads");
    check(&mut ok, price_kept, "another function's entries stay");
    ok
}

async fn redis_down(store: &Store) -> bool {
    let mut ok = true;
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    let down = Cache::builder()
        .namespace("scenarios-down")
        .timeout(Duration::from_millis(100))
        .redis(&format!("redis://127.0.0.1:{port}/"));
    let Ok(down) = down else {
        println!("   FAILED: building a cache for an unreachable Redis: {down:?}");
        return false;
    };
    let (value, took) = timed(get_product(&down, store, 4)).await;
    let (again, took_again) = timed(get_product(&down, store, 4)).await;
    let stats = down.stats();
    println!(
        "   Redis at 127.0.0.1:{port} is down: calls answered from the store in {} and {}; \
         {} cache errors counted, breaker {:?}",
        ms(took),
        ms(took_again),
        stats.errors,
        stats.breaker
    );
    check(
        &mut ok,
        value.is_some() && value == again,
        "the calls return the store's value",
    );
    check(&mut ok, stats.errors >= 1, "the failures are counted");
    ok
}

/// One scenario's run, not started yet.
type Scenario<'a> = std::pin::Pin<Box<dyn Future<Output = bool> + 'a>>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cache = match Cache::builder().namespace("scenarios").from_env() {
        Ok(cache) => cache,
        Err(error) => {
            eprintln!("no cache: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let store = Store::new();
    println!("cache: {}", cache.backend_name());
    let mut failed = 0;
    let scenarios: [(&str, Scenario<'_>); 6] = [
        ("basic cache-aside", Box::pin(basic(&cache, &store))),
        (
            "invalidation after an update",
            Box::pin(invalidation(&cache, &store)),
        ),
        ("multiple keys", Box::pin(multiple_keys(&cache, &store))),
        ("TTL expiry", Box::pin(ttl_expiry(&cache, &store))),
        (
            "pattern invalidation",
            Box::pin(pattern_invalidation(&cache, &store)),
        ),
        (
            "error handling with Redis down",
            Box::pin(redis_down(&store)),
        ),
    ];
    // One after the other, in order: each future starts when it is first awaited.
    for (n, (name, scenario)) in (1..).zip(scenarios) {
        println!("{n}. {name}");
        let (ok, took) = timed(scenario).await;
        let verdict = if ok { "ok" } else { "FAILED" };
        println!("   scenario {n} ({name}): {verdict} in {}", ms(took));
        failed += u32::from(!ok);
    }
    match failed {
        0 => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::FAILURE,
    }
}
