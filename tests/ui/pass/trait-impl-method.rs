//! A method of a trait impl: a trait impl holds only the trait's methods, so the companions
//! are turned off, and the prefix invalidates its entries.

use std::sync::atomic::{AtomicU32, Ordering};

use cache_aside_runtime::{Cache, cached};

trait Users {
    async fn name(&self, id: u64) -> String;
}

struct Repo {
    cache: Cache,
    loads: AtomicU32,
}

impl Users for Repo {
    #[cached(ttl = 300, prefix = "user.name", cache = self.cache, companions = false)]
    async fn name(&self, id: u64) -> String {
        self.loads.fetch_add(1, Ordering::SeqCst);
        format!("user{id}")
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let repo = Repo {
            cache: Cache::memory(),
            loads: AtomicU32::new(0),
        };
        assert_eq!(repo.name(1).await, "user1");
        assert_eq!(repo.name(1).await, "user1");
        assert_eq!(repo.loads.load(Ordering::SeqCst), 1);
        assert_eq!(repo.cache.invalidate_prefix("user.name").await.unwrap(), 1);
        assert_eq!(repo.name(1).await, "user1");
        assert_eq!(repo.loads.load(Ordering::SeqCst), 2);
    });
}
