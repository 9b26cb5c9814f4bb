//! Bounded under hostile conditions: no caller waits without a bound behind another one,
//! a call spends at most one `timeout` on Redis whatever its options, and a lock outlives
//! neither its holder nor a foreign writer.
//!
//! Synchronisation is by `Notify`/counters; the wall-clock bounds are the behaviour under
//! test, each with a margin for a loaded machine that is well below what the defect cost.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cached};
use cache_aside_tests::RedisServer;
use redis::Commands;
use tokio::sync::Notify;

/// What a body waits on, and how it says it started.
#[derive(Default)]
struct Gate {
    started: Notify,
    open: Notify,
    loads: AtomicU32,
}

#[cached(ttl = 60, prefix = "gated", cache = cache, skip(cache, gate))]
async fn gated(cache: &Cache, gate: &Gate, id: u64) -> u64 {
    gate.loads.fetch_add(1, SeqCst);
    gate.started.notify_one();
    gate.open.notified().await;
    id
}

/// A gate whose body goes straight through.
fn open_gate() -> Gate {
    let gate = Gate::default();
    gate.open.notify_one();
    gate
}

/// Polls `fut` once, then leaves it parked (not dropped) for as long as it is held.
async fn poll_once<F: Future + Unpin>(fut: &mut F) {
    std::future::poll_fn(|cx: &mut Context<'_>| {
        let _ = Pin::new(&mut *fut).poll(cx);
        Poll::Ready(())
    })
    .await;
}

/// A leader whose caller polled it once and stopped (a `select!` busy elsewhere) holds its
/// key's single-flight; another caller of that key waits `flight_wait`, then loads itself.
#[tokio::test]
async fn a_parked_leader_holds_waiters_only_for_flight_wait() {
    let cache = Cache::builder()
        .flight_wait(Duration::from_millis(200))
        .memory()
        .unwrap();
    let gate = Gate::default();
    let mut parked = Box::pin(gated(&cache, &gate, 1));
    poll_once(&mut parked).await;
    assert_eq!(gate.loads.load(SeqCst), 1, "the parked call leads the load");
    let other = open_gate();
    let start = Instant::now();
    let waiter = tokio::time::timeout(Duration::from_secs(3), gated(&cache, &other, 1)).await;
    let took = start.elapsed();
    assert_eq!(waiter.expect("the waiter gave up on the parked leader"), 1);
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(other.loads.load(SeqCst), 1, "the waiter ran its own body");
    let stats = cache.stats();
    assert_eq!((stats.waited, stats.flight_timeouts), (1, 1), "{stats:?}");
    drop(parked);
}

#[cached(ttl = 60, prefix = "impatient", flight_wait = "100ms", cache = cache, skip(cache, gate))]
async fn impatient(cache: &Cache, gate: &Gate, id: u64) -> u64 {
    gate.loads.fetch_add(1, SeqCst);
    gate.open.notified().await;
    id
}

/// `flight_wait` on the attribute wins over the cache's (5 s by default).
#[tokio::test]
async fn the_attribute_sets_its_own_flight_wait() {
    let cache = Cache::memory();
    let gate = Gate::default();
    let mut parked = Box::pin(impatient(&cache, &gate, 2));
    poll_once(&mut parked).await;
    let other = open_gate();
    let start = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(3), impatient(&cache, &other, 2)).await;
    assert_eq!(got.expect("waited past flight_wait"), 2);
    assert!(start.elapsed() < Duration::from_millis(1500));
    assert_eq!(cache.stats().flight_timeouts, 1);
}

#[cached(ttl = 60, prefix = "locked", lock = true, cache = cache, skip(cache))]
async fn locked(cache: &Cache, id: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(50)).await;
    id
}

