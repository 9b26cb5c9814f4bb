//! Hit and miss paths of `#[cached]` against raw redis-rs, measured in one run.
//!
//! `cargo run --release -p cache-aside-tests --bin bench`
//!
//! Starts a private `redis-server`, then alternates A (through `#[cached]`) and B (raw
//! redis-rs on the same connection type, `GET` + `serde_json` decode) in rounds, and prints
//! ops/s and the ratio A/B of the medians. Ratios, not absolute times, are what to compare:
//! the machine is shared and noisy.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cached};
use cache_aside_tests::RedisServer;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

const ROUNDS: usize = 5;
const SEQUENTIAL_OPS: u64 = 4_000;
const CONCURRENT_TASKS: u64 = 64;
const CONCURRENT_OPS_PER_TASK: u64 = 250;
const MISS_OPS: u64 = 2_000;

/// ~150 bytes of JSON.
#[derive(Clone, Serialize, Deserialize)]
struct Small {
    id: u64,
    name: String,
    email: String,
    active: bool,
    score: f64,
    tags: Vec<String>,
}

/// ~4 KB of JSON.
#[derive(Clone, Serialize, Deserialize)]
struct Large {
    id: u64,
    rows: Vec<Small>,
}

fn small(id: u64) -> Small {
    Small {
        id,
        name: format!("user number {id}"),
        email: format!("user{id}@example.com"),
        active: true,
        score: 0.75,
        tags: vec!["alpha".into(), "beta".into(), "gamma".into()],
    }
}

fn large(id: u64) -> Large {
    Large {
        id,
        rows: (0..28).map(small).collect(),
    }
}

#[cached(ttl = 600, prefix = "small", cache = cache, skip(cache))]
async fn cached_small(cache: &Cache, id: u64) -> Small {
    small(id)
}

#[cached(ttl = 600, prefix = "large", cache = cache, skip(cache))]
async fn cached_large(cache: &Cache, id: u64) -> Large {
    large(id)
}

#[cached(ttl = 600, prefix = "miss", cache = cache, skip(cache))]
async fn cached_miss(cache: &Cache, id: u64) -> Small {
    small(id)
}

async fn raw_get<T: serde::de::DeserializeOwned>(conn: &ConnectionManager, key: &str) -> T {
    let mut conn = conn.clone();
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("GET");
    serde_json::from_slice(&bytes).expect("decode")
}

