use cache_aside_runtime::{cache_evict, cached};

#[cached(ttl = 60)]
async fn get_user(id: u64) -> u64 {
    id
}

#[cache_evict(get_usr(id))]
async fn rename(id: u64) -> Result<(), String> {
    Ok(())
}

fn main() {}
