//! One-expression bodies (`{ id }`) draw no `unused_braces` warning from the expansions,
//! and a write may return `impl Trait`.
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

fn main() {
    let _ = (get(1), put(1), evict(1), shown(1));
}
