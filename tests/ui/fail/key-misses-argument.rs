use cache_aside_runtime::cached;

#[cached(ttl = 60, key = "user:{id}")]
async fn get(id: u64, page: u32) -> u64 {
    id + u64::from(page)
}

fn main() {}
