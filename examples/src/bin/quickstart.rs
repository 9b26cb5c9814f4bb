//! The quickstart: `cargo run -p cache-aside-examples --bin quickstart`.
//!
//! Runs on the embedded in-process cache; set `REDIS_URL=redis://127.0.0.1:6379/` to run the
//! same code against Redis.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cached};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug)]
struct DbError;

/// Counts how often the "database" is really queried.
static QUERIES: AtomicU32 = AtomicU32::new(0);

async fn query_db(id: u64) -> Result<Option<User>, DbError> {
    QUERIES.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await; // a slow query
    Ok((id < 100).then(|| User {
        id,
        name: format!("user-{id}"),
    }))
}

/// `Ok(Some)` is cached for 60 s, `Ok(None)` (no such user) for 5 s, `Err` never.
#[cached(ttl = 60, none_ttl = "5s", prefix = "user")]
async fn get_user(id: u64) -> Result<Option<User>, DbError> {
    query_db(id).await
}

async fn timed(label: &str, id: u64) {
    let start = Instant::now();
    let user = get_user(id).await;
    println!("{label:<28} {user:?} in {:?}", start.elapsed());
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let cache = Cache::from_env()?;
    cache.set_default()?;

    timed("first call (miss):", 7).await;
    timed("second call (hit):", 7).await;
    timed("missing user (miss):", 404).await;
    timed("missing user again (hit):", 404).await;

    println!("key of get_user(7):          {}", get_user_cache_key(7)?);
    get_user_invalidate(7).await?;
    timed("after invalidation (miss):", 7).await;

    let stats = cache.stats();
    println!(
        "database queries: {}, hits: {}, misses: {}, hit ratio: {:.2}",
        QUERIES.load(Ordering::Relaxed),
        stats.hits,
        stats.misses,
        stats.hit_ratio()
    );
    Ok(())
}