/// With `lock = true` and a Redis that answers nothing, the read takes the whole
/// `timeout`; taking the lock must not get a second one.
#[tokio::test]
async fn a_locked_call_spends_one_timeout_on_a_redis_that_never_answers() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .timeout(Duration::from_millis(400))
        .redis(&server.url())
        .unwrap();
    assert_eq!(locked(&cache, 1).await, 1); // connected
    server.pause();
    let start = Instant::now();
    assert_eq!(locked(&cache, 2).await, 2);
    let took = start.elapsed();
    server.resume();
    // timeout + body is 450 ms; the defect cost 2 × timeout + body, 850 ms.
    assert!(took < Duration::from_millis(700), "{took:?}");
    assert!(cache.stats().errors >= 1);
}

#[cached(ttl = 60, prefix = "held", lock = true, cache = cache, skip(cache, gate))]
async fn held(cache: &Cache, gate: &Gate, id: u64) -> u64 {
    gate.loads.fetch_add(1, SeqCst);
    gate.started.notify_one();
    gate.open.notified().await;
    id
}

/// A lock holder whose call is dropped mid-load releases the lock at once (from a spawned
/// task), instead of making the fleet wait `lock_ttl` (5 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_lock_holder_frees_the_key_for_the_fleet() {
    let server = RedisServer::start();
    // Two handles: two single-flights, as two processes have.
    let holder = Cache::redis(&server.url()).unwrap();
    let other = Cache::redis(&server.url()).unwrap();
    let gate = Arc::new(Gate::default());
    let task = {
        let (holder, gate) = (holder.clone(), Arc::clone(&gate));
        tokio::spawn(async move { held(&holder, &gate, 1).await })
    };
    gate.started.notified().await;
    let entry: Vec<u8> = server
        .conn()
        .get(held_cache_key(&holder, 1).unwrap())
        .unwrap();
    assert!(
        cache_aside_tests::is_pending(&entry),
        "the holder took the lease: {entry:?}"
    );
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let second = Arc::new(Gate::default());
    second.open.notify_one(); // its body returns at once
    let start = Instant::now();
    assert_eq!(held(&other, &second, 1).await, 1);
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "waited for the dead lock: {took:?}"
    );
    assert_eq!(other.stats().lock_timeouts, 0);
}

/// A lease's placeholder left without a TTL (by anything) gets `lock_ttl`, so misses of
/// that key wait at most about `lock_ttl` once, not `lock_wait` each, forever.
#[tokio::test]
async fn a_lease_without_a_ttl_expires_after_lock_ttl() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .lock_ttl(Duration::from_millis(300))
        .lock_wait(Duration::from_secs(5))
        .redis(&server.url())
        .unwrap();
    let key = locked_cache_key(&cache, 3).unwrap();
    let mut conn = server.conn();
    let _: () = conn
        .set(&key, cache_aside_tests::placeholder(0x5eed))
        .unwrap();
    let start = Instant::now();
    assert_eq!(locked(&cache, 3).await, 3);
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(
        cache.stats().lock_timeouts,
        0,
        "it took the lock, not lock_wait"
    );
    let start = Instant::now();
    assert_eq!(locked(&cache, 3).await, 3);
    assert!(start.elapsed() < Duration::from_millis(500), "a hit now");
}

#[cached(ttl = 60, prefix = "big", max_value_bytes = 65536, cache = cache, skip(cache, loads))]
async fn big(cache: &Cache, loads: &AtomicU32, id: u64) -> String {
    loads.fetch_add(1, SeqCst);
    format!("ours {id}")
}

