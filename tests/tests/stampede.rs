//! In-process single-flight: concurrent misses on one key share one load.
//!
//! The loader holds at a gate (a semaphore with no permits) until the test has seen every
//! other caller register as a waiter (`stats().waited`), so "all calls overlapped the load"
//! is established by a signal, not by a sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cached};
use cache_aside_tests::RedisServer;
use tokio::sync::Semaphore;

#[cached(ttl = 60, prefix = "hot", cache = cache, skip(cache, loads, gate))]
async fn hot(cache: &Cache, loads: &AtomicU32, gate: &Semaphore, id: u64) -> String {
    loads.fetch_add(1, SeqCst);
    gate.acquire().await.expect("gate open").forget();
    format!("value-{id}")
}

struct Fixture {
    cache: Cache,
    loads: AtomicU32,
    gate: Semaphore,
}

impl Fixture {
    fn new(cache: Cache) -> Arc<Self> {
        Arc::new(Fixture {
            cache,
            loads: AtomicU32::new(0),
            gate: Semaphore::new(0),
        })
    }

    fn call(self: &Arc<Self>, id: u64) -> tokio::task::JoinHandle<String> {
        let f = Arc::clone(self);
        tokio::spawn(async move { hot(&f.cache, &f.loads, &f.gate, id).await })
    }

