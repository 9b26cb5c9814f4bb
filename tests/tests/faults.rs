//! Fault injection (issue 4): a real `redis-server` per scenario, killed, paused, restarted,
//! filled up or fed bad bytes while `#[cached]` calls run against it.
//!
//! A cached call must never fail and never return a wrong value, whatever Redis does. The
//! loader is a pure function of its key, so every answer can be checked. Each call runs in
//! its own task (a panic is a failed call, not a dead test) under a hard cap (a call that
//! does not return is a failed call), and is compared with a latency bound that depends on
//! the fault. Counts go into a process-wide tally, printed as one line at the end of
//! `fault_suite`:
//!
//! `fault suite: killed 200/0/0, paused 150/0/0, ... (calls/failed/wrong)`
//!
//! The scenarios run one after the other inside `fault_suite`, each in its own task with its
//! own server and cache and a time limit, so one broken scenario is reported without hiding
//! the others. The last three rows, `cluster-migrated`, `cluster-paused` and
//! `cluster-killed`, run on a local Redis Cluster (see `faults/cluster.rs`).

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_aside_runtime::inspect::{self as codec, Codec};
use cache_aside_runtime::{BreakerState, Cache, Error, cached};
use cache_aside_tests::{Db, RedisServer};
use redis::Commands;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

#[path = "faults/cluster.rs"]
mod cluster;

/// Scheduling allowance on top of a latency bound (2 cores, shared with builds).
const SLACK: Duration = Duration::from_millis(150);
/// Time limit of one scenario; the ten together stay well under two minutes even if all hit it.
const SCENARIO_LIMIT: Duration = Duration::from_secs(8);

// ---------------------------------------------------------------------------------------
// The cached function and its loader
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    score: u64,
    tags: Vec<String>,
}

/// What the loader returns for `id`: a pure function of the key.
fn expected(id: u64) -> Item {
    Item {
        id,
        name: format!("item-{id}"),
        score: id.wrapping_mul(2_654_435_761) % 1000,
        tags: (0..id % 4).map(|t| format!("tag{t}")).collect(),
    }
}

#[cached(ttl = 60, prefix = "item", cache = cache, skip(cache, db))]
async fn item(cache: &Cache, db: &Db, id: u64) -> Item {
    db.loads.fetch_add(1, SeqCst);
    if !db.delay.is_zero() {
        tokio::time::sleep(db.delay).await;
    }
    expected(id)
}

#[cached(ttl = 60, prefix = "blob", cache = cache, skip(cache, db))]
async fn blob(cache: &Cache, db: &Db, len: usize) -> String {
    db.loads.fetch_add(1, SeqCst);
    "x".repeat(len)
}

// ---------------------------------------------------------------------------------------
// Accounting
// ---------------------------------------------------------------------------------------

/// One scenario's counts.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    failed: AtomicU64,
    wrong: AtomicU64,
    /// Calls that answered correctly but later than the scenario's latency bound.
    slow: AtomicU64,
    /// Slowest call, in microseconds.
    worst_us: AtomicU64,
    /// The first few problems, for the failure message.
    notes: Mutex<Vec<String>>,
}

impl Tally {
    fn note(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, SeqCst);
        let mut notes = self.notes.lock().unwrap();
        if notes.len() < 5 {
            notes.push(what);
        }
    }
}

/// One line of the summary.
struct Row {
    fault: &'static str,
    calls: u64,
    failed: u64,
    wrong: u64,
    slow: u64,
    worst: Duration,
    notes: Vec<String>,
    /// `Err`: the scenario's own assertions failed, or it ran out of time.
    outcome: Result<(), String>,
}

/// The process-wide tally: one row per fault, in the order they ran.
static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());

// ---------------------------------------------------------------------------------------
// Calling through the cache
// ---------------------------------------------------------------------------------------

/// Makes checked calls of `item` on one cache.
#[derive(Clone)]
struct Caller {
    cache: Cache,
    db: Arc<Db>,
    tally: Arc<Tally>,
    /// A call that has not answered by then is failed (and cancelled).
    cap: Duration,
    /// A correct answer later than this counts as slow.
    bound: Duration,
}

impl Caller {
    fn new(cache: &Cache, db: &Arc<Db>, tally: &Arc<Tally>, bound: Duration) -> Caller {
        Caller {
            cache: cache.clone(),
            db: db.clone(),
            tally: tally.clone(),
            cap: bound + Duration::from_secs(2),
            bound,
        }
    }