/// A 50 MB value under a live key, written by another program: its key costs a miss or
/// two and is then replaced; the other keys keep caching and the breaker stays closed. It
/// used to time out every read of the key (so the write after it was skipped and it stayed
/// forever) and open the breaker for the whole cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_foreign_value_costs_its_own_key_a_miss_and_is_replaced() {
    let server = RedisServer::start();
    // Short enough that reading the 50 MB whole cannot fit in it.
    let cache = Cache::builder()
        .timeout(Duration::from_millis(30))
        .redis(&server.url())
        .unwrap();
    let loads = AtomicU32::new(0);
    let key = big_cache_key(&cache, 1).unwrap();
    let mut conn = server.conn();
    let _: () = conn.set_ex(&key, vec![b'x'; 50 << 20], 600).unwrap();
    assert_eq!(big(&cache, &loads, 2).await, "ours 2"); // connected; another key
    let mut replaced = false;
    for _ in 0..20 {
        assert_eq!(big(&cache, &loads, 1).await, "ours 1");
        let head: Vec<u8> = conn.getrange(&key, 0, 0).unwrap();
        if head == [0xCA] {
            replaced = true;
            break;
        }
        // The size check runs in a task of its own; give it a moment between calls.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(replaced, "the foreign value was never replaced");
    let before = cache.stats();
    for id in 1..=3 {
        assert_eq!(big(&cache, &loads, id).await, format!("ours {id}"));
        assert_eq!(big(&cache, &loads, id).await, format!("ours {id}"));
    }
    let after = cache.stats();
    assert!(after.hits >= before.hits + 3, "{after:?}");
    assert_eq!(after.breaker_opened, 0, "{after:?}");
}

#[cached(ttl = 60, prefix = "capped", max_value_bytes = 1024, cache = cache, skip(cache, loads))]
async fn capped(cache: &Cache, loads: &AtomicU32, id: u64) -> String {
    loads.fetch_add(1, SeqCst);
    format!("ours {id}")
}

/// A value over `max_value_bytes` that another program wrote, small enough to be read in
/// time, is replaced by the first miss, and the next call hits; also for a function whose
/// reads take the lease (`SET .. NX GET` leaves such a value in place). That read once
/// mistook the kept value for a lease it had taken: its fill was dropped, and the foreign
/// value stayed for its whole TTL, one load per call.
#[tokio::test]
async fn an_oversized_foreign_value_is_replaced_by_a_miss_that_takes_the_lease() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    let loads = AtomicU32::new(0);
    // Misses only: the function's reads now take the lease.
    for id in 100..108 {
        capped(&cache, &loads, id).await;
    }
    let key = capped_cache_key(&cache, 1).unwrap();
    let mut conn = server.conn();
    let _: () = conn.set_ex(&key, vec![b'x'; 4096], 600).unwrap();
    let loads_before = loads.load(SeqCst);
    assert_eq!(capped(&cache, &loads, 1).await, "ours 1");
    assert_eq!(capped(&cache, &loads, 1).await, "ours 1");
    assert_eq!(loads.load(SeqCst), loads_before + 1, "{:?}", cache.stats());
    let entry: Vec<u8> = conn.get(&key).unwrap();
    assert!(entry.starts_with(&[0xCA]), "replaced: {:?}", &entry[..8]);
    assert_eq!(cache.stats().fills_dropped, 0);
}

#[cached(ttl = 60, prefix = "orphan", cache = cache, skip(cache, loads))]
async fn orphan(cache: &Cache, loads: &AtomicU32, id: u64) -> String {
    loads.fetch_add(1, SeqCst);
    format!("ours {id}")
}

/// A read that would take the lease times out behind a frozen Redis and is answered by
/// the body; when Redis thaws, the read still runs and leaves the key PENDING with nobody
/// to fill it. The call gives that lease up behind it, so the key caches again at once
/// rather than after `lock_ttl` (5 s), during which every load would skip storing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_by_a_timed_out_read_is_given_up() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .timeout(Duration::from_millis(100))
        .redis(&server.url())
        .unwrap();
    let loads = AtomicU32::new(0);
    // Misses only: the function's reads now take the lease.
    for id in 100..108 {
        orphan(&cache, &loads, id).await;
    }
    let key = orphan_cache_key(&cache, 1).unwrap();
    server.pause();
    assert_eq!(orphan(&cache, &loads, 1).await, "ours 1");
    server.resume();
    let mut conn = server.conn();
    let deadline = Instant::now() + Duration::from_secs(2);
    while conn.exists::<_, bool>(&key).unwrap() {
        assert!(
            Instant::now() < deadline,
            "the lease stayed: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let loads_before = loads.load(SeqCst);
    assert_eq!(orphan(&cache, &loads, 1).await, "ours 1");
    assert_eq!(orphan(&cache, &loads, 1).await, "ours 1");
    assert_eq!(loads.load(SeqCst), loads_before + 1, "stored, then a hit");
}

#[cached(ttl = "200ms", fail_safe = "1h", lock = true, prefix = "kept", cache = cache, skip(cache, fail))]
async fn kept(cache: &Cache, fail: &AtomicU32, id: u64) -> Result<u64, String> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    if fail.load(SeqCst) == 1 {
        return Err("down".into());
    }
    Ok(id)
}

