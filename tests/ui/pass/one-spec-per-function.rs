//! Wherever a function is written, its wrapper and companions find its spec: a method and an
//! associated function that names `Self` share one in a sibling (also under `#[cfg]`); a
//! free function, one nested in a function body and an associated function that names
//! neither `self` nor `Self` (which looks like a free one) hold it in each generated
//! function. The sibling adds no warning (`warnings` are denied).

#![deny(warnings)]

use cache_aside_runtime::{Cache, cached};

#[cfg(any())]
#[cached(ttl = 60, prefix = "gone")]
async fn gone(id: u64) -> u64 {
    id
}

#[cfg(all())]
#[cached(ttl = 60, prefix = "kept")]
async fn kept(id: u64) -> u64 {
    id
}

struct Repo {
    cache: Cache,
}

impl Repo {
    #[cached(ttl = 60, prefix = "repo.get", cache = self.cache)]
    async fn get(&self, id: u64) -> u64 {
        id + 1
    }

    #[cfg(all())]
    #[cached(ttl = 60, prefix = "repo.gated", cache = self.cache)]
    async fn gated(&self, id: u64) -> u64 {
        id + 2
    }

    #[cfg(any())]
    #[cached(ttl = 60, prefix = "repo.gone", cache = self.cache)]
    async fn gone(&self, id: u64) -> u64 {
        id
    }

    #[cached(ttl = 60, prefix = "repo.count")]
    async fn count(id: u64) -> u64 {
        id + 3
    }
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Token(u64);

impl Token {
    #[cached(ttl = 60, prefix = "token")]
    async fn make(id: u64) -> Option<Self> {
        Some(Token(id))
    }
}

async fn outer() -> (u64, String) {
    #[cached(ttl = 60, prefix = "nested")]
    async fn inner(id: u64) -> u64 {
        id * 2
    }
    (inner(2).await, inner_cache_key(2).unwrap())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = Cache::memory();
        cache.set_default().unwrap();
        assert_eq!(kept(1).await, 1);
        assert_eq!(kept_cache_key(1).unwrap(), "ca:kept:1");
        assert_eq!(kept_invalidate_all().await.unwrap(), 1);
        let repo = Repo { cache };
        assert_eq!(repo.get(1).await, 2);
        assert_eq!(repo.get_cache_key(1).unwrap(), "ca:repo.get:1");
        assert!(repo.get_invalidate(1).await.unwrap());
        assert_eq!(repo.gated(1).await, 3);
        assert_eq!(repo.gated_invalidate_all().await.unwrap(), 1);
        assert_eq!(Repo::count(1).await, 4);
        assert_eq!(Repo::count_cache_key(1).unwrap(), "ca:repo.count:1");
        assert_eq!(Token::make(3).await, Some(Token(3)));
        assert_eq!(Token::make_cache_key(3).unwrap(), "ca:token:3");
        assert_eq!(outer().await, (4, "ca:nested:2".to_owned()));
    });
}
