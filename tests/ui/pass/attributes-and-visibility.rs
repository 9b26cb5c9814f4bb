//! Doc comments, `#[allow]`/`#[inline]`, `pub(crate)` and a where-clause are kept, and the
//! companions carry docs: `missing_docs` is denied on the module, `warnings` everywhere (so a
//! dropped `#[allow(unused_variables)]` would fail too).

#![deny(warnings)]

#[deny(missing_docs)]
pub mod repo {
    //! A documented module with documented cached functions.

    use cache_aside_runtime::cached;

    /// Loads one user's name.
    #[cached(ttl = 60, prefix = "user")]
    pub async fn get_user(id: u64) -> String {
        format!("user{id}")
    }

    /// Loads a page of something, bounded by a where-clause.
    #[allow(unused_variables)]
    #[inline]
    #[cached(ttl = 60, prefix = "page")]
    pub(crate) async fn page<T>(filter: T, n: u32) -> Vec<u32>
    where
        T: serde::Serialize + Send + Sync,
    {
        (0..n).collect()
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        cache_aside_runtime::Cache::memory().set_default().unwrap();
        assert_eq!(repo::get_user(1).await, "user1");
        assert_eq!(repo::get_user_cache_key(1).unwrap(), "ca:user:1");
        assert_eq!(repo::page("all", 3).await, vec![0, 1, 2]);
        assert_eq!(repo::page_cache_key("all", 3).unwrap(), "ca:page-3C-26str-3E:all:3");
    });
}
