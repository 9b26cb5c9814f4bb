//! A user argument named like the generated `static __CA_SPEC`: the body must still see
//! the argument, not the static.

use cache_aside_runtime::{Cache, cached};

#[allow(non_snake_case)]
#[cached(ttl = 60, prefix = "spec")]
async fn get(__CA_SPEC: u32) -> u32 {
    __CA_SPEC + 1
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        Cache::memory().set_default().unwrap();
        assert_eq!(get(9).await, 10);
        assert_eq!(get_cache_key(9).unwrap(), "ca:spec:9");
    });
}
