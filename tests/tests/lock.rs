//! The distributed lock: one loader per key across processes sharing a Redis.
//!
//! The fleet tests run `stampede_child` as separate OS processes against one private
//! `redis-server`; each child says `ready`, waits for `go` on stdin, and reports its own
//! counters. Two `Cache` handles in one process have separate single-flights, so they stand
//! in for two processes where a child process adds nothing.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cached};
use cache_aside_tests::RedisServer;
use tokio::sync::Semaphore;

/// Bound on every wait for a child's line.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

struct Fleet {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

/// What a child printed on its `done` line.
#[derive(Debug)]
struct Report {
    loads: u64,
    ok: u64,
    waited_ms: u64,
    lock_waits: u64,
    lock_timeouts: u64,
}

impl Fleet {
    /// Starts a child and waits for its `ready`.
    fn spawn(url: &str, calls: u64, delay_ms: u64, lock_ttl_ms: u64, lock_wait_ms: u64) -> Fleet {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stampede_child"))
            .args([url.to_owned()])
            .args([calls, delay_ms, lock_ttl_ms, lock_wait_ms].map(|n| n.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn stampede_child");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut fleet = Fleet {
            stdin: child.stdin.take(),
            child,
            lines,
        };
        fleet.expect_line("ready");
        fleet
    }

    fn expect_line(&mut self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(LINE_TIMEOUT)
                .unwrap_or_else(|e| panic!("no `{prefix}` line from the child: {e}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .expect("write go");
    }

    /// Reads the `done` line; counts the `loading` lines seen before it.
    fn finish(mut self) -> (Report, u64) {
        let mut loading = 0;
        loop {
            let line = self.expect_line("");
            if line == "loading" {
                loading += 1;
            } else if let Some(rest) = line.strip_prefix("done ") {
                let field = |name: &str| -> u64 {
                    rest.split(' ')
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| panic!("`{name}` in {line:?}"))
                };
                let report = Report {
                    loads: field("loads"),
                    ok: field("ok"),
                    waited_ms: field("waited_ms"),
                    lock_waits: field("lock_waits"),
                    lock_timeouts: field("lock_timeouts"),
                };
                let status = self.child.wait().expect("child exit");
                assert!(status.success(), "child failed: {status}");
                return (report, loading);
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn four_processes_stampeding_one_key_load_it_once() {
    let server = RedisServer::start();
    let mut fleet: Vec<_> = (0..4)
        .map(|_| Fleet::spawn(&server.url(), 100, 300, 2_000, 10_000))
        .collect();
    fleet.iter_mut().for_each(Fleet::go);
    let reports: Vec<_> = fleet.into_iter().map(Fleet::finish).collect();
    let loads: u64 = reports.iter().map(|(r, _)| r.loads).sum();
    let loading: u64 = reports.iter().map(|(_, l)| l).sum();
    assert_eq!(loads, 1, "one load in the whole fleet: {reports:?}");
    assert_eq!(loading, 1, "one body ran: {reports:?}");
    for (report, _) in &reports {
        assert_eq!(report.ok, 100, "every call got the value: {report:?}");
        assert_eq!(report.lock_timeouts, 0, "{report:?}");
    }
    assert!(
        reports
            .iter()
            .filter(|(r, _)| r.loads == 0)
            .any(|(r, _)| r.lock_waits == 1),
        "the other processes waited on the lock (or found the value): {reports:?}"
    );
}

#[test]
fn a_killed_lock_holder_delays_others_by_at_most_the_lock_ttl() {
    let server = RedisServer::start();
    // The holder's body never finishes; it extends its 1 s lock until it is killed.
    let mut holder = Fleet::spawn(&server.url(), 1, 600_000, 1_000, 10_000);
    holder.go();
    holder.expect_line("loading");
    holder.child.kill().expect("SIGKILL the holder");
    holder.child.wait().expect("reaped");
    let killed_at = Instant::now();

    let mut next = Fleet::spawn(&server.url(), 20, 100, 1_000, 5_000);
    next.go();
    let (report, loading) = next.finish();
    assert_eq!((report.loads, loading, report.ok), (1, 1, 20), "{report:?}");
    assert_eq!(
        report.lock_timeouts, 0,
        "took the expired lock, did not give up: {report:?}"
    );
    // The dead holder's lock outlives it by at most its TTL (1 s), plus the 100 ms body.
    assert!(
        report.waited_ms < 1_000 + 100 + 1_000,
        "waited {} ms after the holder died {:?} ago",
        report.waited_ms,
        killed_at.elapsed()
    );
}

#[test]
fn a_waiter_gives_up_after_lock_wait_and_loads_itself() {
    let server = RedisServer::start();
    let mut holder = Fleet::spawn(&server.url(), 1, 600_000, 1_000, 10_000);
    holder.go();
    holder.expect_line("loading");

    let mut impatient = Fleet::spawn(&server.url(), 10, 50, 1_000, 400);
    impatient.go();
    let (report, loading) = impatient.finish();
    assert_eq!((report.loads, loading, report.ok), (1, 1, 10), "{report:?}");
    assert_eq!(
        (report.lock_waits, report.lock_timeouts),
        (1, 1),
        "{report:?}"
    );
    assert!(
        report.waited_ms < 400 + 50 + 1_000,
        "bounded by lock_wait + body: {report:?}"
    );
}

#[cached(ttl = 60, prefix = "slow", cache = cache, skip(cache, loads, gate))]
async fn slow(cache: &Cache, loads: &AtomicU32, gate: &Semaphore, id: u64) -> String {
    loads.fetch_add(1, SeqCst);
    gate.acquire().await.expect("gate open").forget();
    format!("slow-{id}")
}

/// A body slower than the lock TTL keeps the lock (the holder extends it), so a second
/// process does not start a second load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_slower_than_the_lock_ttl_keeps_the_lock() {
    let server = RedisServer::start();
    let process = || {
        Cache::builder()
            .lock(true)
            .lock_ttl(Duration::from_millis(300))
            .lock_wait(Duration::from_secs(10))
            .redis(&server.url())
            .unwrap()
    };
    let (a, b) = (process(), process());
    let loads = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let first = {
        let (a, loads, gate) = (a.clone(), loads.clone(), gate.clone());
        tokio::spawn(async move { slow(&a, &loads, &gate, 1).await })
    };
    let second = {
        let (b, loads, gate) = (b.clone(), loads.clone(), gate.clone());
        tokio::spawn(async move { slow(&b, &loads, &gate, 1).await })
    };
    // Both have started: one holds the lock and loads, the other polls it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while loads.load(SeqCst) == 0 || a.stats().lock_waits + b.stats().lock_waits == 0 {
        assert!(Instant::now() < deadline, "{:?} {:?}", a.stats(), b.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Hold the body for four lock TTLs: without extension the lock would lapse.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    gate.add_permits(2);
    assert_eq!(first.await.unwrap(), "slow-1");
    assert_eq!(second.await.unwrap(), "slow-1");
    assert_eq!(loads.load(SeqCst), 1, "the lock held for the whole load");
    assert_eq!(a.stats().lock_timeouts + b.stats().lock_timeouts, 0);
    let entry: Vec<u8> = redis::cmd("GET")
        .arg(slow_cache_key(&a, 1).unwrap())
        .query(&mut server.conn())
        .unwrap();
    assert!(
        !cache_aside_tests::is_pending(&entry),
        "the holder's fill gave its lease up: {entry:?}"
    );
}
