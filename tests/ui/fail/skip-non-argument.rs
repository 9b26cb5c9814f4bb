use cache_aside_runtime::cached;

#[cached(ttl = 60, skip(nope))]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
