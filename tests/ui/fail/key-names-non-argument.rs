use cache_aside_runtime::cached;

#[cached(ttl = 60, key = "user:{id}:{nope}")]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