/// Runs `op(i)` for `i in 0..ops` sequentially; returns ops/s.
async fn sequential<F, Fut>(ops: u64, op: F) -> f64
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let start = Instant::now();
    for i in 0..ops {
        op(i).await;
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

/// Runs `op` from `CONCURRENT_TASKS` tasks at once; returns total ops/s.
async fn concurrent<F, Fut>(op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT_TASKS)
        .map(|_| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                for i in 0..CONCURRENT_OPS_PER_TASK {
                    op(i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    (CONCURRENT_TASKS * CONCURRENT_OPS_PER_TASK) as f64 / start.elapsed().as_secs_f64()
}

/// The median, or 0 for no samples (rows without a raw counterpart).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

struct Row {
    name: &'static str,
    ours: Vec<f64>,
    raw: Vec<f64>,
    target: &'static str,
}

impl Row {
    fn new(name: &'static str, target: &'static str) -> Self {
        Row {
            name,
            ours: Vec::new(),
            raw: Vec::new(),
            target,
        }
    }

    fn print(&self) {
        let (ours, raw) = (median(self.ours.clone()), median(self.raw.clone()));
        if raw > 0.0 {
            println!(
                "{:<34} {:>10.0} ops/s   raw {:>10.0} ops/s   ratio {:.3}   target {}",
                self.name,
                ours,
                raw,
                ours / raw,
                self.target
            );
        } else {
            println!("{:<34} {:>10.0} ops/s", self.name, ours);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .timeout(Duration::from_secs(2))
        .redis(&server.url())
        .expect("url");
    let conn = ConnectionManager::new(redis::Client::open(server.url()).expect("url"))
        .await
        .expect("connect");

    // Warm both paths and store the values the hit rounds read.
    cached_small(&cache, 1).await;
    cached_large(&cache, 1).await;
    let small_key = cached_small_cache_key(&cache, 1).expect("key");
    let large_key = cached_large_cache_key(&cache, 1).expect("key");
    let mut c = conn.clone();
    let _: () = redis::cmd("SET")
        .arg("raw:small")
        .arg(serde_json::to_vec(&small(1)).expect("json"))
        .query_async(&mut c)
        .await
        .expect("SET");
    let _: () = redis::cmd("SET")
        .arg("raw:large")
        .arg(serde_json::to_vec(&large(1)).expect("json"))
        .query_async(&mut c)
        .await
        .expect("SET");
    println!("stored: {small_key}, {large_key}");

    let memory = Cache::memory();
    let mut rows = [
        Row::new("sequential hit, 150 B", ">= 0.95"),
        Row::new("sequential hit, 4 KB", ">= 0.95"),
        Row::new("64 tasks of hits, 150 B", ">= 0.95"),
        Row::new("miss (GET + load + SET), 150 B", ">= 0.91 (<= 1.10x)"),
        Row::new("embedded backend hit, 150 B", "-"),
    ];
    let mut miss_base = 0u64;
    for round in 0..ROUNDS {
        // Alternate which side goes first, so drift in the machine's load hits both.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for ours in order {
            if ours {
                let cache = &cache;
                rows[0].ours.push(
                    sequential(SEQUENTIAL_OPS, |_| async move {
                        cached_small(cache, 1).await;
                    })
                    .await,
                );
                rows[1].ours.push(
                    sequential(SEQUENTIAL_OPS / 4, |_| async move {
                        cached_large(cache, 1).await;
                    })
                    .await,
                );
                let shared = cache.clone();
                rows[2].ours.push(
                    concurrent(move |_| {
                        let cache = shared.clone();
                        async move {
                            cached_small(&cache, 1).await;
                        }
                    })
                    .await,
                );
                let base = miss_base;
                rows[3].ours.push(
                    sequential(MISS_OPS, |i| async move {
                        cached_miss(cache, base + i).await;
                    })
                    .await,
                );
                miss_base += MISS_OPS;
            } else {
                let conn = &conn;
                rows[0].raw.push(
                    sequential(SEQUENTIAL_OPS, |_| async move {
                        let _: Small = raw_get(conn, "raw:small").await;
                    })
                    .await,
                );
                rows[1].raw.push(
                    sequential(SEQUENTIAL_OPS / 4, |_| async move {
                        let _: Large = raw_get(conn, "raw:large").await;
                    })
                    .await,
                );
                let shared = conn.clone();
                rows[2].raw.push(
                    concurrent(move |_| {
                        let conn = shared.clone();
                        async move {
                            let _: Small = raw_get(&conn, "raw:small").await;
                        }
                    })
                    .await,
                );
                let base = miss_base;
                rows[3].raw.push(
                    sequential(MISS_OPS, |i| async move {
                        let mut c = conn.clone();
                        let key = format!("rawmiss:{}", base + i);
                        let found: Option<Vec<u8>> = redis::cmd("GET")
                            .arg(&key)
                            .query_async(&mut c)
                            .await
                            .expect("GET");
                        assert!(found.is_none());
                        let value = serde_json::to_vec(&small(base + i)).expect("json");
                        let _: () = redis::cmd("SET")
                            .arg(&key)
                            .arg(value)
                            .arg("PX")
                            .arg(600_000)
                            .query_async(&mut c)
                            .await
                            .expect("SET");
                    })
                    .await,
                );
                miss_base += MISS_OPS;
            }
        }
        let memory = &memory;
        rows[4].ours.push(
            sequential(SEQUENTIAL_OPS * 10, |_| async move {
                cached_small(memory, 1).await;
            })
            .await,
        );
    }

    let stats = cache.stats();
    assert_eq!(stats.errors, 0, "no cache errors during the run: {stats:?}");
    println!(
        "\nmedian of {ROUNDS} alternating rounds; redis-server on 127.0.0.1, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for row in &rows {
        row.print();
    }
}
