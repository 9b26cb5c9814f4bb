//! Adversarial probes of loads without a lease (a load hands its value only to callers it
//! is good for): a read that starts after an invalidation returned, on any handle of the
//! same Redis, never gets a value older than it; nothing hangs; single-flight still loads once.
//!
//! Two `Cache::redis` handles on one server model two processes. Synchronised by the body's
//! own signals (each call gets its own pause control over one shared row) and by a gate that
//! stops polling a leader's future right after its body returned, so that its store (or its
//! unleased re-read) has reached Redis but its flight has not finished yet.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cache_evict, cache_put, cached};
use cache_aside_tests::RedisServer;
use tokio::sync::{Barrier, Semaphore};

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// The database row every call reads, and how many bodies ran.
struct Row {
    value: Mutex<String>,
    loads: AtomicU64,
}

impl Row {
    fn new(value: &str) -> Arc<Row> {
        Arc::new(Row {
            value: Mutex::new(value.to_owned()),
            loads: AtomicU64::new(0),
        })
    }

    fn set(&self, value: &str) {
        *self.value.lock().unwrap() = value.to_owned();
    }

    fn loads(&self) -> u64 {
        self.loads.load(SeqCst)
    }
}

/// One caller's view of the row: its body can be held after reading, and says when it
/// returned.
struct Db {
    row: Arc<Row>,
    pause: AtomicBool,
    paused: Semaphore,
    resume: Semaphore,
    returned: AtomicBool,
    delay: Duration,
}

impl Db {
    fn new(row: &Arc<Row>) -> Arc<Db> {
        Db::with(row, false, Duration::ZERO)
    }

    fn pausing(row: &Arc<Row>) -> Arc<Db> {
        Db::with(row, true, Duration::ZERO)
    }

    fn with(row: &Arc<Row>, pause: bool, delay: Duration) -> Arc<Db> {
        Arc::new(Db {
            row: Arc::clone(row),
            pause: AtomicBool::new(pause),
            paused: Semaphore::new(0),
            resume: Semaphore::new(0),
            returned: AtomicBool::new(false),
            delay,
        })
    }

    async fn read(&self) -> String {
        self.row.loads.fetch_add(1, SeqCst);
        let value = self.row.value.lock().unwrap().clone();
        if self.pause.swap(false, SeqCst) {
            self.paused.add_permits(1);
            self.resume.acquire().await.unwrap().forget();
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.returned.store(true, SeqCst);
        value
    }

    /// Waits until the body has read the row and paused.
    async fn until_paused(&self) {
        tokio::time::timeout(Duration::from_secs(5), self.paused.acquire())
            .await
            .expect("the body never paused")
            .unwrap()
            .forget();
    }

    fn go(&self) {
        self.resume.add_permits(1);
    }
}

/// Stops polling a call's future once its body has returned and the call is waiting for
/// Redis again (its store, or an unleased load's re-read, is on the wire), until opened.
struct Gate {
    stalled: Semaphore,
    open: Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            stalled: Semaphore::new(0),
            open: Semaphore::new(0),
        }
    }
}

impl Gate {
    async fn hold<F: Future>(&self, db: &Db, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let early = std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending if db.returned.load(SeqCst) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        if let Some(v) = early {
            self.stalled.add_permits(1);
            return v;
        }
        self.stalled.add_permits(1);
        self.open.acquire().await.unwrap().forget();
        fut.await
    }

    async fn until_stalled(&self) {
        tokio::time::timeout(Duration::from_secs(5), self.stalled.acquire())
            .await
            .expect("the gated call never stalled")
            .unwrap()
            .forget();
    }

    fn open(&self) {
        self.open.add_permits(1);
    }
}