    /// One call of `item(id)`, checked and counted; returns its latency.
    async fn call(&self, id: u64) -> Duration {
        let tally = &self.tally;
        tally.calls.fetch_add(1, SeqCst);
        let (cache, db) = (self.cache.clone(), self.db.clone());
        let start = Instant::now();
        let mut task = tokio::spawn(async move { item(&cache, &db, id).await });
        let outcome = tokio::time::timeout(self.cap, &mut task).await;
        let elapsed = start.elapsed();
        match outcome {
            Err(_) => {
                task.abort();
                tally.note(
                    &tally.failed,
                    format!("item({id}) gave no answer within {:?}", self.cap),
                );
            }
            Ok(Err(join)) => tally.note(
                &tally.failed,
                format!("item({id}) panicked: {}", panic_text(join)),
            ),
            Ok(Ok(value)) if value != expected(id) => {
                tally.note(&tally.wrong, format!("item({id}) returned {value:?}"));
            }
            Ok(Ok(_)) if elapsed > self.bound => tally.note(
                &tally.slow,
                format!("item({id}) took {elapsed:?}, bound {:?}", self.bound),
            ),
            Ok(Ok(_)) => {}
        }
        tally.worst_us.fetch_max(elapsed.as_micros() as u64, SeqCst);
        elapsed
    }
}

fn panic_text(join: JoinError) -> String {
    if !join.is_panic() {
        return join.to_string();
    }
    let payload = join.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a non-string panic".into())
}

/// `total` calls spread over `tasks` tasks, on keys `0..keys`. Call number `n` waits until
/// the phase is past every gate `<= n`: the scenario moves the phase on (kill, pause, ...)
/// once `done` reaches a gate, so each fault lands at a known point of the run.
struct Workload {
    next: AtomicU64,
    total: u64,
    keys: u64,
    gates: Vec<u64>,
    phase: watch::Sender<usize>,
    done: watch::Sender<u64>,
}

impl Workload {
    fn new(total: u64, keys: u64, gates: &[u64]) -> Arc<Workload> {
        Arc::new(Workload {
            next: AtomicU64::new(0),
            total,
            keys,
            gates: gates.to_vec(),
            phase: watch::Sender::new(0),
            done: watch::Sender::new(0),
        })
    }

    fn key_of(&self, n: u64) -> u64 {
        n.wrapping_mul(7919) % self.keys
    }

    fn spawn(self: &Arc<Self>, caller: &Caller, tasks: usize) -> JoinSet<()> {
        let mut set = JoinSet::new();
        for _ in 0..tasks {
            let (work, caller) = (self.clone(), caller.clone());
            set.spawn(async move {
                let mut phase = work.phase.subscribe();
                loop {
                    let n = work.next.fetch_add(1, SeqCst);
                    if n >= work.total {
                        return;
                    }
                    let needed = work.gates.iter().filter(|&&gate| gate <= n).count();
                    phase
                        .wait_for(|&p| p >= needed)
                        .await
                        .expect("the scenario holds the phase sender");
                    caller.call(work.key_of(n)).await;
                    work.done.send_modify(|done| *done += 1);
                }
            });
        }
        set
    }

    /// Waits until `n` calls have completed.
    async fn reached(&self, n: u64) {
        self.done
            .subscribe()
            .wait_for(|&done| done >= n)
            .await
            .expect("the workload holds the sender");
    }

    fn advance(&self) {
        self.phase.send_modify(|p| *p += 1);
    }
}

/// Waits for every task of a workload; a task that panicked outside a call is a failure.
async fn join_all(mut set: JoinSet<()>) {
    while let Some(joined) = set.join_next().await {
        if let Err(join) = joined {
            panic!("a workload task died: {}", panic_text(join));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

async fn start(args: &'static [&'static str]) -> RedisServer {
    tokio::task::spawn_blocking(move || RedisServer::start_with(args))
        .await
        .expect("starting redis-server")
}

/// Restarts on the same port (blocking: off the runtime's workers), optionally paused.
async fn restart(mut server: RedisServer, then_pause: bool) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        server.restart();
        if then_pause {
            server.pause();
        }
        server
    })
    .await
    .expect("restarting redis-server")
}

