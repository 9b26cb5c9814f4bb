use cache_aside_runtime::cached;

#[cached(ttl = 60, xfetch = 0.0)]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
