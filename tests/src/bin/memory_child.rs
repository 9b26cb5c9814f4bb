//! Resident memory of the embedded store under unique keys, for
//! tests/tests/memory.rs, in a process of its own so that nothing else's allocations count.
//!
//! `memory_child <keys> <value-bytes> <cap-bytes>` fills a `Cache::memory()` capped at
//! `<cap-bytes>` with `<keys>` unique keys of `<value-bytes>`-long strings through a
//! `#[cached]` function, then prints `rss_before=B rss_after=A entries_bytes=E`, resident
//! bytes from `/proc/self/statm` before the first call and after the last.

use cache_aside_runtime::{Cache, cached};

#[cached(ttl = 600, prefix = "fill", cache = cache, skip(cache, size))]
async fn fill(cache: &Cache, size: usize, id: u64) -> String {
    let mut value = format!("{id}:");
    value.extend(std::iter::repeat_n('x', size.saturating_sub(value.len())));
    value
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("reading /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's second field, resident pages");
    pages * 4096
}

fn arg(args: &[String], i: usize) -> u64 {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} must be a number"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (keys, size, cap) = (arg(&args, 1), arg(&args, 2) as usize, arg(&args, 3));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async {
        let cache = Cache::builder()
            .memory_max_bytes(cap)
            .memory()
            .expect("a memory cache");
        // Warm up the allocator and the runtime before the baseline.
        fill(&cache, size, u64::MAX).await;
        let before = resident_bytes();
        for id in 0..keys {
            let value = fill(&cache, size, id).await;
            assert_eq!(value.len(), size.max(value.len()));
        }
        let after = resident_bytes();
        println!(
            "rss_before={before} rss_after={after} loads={}",
            cache.stats().loads
        );
    });
}
