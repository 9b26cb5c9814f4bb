use cache_aside_runtime::cached;

#[derive(Debug)]
struct DbError;

#[cached(ttl = 60, on_cache_error = "fail")]
async fn get(id: u64) -> Result<u64, DbError> {
    Ok(id)
}

fn main() {}