/// Waits until `cache` counts one more single-flight wait than `before` (a reader joined a
/// load), or the reader ended on its own. Returns whether it joined.
async fn joined<T>(cache: &Cache, before: u64, reader: &tokio::task::JoinHandle<T>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if cache.stats().waited > before {
            return true;
        }
        if reader.is_finished() {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "the reader neither waited nor ended"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(8), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after 8 s"))
}

const WARM: u64 = 999_999;

/// Makes the function's next reads plain `GET`s (a run of hits lowers its miss score; the
/// first call also loads the Lua scripts on this handle).
macro_rules! warm {
    ($f:ident, $cache:expr) => {{
        let row = Row::new("warm");
        let db = Db::new(&row);
        for _ in 0..24 {
            let _ = $f($cache, &db, WARM).await;
        }
    }};
}

// ---------------------------------------------------------------------------------------
// Functions (one prefix each: each has its own miss score)
// ---------------------------------------------------------------------------------------

#[cached(ttl = 600, prefix = "up-toctou-u", cache = cache, skip(cache, db))]
async fn toctou_unleased(cache: &Cache, db: &Db, id: u64) -> String {
    db.read().await
}

#[cached(ttl = 600, prefix = "up-toctou-l", cache = cache, skip(cache, db))]
async fn toctou_leased(cache: &Cache, db: &Db, id: u64) -> String {
    db.read().await
}

#[cached(ttl = 600, prefix = "up-three", cache = cache, skip(cache, db))]
async fn three(cache: &Cache, db: &Db, id: u64) -> String {
    db.read().await
}

#[cached(ttl = 600, timeout = "100ms", prefix = "up-fillfail", cache = cache, skip(cache, db))]
async fn fill_fails(cache: &Cache, db: &Db, id: u64) -> String {
    db.read().await
}

#[cached(ttl = 600, timeout = "100ms", prefix = "up-unknown", cache = cache, skip(cache, db))]
async fn unknown(cache: &Cache, db: &Db, id: u64) -> String {
    db.read().await
}

#[cached(ttl = 600, timeout = "100ms", prefix = "up-paused", cache = cache, skip(cache, db))]
async fn paused_check(cache: &Cache, db: &Db, id: u64) -> String {
    db.read().await
}

#[cached(ttl = 600, prefix = "up-mix", cache = cache, skip(cache, db))]
async fn mix_one(cache: &Cache, db: &Db, id: u64) -> Result<String, String> {
    Ok(db.read().await)
}

#[cached(batch, ttl = 600, prefix = "up-mix", cache = cache, skip(cache, db))]
async fn mix_many(cache: &Cache, db: &Db, ids: &[u64]) -> Result<HashMap<u64, String>, String> {
    let value = db.read().await;
    Ok(ids.iter().map(|&id| (id, value.clone())).collect())
}

#[cached(ttl = 600, lock = true, prefix = "up-lock", cache = cache, skip(cache, db))]
async fn locked(cache: &Cache, db: &Db, id: u64) -> String {
    db.read().await
}

#[cached(ttl = "300ms", stale = 60, prefix = "up-swr", cache = cache, skip(cache, db))]
async fn swr(cache: Cache, db: Arc<Db>, id: u64) -> String {
    db.read().await
}

#[cached(ttl = 600, prefix = "up-dedup", cache = cache, skip(cache, db))]
async fn dedup(cache: &Cache, db: &Db, id: u64) -> String {
    db.read().await
}

// ---------------------------------------------------------------------------------------
// p1-p3: the fixed race, with two and three handles, and its check's window
// ---------------------------------------------------------------------------------------

/// p1: A holds the lease, B loads without one, C (a third process) invalidates; a reader
/// of B that starts after that must not take B's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p1_three_handles_a_reader_after_a_third_process_invalidated_gets_the_new_row() {
    let server = RedisServer::start();
    let (a, b, c) = (
        Cache::redis(&server.url()).unwrap(),
        Cache::redis(&server.url()).unwrap(),
        Cache::redis(&server.url()).unwrap(),
    );
    warm!(three, &a);
    warm!(three, &b);
    let row = Row::new("old");
    let (da, db) = (Db::pausing(&row), Db::pausing(&row));
    let first = tokio::spawn({
        let (a, da) = (a.clone(), da.clone());
        async move { three(&a, &da, 1).await }
    });
    da.until_paused().await;
    let second = tokio::spawn({
        let (b, db) = (b.clone(), db.clone());
        async move { three(&b, &db, 1).await }
    });
    db.until_paused().await;
    row.set("new");
    assert!(three_invalidate(&c, 1).await.unwrap());
    warm!(three, &b);
    let waited = b.stats().waited;
    let reader = tokio::spawn({
        let (b, row) = (b.clone(), row.clone());
        async move { three(&b, &Db::new(&row), 1).await }
    });
    let did_join = joined(&b, waited, &reader).await;
    db.go();
    da.go();
    assert_eq!(within("B's load", second).await.unwrap(), "old");
    assert_eq!(within("A's load", first).await.unwrap(), "old");
    let later = within("the reader", reader).await.unwrap();
    eprintln!("p1: reader joined B's load: {did_join}, got {later}");
    assert_eq!(
        later, "new",
        "a reader after C's invalidation got B's old row"
    );
    assert_eq!(three(&a, &Db::new(&row), 1).await, "new");
    assert_eq!(three(&b, &Db::new(&row), 1).await, "new");
}

