//! Every freshness and resilience option together on a `Result` function with owned
//! arguments, and `stale` on a `self: Arc<Self>` method: the body can run as a background
//! refresh, so a stale entry is served while a new one loads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cache_aside_runtime::{Cache, cached};

static LOADS: AtomicU32 = AtomicU32::new(0);

#[cached(
    ttl = "100ms",
    stale = "5m",
    refresh_ahead = 0.8,
    xfetch = 1.0,
    fail_safe = "1h",
    jitter = 0.1,
    lock = true,
    timeout = "50ms",
    flight_wait = "2s",
    max_value_bytes = 65_536,
    on_cache_error = "open",
    prefix = "everything"
)]
async fn load(name: String, page: u32) -> Result<String, std::io::Error> {
    let n = LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(format!("{name}:{page}:{n}"))
}

struct Repo {
    loads: AtomicU32,
}

impl Repo {
    // `jitter = 0.0` turns the cache's jitter off for one function, as `.jitter(0.0)` does;
    // `ttl` may be as long as the builder's longest, 365 days.
    #[cached(ttl = "365d", refresh_ahead = 0.5, lock = false, jitter = 0.0, cache = CACHE)]
    async fn get(self: Arc<Self>, id: u64) -> u64 {
        self.loads.fetch_add(1, Ordering::SeqCst);
        id * 2
    }
}

static CACHE: std::sync::LazyLock<Cache> = std::sync::LazyLock::new(Cache::memory);

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        Cache::memory().set_default().unwrap();
        let first = load("a".to_owned(), 1).await.unwrap();
        assert_eq!(first, "a:1:0");
        assert_eq!(load("a".to_owned(), 1).await.unwrap(), first);
        assert_eq!(LOADS.load(Ordering::SeqCst), 1, "a fresh entry is a hit");

        // Past the TTL but within `stale`: the old value now, a refresh in the background.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(load("a".to_owned(), 1).await.unwrap(), first);
        for _ in 0..100 {
            if LOADS.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(LOADS.load(Ordering::SeqCst), 2, "the stale hit refreshed");

        let repo = Arc::new(Repo {
            loads: AtomicU32::new(0),
        });
        assert_eq!(repo.clone().get(21).await, 42);
        assert_eq!(repo.clone().get(21).await, 42);
        assert_eq!(repo.loads.load(Ordering::SeqCst), 1);
    });
}
