use cache_aside_runtime::cached;

#[cached(tll = 1)]
async fn f(id: u64) -> u64 {
    id
}

fn main() {
    let _ = f(1);
    let _ = f_invalidate(1);
    let _ = f_invalidate_all();
    let _ = f_cache_key(1);
}