/// p2: B's unleased load ends; its re-read (store.rs `unleased`) sees A's lease still
/// there. Before B's flight finishes, A invalidates and a reader of B reads the key empty
/// and joins B's flight by epoch. The check was made before the invalidation, so it does
/// not cover that reader: it must not get B's old row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p2_an_unleased_check_made_before_the_invalidation_does_not_cover_a_later_reader() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    warm!(toctou_unleased, &here);
    warm!(toctou_unleased, &there);
    let row = Row::new("old");
    let (da, db) = (Db::pausing(&row), Db::pausing(&row));
    let gate = Arc::new(Gate::default());
    let first = tokio::spawn({
        let (there, da) = (there.clone(), da.clone());
        async move { toctou_unleased(&there, &da, 1).await }
    });
    da.until_paused().await;
    let second = tokio::spawn({
        let (here, db, gate) = (here.clone(), db.clone(), gate.clone());
        async move { gate.hold(&db, toctou_unleased(&here, &db, 1)).await }
    });
    db.until_paused().await;
    db.go();
    gate.until_stalled().await;
    // One more command on `here`'s connection: once it answers, B's re-read has run.
    let key = toctou_unleased_cache_key(&here, 1).unwrap();
    here.ttl_of(&key).await.unwrap();
    row.set("new");
    assert!(toctou_unleased_invalidate(&there, 1).await.unwrap());
    warm!(toctou_unleased, &here);
    let waited = here.stats().waited;
    let reader = tokio::spawn({
        let (here, row) = (here.clone(), row.clone());
        async move { toctou_unleased(&here, &Db::new(&row), 1).await }
    });
    let did_join = joined(&here, waited, &reader).await;
    gate.open();
    da.go();
    assert_eq!(within("B's load", second).await.unwrap(), "old");
    assert_eq!(within("A's load", first).await.unwrap(), "old");
    let later = within("the reader", reader).await.unwrap();
    eprintln!("p2: reader joined B's load: {did_join}, got {later}");
    assert_eq!(
        later, "new",
        "a reader that started after another process's invalidation got the row from before it"
    );
}

/// p3: the same window on a leased load: B's fill succeeds, then (before B's flight
/// finishes) another process invalidates and a reader of B joins B's flight by epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p3_a_fill_made_before_the_invalidation_does_not_cover_a_later_reader() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    warm!(toctou_leased, &here);
    let row = Row::new("old");
    let db = Db::pausing(&row);
    let gate = Arc::new(Gate::default());
    let first = tokio::spawn({
        let (here, db, gate) = (here.clone(), db.clone(), gate.clone());
        async move { gate.hold(&db, toctou_leased(&here, &db, 1)).await }
    });
    db.until_paused().await;
    db.go();
    gate.until_stalled().await;
    let key = toctou_leased_cache_key(&here, 1).unwrap();
    here.ttl_of(&key).await.unwrap();
    row.set("new");
    assert!(toctou_leased_invalidate(&there, 1).await.unwrap());
    warm!(toctou_leased, &here);
    let waited = here.stats().waited;
    let reader = tokio::spawn({
        let (here, row) = (here.clone(), row.clone());
        async move { toctou_leased(&here, &Db::new(&row), 1).await }
    });
    let did_join = joined(&here, waited, &reader).await;
    gate.open();
    assert_eq!(within("the load", first).await.unwrap(), "old");
    let later = within("the reader", reader).await.unwrap();
    eprintln!("p3: reader joined the load: {did_join}, got {later}");
    assert_eq!(
        later, "new",
        "a reader that started after another process's invalidation got the row from before it"
    );
}

// ---------------------------------------------------------------------------------------
// p4-p6: Redis paused (SIGSTOP)
// ---------------------------------------------------------------------------------------

