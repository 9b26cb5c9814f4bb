// `tags` in the forms it takes: an argument, a skipped one, a field, `self`'s field, a
// constant, several.
use cache_aside_runtime::{Cache, cached};

#[derive(serde::Serialize)]
struct Query {
    team: u32,
    page: u32,
}

#[cached(ttl = 60, tags = ["user:{id}", "tenant:{tenant}:users", "catalog"], skip(db))]
async fn user(db: &str, tenant: &str, id: u64) -> String {
    format!("{db}/{tenant}/{id}")
}

#[cached(ttl = 60, tags = ["team:{q.team}"])]
async fn listing(q: &Query) -> u32 {
    q.page
}

struct Repo {
    cache: Cache,
    region: String,
}

impl Repo {
    #[cached(
        ttl = 60,
        cache = self.cache,
        key = "count:{self.region}:{kind}",
        tags = ["region:{self.region}"]
    )]
    async fn count(&self, kind: u8) -> u64 {
        u64::from(kind)
    }
}

fn main() {
    let repo = Repo {
        cache: Cache::memory(),
        region: "eu".into(),
    };
    let _ = (user("db", "t", 1), listing(&Query { team: 1, page: 2 }), repo.count(1));
}
