use cache_aside_runtime::cached;

#[cached(ttl = 1, ttl = 2)]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
