use cache_aside_runtime::cache_evict;

async fn get_user(id: u64) -> u64 {
    id
}

#[cache_evict(get_user(id))]
async fn rename(id: u64) -> Result<(), String> {
    Ok(())
}

fn main() {}
