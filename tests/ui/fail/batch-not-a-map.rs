// A `batch` function must return a map keyed like its collection, of cacheable values.
use std::collections::HashMap;

use cache_aside_runtime::cached;

#[cached(batch, ttl = 60)]
async fn a_vec(ids: &[u64]) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

#[cached(batch, ttl = 60)]
async fn keyed_by_another_type(ids: &[u64]) -> HashMap<String, String> {
    ids.iter().map(|id| (id.to_string(), id.to_string())).collect()
}

struct NotSerde;

#[cached(batch, ttl = 60)]
async fn values_not_serde(ids: &[u64]) -> HashMap<u64, NotSerde> {
    ids.iter().map(|&id| (id, NotSerde)).collect()
}

fn main() {}
