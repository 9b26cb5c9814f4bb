// `#[cache_evict(tag = ..)]` mistakes, each reported at its token.
use cache_aside_runtime::{Cache, cache_evict};

#[cache_evict(tag = "user:{uid}")]
async fn unknown_argument(id: u64) {
    let _ = id;
}

#[cache_evict(tag = "doc:v{version}")]
async fn value_inside_a_segment(version: u64) {
    let _ = version;
}

#[cache_evict(get_user(id), cache = cache)]
async fn cache_without_a_tag(cache: &Cache, id: u64) {
    let _ = (cache, id);
}

fn main() {}
