use cache_aside_runtime::cached;

#[cached(ttl = 60, fail_safe = "1h")]
async fn get(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
