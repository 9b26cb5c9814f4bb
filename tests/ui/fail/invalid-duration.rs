use cache_aside_runtime::cached;

#[cached(ttl = "5 parsecs")]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
