//! Per-function figures: `Cache::stats_by_function` counts each function's calls apart,
//! its writes (`#[cache_put]`, `#[cache_evict]`) under it, and sums to `Cache::stats`.

use cache_aside_runtime::{Cache, FunctionStats, cache_evict, cache_put, cached};
use cache_aside_tests::RedisServer;

#[cached(ttl = 600, prefix = "obs-a", cache = cache, skip(cache))]
async fn alpha(cache: &Cache, id: u64) -> u64 {
    id * 2
}

#[cached(ttl = 600, prefix = "obs-b", cache = cache, skip(cache))]
async fn beta(cache: &Cache, id: u64) -> Result<String, String> {
    match id {
        0 => Err("no zero".into()),
        _ => Ok(id.to_string()),
    }
}

#[cache_put(alpha(cache, id))]
async fn set_alpha(cache: &Cache, id: u64, value: u64) -> u64 {
    value
}

#[cache_evict(beta(cache, id))]
async fn drop_beta(cache: &Cache, id: u64) {}

fn of<'a>(all: &'a [FunctionStats], name: &str) -> &'a FunctionStats {
    let found: Vec<_> = all.iter().filter(|f| f.function == name).collect();
    assert_eq!(found.len(), 1, "one entry for {name} in {all:?}");
    found[0]
}

async fn run(cache: &Cache) {
    for id in 1..=3 {
        alpha(cache, id).await;
        alpha(cache, id).await;
    }
    beta(cache, 5).await.unwrap();
    assert!(beta(cache, 0).await.is_err());
    set_alpha(cache, 9, 100).await;
    assert_eq!(alpha(cache, 9).await, 100);
    drop_beta(cache, 5).await;
    beta(cache, 5).await.unwrap();

    let all = cache.stats_by_function();
    assert_eq!(all.len(), 2, "{all:?}");
    let (a, b) = (of(&all, "alpha"), of(&all, "beta"));
    assert_eq!(a.prefix, Some("obs-a"));
    assert_eq!(b.prefix, Some("obs-b"));
    assert_eq!(
        (a.stats.hits, a.stats.misses, a.stats.loads),
        (4, 3, 3),
        "{a:?}"
    );
    assert_eq!((a.stats.puts, a.stats.evictions), (1, 0));
    assert_eq!(
        (b.stats.hits, b.stats.misses, b.stats.loads),
        (0, 3, 3),
        "{b:?}"
    );
    assert_eq!((b.stats.puts, b.stats.evictions), (0, 1));
    let sum = a.stats;
    let whole = cache.stats();
    for field in [
        (sum.hits + b.stats.hits, whole.hits),
        (sum.misses + b.stats.misses, whole.misses),
        (sum.loads + b.stats.loads, whole.loads),
        (sum.puts + b.stats.puts, whole.puts),
        (sum.evictions + b.stats.evictions, whole.evictions),
        (sum.errors + b.stats.errors, whole.errors),
    ] {
        assert_eq!(field.0, field.1, "{all:?} against {whole:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_counts_apart_and_they_sum_to_the_cache() {
    let server = RedisServer::start();
    // The first cache keeps its counters in the functions' specs, the second in its list:
    // both ways count the same, and neither sees the other's calls.
    for cache in [Cache::memory(), Cache::redis(&server.url()).unwrap()] {
        run(&cache).await;
    }
}

/// A writer the test reads back: what a `fmt` subscriber printed.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Everything at `trace` and above, captured for this thread until the guard drops.
    fn trace() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cached(ttl = 600, prefix = "obs-traced", cache = cache, skip(cache))]
async fn traced(cache: &Cache, secret: String) -> usize {
    tracing::info!("inside the body");
    secret.len()
}

/// Each call's outcome is a `trace` event with its function; a body runs inside a
/// `cache_aside.load` span, so its own events carry it; nothing at `info` or above names a
/// key (keys hold user data).
#[tokio::test(flavor = "current_thread")]
async fn calls_are_traced_by_function_and_outcome_and_keys_stay_out_of_info() {
    let (captured, _guard) = Captured::trace();
    let cache = Cache::memory();
    let secret = "hunter2-user@example.com".to_owned();
    assert_eq!(traced(&cache, secret.clone()).await, 24);
    assert_eq!(traced(&cache, secret.clone()).await, 24);
    // A Redis nobody listens on: the failure's warning names the prefix, not the key.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = Cache::builder()
        .timeout(std::time::Duration::from_millis(200))
        .redis(&format!("redis://127.0.0.1:{port}/"))
        .unwrap();
    assert_eq!(traced(&down, secret.clone()).await, 24);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let calls: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cache-aside: call"))
        .collect();
    assert_eq!(calls.len(), 3, "{text}");
    assert!(calls[0].contains("outcome=\"miss\"") && calls[0].contains("function=\"traced\""));
    assert!(calls[1].contains("outcome=\"hit\""), "{text}");
    let body = text
        .lines()
        .find(|l| l.contains("inside the body"))
        .unwrap();
    assert!(
        body.contains("cache_aside.load{function=\"traced\"}"),
        "{body}"
    );
    // Each call is a `cache_aside.call` span with its function and outcome; the body's
    // load span is inside the first call's.
    assert!(
        body.contains("cache_aside.call{function=\"traced\" outcome=\"miss\"}:cache_aside.load"),
        "{body}"
    );
    let spans: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cache_aside.call{") && l.contains("cache-aside: call"))
        .collect();
    assert_eq!(spans.len(), 3, "{text}");
    assert!(
        spans[1].contains("cache_aside.call{function=\"traced\"}"),
        "{}",
        spans[1]
    );
    let warned = text
        .lines()
        .find(|l| l.contains(" WARN ") && l.contains("cache operation failed"))
        .unwrap_or_else(|| panic!("no warning in {text}"));
    assert!(warned.contains("key_prefix=\"ca:obs-traced\""), "{warned}");
    assert!(
        text.lines()
            .any(|l| l.contains("DEBUG") && l.contains("hunter2")),
        "debug has the key"
    );
    for line in text
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN ") || l.contains("ERROR"))
    {
        assert!(
            !line.contains("hunter2"),
            "a key argument at info or above: {line}"
        );
    }
}

#[cached(batch, ttl = 600, prefix = "obs-batch", cache = cache, skip(cache))]
async fn traced_batch(cache: &Cache, ids: &[u64]) -> std::collections::HashMap<u64, u64> {
    tracing::info!("inside the batch body");
    ids.iter().map(|&id| (id, id)).collect()
}

/// A batch call is one `cache_aside.call` span too, its load inside it, its outcome `hit`
/// once every key hit (a probe found no span at all).
#[tokio::test(flavor = "current_thread")]
async fn a_batch_call_is_one_traced_call() {
    let (captured, _guard) = Captured::trace();
    let cache = Cache::memory();
    assert_eq!(traced_batch(&cache, &[1, 2]).await.len(), 2);
    assert_eq!(traced_batch(&cache, &[1, 2]).await.len(), 2);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let body = text
        .lines()
        .find(|l| l.contains("inside the batch body"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        body.contains("cache_aside.call{function=\"traced_batch\"}:cache_aside.load"),
        "{body}"
    );
    let closed_hit = text
        .lines()
        .filter(|l| l.contains("cache_aside.call{function=\"traced_batch\""))
        .any(|l| l.contains("outcome=\"hit\""));
    assert!(closed_hit, "{text}");
}

/// A key argument whose `Serialize` fails, with a message that quotes user data.
struct Unkeyable;

impl serde::Serialize for Unkeyable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("hunter2-in-the-key"))
    }
}

