//! Every form `cache = ...` takes: a `Cache` field read through `self: Arc<Self>` (which the
//! body moves, as `stale` needs), a `OnceLock<Cache>`'s `get().unwrap()`, an owned `Cache`
//! argument, an `Arc<Cache>`, a `LazyLock<Cache>` and references.

use std::sync::{Arc, LazyLock, OnceLock};

use cache_aside_runtime::{Cache, cached};

struct Repo {
    cache: Cache,
    shared: Arc<Cache>,
    name: String,
}

impl Repo {
    #[cached(ttl = 60, cache = self.cache)]
    async fn get(self: Arc<Self>, id: u64) -> String {
        format!("{}{id}", self.name)
    }

    #[cached(ttl = 60, stale = "1m", cache = self.cache)]
    async fn fresh(self: Arc<Self>, id: u64) -> String {
        format!("{}{id}", self.name)
    }

    #[cached(ttl = 60, cache = self.shared)]
    async fn by_value(self, id: u64) -> String {
        format!("{}{id}", self.name)
    }

    #[cached(ttl = 60, cache = &self.cache)]
    async fn borrowed(&self, id: u64) -> String {
        format!("{}{id}", self.name)
    }
}

static ONCE: OnceLock<Cache> = OnceLock::new();
static LAZY: LazyLock<Cache> = LazyLock::new(Cache::memory);

#[cached(ttl = 60, cache = ONCE.get().unwrap())]
async fn from_once(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, cache = LAZY)]
async fn from_lazy(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, cache = cache, skip(cache))]
async fn from_owned(cache: Cache, id: u64) -> u64 {
    let _ = &cache;
    id
}

#[cached(ttl = 60, cache = cache, skip(cache))]
async fn from_arc(cache: Arc<Cache>, id: u64) -> u64 {
    drop(cache);
    id
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = Cache::memory();
        ONCE.set(cache.clone()).unwrap();
        let repo = Arc::new(Repo {
            cache: cache.clone(),
            shared: Arc::new(cache.clone()),
            name: "r".into(),
        });
        assert_eq!(repo.clone().get(1).await, "r1");
        assert_eq!(repo.clone().fresh(2).await, "r2");
        assert_eq!(repo.borrowed(3).await, "r3");
        let plain = Repo {
            cache: cache.clone(),
            shared: Arc::new(cache.clone()),
            name: "p".into(),
        };
        assert_eq!(plain.by_value(4).await, "p4");
        assert_eq!(from_once(5).await, 5);
        assert!(from_once_cache_key(5).unwrap().ends_with(".from_once:5"));
        assert_eq!(from_lazy(6).await, 6);
        assert_eq!(from_owned(cache.clone(), 7).await, 7);
        assert_eq!(from_arc(Arc::new(cache.clone()), 8).await, 8);
        assert_eq!(from_owned(cache.clone(), 7).await, 7);
        assert_eq!(cache.stats().hits, 1);
        assert!(repo.get_invalidate(1).await.unwrap());
    });
}