/// p4: B leads with a lease; another process invalidates (revoking it); a reader of B joins
/// by epoch; Redis hangs, so B's fill times out. A failed fill is not a stored one: the
/// reader must not take B's old row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p4_a_fill_that_timed_out_is_not_handed_to_a_reader_after_a_remote_invalidation() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    warm!(fill_fails, &here);
    let row = Row::new("old");
    let db = Db::pausing(&row);
    let first = tokio::spawn({
        let (here, db) = (here.clone(), db.clone());
        async move { fill_fails(&here, &db, 1).await }
    });
    db.until_paused().await;
    row.set("new");
    assert!(fill_fails_invalidate(&there, 1).await.unwrap());
    warm!(fill_fails, &here);
    let waited = here.stats().waited;
    let reader = tokio::spawn({
        let (here, row) = (here.clone(), row.clone());
        async move { fill_fails(&here, &Db::new(&row), 1).await }
    });
    let did_join = joined(&here, waited, &reader).await;
    server.pause();
    db.go();
    let load = within("the load", first).await;
    let later = within("the reader", reader).await;
    server.resume();
    assert_eq!(load.unwrap(), "old");
    let later = later.unwrap();
    eprintln!("p4: reader joined the load: {did_join}, got {later}");
    assert_eq!(
        later, "new",
        "a fill that failed (Redis hung) was handed to a reader that started after the invalidation"
    );
}

/// p5: one handle. B loads with a lease; B itself invalidates (its epoch moves on); Redis
/// hangs, so a later reader's read times out (`Seen::Unknown`), and it joins B's load,
/// which the invalidation overtook. It must not get B's old row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p5_a_reader_whose_read_failed_does_not_take_a_load_its_own_cache_invalidated() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    warm!(unknown, &here);
    let row = Row::new("old");
    let db = Db::pausing(&row);
    let first = tokio::spawn({
        let (here, db) = (here.clone(), db.clone());
        async move { unknown(&here, &db, 1).await }
    });
    db.until_paused().await;
    row.set("new");
    assert!(unknown_invalidate(&here, 1).await.unwrap());
    server.pause();
    let waited = here.stats().waited;
    let reader = tokio::spawn({
        let (here, row) = (here.clone(), row.clone());
        async move { unknown(&here, &Db::new(&row), 1).await }
    });
    let did_join = joined(&here, waited, &reader).await;
    server.resume();
    db.go();
    assert_eq!(within("the load", first).await.unwrap(), "old");
    let later = within("the reader", reader).await.unwrap();
    eprintln!("p5: reader joined the load: {did_join}, got {later}");
    assert_eq!(
        later, "new",
        "a reader whose read failed took the value of a load this cache had invalidated"
    );
}

/// p6: the fixed race with Redis hung when B's unleased load ends: its re-read fails
/// (Dropped), the reader told to re-read cannot read either, and loads for itself. Bounded,
/// and the reader gets the new row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p6_redis_hung_at_an_unleased_loads_end_costs_time_not_freshness() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    warm!(paused_check, &here);
    warm!(paused_check, &there);
    let row = Row::new("old");
    let (da, db) = (Db::pausing(&row), Db::pausing(&row));
    let first = tokio::spawn({
        let (there, da) = (there.clone(), da.clone());
        async move { paused_check(&there, &da, 1).await }
    });
    da.until_paused().await;
    let second = tokio::spawn({
        let (here, db) = (here.clone(), db.clone());
        async move { paused_check(&here, &db, 1).await }
    });
    db.until_paused().await;
    row.set("new");
    assert!(paused_check_invalidate(&there, 1).await.unwrap());
    warm!(paused_check, &here);
    let waited = here.stats().waited;
    let reader = tokio::spawn({
        let (here, row) = (here.clone(), row.clone());
        async move { paused_check(&here, &Db::new(&row), 1).await }
    });
    let did_join = joined(&here, waited, &reader).await;
    server.pause();
    let started = Instant::now();
    db.go();
    let second = within("B's load", second).await;
    let later = within("the reader", reader).await;
    let took = started.elapsed();
    server.resume();
    da.go();
    assert_eq!(second.unwrap(), "old");
    assert_eq!(within("A's load", first).await.unwrap(), "old");
    let later = later.unwrap();
    eprintln!("p6: reader joined: {did_join}, got {later} in {took:?}");
    assert_eq!(later, "new");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

// ---------------------------------------------------------------------------------------
// p7: batch and one-key across handles
// ---------------------------------------------------------------------------------------

