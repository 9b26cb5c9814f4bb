//! Methods of a generic `impl`, with a derived and an explicit prefix, and a generic
//! function with a const parameter: each instantiation has its own keys.

use std::marker::PhantomData;

use cache_aside_runtime::{Cache, cached};

struct Repo<T> {
    cache: Cache,
    _t: PhantomData<T>,
}

impl<T: Send + Sync> Repo<T> {
    #[cached(ttl = 60, cache = self.cache)]
    async fn size(&self, id: u64) -> usize {
        std::mem::size_of::<T>() + id as usize
    }

    #[cached(ttl = 60, prefix = "repo", cache = self.cache)]
    async fn named(&self, id: u64) -> usize {
        std::mem::size_of::<T>() + id as usize
    }
}

#[cached(ttl = 60, prefix = "arr")]
async fn arr<const N: usize>(id: u64) -> usize {
    N + id as usize
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = Cache::memory();
        cache.set_default().unwrap();
        let a = Repo::<u8> { cache: cache.clone(), _t: PhantomData };
        let b = Repo::<u64> { cache: cache.clone(), _t: PhantomData };
        assert_eq!((a.size(1).await, b.size(1).await), (2, 9));
        assert_eq!((a.named(1).await, b.named(1).await), (2, 9));
        assert_eq!(a.named_cache_key(1).unwrap(), "ca:repo-3Cu8-3E:1");
        // The crate's name leads the derived prefix; trybuild picks it.
        let key = b.size_cache_key(1).unwrap();
        assert!(key.ends_with(".Repo-3Cu64-3E.size:1"), "{key}");
        assert_eq!((arr::<1>(1).await, arr::<2>(1).await), (2, 3));
        assert_eq!(arr_cache_key::<2>(1).unwrap(), "ca:arr-3C2-3E:1");
        assert_eq!(a.size_invalidate_all().await.unwrap(), 1);
        assert_eq!(arr_invalidate_all::<1>().await.unwrap(), 1);
    });
}
