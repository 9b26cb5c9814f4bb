//! One-expression bodies (`{ id }`) draw no `unused_braces` warning from the expansions,
//! a batch's included, and a write may return `impl Trait`.
#![deny(unused_braces)]

use cache_aside_runtime::{cache_evict, cache_put, cached};

#[cached(ttl = 60)]
async fn get(id: u64) -> u64 { id }

#[cache_put(get(id))]
async fn put(id: u64) -> u64 { id }

#[cache_evict(get(id))]
async fn evict(id: u64) -> Result<u64, String> { Ok(id) }

#[cache_evict(get(id))]
async fn shown(id: u64) -> impl std::fmt::Display { id }

#[cached(batch, ttl = 60)]
async fn many(ids: &[u64]) -> std::collections::HashMap<u64, u64> { ids.iter().map(|&id| (id, id)).collect() }

fn main() {
    let _ = (get(1), put(1), evict(1), shown(1), many(&[1]));
}
