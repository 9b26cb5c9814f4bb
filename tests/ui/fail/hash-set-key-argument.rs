use std::collections::HashSet;

use cache_aside_runtime::cached;

// Equal sets iterate in different orders in different processes.
#[cached(ttl = 60)]
async fn count(ids: HashSet<u64>) -> usize {
    ids.len()
}

fn main() {}
