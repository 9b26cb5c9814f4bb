//! The companions take the same key arguments and agree with the read path.

use std::sync::atomic::{AtomicU32, Ordering};

use cache_aside_runtime::{Cache, cached};

static LOADS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, prefix = "user")]
async fn get_user(id: u64) -> String {
    LOADS.fetch_add(1, Ordering::SeqCst);
    format!("user{id}")
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        Cache::memory().set_default().unwrap();
        assert_eq!(get_user_cache_key(7).unwrap(), "ca:user:7");
        assert!(!get_user_invalidate(7).await.unwrap());
        assert_eq!(get_user(7).await, "user7");
        assert_eq!(get_user(7).await, "user7");
        assert_eq!(LOADS.load(Ordering::SeqCst), 1);
        assert!(get_user_invalidate(7).await.unwrap());
        assert_eq!(get_user(7).await, "user7");
        assert_eq!(LOADS.load(Ordering::SeqCst), 2);
        get_user(8).await;
        assert_eq!(get_user_invalidate_all().await.unwrap(), 2);
        assert_eq!(get_user(7).await, "user7");
        assert_eq!(LOADS.load(Ordering::SeqCst), 4);
    });
}
