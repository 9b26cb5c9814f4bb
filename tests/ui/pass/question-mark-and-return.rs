//! A body that uses `?` and an early `return`: the body's control flow stays its own.

use cache_aside_runtime::{Cache, cached};

#[cached(ttl = 60, prefix = "parse")]
async fn parse(text: &str) -> Result<u32, std::num::ParseIntError> {
    if text.is_empty() {
        return Ok(0);
    }
    let n: u32 = text.parse()?;
    Ok(n * 2)
}

#[cached(ttl = 60, prefix = "first")]
async fn first(items: Vec<u32>) -> Option<u32> {
    for item in items {
        if item > 1 {
            return Some(item);
        }
    }
    None
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        Cache::memory().set_default().unwrap();
        assert_eq!(parse("").await, Ok(0));
        assert_eq!(parse("21").await, Ok(42));
        assert_eq!(parse("21").await, Ok(42));
        assert!(parse("x").await.is_err());
        assert_eq!(first(vec![1, 5, 7]).await, Some(5));
        assert_eq!(first(vec![1]).await, None);
    });
}