/// Fail-safe with the lock against a Redis that stopped answering: the back-off and the
/// lock's release share what the read left, instead of a timeout each.
#[tokio::test]
async fn fail_safe_with_the_lock_spends_one_timeout_on_a_hung_redis() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .timeout(Duration::from_millis(300))
        .redis(&server.url())
        .unwrap();
    let fail = AtomicU32::new(0);
    assert_eq!(kept(&cache, &fail, 1).await, Ok(1));
    // Past its TTL, inside fail_safe: the next call loads, fails, and falls back on it.
    tokio::time::sleep(Duration::from_millis(350)).await;
    fail.store(1, SeqCst);
    // The read answers; then the lock is taken, the body fails, and Redis hangs.
    let start = Instant::now();
    let call = kept(&cache, &fail, 1);
    tokio::pin!(call);
    let value = tokio::select! {
        value = &mut call => value,
        () = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            server.pause();
            std::future::pending::<()>().await;
        } => unreachable!(),
    };
    let took = start.elapsed();
    server.resume();
    assert_eq!(value, Ok(1), "fail-safe answered with the kept value");
    // body + one timeout is 400 ms; a timeout for the back-off and another for the release
    // was 700 ms.
    assert!(took < Duration::from_millis(600), "{took:?}");
    assert_eq!(cache.stats().fail_safe, 1);
}

#[cached(ttl = 60, prefix = "w-user", tags = ["w-team:{team}"], cache = cache, skip(cache))]
async fn team_member(cache: &Cache, team: u64, id: u64) -> u64 {
    team * 1000 + id
}

#[cached(ttl = 60, prefix = "w-name", cache = cache, skip(cache))]
async fn member_name(cache: &Cache, id: u64) -> String {
    format!("n{id}")
}

#[cache_aside_runtime::cache_put(team_member(cache, team, id))]
async fn put_member(cache: &Cache, team: u64, id: u64) -> u64 {
    team * 1000 + id
}

#[cache_aside_runtime::cache_evict(
    team_member(cache, team, id),
    member_name(cache, id),
    tag = "w-team:{team}",
    cache = cache
)]
async fn drop_member(cache: &Cache, team: u64, id: u64) -> u64 {
    id
}

/// A write's cache work is bounded like a read's: with Redis answering nothing, a put of a
/// tagged read (tag, then write or delete) spends one `timeout`, and an evict of three
/// targets spends one for all (they go at once).
#[tokio::test]
async fn a_write_spends_one_timeout_on_a_redis_that_never_answers() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .timeout(Duration::from_millis(500))
        .breaker(1_000, Duration::from_secs(1))
        .redis(&server.url())
        .unwrap();
    assert_eq!(team_member(&cache, 1, 2).await, 1002); // connected
    server.pause();
    let start = Instant::now();
    assert_eq!(put_member(&cache, 1, 2).await, 1002);
    let put = start.elapsed();
    let start = Instant::now();
    assert_eq!(drop_member(&cache, 1, 2).await, 2);
    let evict = start.elapsed();
    server.resume();
    // One timeout is 500 ms; the defect cost the put two (tag, then delete) and the evict
    // three, one per target.
    assert!(put < Duration::from_millis(800), "put: {put:?}");
    assert!(evict < Duration::from_millis(800), "evict: {evict:?}");
    assert!(cache.stats().errors >= 2, "{:?}", cache.stats());
}
