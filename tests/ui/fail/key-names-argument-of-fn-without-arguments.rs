use cache_aside_runtime::cached;

#[cached(ttl = 60, key = "user:{nope}")]
async fn get() -> u64 {
    7
}

fn main() {}