/// p7: A's one-key load holds key 1's lease; B's batch of [1, 2] loads key 1 without one;
/// A invalidates key 1; a one-key reader and a batch reader of B then join B's batch flight
/// of key 1: both must get the new row. Key 2 (which B leased) is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p7_readers_of_a_batch_that_loaded_unleased_get_the_new_row() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    warm!(mix_one, &here);
    warm!(mix_one, &there);
    let row = Row::new("old");
    let (da, db) = (Db::pausing(&row), Db::pausing(&row));
    let first = tokio::spawn({
        let (there, da) = (there.clone(), da.clone());
        async move { mix_one(&there, &da, 1).await }
    });
    da.until_paused().await;
    let batch = tokio::spawn({
        let (here, db) = (here.clone(), db.clone());
        async move { mix_many(&here, &db, &[1, 2]).await }
    });
    db.until_paused().await;
    row.set("new");
    assert!(mix_one_invalidate(&there, 1).await.unwrap());
    warm!(mix_one, &here);
    let waited = here.stats().waited;
    let one = tokio::spawn({
        let (here, row) = (here.clone(), row.clone());
        async move { mix_one(&here, &Db::new(&row), 1).await }
    });
    let one_joined = joined(&here, waited, &one).await;
    let waited = here.stats().waited;
    let many = tokio::spawn({
        let (here, row) = (here.clone(), row.clone());
        async move { mix_many(&here, &Db::new(&row), &[1]).await }
    });
    let many_joined = joined(&here, waited, &many).await;
    db.go();
    da.go();
    let batch = within("B's batch", batch).await.unwrap().unwrap();
    assert_eq!(batch.get(&1).map(String::as_str), Some("old"));
    assert_eq!(within("A", first).await.unwrap().unwrap(), "old");
    let one = within("one-key reader", one).await.unwrap().unwrap();
    let many = within("batch reader", many).await.unwrap().unwrap();
    eprintln!("p7: one-key joined {one_joined} got {one}; batch joined {many_joined} got {many:?}");
    assert_eq!(one, "new");
    assert_eq!(many.get(&1).map(String::as_str), Some("new"));
    // After it all, both handles read the new row for key 1.
    assert_eq!(mix_one(&here, &Db::new(&row), 1).await.unwrap(), "new");
    assert_eq!(mix_one(&there, &Db::new(&row), 1).await.unwrap(), "new");
}

// ---------------------------------------------------------------------------------------
// p8: lock = true
// ---------------------------------------------------------------------------------------

/// p8: with the lock, B waits for A's lease instead of loading without one; A's
/// invalidation frees the key, B takes the lease and loads the new row; readers after get
/// it, and A's dropped fill does not bring the old row back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p8_lock_waiters_across_handles_get_the_new_row() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    warm!(locked, &here);
    warm!(locked, &there);
    let row = Row::new("old");
    let da = Db::pausing(&row);
    let first = tokio::spawn({
        let (there, da) = (there.clone(), da.clone());
        async move { locked(&there, &da, 1).await }
    });
    da.until_paused().await;
    let loads = row.loads();
    let second = tokio::spawn({
        let (here, row) = (here.clone(), row.clone());
        async move { locked(&here, &Db::new(&row), 1).await }
    });
    // B is polling A's lease (nothing to wait on: its body has not run).
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(row.loads(), loads, "B ran its body beside A's lease");
    row.set("new");
    assert!(locked_invalidate(&there, 1).await.unwrap());
    let b = within("B", second).await.unwrap();
    da.go();
    assert_eq!(within("A", first).await.unwrap(), "old");
    eprintln!("p8: B (began before the invalidation) got {b}");
    assert_eq!(locked(&here, &Db::new(&row), 1).await, "new");
    assert_eq!(locked(&there, &Db::new(&row), 1).await, "new");
}

// ---------------------------------------------------------------------------------------
// p9: stale-while-revalidate refresh overtaken by another process's invalidation
// ---------------------------------------------------------------------------------------

/// p9: B serves a stale entry and refreshes it in the background; the refresh's body reads
/// the old row and pauses; A invalidates; a reader of B (key empty) joins whatever it
/// joins; the refresh resumes. The reader and every read after get the new row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p9_a_refresh_overtaken_by_another_process_invalidation_serves_nobody_after_it() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    let row = Row::new("old");
    assert_eq!(swr(here.clone(), Db::new(&row), 1).await, "old");
    // The entry's 300 ms pass: waiting for it is the scenario itself.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refresh = Db::pausing(&row);
    assert_eq!(
        swr(here.clone(), refresh.clone(), 1).await,
        "old",
        "served stale"
    );
    refresh.until_paused().await;
    row.set("new");
    swr_invalidate(there.clone(), 1).await.unwrap();
    let waited = here.stats().waited;
    let reader = tokio::spawn({
        let (here, row) = (here.clone(), row.clone());
        async move { swr(here, Db::new(&row), 1).await }
    });
    let did_join = joined(&here, waited, &reader).await;
    refresh.go();
    let later = within("the reader", reader).await.unwrap();
    eprintln!("p9: reader joined: {did_join}, got {later}");
    assert_eq!(later, "new");
    // Once the refresh ended (stored or dropped), reads on both handles are new.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !refresh.returned.load(SeqCst) {
        assert!(Instant::now() < deadline, "the refresh never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(swr(here.clone(), Db::new(&row), 1).await, "new");
    assert_eq!(swr(there.clone(), Db::new(&row), 1).await, "new");
}

