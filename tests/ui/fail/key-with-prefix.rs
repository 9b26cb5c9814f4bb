use cache_aside_runtime::cached;

#[cached(ttl = 60, prefix = "user", key = "user:{id}")]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