#[cached(ttl = 600, prefix = "obs-unkeyable", cache = cache, skip(cache))]
async fn unkeyable(cache: &Cache, who: Unkeyable) -> u8 {
    let _ = who;
    1
}

/// A serde error's message can quote the data it failed on: the `warn` line says what
/// failed, and only `debug` carries the cause (a probe found it at `warn`).
#[tokio::test(flavor = "current_thread")]
async fn a_serde_error_is_quoted_only_at_debug() {
    let (captured, _guard) = Captured::trace();
    let cache = Cache::memory();
    assert_eq!(unkeyable(&cache, Unkeyable).await, 1);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warned = text
        .lines()
        .find(|l| l.contains(" WARN ") && l.contains("cache operation failed"))
        .unwrap_or_else(|| panic!("no warning in {text}"));
    assert!(warned.contains("could not build the key"), "{warned}");
    assert!(!warned.contains("hunter2"), "{warned}");
    assert!(
        text.lines()
            .any(|l| l.contains("DEBUG") && l.contains("hunter2-in-the-key")),
        "{text}"
    );
}

#[cached(ttl = "50ms", stale = "1m", prefix = "obs-stale", cache = cache, skip(cache))]
async fn aging(cache: Cache, id: u64) -> u64 {
    id
}

/// A stale answer is counted as a hit and as served stale, and traced with one outcome,
/// `stale` (it was traced `hit`, then `stale`: a probe).
#[tokio::test(flavor = "current_thread")]
async fn a_stale_answer_has_one_outcome() {
    let (captured, _guard) = Captured::trace();
    let cache = Cache::memory();
    assert_eq!(aging(cache.clone(), 1).await, 1);
    // Past its 50 ms `ttl`, within `stale`: the entry expires by the wall clock.
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert_eq!(aging(cache.clone(), 1).await, 1);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.stale_served), (1, 1), "{stats:?}");
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let outcomes: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cache-aside: call") && l.contains("function=\"aging\""))
        .collect();
    assert_eq!(outcomes.len(), 2, "a miss, then the stale answer: {text}");
    assert!(outcomes[1].contains("outcome=\"stale\""), "{}", outcomes[1]);
}
