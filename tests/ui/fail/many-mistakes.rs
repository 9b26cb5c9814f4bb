use cache_aside_runtime::cached;

#[cached(ttl = 0, tll = 5, prefix = "a:b", none_ttl = -1, skip(nope))]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
