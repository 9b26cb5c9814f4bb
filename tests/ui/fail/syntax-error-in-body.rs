use cache_aside_runtime::cached;

#[cached(ttl = 60)]
async fn f(id: u64) -> u64 {
    let half = id / ;
    half
}

fn main() {
    let _ = f(1);
    let _ = f_invalidate(1);
    let _ = f_invalidate_all();
    let _ = f_cache_key(1);
}
