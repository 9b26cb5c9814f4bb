use cache_aside_runtime::cached;

#[cached(tll = 60)]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
