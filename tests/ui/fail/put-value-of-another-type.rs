use cache_aside_runtime::{cache_put, cached};

#[cached(ttl = 60)]
async fn get_user(id: u64) -> Result<Option<String>, String> {
    Ok(Some(id.to_string()))
}

#[cache_put(get_user(id))]
async fn rename(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[cache_put(get_user(id))]
async fn touch(id: u64) -> Result<(), String> {
    Ok(())
}

fn main() {}
