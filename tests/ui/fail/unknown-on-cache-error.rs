use cache_aside_runtime::cached;

#[cached(ttl = 60, on_cache_error = "ignore")]
async fn get(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
