use cache_aside_runtime::cached;

// `f(1, 23)` and `f(12, 3)` would both be `ca:t:123`.
#[cached(ttl = 60, key = "t:{a}{b}")]
async fn f(a: u32, b: u32) -> u32 {
    a + b
}

fn main() {}
