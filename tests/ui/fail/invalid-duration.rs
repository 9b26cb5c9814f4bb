use cache_aside_runtime::cached;

#[cached(ttl = "5 parsecs")]
async fn get(id: u64) -> u64 {
    id
}

// A unit twice, or out of order: a likely typo, not a sum.
#[cached(ttl = "1m1m")]
async fn repeated(id: u64) -> u64 {
    id
}

fn main() {}
