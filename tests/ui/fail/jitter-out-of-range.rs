use cache_aside_runtime::cached;

#[cached(ttl = 60, jitter = 0.75)]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
