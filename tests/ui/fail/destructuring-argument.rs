use cache_aside_runtime::cached;

#[cached(ttl = 60)]
async fn sum((a, b): (u64, u64)) -> u64 {
    a + b
}

fn main() {}
