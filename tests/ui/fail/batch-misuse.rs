// A `batch` function's mistakes, each reported at its token.
use std::collections::HashMap;
use std::sync::Arc;

use cache_aside_runtime::cached;

#[cached(batch, ttl = 60)]
async fn two_key_arguments(tenant: u64, ids: &[u64]) -> HashMap<u64, String> {
    let _ = tenant;
    ids.iter().map(|&id| (id, id.to_string())).collect()
}

#[cached(batch, ttl = 60)]
async fn not_a_collection(id: u64) -> HashMap<u64, String> {
    HashMap::from([(id, id.to_string())])
}

#[cached(batch, ttl = 60)]
async fn no_key_argument() -> HashMap<u64, String> {
    HashMap::new()
}

#[cached(batch, ttl = 60, stale = 30, lock = true, fail_safe = 60, xfetch = 1.0)]
async fn unsupported_options(ids: &[u64]) -> Result<HashMap<u64, String>, String> {
    Ok(ids.iter().map(|&id| (id, id.to_string())).collect())
}

#[cached(batch, ttl = 60)]
async fn option_of_a_map(ids: &[u64]) -> Option<HashMap<u64, String>> {
    Some(ids.iter().map(|&id| (id, id.to_string())).collect())
}

#[cached(batch = 1, ttl = 60)]
async fn batch_not_a_bool(ids: &[u64]) -> HashMap<u64, String> {
    ids.iter().map(|&id| (id, id.to_string())).collect()
}

// Cache failures become the `Err`: it must take them (`From<cache_aside_runtime::Error>`).
#[cached(batch, ttl = 60, on_cache_error = "fail")]
async fn strict_without_from(ids: &[u64]) -> Result<HashMap<u64, String>, String> {
    Ok(ids.iter().map(|&id| (id, id.to_string())).collect())
}

// Reported once with a named cache too.
#[cached(batch, ttl = 60, on_cache_error = "fail", cache = cache, skip(cache))]
async fn strict_without_from_on_a_cache(
    cache: &cache_aside_runtime::Cache,
    ids: &[u64],
) -> Result<HashMap<u64, String>, String> {
    Ok(ids.iter().map(|&id| (id, id.to_string())).collect())
}

#[cached(batch, ttl = 60, on_cache_error = "fail")]
async fn strict_without_result(ids: &[u64]) -> HashMap<u64, String> {
    ids.iter().map(|&id| (id, id.to_string())).collect()
}

struct Repo;

impl Repo {
    #[cached(batch, ttl = 60)]
    async fn owned_self(self: Arc<Self>, ids: &[u64]) -> HashMap<u64, String> {
        ids.iter().map(|&id| (id, id.to_string())).collect()
    }
}

fn main() {}
