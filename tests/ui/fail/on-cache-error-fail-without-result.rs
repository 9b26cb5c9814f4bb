use cache_aside_runtime::cached;

#[cached(ttl = 60, on_cache_error = "fail")]
async fn get(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
