use cache_aside_runtime::cached;

#[allow(dead_code)]
const SOME_CONST: u64 = 60;

#[cached(ttl = SOME_CONST)]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
