use cache_aside_runtime::{cache_evict, cached};

#[cached(ttl = 60)]
async fn get_user(id: u64) -> u64 {
    id
}

#[cache_evict(get_user(name))]
async fn rename(name: &str) -> Result<(), String> {
    Ok(())
}

#[cache_evict(get_user(id, name))]
async fn rename_too(id: u64, name: &str) -> Result<(), String> {
    Ok(())
}

fn main() {}
