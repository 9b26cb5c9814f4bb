//! `ttl` as a combined duration string.

use std::time::Duration;

use cache_aside_runtime::{Cache, cached};

#[cached(ttl = "1h30m", prefix = "dur")]
async fn get(id: u64) -> u64 {
    id
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = Cache::memory();
        cache.set_default().unwrap();
        assert_eq!(get(3).await, 3);
        let ttl = cache.ttl_of(&get_cache_key(3).unwrap()).await.unwrap();
        let ttl = ttl.expect("cached");
        assert!(ttl > Duration::from_secs(89 * 60) && ttl <= Duration::from_secs(90 * 60));
    });
}
