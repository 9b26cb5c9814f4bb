use cache_aside_runtime::cached;

#[cached(ttl = 60, none_ttl = "30s")]
async fn get(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
