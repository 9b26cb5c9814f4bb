use cache_aside_runtime::cached;

// The builder refuses the same: `default_ttl` past 365 days is `Error::Config`.
#[cached(ttl = "366d", stale = "400d", timeout = "1000d")]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
