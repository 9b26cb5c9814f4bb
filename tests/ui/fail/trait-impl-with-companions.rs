use cache_aside_runtime::{Cache, cached};

trait Users {
    async fn name(&self, id: u64) -> String;
}

struct Repo {
    cache: Cache,
}

impl Users for Repo {
    #[cached(ttl = 300, cache = self.cache)]
    async fn name(&self, id: u64) -> String {
        format!("user{id}")
    }
}

fn main() {}
