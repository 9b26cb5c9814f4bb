use cache_aside_runtime::cached;

struct Counter {
    hits: u64,
}

impl Counter {
    #[cached(ttl = 60)]
    async fn bump(&mut self, by: u64) -> u64 {
        self.hits += by;
        self.hits
    }
}

fn main() {}
