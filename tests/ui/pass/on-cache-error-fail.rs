//! `on_cache_error = "fail"`: a cache failure (here: no default cache yet) comes back as
//! `Err` through the error type's `From<cache_aside_runtime::Error>`, instead of running the
//! body uncached.

use std::sync::atomic::{AtomicU32, Ordering};

use cache_aside_runtime::{Cache, cached};

static LOADS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
enum AppError {
    #[allow(dead_code)]
    NotFound,
    Cache(cache_aside_runtime::Error),
}

impl From<cache_aside_runtime::Error> for AppError {
    fn from(error: cache_aside_runtime::Error) -> Self {
        AppError::Cache(error)
    }
}

#[cached(ttl = 60, on_cache_error = "fail", prefix = "strict")]
async fn get(id: u64) -> Result<u64, AppError> {
    LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(id + 1)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match get(1).await {
            Err(AppError::Cache(cache_aside_runtime::Error::NoDefaultCache)) => {}
            other => panic!("expected the missing cache as `Err`, got {other:?}"),
        }
        assert_eq!(LOADS.load(Ordering::SeqCst), 0, "the body did not run");

        Cache::memory().set_default().unwrap();
        assert_eq!(get(1).await.unwrap(), 2);
        assert_eq!(get(1).await.unwrap(), 2);
        assert_eq!(LOADS.load(Ordering::SeqCst), 1);
    });
}
