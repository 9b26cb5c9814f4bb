// `tags` mistakes, each reported at the tag.
use std::collections::HashMap;

use cache_aside_runtime::cached;

#[cached(ttl = 60, tags = ["user:{uid}"])]
async fn unknown_argument(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, tags = ["doc:v{version}"])]
async fn value_inside_a_segment(version: u64) -> u64 {
    version
}

#[cached(ttl = 60, tags = ["a b"])]
async fn bad_name(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, tags = [])]
async fn no_tags(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, tags = ["tenant:{tenant}"], skip(tenant))]
async fn skipped_argument(tenant: &str, id: u64) -> u64 {
    let _ = tenant;
    id
}

// A batch's tags render from each key alone.
#[cached(batch, ttl = 60, tags = ["tenant:{tenant}"], skip(tenant))]
async fn on_a_batch(tenant: &str, ids: &[u64]) -> HashMap<u64, u64> {
    let _ = tenant;
    ids.iter().map(|&id| (id, id)).collect()
}

struct Repo {
    tenant: u64,
}

impl Repo {
    // `self` is not in the key: two repos would share entries tagged differently.
    #[cached(ttl = 60, tags = ["tenant:{self.tenant}"])]
    async fn count(&self, kind: u8) -> u64 {
        u64::from(kind) + self.tenant
    }
}

#[derive(serde::Serialize)]
struct Query {
    team: u32,
    page: u32,
}

// The key holds `q.page` only.
#[cached(ttl = 60, key = "list:{q.page}", tags = ["team:{q.team}"])]
async fn listing(q: &Query) -> u32 {
    q.team
}

// A field the key does not have, reported at the tag.
#[cached(ttl = 60, tags = ["team:{id.team}"])]
async fn no_such_field(id: u64) -> u64 {
    id
}

#[cached(batch, ttl = 60, tags = ["team:{ids.team}"])]
async fn no_such_field_of_each_key(ids: &[u64]) -> HashMap<u64, u64> {
    ids.iter().map(|&id| (id, id)).collect()
}

fn main() {}