// ---------------------------------------------------------------------------------------
// p10: single-flight still loads once
// ---------------------------------------------------------------------------------------

/// p10: `per` concurrent identical misses on each of `handles` handles, started by a
/// barrier, bodies taking 50 ms: the loads per round, for several rounds (the first ones
/// with plain reads, the later ones with reads that take the lease).
async fn dedup_rounds(handles: &[Cache], per: usize, rounds: u64, base: u64) -> Vec<u64> {
    dedup_waves(handles, per, rounds, base, 1).await
}

/// [`dedup_rounds`], the calls of each round in `waves` a millisecond apart; with more than
/// one, hits after each round bring the function's miss score down, so that every round
/// begins with plain reads and its later waves take the lease in their reads (while the
/// first wave's load may not have asked for it yet: in the first round as a rule, as its
/// lease script is not loaded on the server yet). Each round must load once.
async fn dedup_waves(
    handles: &[Cache],
    per: usize,
    rounds: u64,
    base: u64,
    waves: u64,
) -> Vec<u64> {
    let mut counts = Vec::new();
    for round in 0..rounds {
        let row = Row::new("v");
        let db = Db::with(&row, false, Duration::from_millis(50));
        let n = handles.len() * per;
        let barrier = Arc::new(Barrier::new(n));
        let mut tasks = Vec::new();
        for cache in handles {
            for i in 0..per as u64 {
                let (cache, db, barrier) = (cache.clone(), db.clone(), barrier.clone());
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    if i % waves > 0 {
                        tokio::time::sleep(Duration::from_millis(i % waves)).await;
                    }
                    dedup(&cache, &db, base + round).await
                }));
            }
        }
        for t in tasks {
            assert_eq!(within("dedup", t).await.unwrap(), "v");
        }
        counts.push(row.loads());
        if waves > 1 {
            for _ in 0..16 {
                assert_eq!(dedup(&handles[0], &db, base + round).await, "v");
            }
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p10_concurrent_misses_load_once_per_handle() {
    let server = RedisServer::start();
    let one = [Cache::redis(&server.url()).unwrap()];
    let two = [
        Cache::redis(&server.url()).unwrap(),
        Cache::redis(&server.url()).unwrap(),
    ];
    let three = [
        Cache::redis(&server.url()).unwrap(),
        Cache::redis(&server.url()).unwrap(),
        Cache::redis(&server.url()).unwrap(),
    ];
    let memory = [Cache::memory()];
    let paused = [Cache::builder()
        .__with_pauses()
        .redis(&server.url())
        .unwrap()];
    let cp = dedup_waves(&paused, 32, 8, 500, 4).await;
    eprintln!("p10 paused one handle {cp:?}");
    assert!(cp.iter().all(|&c| c == 1), "one handle, paused: {cp:?}");
    let c1 = dedup_rounds(&one, 32, 6, 100).await;
    let c2 = dedup_rounds(&two, 16, 6, 200).await;
    let c3 = dedup_rounds(&three, 12, 6, 300).await;
    let cm = dedup_rounds(&memory, 32, 6, 400).await;
    eprintln!("p10 loads per round: one handle {c1:?}, two {c2:?}, three {c3:?}, memory {cm:?}");
    assert!(c1.iter().all(|&c| c == 1), "one handle: {c1:?}");
    assert!(cm.iter().all(|&c| c == 1), "memory: {cm:?}");
    assert!(c2.iter().all(|&c| c <= 2), "two handles: {c2:?}");
    assert!(c3.iter().all(|&c| c <= 3), "three handles: {c3:?}");
}

// ---------------------------------------------------------------------------------------
// p12: a load beside another process's lease is not served past its TTL
// ---------------------------------------------------------------------------------------

#[cached(ttl = "200ms", prefix = "up-beside", cache = cache, skip(cache, db))]
async fn beside(cache: &Cache, db: &Db, id: u64) -> String {
    db.read().await
}

/// p12: B holds the key's lease (its body is held); A's calls load beside it without
/// storing. A call of A that begins after A's previous load ended, and after its TTL, must
/// not get that load's value: the lease it still finds is B's, not a sign that A's old value
/// is about to be stored. Before the fix, A served its first value for as long as B's load
/// ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p12_a_value_loaded_beside_another_process_lease_is_not_served_past_its_ttl() {
    let server = RedisServer::start();
    let (a, b) = (
        Cache::redis(&server.url()).unwrap(),
        Cache::redis(&server.url()).unwrap(),
    );
    let row = Row::new("v1");
    let held = Db::pausing(&row);
    let holder = tokio::spawn({
        let (b, held) = (b.clone(), held.clone());
        async move { beside(&b, &held, 1).await }
    });
    held.until_paused().await;
    assert_eq!(beside(&a, &Db::new(&row), 1).await, "v1");
    row.set("v2");
    // Past the TTL of A's first value: waiting for it is the scenario itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..3 {
        assert_eq!(
            beside(&a, &Db::new(&row), 1).await,
            format!("v{}", round + 2),
            "A served an old value while B's lease held the key"
        );
        row.set(&format!("v{}", round + 3));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    held.go();
    assert_eq!(within("B's load", holder).await.unwrap(), "v1");
}

