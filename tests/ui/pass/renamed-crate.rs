//! `crate = ::my_cache` when the runtime is only reachable under another name.
//!
//! Cargo refuses a second, renamed dependency on a crate the package already depends on,
//! so the rename is done here: `my_cache` is the runtime, and `cache_aside_runtime` is
//! made to name `core`, so a macro that ignored `crate = ...` would not compile.

extern crate cache_aside_runtime as my_cache;
extern crate core as cache_aside_runtime;

use my_cache::{Cache, cached};

#[cached(ttl = 60, prefix = "renamed", crate = ::my_cache)]
async fn get(id: u64) -> u64 {
    id
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        Cache::memory().set_default().unwrap();
        assert_eq!(get(1).await, 1);
        assert_eq!(get_cache_key(1).unwrap(), "ca:renamed:1");
    });
}
