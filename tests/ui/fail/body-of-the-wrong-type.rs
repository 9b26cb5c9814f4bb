use cache_aside_runtime::cached;

#[derive(Debug)]
struct DbError;

#[cached(ttl = 60)]
async fn count(id: u64) -> Result<u64, DbError> {
    let _ = id;
    Ok("text")
}

fn main() {}