// ---------------------------------------------------------------------------------------
// p11: randomized versioned interleavings (one-key + batch + puts + evicts + tags)
// ---------------------------------------------------------------------------------------

const IDS: usize = 4;

/// Per id, the version the database holds and the last whose invalidation returned.
struct Versions {
    current: [AtomicU64; IDS],
    /// Per id, the last version whose invalidation returned, times [`HOW`], plus how it
    /// was invalidated (for the report): the kind of write, and from which handle. One
    /// word, so that a reader's floor and its report come from the same write.
    done: [AtomicU64; IDS],
    jitter: AtomicU64,
}

/// `done` packs a version and how its write invalidated (`from * 16 + kind`).
const HOW: u64 = 256;

impl Versions {
    async fn body(&self, id: u64) -> u64 {
        let v = self.current[id as usize].load(SeqCst);
        let j = self.jitter.fetch_add(1, SeqCst).wrapping_mul(2_654_435_761) >> 7;
        match j % 4 {
            0 => {}
            1 => tokio::task::yield_now().await,
            _ => tokio::time::sleep(Duration::from_micros(200 + j % 1500)).await,
        }
        v
    }
}

#[cached(ttl = 600, prefix = "up-ver", cache = cache, skip(cache, v))]
async fn ver_one(cache: &Cache, v: &Versions, id: u64) -> u64 {
    v.body(id).await
}

#[cached(batch, ttl = 600, prefix = "up-ver", cache = cache, skip(cache, v))]
async fn ver_many(cache: &Cache, v: &Versions, ids: &[u64]) -> Result<HashMap<u64, u64>, String> {
    let mut out = HashMap::new();
    for &id in ids {
        out.insert(id, v.body(id).await);
    }
    Ok(out)
}

#[cache_evict(ver_one(cache, id))]
async fn ver_evict(cache: &Cache, v: &Versions, id: u64) -> u64 {
    v.current[id as usize].fetch_add(1, SeqCst) + 1
}

#[cache_put(ver_one(cache, id))]
async fn ver_put(cache: &Cache, v: &Versions, id: u64) -> u64 {
    v.current[id as usize].fetch_add(1, SeqCst) + 1
}

#[cached(ttl = 600, prefix = "up-vtag", tags = ["v:{id}"], cache = cache, skip(cache, v))]
async fn ver_tagged(cache: &Cache, v: &Versions, id: u64) -> u64 {
    v.body(id).await
}

#[derive(Clone, Copy, Debug)]
enum Surface {
    /// `ver_one` and `ver_many`, written by companions, evicts, puts and prefixes.
    Mixed,
    /// `ver_tagged`, written by `invalidate_tag`.
    Tagged,
}

