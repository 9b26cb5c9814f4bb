//! User arguments with the names the generated code uses internally.

use cache_aside_runtime::{Cache, cached};

#[cached(ttl = 60, prefix = "hygiene")]
async fn get(key: u32, cache: u32, result: u32, __ca_b: u32, __ca_prepared: u32) -> u32 {
    key + cache + result + __ca_b + __ca_prepared
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        Cache::memory().set_default().unwrap();
        assert_eq!(get(1, 2, 3, 4, 5).await, 15);
        assert_eq!(get(1, 2, 3, 4, 5).await, 15);
        assert_eq!(
            get_cache_key(1, 2, 3, 4, 5).unwrap(),
            "ca:hygiene:1:2:3:4:5"
        );
    });
}
