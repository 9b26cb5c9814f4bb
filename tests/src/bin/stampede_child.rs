//! One process of a fleet, for the cross-process lock tests (tests/tests/lock.rs).
//!
//! `stampede_child <redis-url> <calls> <loader-delay-ms> <lock-ttl-ms> <lock-wait-ms>`
//!
//! Builds a Redis cache with the lock on, prints `ready`, waits for a line on stdin (the
//! parent releases every process at once), then makes `<calls>` concurrent calls on one
//! cold key. The body prints `loading` when it starts, so the parent knows who holds the
//! lock. At the end it prints `done loads=N ok=M waited_ms=W`, where `ok` counts calls that
//! returned the expected value and `waited_ms` is the slowest call.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cached};

static DELAY_MS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 60, prefix = "fleet")]
async fn shared(id: u64) -> Result<String, String> {
    println!("loading");
    std::io::stdout().flush().ok();
    tokio::time::sleep(Duration::from_millis(DELAY_MS.load(SeqCst))).await;
    Ok(format!("value-{id}"))
}

fn arg(args: &[String], i: usize, name: &str) -> u64 {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} ({name}) must be a number"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("redis url");
    let calls = arg(&args, 2, "calls");
    DELAY_MS.store(arg(&args, 3, "loader delay ms"), SeqCst);
    let lock_ttl = Duration::from_millis(arg(&args, 4, "lock ttl ms"));
    let lock_wait = Duration::from_millis(arg(&args, 5, "lock wait ms"));
    let cache = Cache::builder()
        .lock(true)
        .lock_ttl(lock_ttl)
        .lock_wait(lock_wait)
        .timeout(Duration::from_secs(1))
        .redis(url)
        .expect("valid url");
    cache.set_default().expect("first default");
    println!("ready");
    std::io::stdout().flush().ok();
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go).expect("go line");

    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            tokio::spawn(async {
                let start = Instant::now();
                let value = shared(7).await;
                (value, start.elapsed())
            })
        })
        .collect();
    let mut ok = 0;
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (value, took) = task.await.expect("call task");
        if value.as_deref() == Ok("value-7") {
            ok += 1;
        }
        slowest = slowest.max(took);
    }
    let stats = cache.stats();
    println!(
        "done loads={} ok={ok} waited_ms={} lock_waits={} lock_timeouts={}",
        stats.loads,
        slowest.as_millis(),
        stats.lock_waits,
        stats.lock_timeouts
    );
}
