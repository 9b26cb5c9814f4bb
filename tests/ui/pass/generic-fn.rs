//! A generic function: the key argument's type is a type parameter.

use cache_aside_runtime::{Cache, cached};

#[cached(ttl = 60, prefix = "generic")]
async fn get<K: serde::Serialize + Send>(k: K) -> u32 {
    let _ = &k;
    1
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        Cache::memory().set_default().unwrap();
        assert_eq!(get(5u8).await, 1);
        assert_eq!(get("five").await, 1);
        assert_eq!(get_cache_key("five").unwrap(), "ca:generic-3C-26str-3E:five");
        assert!(get_invalidate(5u8).await.unwrap());
    });
}