async fn versioned_run(handles: Vec<Cache>, surface: Surface, secs: f64) -> (u64, Vec<String>) {
    let v = Arc::new(Versions {
        current: Default::default(),
        done: Default::default(),
        jitter: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let reads = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let n_handles = handles.len();
    for r in 0..8u64 {
        let cache = handles[r as usize % handles.len()].clone();
        let (v, stop, violations, reads) =
            (v.clone(), stop.clone(), violations.clone(), reads.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = r + 1;
            while !stop.load(SeqCst) {
                i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let id = (i >> 33) % IDS as u64;
                let floors: Vec<u64> = v.done.iter().map(|d| d.load(SeqCst)).collect();
                let got: Vec<(u64, u64)> = match (surface, (i >> 40) % 3) {
                    (Surface::Tagged, _) => vec![(id, ver_tagged(&cache, &v, id).await)],
                    (Surface::Mixed, 0) => {
                        let other = (id + 1) % IDS as u64;
                        let m = ver_many(&cache, &v, &[id, other]).await.unwrap();
                        vec![(id, m[&id]), (other, m[&other])]
                    }
                    (Surface::Mixed, _) => vec![(id, ver_one(&cache, &v, id).await)],
                };
                reads.fetch_add(1, SeqCst);
                tokio::task::yield_now().await;
                for (id, got) in got {
                    let (floor, how) = (floors[id as usize] / HOW, floors[id as usize] % HOW);
                    if got < floor {
                        violations.lock().unwrap().push(format!(
                            "handle {} id {id}: got v{got} after v{floor} was invalidated (write kind {} from handle {}; {} keys read)",
                            r as usize % n_handles,
                            how % 16,
                            how / 16,
                            if matches!(surface, Surface::Mixed) && (i >> 40) % 3 == 0 { "batch" } else { "one" },
                        ));
                    }
                }
            }
        }));
    }
    let writer = {
        let handles = handles.clone();
        let (v, stop) = (v.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n: u64 = 7;
            while !stop.load(SeqCst) {
                n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let cache = &handles[(n >> 20) as usize % handles.len()];
                let id = (n >> 35) % IDS as u64;
                let slot = &v.current[id as usize];
                let kind = (n >> 45) % 4;
                let next = match (surface, kind) {
                    (Surface::Tagged, _) => {
                        let next = slot.fetch_add(1, SeqCst) + 1;
                        let tag = cache_aside_runtime::tag::Tag::new("v")
                            .unwrap()
                            .value(&id)
                            .unwrap();
                        cache.invalidate_tag(&tag).await.unwrap();
                        next
                    }
                    (Surface::Mixed, 0) => {
                        let next = slot.fetch_add(1, SeqCst) + 1;
                        ver_one_invalidate(cache, id).await.unwrap();
                        next
                    }
                    (Surface::Mixed, 1) => ver_evict(cache, &v, id).await,
                    (Surface::Mixed, 2) => ver_put(cache, &v, id).await,
                    (Surface::Mixed, _) => {
                        let next = slot.fetch_add(1, SeqCst) + 1;
                        cache.invalidate_prefix("up-ver").await.unwrap();
                        next
                    }
                };
                let from = (n >> 20) % handles.len() as u64;
                v.done[id as usize].fetch_max(next * HOW + from * 16 + kind, SeqCst);
                for _ in 0..(n % 4) {
                    tokio::task::yield_now().await;
                }
                tokio::time::sleep(Duration::from_micros(300 + n % 700)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, SeqCst);
    within("writer", writer).await.unwrap();
    for t in tasks {
        within("reader", t).await.unwrap();
    }
    let violations = violations.lock().unwrap().clone();
    (reads.load(SeqCst), violations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p11_randomized_two_and_three_handles_never_serve_a_version_older_than_an_invalidation() {
    let server = RedisServer::start();
    let mut all = Vec::new();
    for (handles, surface) in [
        (2, Surface::Mixed),
        (3, Surface::Mixed),
        (3, Surface::Tagged),
    ] {
        // Pausing at random inside misses: the interleavings a loaded CI machine makes
        // (this probe found a batch relaying an overtaken load only there, 1 run in 10).
        let caches: Vec<Cache> = (0..handles)
            .map(|_| {
                Cache::builder()
                    .__with_pauses()
                    .redis(&server.url())
                    .unwrap()
            })
            .collect();
        let (reads, violations) = versioned_run(caches, surface, 3.0).await;
        eprintln!(
            "p11 redis x{handles} {surface:?}: {reads} reads, {} violations {:?}",
            violations.len(),
            violations.iter().take(5).collect::<Vec<_>>()
        );
        assert!(reads > 100, "too few reads to mean anything: {reads}");
        all.extend(violations);
    }
    let memory = Cache::builder().__with_pauses().memory().unwrap();
    let (reads, violations) = versioned_run(vec![memory], Surface::Mixed, 1.5).await;
    eprintln!("p11 memory: {reads} reads, {} violations", violations.len());
    all.extend(violations);
    assert!(
        all.is_empty(),
        "{} violations, first: {:?}",
        all.len(),
        &all[..all.len().min(5)]
    );
}