    /// Waits (bounded) until `cond` holds: the counters are the signal.
    async fn until(&self, what: &str, cond: impl Fn(&Fixture) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.cache.stats()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

async fn five_hundred_cold_calls_load_once(cache: Cache) {
    let f = Fixture::new(cache);
    let calls: Vec<_> = (0..500).map(|_| f.call(7)).collect();
    f.until("499 waiters", |f| f.cache.stats().waited == 499)
        .await;
    assert_eq!(f.loads.load(SeqCst), 1);
    f.gate.add_permits(1);
    for call in calls {
        assert_eq!(call.await.unwrap(), "value-7");
    }
    assert_eq!(f.loads.load(SeqCst), 1, "{}", f.cache.backend_name());
    // Other keys are not held up by a running flight, and load in parallel.
    let a = f.call(1);
    let b = f.call(2);
    f.until("two loads", |f| f.loads.load(SeqCst) == 3).await;
    f.gate.add_permits(2);
    assert_eq!(
        (a.await.unwrap(), b.await.unwrap()),
        ("value-1".into(), "value-2".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_cold_calls_load_once_on_redis() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .timeout(Duration::from_secs(2))
        .redis(&server.url())
        .unwrap();
    five_hundred_cold_calls_load_once(cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_cold_calls_load_once_in_memory() {
    five_hundred_cold_calls_load_once(Cache::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_even_when_redis_is_down() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let cache = Cache::builder()
        .timeout(Duration::from_millis(200))
        .redis(&url)
        .unwrap();
    let f = Fixture::new(cache);
    let calls: Vec<_> = (0..50).map(|_| f.call(3)).collect();
    f.until("49 waiters", |f| f.cache.stats().waited == 49)
        .await;
    f.gate.add_permits(1);
    for call in calls {
        assert_eq!(call.await.unwrap(), "value-3");
    }
    assert_eq!(
        f.loads.load(SeqCst),
        1,
        "the leader's entry is handed over, not re-read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_does_not_strand_its_waiters() {
    let f = Fixture::new(Cache::memory());
    let leader = f.call(9);
    f.until("the leader's load", |f| f.loads.load(SeqCst) == 1)
        .await;
    let waiters: Vec<_> = (0..10).map(|_| f.call(9)).collect();
    f.until("10 waiters", |f| f.cache.stats().waited == 10)
        .await;
    leader.abort(); // drops the leader's future mid-load
    assert!(leader.await.unwrap_err().is_cancelled());
    // One waiter takes over with its own body; the other nine wait for it.
    f.until("the new leader's load", |f| f.loads.load(SeqCst) == 2)
        .await;
    f.gate.add_permits(1);
    for waiter in waiters {
        let value = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("no waiter hangs")
            .unwrap();
        assert_eq!(value, "value-9");
    }
    assert_eq!(f.loads.load(SeqCst), 2);
}

/// An error that can neither be cloned nor made from the runtime's `Error`: waiters cannot
/// be handed anything, and run their own bodies.
#[derive(Debug, PartialEq)]
struct Opaque(u64);

#[cached(ttl = 60, prefix = "failing", cache = cache, skip(cache, loads, gate))]
async fn failing(
    cache: &Cache,
    loads: &AtomicU32,
    gate: &Semaphore,
    id: u64,
) -> Result<u64, String> {
    loads.fetch_add(1, SeqCst);
    gate.acquire().await.expect("gate open").forget();
    Err(format!("no row {id}"))
}

#[cached(ttl = 60, prefix = "opaque", cache = cache, skip(cache, loads, gate))]
async fn opaque(
    cache: &Cache,
    loads: &AtomicU32,
    gate: &Semaphore,
    id: u64,
) -> Result<u64, Opaque> {
    loads.fetch_add(1, SeqCst);
    gate.acquire().await.expect("gate open").forget();
    Err(Opaque(id))
}

/// Runs `calls` concurrent calls of one failing key; returns the results and the loads.
async fn stampede_on_error<T: Send + 'static>(
    call: impl Fn(Arc<Fixture>) -> tokio::task::JoinHandle<T>,
) -> (Vec<T>, u32) {
    let f = Fixture::new(Cache::memory());
    let calls: Vec<_> = (0..100).map(|_| call(f.clone())).collect();
    f.until("99 waiters", |f| f.cache.stats().waited == 99)
        .await;
    // Enough permits for every body that might run; how many did is the point.
    f.gate.add_permits(100);
    let mut results = Vec::new();
    for c in calls {
        results.push(c.await.unwrap());
    }
    let loads = f.loads.load(SeqCst);
    (results, loads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_share_the_leaders_error_without_caching_it() {
    let (results, loads) = stampede_on_error(|f| {
        tokio::spawn(async move { failing(&f.cache, &f.loads, &f.gate, 4).await })
    })
    .await;
    assert_eq!(loads, 1, "one body ran for 100 concurrent calls");
    assert!(
        results.iter().all(|r| r == &Err("no row 4".to_owned())),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_that_is_not_clone_is_not_shared() {
    let (results, loads) = stampede_on_error(|f| {
        tokio::spawn(async move { opaque(&f.cache, &f.loads, &f.gate, 4).await })
    })
    .await;
    assert_eq!(loads, 100, "each waiter ran its own body");
    assert!(results.iter().all(|r| r == &Err(Opaque(4))));
}

/// A value that cannot be cloned, behind an error that can.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Row(u64);

#[cached(ttl = 60, prefix = "rowless", cache = cache, skip(cache, loads, gate))]
async fn rowless(
    cache: &Cache,
    loads: &AtomicU32,
    gate: &Semaphore,
    id: u64,
) -> Result<Row, String> {
    loads.fetch_add(1, SeqCst);
    gate.acquire().await.expect("gate open").forget();
    Err(format!("no row {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_error_is_shared_when_the_value_is_not_clone() {
    let (results, loads) = stampede_on_error(|f| {
        tokio::spawn(async move { rowless(&f.cache, &f.loads, &f.gate, 4).await })
    })
    .await;
    assert_eq!(loads, 1, "one body ran for 100 concurrent calls");
    assert!(
        results.iter().all(|r| r == &Err("no row 4".to_owned())),
        "{results:?}"
    );
}

#[cached(ttl = 60, prefix = "missing", cache = cache, skip(cache, loads, gate))]
async fn missing(
    cache: &Cache,
    loads: &AtomicU32,
    gate: &Semaphore,
    id: u64,
) -> Result<Option<Row>, Opaque> {
    loads.fetch_add(1, SeqCst);
    gate.acquire().await.expect("gate open").forget();
    let _ = id;
    Ok(None)
}

/// A `None` without `none_ttl` is not stored, yet needs no `Clone` to share: every waiter
/// gets its own `Ok(None)` from the one load (neither `Row` nor `Opaque` is `Clone`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstored_none_is_shared_without_clone() {
    let (results, loads) = stampede_on_error(|f| {
        tokio::spawn(async move { missing(&f.cache, &f.loads, &f.gate, 4).await })
    })
    .await;
    assert_eq!(loads, 1, "one body ran for 100 concurrent calls");
    assert!(results.iter().all(|r| r == &Ok(None)), "{results:?}");
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cached(ttl = 60, prefix = "boxed", cache = cache, skip(cache, loads, gate))]
async fn boxed(
    cache: &Cache,
    loads: &AtomicU32,
    gate: &Semaphore,
    id: u64,
) -> Result<u64, BoxError> {
    loads.fetch_add(1, SeqCst);
    gate.acquire().await.expect("gate open").forget();
    Err(format!("no row {id}").into())
}

/// `Box<dyn Error + Send + Sync>` (like `anyhow::Error`) is not `Clone`: each waiter runs its
/// own body and gets its own error, the same one a lone call gets (never a stand-in that
/// callers would match differently). Spawning these calls at all is the other point: a
/// `dyn Error` in the return type once made the call's future fail to be `Send + 'static`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boxed_error_reaches_every_caller_as_itself() {
    let (results, loads) = stampede_on_error(|f| {
        tokio::spawn(async move {
            boxed(&f.cache, &f.loads, &f.gate, 4)
                .await
                .map_err(|e| e.to_string())
        })
    })
    .await;
    assert_eq!(loads, 100, "each waiter ran its own body");
    assert!(
        results.iter().all(|r| r == &Err("no row 4".into())),
        "{results:?}"
    );
}

#[tokio::test]
async fn a_shared_error_is_not_cached() {
    let f = Fixture::new(Cache::memory());
    f.gate.add_permits(2);
    assert!(failing(&f.cache, &f.loads, &f.gate, 8).await.is_err());
    assert!(failing(&f.cache, &f.loads, &f.gate, 8).await.is_err());
    assert_eq!(f.loads.load(SeqCst), 2, "the next call runs the body again");
}
