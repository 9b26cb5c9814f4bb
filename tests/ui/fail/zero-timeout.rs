use cache_aside_runtime::cached;

#[cached(ttl = 60, timeout = "0ms")]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
