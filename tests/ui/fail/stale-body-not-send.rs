use std::rc::Rc;

use cache_aside_runtime::cached;

async fn tick() {}

#[cached(ttl = 60, stale = "5m")]
async fn get(id: u64) -> u64 {
    let shared = Rc::new(id);
    tick().await;
    *shared
}

fn main() {}
