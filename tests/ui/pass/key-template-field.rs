//! `key = "..."` with an argument and a field of another.

use cache_aside_runtime::{Cache, cached};
use serde::Serialize;

#[derive(Serialize)]
struct Query {
    page: u32,
    #[allow(dead_code)]
    ignored: bool,
}

#[cached(ttl = 60, key = "user:{id}:{q.page}")]
async fn posts(id: u64, q: &Query) -> Vec<u64> {
    vec![id, u64::from(q.page)]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        Cache::memory().set_default().unwrap();
        let q = Query {
            page: 2,
            ignored: true,
        };
        assert_eq!(posts(7, &q).await, [7, 2]);
        assert_eq!(posts_cache_key(7, &q).unwrap(), "ca:user:7:2");
    });
}
