//! `none_ttl` on `Option<T>` and on `Result<Option<T>, E>`.

use std::sync::atomic::{AtomicU32, Ordering};

use cache_aside_runtime::{Cache, cached};

static LOADS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = "10m", none_ttl = "30s", prefix = "find")]
async fn find(email: &str) -> Option<u64> {
    LOADS.fetch_add(1, Ordering::SeqCst);
    (email == "a@b").then_some(1)
}

#[cached(ttl = 60, none_ttl = 5, prefix = "try_find")]
async fn try_find(id: u64) -> Result<Option<String>, std::io::Error> {
    LOADS.fetch_add(1, Ordering::SeqCst);
    Ok((id == 1).then(|| "one".to_owned()))
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        Cache::memory().set_default().unwrap();
        assert_eq!(find("x@y").await, None);
        assert_eq!(find("x@y").await, None);
        assert_eq!(LOADS.load(Ordering::SeqCst), 1, "`None` is cached");
        assert_eq!(try_find(2).await.unwrap(), None);
        assert_eq!(try_find(2).await.unwrap(), None);
        assert_eq!(LOADS.load(Ordering::SeqCst), 2, "`Ok(None)` is cached");
        assert_eq!(try_find(1).await.unwrap().as_deref(), Some("one"));
    });
}