/// Polls `cond` (an expression, may `.await`; for a counter or state nothing notifies
/// about) until it holds; panics with `what` after `limit`.
macro_rules! eventually {
    ($limit:expr, $what:expr, $cond:expr) => {{
        let limit: Duration = $limit;
        let deadline = Instant::now() + limit;
        while !$cond {
            assert!(Instant::now() < deadline, "{} within {limit:?}", $what);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

/// 1. Redis killed before the calls: loader values, each call within the timeout; once the
///    breaker is open, calls skip Redis and take in-process time.
async fn killed(tally: Arc<Tally>) {
    const TIMEOUT: Duration = Duration::from_millis(500);
    const CALLS: u64 = 200;
    let mut server = start(&[]).await;
    let cache = Cache::builder()
        .timeout(TIMEOUT)
        .breaker(5, Duration::from_secs(60))
        .redis(&server.url())
        .unwrap();
    let db = Db::new(Duration::from_millis(5));
    let caller = Caller::new(&cache, &db, &tally, TIMEOUT + db.delay + SLACK);
    for id in (0..10).chain(0..10) {
        caller.call(id).await;
    }
    assert_eq!(cache.stats().hits, 10, "warm-up: the second round hits");
    let mut made = 20;

    server.kill();
    let loads = db.loads();
    while cache.stats().breaker != BreakerState::Open {
        assert!(
            made < 40,
            "breaker(5, ..) still closed after {} calls on a dead Redis: {:?}",
            made - 20,
            cache.stats()
        );
        // Bounded by the connect timeout: `caller.bound` is TIMEOUT + loader.
        caller.call(made % 10).await;
        made += 1;
    }
    assert_eq!(db.loads() - loads, made - 20, "every call ran the loader");
    let stats = cache.stats();
    assert!(stats.breaker_opened >= 1 && stats.errors >= 5, "{stats:?}");

    // Open: nothing touches the network. Each call skips (the count grows) and takes a
    // fraction of the timeout a network attempt would be allowed.
    let in_process = TIMEOUT / 5;
    let loads = db.loads();
    for n in made..CALLS {
        let before = cache.stats().breaker_skipped;
        let elapsed = caller.call(n % 50).await;
        let after = cache.stats();
        assert!(
            after.breaker_skipped > before,
            "call {n}: breaker_skipped stayed at {before}: {after:?}"
        );
        assert!(
            elapsed < in_process,
            "call {n} took {elapsed:?} with the breaker open (timeout {TIMEOUT:?})"
        );
        assert_eq!(after.breaker, BreakerState::Open);
    }
    assert_eq!(db.loads() - loads, CALLS - made, "open: every call loads");
    assert_eq!(cache.stats().breaker_opened, 1, "one outage, one opening");
}

/// 2. Redis frozen (SIGSTOP) mid-run: calls answer within timeout + loader time; after
///    SIGCONT hits come back.
async fn paused(tally: Arc<Tally>) {
    const TIMEOUT: Duration = Duration::from_millis(300);
    const TOTAL: u64 = 150;
    const PAUSE_AT: u64 = 30;
    const RESUME_AT: u64 = 100;
    let server = start(&[]).await;
    let cache = Cache::builder()
        .timeout(TIMEOUT)
        .breaker(5, Duration::from_millis(500))
        .redis(&server.url())
        .unwrap();
    let db = Db::new(Duration::from_millis(20));
    let caller = Caller::new(&cache, &db, &tally, TIMEOUT + db.delay + SLACK);
    let work = Workload::new(TOTAL, 20, &[PAUSE_AT, RESUME_AT]);
    let tasks = work.spawn(&caller, 10);

    work.reached(PAUSE_AT).await;
    let before = cache.stats();
    assert!(before.hits > 0 && before.errors == 0, "{before:?}");
    server.pause();
    work.advance();
    work.reached(RESUME_AT).await;
    server.resume();
    let at_resume = cache.stats();
    assert!(
        at_resume.errors > 0,
        "the pause cost timeouts: {at_resume:?}"
    );
    work.advance();
    join_all(tasks).await;
    let slowest = Duration::from_micros(tally.worst_us.load(SeqCst));
    assert!(
        slowest >= TIMEOUT,
        "no call met a hung request: {slowest:?}"
    );

    // Hits resume by themselves (after the breaker's cool-down, if it opened).
    eventually!(
        Duration::from_secs(5),
        format!("no hit after SIGCONT: {:?}", cache.stats()),
        {
            let hits = cache.stats().hits;
            caller.call(hits % 20).await;
            cache.stats().hits > at_resume.hits + 1
        }
    );
    drop(server);
}

/// 3. Redis killed and restarted on the same port while 32 tasks make 10,000 calls: none
///    fails, none is wrong, and hits resume within the run.
async fn restarted(tally: Arc<Tally>) {
    const TIMEOUT: Duration = Duration::from_millis(250);
    const TOTAL: u64 = 10_000;
    const KILL_AT: u64 = 3_000;
    const RESTART_AT: u64 = 4_000;
    let mut server = start(&[]).await;
    // A cool-down well below the time the 6,000 calls after the restart take (each miss
    // costs the loader's 2 ms), so the breaker closes again within the run.
    let cache = Cache::builder()
        .timeout(TIMEOUT)
        .breaker(5, Duration::from_millis(50))
        .redis(&server.url())
        .unwrap();
    let db = Db::new(Duration::from_millis(2));
    let caller = Caller::new(&cache, &db, &tally, 2 * TIMEOUT + db.delay + SLACK);
    let work = Workload::new(TOTAL, 256, &[KILL_AT, RESTART_AT]);
    let tasks = work.spawn(&caller, 32);

    work.reached(KILL_AT).await;
    server.kill();
    let at_kill = cache.stats();
    assert!(at_kill.hits > 0, "hits before the kill: {at_kill:?}");
    work.advance();
    work.reached(RESTART_AT).await;
    server = restart(server, false).await;
    let at_restart = cache.stats();
    assert_eq!(at_restart.hits, at_kill.hits, "no hit while Redis was down");
    assert!(at_restart.errors > at_kill.errors, "{at_restart:?}");
    work.advance();
    join_all(tasks).await;

    let end = cache.stats();
    assert!(
        end.hits > at_restart.hits,
        "no hit in the {} calls after the restart: {end:?}",
        TOTAL - RESTART_AT
    );
    assert_eq!(end.breaker, BreakerState::Closed, "{end:?}");
    let size: u64 = redis::cmd("DBSIZE").query(&mut server.conn()).unwrap();
    assert!(size > 0, "entries were written again after the restart");
}

/// 4. A full Redis (`maxmemory 2mb`, `noeviction`) refuses writes with `OOM`: calls are
///    still right, `store_errors` counts the refusals, and the breaker stays closed.
async fn out_of_memory(tally: Arc<Tally>) {
    const CALLS: u64 = 100;
    let server = start(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]).await;
    let cache = Cache::builder()
        .breaker(3, Duration::from_secs(60))
        .redis(&server.url())
        .unwrap();
    let db = Db::new(Duration::ZERO);
    let caller = Caller::new(
        &cache,
        &db,
        &tally,
        2 * cache_aside_runtime::DEFAULT_TIMEOUT,
    );
    caller.call(0).await;
    caller.call(0).await;
    assert_eq!(
        (cache.stats().hits, db.loads()),
        (1, 1),
        "stored before the fill"
    );

    let mut conn = server.conn();
    let filler = vec![b'f'; 16 << 10];
    let refused =
        (0..200).find_map(|i| conn.set::<_, _, ()>(format!("fill:{i}"), &filler[..]).err());
    let refused = refused.expect("2mb filled within 200 writes of 16 KiB");
    assert_eq!(refused.code(), Some("OOM"), "{refused}");
    // Full to within one 16 KiB write, Redis still takes small ones now and then (a lease's
    // placeholder is 20 bytes) as client buffers come and go: hold the limit well under what
    // it uses, so that every write is refused.
    let info: String = redis::cmd("INFO").arg("memory").query(&mut conn).unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used - (256 << 10))
        .query(&mut conn)
        .unwrap();
    let refused = conn.set::<_, _, ()>("small", "s").unwrap_err();
    assert_eq!(refused.code(), Some("OOM"), "{refused}");

    for n in 0..CALLS {
        caller.call(1 + n % 50).await;
    }
    caller.call(0).await;
    let stats = cache.stats();
    assert_eq!(
        db.loads(),
        1 + CALLS,
        "nothing new could be stored: {stats:?}"
    );
    assert_eq!(stats.hits, 2, "reads still work on a full Redis: {stats:?}");
    assert!(stats.store_errors >= CALLS, "{stats:?}");
    assert_eq!(
        (stats.breaker, stats.breaker_opened, stats.breaker_skipped),
        (BreakerState::Closed, 0, 0),
        "an OOM reply means Redis is reachable: {stats:?}"
    );
    let exists: bool = conn.exists(item_cache_key(&cache, 1).unwrap()).unwrap();
    assert!(!exists);
}

#[derive(Serialize)]
struct OldItem {
    user_id: u64,
    full_name: String,
}

/// 5. Garbage, truncated entries and entries of an older schema under live keys: each is
///    a miss, a load, a counted corruption, and replaced (the next call hits).
async fn corrupt(tally: Arc<Tally>) {
    let server = start(&[]).await;
    let cache = Cache::builder()
        .timeout(Duration::from_secs(2))
        .redis(&server.url())
        .unwrap();
    let db = Db::new(Duration::ZERO);
    let caller = Caller::new(&cache, &db, &tally, Duration::from_secs(1));
    let mut conn = server.conn();
    let header = |flags: u8, codec: u8| {
        let mut h = vec![0xCA, 3, flags, codec];
        h.extend_from_slice(&[0; 16]);
        h
    };
    let envelope = |payload: &[u8]| [&header(0, 1)[..], payload].concat();
    let noise: Vec<u8> = (0u32..4096)
        .scan(0x2545_F491u32, |s, _| {
            *s ^= *s << 13;
            *s ^= *s >> 17;
            *s ^= *s << 5;
            Some(*s as u8)
        })
        .collect();

    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"not an envelope".to_vec(),
        vec![0xCA],
        noise,
        envelope(b"\xff\xfe{{{"),
        [&[0xCA, 9, 0, 1][..], &[0; 16], b"{}"].concat(), // unknown envelope version
        [header(0x80, 1), b"1".to_vec()].concat(),        // unknown flag
        [header(0, 77), b"1".to_vec()].concat(),          // unknown codec
        serde_json::to_vec(&expected(7)).unwrap(),        // the right JSON, no envelope
    ];
    let schemas: Vec<Vec<u8>> = vec![
        codec::encode(
            Codec::Json,
            Some(&OldItem {
                user_id: 3,
                full_name: "old".into(),
            }),
            None,
        )
        .unwrap(),
        codec::encode(Codec::Json, Some("a string"), None).unwrap(),
        codec::encode(Codec::Json, Some(&42u64), None).unwrap(),
        codec::encode(Codec::Json, Some(&[1, 2, 3]), None).unwrap(),
        // An absence (a batch's `none_ttl`) where `Item` has no room for one: a miss that
        // is not counted corrupt.
        codec::encode::<Item>(Codec::Json, None, None).unwrap(),
        envelope(br#"{"id":"5","name":"x","score":1,"tags":[]}"#),
        envelope(br#"{"id":5,"name":"x","score":1}"#),
    ];
    let truncations = [1usize, 4, 11, 12, 19, 20, 21, 38];
    const ABSENCE: usize = 4;

    let mut next_id = 100u64;
    let mut cases = 0u64;
    for (kind, count) in [
        ("garbage", garbage.len()),
        ("schema", schemas.len()),
        ("truncated", truncations.len() + 1),
    ] {
        for i in 0..count {
            let id = next_id;
            next_id += 1;
            let key = item_cache_key(&cache, id).unwrap();
            let bytes = match kind {
                "garbage" => garbage[i].clone(),
                "schema" => schemas[i].clone(),
                _ => {
                    // A valid entry written by the cache, cut short.
                    caller.call(id).await;
                    let good: Vec<u8> = conn.get(&key).unwrap();
                    let cut = truncations.get(i).copied().unwrap_or(good.len() - 1);
                    assert!(cut < good.len(), "entry of {} bytes", good.len());
                    good[..cut].to_vec()
                }
            };
            let _: () = conn.set_ex(&key, &bytes[..], 60).unwrap();
            let (loads, before) = (db.loads(), cache.stats());
            caller.call(id).await;
            let after = cache.stats();
            assert_eq!(db.loads(), loads + 1, "{kind} #{i}: loaded: {bytes:?}");
            let corrupt = u64::from(!(kind == "schema" && i == ABSENCE));
            assert_eq!(
                after.corrupt,
                before.corrupt + corrupt,
                "{kind} #{i}: counted"
            );
            assert_eq!(after.misses, before.misses + 1, "{kind} #{i}: a miss");
            let stored: Vec<u8> = conn.get(&key).unwrap();
            let entry = codec::decode::<Item>(&stored)
                .unwrap_or_else(|e| panic!("{kind} #{i}: not replaced: {e}"));
            assert_eq!(entry.value, Some(expected(id)), "{kind} #{i}");
            caller.call(id).await;
            assert_eq!(db.loads(), loads + 1, "{kind} #{i}: the replacement hits");
            assert_eq!(cache.stats().hits, after.hits + 1, "{kind} #{i}");
            cases += corrupt;
        }
    }
    assert_eq!(cache.stats().corrupt, cases);
}

/// 6. The breaker: opens after 3 consecutive failures, skips during the cool-down, lets one
///    probe through after it (a failed probe re-opens), closes when Redis is back.
async fn breaker(tally: Arc<Tally>) {
    const TIMEOUT: Duration = Duration::from_secs(2);
    const COOLDOWN: Duration = Duration::from_millis(1000);
    let mut server = start(&[]).await;
    let cache = Cache::builder()
        .timeout(TIMEOUT)
        .breaker(3, COOLDOWN)
        .redis(&server.url())
        .unwrap();
    let db = Db::new(Duration::ZERO);
    let caller = Caller::new(&cache, &db, &tally, Duration::from_millis(500));
    for id in [1, 2, 1, 2] {
        caller.call(id).await;
    }
    assert_eq!(cache.stats().hits, 2);
    let key = item_cache_key(&cache, 1).unwrap();
    let state = || cache.stats().breaker;

    // Three consecutive failures (one operation each) open it; the fourth is refused.
    server.kill();
    for failure in 1..=3 {
        assert_eq!(state(), BreakerState::Closed, "before failure {failure}");
        let result = cache.ttl_of(&key).await;
        assert!(
            matches!(&result, Err(e) if !matches!(e, Error::CircuitOpen)),
            "failure {failure} reached the network: {result:?}"
        );
    }
    let opened_at = Instant::now();
    assert_eq!(state(), BreakerState::Open);
    assert_eq!(cache.stats().breaker_opened, 1);
    assert!(matches!(cache.ttl_of(&key).await, Err(Error::CircuitOpen)));

    // Cool-down: calls skip Redis.
    let skipped = cache.stats().breaker_skipped;
    for id in 0..20 {
        let elapsed = caller.call(id).await;
        assert!(elapsed < TIMEOUT / 10, "call {id} took {elapsed:?}");
    }
    let stats = cache.stats();
    assert!(stats.breaker_skipped >= skipped + 20, "{stats:?}");
    assert_eq!(stats.breaker, BreakerState::Open);
    assert!(
        opened_at.elapsed() < COOLDOWN,
        "inconclusive: the machine stalled past the cool-down"
    );

    // After the cool-down one probe goes through; Redis is still down, so it re-opens.
    tokio::time::sleep_until((opened_at + COOLDOWN).into()).await;
    let probe = cache.ttl_of(&key).await;
    let reopened_at = Instant::now();
    assert!(
        matches!(&probe, Err(e) if !matches!(e, Error::CircuitOpen)),
        "the probe reached the network: {probe:?}"
    );
    assert_eq!(state(), BreakerState::Open, "a failed probe re-opens");
    assert!(matches!(cache.ttl_of(&key).await, Err(Error::CircuitOpen)));
    assert_eq!(cache.stats().breaker_opened, 1, "still one outage");

    // Redis comes back, frozen at first so that the next probe is seen in flight.
    server = restart(server, true).await;
    tokio::time::sleep_until((reopened_at + COOLDOWN).into()).await;
    let probe = tokio::spawn({
        let caller = caller.clone();
        async move { caller.call(1).await }
    });
    eventually!(
        Duration::from_secs(1),
        "no half-open probe",
        state() == BreakerState::HalfOpen
    );
    let skipped = cache.stats().breaker_skipped;
    for id in 30..35 {
        caller.call(id).await;
    }
    assert!(
        cache.stats().breaker_skipped >= skipped + 5,
        "half-open: only the probe goes through: {:?}",
        cache.stats()
    );
    assert_eq!(state(), BreakerState::HalfOpen);
    server.resume();
    probe.await.expect("the probe call");
    assert_eq!(state(), BreakerState::Closed, "a good probe closes it");
    assert_eq!(cache.stats().breaker_opened, 1);

    // Hits resume (the restarted Redis is empty: the first call per key stores).
    let hits = cache.stats().hits;
    for id in [40, 41, 40, 41] {
        caller.call(id).await;
    }
    assert_eq!(cache.stats().hits, hits + 2, "{:?}", cache.stats());
}

/// 7. `lock = true` against a Redis that answers nothing: each call spends one timeout on
///    the cache, lock included, then the load.
async fn locked_hung(tally: Arc<Tally>) {
    const TIMEOUT: Duration = Duration::from_millis(200);
    let server = start(&[]).await;
    let cache = Cache::builder()
        .timeout(TIMEOUT)
        .lock(true)
        .breaker(1_000, Duration::from_secs(1))
        .redis(&server.url())
        .unwrap();
    let db = Db::new(Duration::from_millis(20));
    let caller = Caller::new(&cache, &db, &tally, TIMEOUT + db.delay + SLACK);
    caller.call(1).await;
    server.pause();
    for id in 2..12 {
        caller.call(id).await;
    }
    server.resume();
    assert!(cache.stats().errors >= 10, "{:?}", cache.stats());
}

/// 8. A lock holder cancelled mid-load: another process's call of that key does not wait
///    for the lock's TTL.
async fn holder_cancelled(tally: Arc<Tally>) {
    let server = start(&[]).await;
    let holder = Cache::builder().lock(true).redis(&server.url()).unwrap();
    let other = Cache::builder().lock(true).redis(&server.url()).unwrap();
    let slow = Db::new(Duration::from_secs(30));
    let task = {
        let (holder, slow) = (holder.clone(), slow.clone());
        tokio::spawn(async move { item(&holder, &slow, 7).await })
    };
    eventually!(
        Duration::from_secs(2),
        "the holder's load",
        slow.loads() == 1
    );
    task.abort();
    let db = Db::new(Duration::from_millis(20));
    // The lock's TTL is 5 s: a call that waited for it would be far over this bound.
    let caller = Caller::new(&other, &db, &tally, Duration::from_millis(1000));
    for id in [7, 7, 8] {
        caller.call(id).await;
    }
    assert_eq!(other.stats().lock_timeouts, 0, "{:?}", other.stats());
}

/// 9. A leader polled once and left parked: waiters of its key give up on it after
///    `flight_wait` and load themselves.
async fn parked_leader(tally: Arc<Tally>) {
    const FLIGHT_WAIT: Duration = Duration::from_millis(200);
    let server = start(&[]).await;
    let cache = Cache::builder()
        .flight_wait(FLIGHT_WAIT)
        .redis(&server.url())
        .unwrap();
    let slow = Db::new(Duration::from_secs(30));
    let mut parked = Box::pin(item(&cache, &slow, 9));
    // Polled until its body runs (its Redis read comes first), then never again.
    for _ in 0..200 {
        std::future::poll_fn(|cx| {
            let _ = parked.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
        if slow.loads() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(slow.loads(), 1, "the parked call leads the load");
    let db = Db::new(Duration::from_millis(20));
    let caller = Caller::new(&cache, &db, &tally, FLIGHT_WAIT + db.delay + SLACK);
    for _ in 0..3 {
        caller.call(9).await;
    }
    assert!(cache.stats().flight_timeouts >= 1, "{:?}", cache.stats());
    drop(parked);
}

/// 10. A 50 MB value another program wrote under a live key: that key costs misses until
///     it is replaced; the other keys keep hitting.
async fn foreign_huge(tally: Arc<Tally>) {
    const TIMEOUT: Duration = Duration::from_millis(100);
    let server = start(&[]).await;
    let cache = Cache::builder()
        .timeout(TIMEOUT)
        .redis(&server.url())
        .unwrap();
    let db = Db::new(Duration::ZERO);
    let caller = Caller::new(&cache, &db, &tally, TIMEOUT * 2 + SLACK);
    for id in 1..5 {
        caller.call(id).await;
    }
    let key = item_cache_key(&cache, 13).unwrap();
    let mut conn = server.conn();
    let _: () = conn.set_ex(&key, vec![b'x'; 50 << 20], 600).unwrap();
    for round in 0..10 {
        for id in [13, 1, 2, 3, 4] {
            caller.call(id).await;
        }
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let head: Vec<u8> = conn.getrange(&key, 0, 0).unwrap();
    assert_eq!(head, [0xCA], "the foreign value was replaced");
    let hits = cache.stats().hits;
    for id in [13, 1, 2, 3, 4] {
        caller.call(id).await;
    }
    assert_eq!(cache.stats().hits, hits + 5, "{:?}", cache.stats());
}

// ---------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------

/// Runs one scenario in its own task under [`SCENARIO_LIMIT`] and records its row.
async fn scenario<F, Fut>(fault: &'static str, run: F)
where
    F: FnOnce(Arc<Tally>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tally = Arc::new(Tally::default());
    let task = tokio::spawn(run(tally.clone()));
    let abort = task.abort_handle();
    let outcome = match tokio::time::timeout(SCENARIO_LIMIT, task).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(join)) => Err(panic_text(join)),
        Err(_) => {
            abort.abort();
            Err(format!("did not finish within {SCENARIO_LIMIT:?}"))
        }
    };
    let row = Row {
        fault,
        calls: tally.calls.load(SeqCst),
        failed: tally.failed.load(SeqCst),
        wrong: tally.wrong.load(SeqCst),
        slow: tally.slow.load(SeqCst),
        worst: Duration::from_micros(tally.worst_us.load(SeqCst)),
        notes: tally.notes.lock().unwrap().clone(),
        outcome,
    };
    ROWS.lock().unwrap().push(row);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite() {
    let start = Instant::now();
    scenario("killed", killed).await;
    scenario("paused", paused).await;
    scenario("restart", restarted).await;
    scenario("oom", out_of_memory).await;
    scenario("corrupt", corrupt).await;
    scenario("breaker", breaker).await;
    scenario("locked-hung", locked_hung).await;
    scenario("holder-cancelled", holder_cancelled).await;
    scenario("parked-leader", parked_leader).await;
    scenario("foreign-huge", foreign_huge).await;
    cluster::scenarios().await;

    let rows = ROWS.lock().unwrap();
    let counts: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {}/{}/{}", r.fault, r.calls, r.failed, r.wrong))
        .collect();
    let summary = format!(
        "fault suite: {} (calls/failed/wrong) in {:.1?}",
        counts.join(", "),
        start.elapsed()
    );
    let mut problems = Vec::new();
    for r in rows.iter() {
        if let Err(why) = &r.outcome {
            problems.push(format!("{}: scenario failed: {why}", r.fault));
        }
        if r.failed + r.wrong + r.slow > 0 {
            problems.push(format!(
                "{}: {} failed, {} wrong, {} over the latency bound (slowest {:?}); first: {:?}",
                r.fault, r.failed, r.wrong, r.slow, r.worst, r.notes
            ));
        }
    }
    // Straight to stderr, past the test harness's capture: the line shows in every run.
    let _ = writeln!(std::io::stderr(), "{summary}");
    assert!(problems.is_empty(), "{summary}\n{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Single settings
// ---------------------------------------------------------------------------------------

/// A value above `max_value_bytes` is returned, not stored; the next call loads again.
#[tokio::test]
async fn oversized_values_are_returned_uncached() {
    let server = start(&[]).await;
    let cache = Cache::builder()
        .max_value_bytes(1024)
        .redis(&server.url())
        .unwrap();
    let db = Db::new(Duration::ZERO);
    let run = async {
        for round in 1..=2 {
            assert_eq!(blob(&cache, &db, 4096).await.len(), 4096);
            let stats = cache.stats();
            assert_eq!((db.loads(), stats.oversized), (round, round), "{stats:?}");
        }
        let key = blob_cache_key(&cache, 4096).unwrap();
        let exists: bool = server.conn().exists(&key).unwrap();
        assert!(!exists, "the oversized value was not written");
        // Under the limit: cached as usual.
        assert_eq!(blob(&cache, &db, 100).await.len(), 100);
        assert_eq!(blob(&cache, &db, 100).await.len(), 100);
        let stats = cache.stats();
        assert_eq!((db.loads(), stats.hits, stats.oversized), (3, 1, 2));
        assert_eq!(stats.store_errors, 0);
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("bounded");
}

/// The builder's per-call `timeout` bounds a call against a frozen Redis: about the
/// timeout (plus the loader), not more.
#[tokio::test]
async fn builder_timeout_bounds_a_call_on_a_frozen_redis() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let server = start(&[]).await;
    let cache = Cache::builder()
        .timeout(TIMEOUT)
        .redis(&server.url())
        .unwrap();
    let db = Db::new(Duration::ZERO);
    let run = async {
        assert_eq!(item(&cache, &db, 1).await, expected(1));
        assert_eq!(item(&cache, &db, 1).await, expected(1));
        assert_eq!(cache.stats().hits, 1, "connected and cached");
        server.pause();
        let start = Instant::now();
        let value = item(&cache, &db, 1).await;
        let elapsed = start.elapsed();
        server.resume();
        assert_eq!(value, expected(1));
        assert_eq!(db.loads(), 2, "the hung read was a miss");
        assert!(
            elapsed >= TIMEOUT,
            "returned before the timeout: {elapsed:?}"
        );
        assert!(
            elapsed <= TIMEOUT + SLACK,
            "a call on a frozen Redis took {elapsed:?} with timeout {TIMEOUT:?}: {:?}",
            cache.stats()
        );
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("bounded");
}

/// What `on_cache_error = "fail"` functions return when the cache fails.
#[derive(Debug)]
enum LoadError {
    Cache(Error),
}

impl From<Error> for LoadError {
    fn from(error: Error) -> Self {
        LoadError::Cache(error)
    }
}

#[cached(ttl = 60, prefix = "strict", cache = cache, skip(cache, loads), on_cache_error = "fail", timeout = "200ms")]
async fn strict(cache: &Cache, loads: &AtomicU64, id: u64) -> Result<u64, LoadError> {
    loads.fetch_add(1, SeqCst);
    Ok(id)
}

#[cached(ttl = 60, prefix = "quick", cache = cache, skip(cache), timeout = "100ms")]
async fn quick(cache: &Cache, id: u64) -> u64 {
    id
}

/// `on_cache_error = "fail"` surfaces a cache failure instead of running the body; the
/// attribute's `timeout` overrides the cache's.
#[tokio::test]
async fn strict_functions_surface_cache_failures_and_function_timeouts_win() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .timeout(Duration::from_secs(5))
        .breaker(1_000, Duration::from_secs(1))
        .redis(&server.url())
        .unwrap();
    let loads = AtomicU64::new(0);
    assert_eq!(
        strict(&cache, &loads, 1).await.unwrap(),
        1,
        "works while Redis is up"
    );
    assert_eq!(strict(&cache, &loads, 1).await.unwrap(), 1);
    assert_eq!(loads.load(SeqCst), 1, "the second call was a hit");

    server.pause();
    let started = Instant::now();
    let failed = strict(&cache, &loads, 2).await;
    assert!(
        matches!(&failed, Err(LoadError::Cache(e)) if e.is_timeout()),
        "{failed:?}"
    );
    assert_eq!(loads.load(SeqCst), 1, "the body did not run");
    let strict_took = started.elapsed();
    let started = Instant::now();
    assert_eq!(
        quick(&cache, 3).await,
        3,
        "fail-open functions still answer"
    );
    let quick_took = started.elapsed();
    server.resume();
    // Each is bounded by its own timeout (200 ms, 100 ms), not the cache's 5 s.
    assert!(strict_took < Duration::from_secs(2), "{strict_took:?}");
    assert!(quick_took < Duration::from_secs(1), "{quick_took:?}");
}
