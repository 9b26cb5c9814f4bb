//! The batch rows: a 100-key `#[cached(batch)]` call whose keys all hit, against raw
//! redis-rs `MGET` + decode of 100 keys into a map, and against 100 one-key hits in a row.
//!
//! Both run on a current-thread runtime of their own, as the sequential rows do, and share
//! `cached_small`'s entries (the batch function has its prefix and value type).

use std::collections::HashMap;

use redis::aio::ConnectionManager;

use super::{
    Cache, ROUNDS, Row, SEQUENTIAL_PAIRS, Small, TIMEOUT, bounded_connection, cached, cached_small,
    pair, sequential, small,
};

/// Keys per batch.
pub const KEYS: u64 = 100;
/// Batches per sample.
const BATCHES: u64 = 50;
/// 100-hit runs per sample of the one-key side.
const SINGLE_RUNS: u64 = 5;

#[cached(batch, ttl = 600, prefix = "small", cache = cache, skip(cache))]
async fn cached_smalls(cache: &Cache, ids: &[u64]) -> HashMap<u64, Small> {
    ids.iter().map(|&id| (id, small(id))).collect()
}

/// Raw redis-rs: one `MGET`, each value decoded into a map, as a hand-written batch does.
async fn raw_many(conn: &ConnectionManager, keys: &[String]) -> HashMap<u64, Small> {
    let mut conn = conn.clone();
    let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .expect("MGET");
    values
        .into_iter()
        .flatten()
        .map(|bytes| {
            let value: Small = serde_json::from_slice(&bytes).expect("decode");
            (value.id, value)
        })
        .collect()
}

/// What one side of a batch row does.
#[derive(Clone, Copy)]
pub enum Side {
    Ours,
    Raw,
    /// 100 one-key hits in a row, per "batch".
    Singles,
}

struct Fixture {
    cache: Cache,
    conn: ConnectionManager,
    ids: Vec<u64>,
    keys: Vec<String>,
}

impl Fixture {
    async fn new(url: &str) -> Fixture {
        let cache = Cache::builder().timeout(TIMEOUT).redis(url).expect("url");
        let conn = bounded_connection(url).await;
        let ids: Vec<u64> = (0..KEYS).collect();
        let keys: Vec<String> = ids.iter().map(|id| format!("rawbatch:{id}")).collect();
        for (id, key) in ids.iter().zip(&keys) {
            let json = serde_json::to_vec(&small(*id)).expect("json");
            let _: () = redis::cmd("SET")
                .arg(key)
                .arg(json)
                .arg("PX")
                .arg(600_000)
                .query_async(&mut conn.clone())
                .await
                .expect("SET");
        }
        // Loads every entry; from here on, every call hits.
        assert_eq!(cached_smalls(&cache, &ids).await.len(), KEYS as usize);
        assert_eq!(raw_many(&conn, &keys).await.len(), KEYS as usize);
        Fixture {
            cache,
            conn,
            ids,
            keys,
        }
    }

    /// Batches (of 100 keys) per second.
    async fn run(&self, side: Side) -> f64 {
        let Fixture {
            cache,
            conn,
            ids,
            keys,
        } = self;
        match side {
            Side::Ours => {
                sequential(BATCHES, |_| async move {
                    let got = cached_smalls(cache, ids).await;
                    debug_assert_eq!(got.len(), KEYS as usize);
                })
                .await
            }
            Side::Raw => {
                sequential(BATCHES, |_| async move {
                    let got = raw_many(conn, keys).await;
                    debug_assert_eq!(got.len(), KEYS as usize);
                })
                .await
            }
            Side::Singles => {
                let hits = sequential(SINGLE_RUNS * KEYS, |i| async move {
                    cached_small(cache, i % KEYS).await;
                })
                .await;
                hits / KEYS as f64
            }
        }
    }
}

/// The two batch rows: ours against raw `MGET`, and ours against 100 one-key hits (its
/// ratio is the speed-up).
pub fn rows(url: &str) -> [Row; 2] {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let fixture = Fixture::new(&url).await;
            let mut rows = [
                Row::new("batch of 100 hits, 150 B (vs raw MGET)"),
                Row::new("batch of 100 hits vs 100 one-key hits"),
            ];
            for round in 0..ROUNDS {
                for k in 0..SEQUENTIAL_PAIRS {
                    let first = (round + k) % 2 == 0;
                    let (a, b) = pair(first, fixture.run(Side::Ours), fixture.run(Side::Raw)).await;
                    rows[0].ours.push(a);
                    rows[0].raw.push(b);
                    let (a, b) =
                        pair(first, fixture.run(Side::Ours), fixture.run(Side::Singles)).await;
                    rows[1].ours.push(a);
                    rows[1].raw.push(b);
                }
            }
            rows
        })
    })
    .join()
    .expect("batch rows")
}

/// `bench --count batch|rawbatch [times]`: `times` samples of one side, for callgrind
/// (instructions per batch: the difference between 2 and 1, divided by 50).
pub fn count(url: &str, side: Side, times: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let fixture = Fixture::new(url).await;
        for _ in 0..times {
            fixture.run(side).await;
        }
        eprintln!("{:?}", fixture.cache.stats());
    });
}
