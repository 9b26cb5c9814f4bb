//! Shared-reference arguments: `&str`, `&[u8]` and `&T`.

use cache_aside_runtime::{Cache, cached};
use serde::Serialize;

#[derive(Serialize)]
struct Query {
    page: u32,
}

#[cached(ttl = 60, prefix = "refs", cache = CACHE)]
async fn lookup(name: &str, bytes: &[u8], q: &Query) -> usize {
    name.len() + bytes.len() + q.page as usize
}

static CACHE: std::sync::LazyLock<Cache> = std::sync::LazyLock::new(Cache::memory);

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let q = Query { page: 3 };
        assert_eq!(lookup("ab", &[1, 2], &q).await, 7);
        assert_eq!(lookup("ab", &[1, 2], &q).await, 7);
        assert_eq!(
            lookup_cache_key("ab", &[1, 2], &q).unwrap(),
            "ca:refs:ab:(1,2):(page=3)"
        );
    });
}
