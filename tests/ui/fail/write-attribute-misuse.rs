use cache_aside_runtime::{cache_evict, cache_put, cached};

#[cached(ttl = 60)]
async fn get_user(id: u64) -> u64 {
    id
}

#[cache_evict]
async fn no_target(_id: u64) {}

#[cache_evict(get_user)]
async fn not_a_call(_id: u64) {}

#[cache_evict(get_user(id), after = true)]
async fn unknown_option(_id: u64) {}

#[cache_evict(get_user(id), before = yes)]
async fn not_a_bool(_id: u64) {}

#[cache_evict(get_user(.., id))]
async fn all_not_last(_id: u64) {}

#[cache_put(get_user(..))]
async fn put_all(id: u64) -> u64 {
    id
}

#[cache_put(get_user(id), before = true)]
async fn put_before(id: u64) -> u64 {
    id
}

#[cache_evict(get_user(id))]
fn not_async(_id: u64) {}

fn main() {}
