use cache_aside_runtime::cached;

// `show(5u8)` and `show(5i64)` serialize alike; the type would not be in the key.
#[cached(ttl = 60)]
async fn show(value: impl serde::Serialize + std::fmt::Debug + Send) -> String {
    format!("{value:?}")
}

fn main() {}
