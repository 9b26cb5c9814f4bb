//! The invalidation race leases close (the specs' pitfall 2), as scenarios any backend can
//! run: a load reads the old row, a writer updates the row and invalidates while that load
//! is paused inside its body, then the load resumes. Synchronised by the body's own
//! signals, never by sleeps.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cache_put, cached};
use tokio::sync::{Notify, Semaphore};

/// A database row whose next read can be held inside the body: the read takes the row's
/// value, says so, and waits to be let go.
pub struct Row {
    value: Mutex<String>,
    pause_next: AtomicBool,
    paused: Notify,
    resume: Semaphore,
    /// Reads still take the value (and pause), then fail.
    failing: AtomicBool,
}

impl Row {
    pub fn new(value: &str) -> Row {
        Row {
            value: Mutex::new(value.to_owned()),
            pause_next: AtomicBool::new(false),
            paused: Notify::new(),
            resume: Semaphore::new(0),
            failing: AtomicBool::new(false),
        }
    }

    pub fn set(&self, value: &str) {
        *self.value.lock().unwrap() = value.to_owned();
    }

    /// A read that fails while `failing` is set (after reading, and pausing if asked).
    async fn read_or_fail(&self) -> Result<String, String> {
        let value = self.read().await;
        match self.failing.load(SeqCst) {
            true => Err("database down".into()),
            false => Ok(value),
        }
    }

    async fn read(&self) -> String {
        let value = self.value.lock().unwrap().clone();
        if self.pause_next.swap(false, SeqCst) {
            self.paused.notify_one();
            self.resume.acquire().await.unwrap().forget();
        }
        value
    }
}

#[cached(ttl = 600, prefix = "race", cache = cache, skip(cache, row))]
pub async fn plain(cache: &Cache, row: &Row, id: u64) -> String {
    row.read().await
}

#[cached(ttl = 600, prefix = "race-lock", lock = true, cache = cache, skip(cache, row))]
pub async fn locked(cache: &Cache, row: &Row, id: u64) -> String {
    row.read().await
}

#[cached(ttl = 600, prefix = "race-eager", cache = cache, skip(cache, row))]
pub async fn eager(cache: &Cache, row: &Row, id: u64) -> String {
    row.read().await
}

/// Which cached function a scenario reads through.
#[derive(Clone, Copy, Debug)]
pub enum Reader {
    /// Its reads are `GET`s: it has been hitting, and its misses take the lease after.
    Plain,
    /// With `lock = true`.
    Locked,
    /// It has been missing: its reads take the lease (`SET .. NX GET`).
    Eager,
}

impl Reader {
    pub async fn read(self, cache: &Cache, row: &Row, id: u64) -> String {
        match self {
            Reader::Plain => plain(cache, row, id).await,
            Reader::Locked => locked(cache, row, id).await,
            Reader::Eager => eager(cache, row, id).await,
        }
    }

    /// A read of `id` through a row holding "old", prepared (see [`Reader::prepare`]) and
    /// spawned, once its body has read the row and paused: the row, and the read's task.
    async fn paused_load(
        self,
        cache: &Cache,
        id: u64,
    ) -> (&'static Row, tokio::task::JoinHandle<String>) {
        self.prepare(cache).await;
        let row: &'static Row = Box::leak(Box::new(Row::new("old")));
        row.pause_next.store(true, SeqCst);
        let first = {
            let cache = cache.clone();
            tokio::spawn(async move { self.read(&cache, row, id).await })
        };
        row.paused.notified().await;
        (row, first)
    }

    /// Sets how the function's next read goes: a run of hits makes it a `GET`, a run of
    /// misses a `SET .. NX GET` that takes the lease (see `MissScore`).
    pub async fn prepare(self, cache: &Cache) {
        let row = Row::new("warm-up");
        match self {
            Reader::Eager => {
                for id in 0..8 {
                    self.read(cache, &row, 1_000_000 + fresh_ids() + id).await;
                }
            }
            Reader::Plain | Reader::Locked => {
                for _ in 0..20 {
                    self.read(cache, &row, 999_999).await;
                }
            }
        }
    }

    /// With `asked`, a read started now, while the paused load still waits: what it got,
    /// or `None` if it was still waiting after two seconds (it joined the paused load).
    async fn later_read(self, cache: &Cache, row: &Row, id: u64, asked: bool) -> Option<String> {
        if !asked {
            return None;
        }
        tokio::time::timeout(Duration::from_secs(2), self.read(cache, row, id))
            .await
            .ok()
    }

    pub async fn invalidate(self, cache: &Cache, id: u64) -> bool {
        let done = match self {
            Reader::Plain => plain_invalidate(cache, id).await,
            Reader::Locked => locked_invalidate(cache, id).await,
            Reader::Eager => eager_invalidate(cache, id).await,
        };
        done.expect("invalidate")
    }
}

/// What a scenario saw.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    /// What the load that read the old row returned to its own caller.
    pub paused_load: String,
    /// What a reader that started after the invalidation got, while that load was still
    /// paused (`None`: it was still waiting for it after two seconds).
    pub later_reader: Option<String>,
    /// What the next read returned, after both.
    pub next_read: String,
}

/// The race: a reader's body reads "old" and pauses; the row becomes "new" and its entry
/// is invalidated; `later_reader` (if asked) starts after that, while the first is still
/// paused; then the first resumes. Without leases, the first stores "old" (and the later
/// reader joins its load), so every read after returns "old" until the TTL ends.
pub async fn invalidation_during_a_load(
    cache: &Cache,
    reader: Reader,
    id: u64,
    later_reader: bool,
) -> Seen {
    let (row, first) = reader.paused_load(cache, id).await;
    // The write: the row changes, then its entry is invalidated, as the specs advise.
    row.set("new");
    reader.invalidate(cache, id).await;
    let later = reader.later_read(cache, row, id, later_reader).await;
    row.resume.add_permits(1);
    let paused_load = first.await.unwrap();
    Seen {
        paused_load,
        later_reader: later,
        next_read: reader.read(cache, row, id).await,
    }
}

#[cached(ttl = "300ms", stale = 60, prefix = "race-swr", cache = cache, skip(cache, row))]
pub async fn stale(cache: Cache, row: Arc<Row>, id: u64) -> String {
    row.read().await
}

/// The race on a background refresh (stale-while-revalidate): a stale entry is served and
/// refreshed, the refresh's body reads "old" and pauses, the row becomes "new" and its entry
/// is invalidated, the refresh resumes. Returns what the next read returns once the refresh
/// has ended (its value stored, or dropped).
pub async fn invalidation_during_a_refresh(cache: &Cache, id: u64) -> String {
    let row = Arc::new(Row::new("old"));
    let read = || stale(cache.clone(), Arc::clone(&row), id);
    assert_eq!(read().await, "old");
    let key = stale_cache_key(cache.clone(), id).unwrap();
    // The entry's 300 ms pass: waiting for it is the scenario itself.
    tokio::time::sleep(Duration::from_millis(400)).await;
    row.pause_next.store(true, SeqCst);
    let dropped = cache.stats().fills_dropped;
    assert_eq!(read().await, "old", "served stale");
    row.paused.notified().await; // the refresh's body read "old"
    row.set("new");
    assert!(stale_invalidate(cache.clone(), id).await.unwrap());
    row.resume.add_permits(1);
    // The refresh ends by storing its value (the key exists again) or dropping it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.stats().fills_dropped == dropped && cache.ttl_of(&key).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the refresh never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    read().await
}

/// Ids no earlier warm-up of this test binary used, so that warm-up reads miss.
fn fresh_ids() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(8, SeqCst)
}

/// The race across processes: `here` loads (its body paused after reading "old"), and
/// `there`, another cache on the same Redis (as another process has), changes the row and
/// invalidates. A reader of `here` that starts after that joins the paused load (`here`
/// saw no invalidation of its own), and is let go once it waits. Returns what the paused
/// load, that reader and the next read got.
pub async fn invalidation_from_another_process(here: &Cache, there: &Cache, id: u64) -> Seen {
    let reader = Reader::Plain;
    let (row, first) = reader.paused_load(here, id).await;
    row.set("new");
    reader.invalidate(there, id).await;
    let waited = here.stats().waited;
    let later = {
        let here = here.clone();
        tokio::spawn(async move { reader.read(&here, row, id).await })
    };
    // It joins the paused load, or (had it seen the key empty and led) finishes on its own.
    let deadline = Instant::now() + Duration::from_secs(5);
    while here.stats().waited == waited && !later.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the later reader neither waited nor ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    row.resume.add_permits(1);
    let paused_load = first.await.unwrap();
    Seen {
        paused_load,
        later_reader: Some(later.await.unwrap()),
        next_read: reader.read(here, row, id).await,
    }
}

/// The race across processes, when the other process holds the lease: `there` loads (its
/// body paused after reading "old", the key under its lease), and `here` misses too: it sees
/// that lease and runs its own body without one, which pauses after reading "old" as well.
/// `there` changes the row and invalidates, revoking its own lease. A reader of `here` that
/// starts after that reads the key empty and joins `here`'s paused load (`here` saw no
/// invalidation of its own); it is let go once it waits. That load stored nothing (it had no
/// lease), so its value is only as good as the lease it saw: the reader must not take it.
pub async fn invalidation_while_another_process_loads(
    here: &Cache,
    there: &Cache,
    id: u64,
) -> Seen {
    let reader = Reader::Plain;
    let (row, first) = reader.paused_load(there, id).await;
    row.pause_next.store(true, SeqCst);
    let second = {
        let here = here.clone();
        tokio::spawn(async move { reader.read(&here, row, id).await })
    };
    row.paused.notified().await;
    row.set("new");
    reader.invalidate(there, id).await;
    // The two misses made the function's reads take the lease; two hits make the later
    // read a `GET` again (see `Reader::prepare`), which finds the key empty.
    reader.prepare(here).await;
    let waited = here.stats().waited;
    let later = {
        let here = here.clone();
        tokio::spawn(async move { reader.read(&here, row, id).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while here.stats().waited == waited {
        assert!(
            Instant::now() < deadline && !later.is_finished(),
            "the later reader did not join the paused load"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    row.resume.add_permits(2);
    let paused_load = first.await.unwrap();
    assert_eq!(
        second.await.unwrap(),
        "old",
        "the second paused load read the old row"
    );
    Seen {
        paused_load,
        later_reader: Some(later.await.unwrap()),
        next_read: reader.read(here, row, id).await,
    }
}

#[cached(ttl = "300ms", fail_safe = 60, prefix = "race-fs", cache = cache, skip(cache, row))]
pub async fn guarded(cache: &Cache, row: &Row, id: u64) -> Result<String, String> {
    row.read_or_fail().await
}

/// The fail-safe scenarios' start: `read` stores "old", the entry expires (it is kept), and
/// a second `read`, spawned, has read the row, which now fails, and paused.
async fn kept_and_paused<F, Fut>(
    read: F,
) -> (
    &'static Row,
    tokio::task::JoinHandle<Result<String, String>>,
)
where
    F: Fn(&'static Row) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>> + Send + 'static,
{
    let row: &'static Row = Box::leak(Box::new(Row::new("old")));
    assert_eq!(read(row).await.unwrap(), "old");
    // The entry's 300 ms pass: waiting for it is the scenario itself.
    tokio::time::sleep(Duration::from_millis(400)).await;
    row.failing.store(true, SeqCst);
    row.pause_next.store(true, SeqCst);
    let first = tokio::spawn(read(row));
    row.paused.notified().await;
    (row, first)
}

/// Fail-safe against an invalidation: an expired entry is kept, the reload's body reads
/// and pauses, the row changes and the entry is invalidated, then the body fails. The call
/// gets the kept value (fail-safe), and its back-off must not bring the invalidated entry
/// back: returns what the next read gets, with the database up again.
pub async fn invalidation_during_a_failing_load(cache: &Cache, id: u64) -> (String, String) {
    let (row, first) = kept_and_paused(|row| {
        let cache = cache.clone();
        async move { guarded(&cache, row, id).await }
    })
    .await;
    row.set("new");
    assert!(guarded_invalidate(cache, id).await.unwrap());
    row.resume.add_permits(1);
    let answered = first.await.unwrap().expect("fail-safe answers");
    row.failing.store(false, SeqCst);
    (answered, guarded(cache, row, id).await.unwrap())
}

/// `guarded` for the cross-process scenario alone: its reads take the lease by its own
/// recent misses, not by those of the tests that run beside it.
#[cached(ttl = "300ms", fail_safe = 60, prefix = "race-fs-x", cache = cache, skip(cache, row))]
pub async fn guarded_across(cache: &Cache, row: &Row, id: u64) -> Result<String, String> {
    row.read_or_fail().await
}

/// Fail-safe against another process's invalidation: an expired entry is kept, the reload's
/// body on `here` reads and pauses, `there` changes the row and invalidates (the kept entry
/// goes), and a reader of `here` that starts after that, finding the key empty, joins the
/// paused load; then the body fails. The paused load's caller gets the kept value
/// (fail-safe); the later reader must not: after the invalidation there is no last good
/// value, so it gets the body's error. Returns what each got, and whether the later reader
/// joined the paused load (rather than finding no load to join).
pub async fn fail_safe_after_another_process_invalidated(
    here: &Cache,
    there: &Cache,
    id: u64,
) -> (Result<String, String>, Result<String, String>, bool) {
    let (row, first) = kept_and_paused(|row| {
        let here = here.clone();
        async move { guarded_across(&here, row, id).await }
    })
    .await;
    row.set("new");
    assert!(guarded_across_invalidate(there, id).await.unwrap());
    // The misses made the function's reads take the lease; hits on another id make the
    // later read a `GET` again (see `Reader::prepare`), which finds the key empty.
    row.failing.store(false, SeqCst);
    for _ in 0..8 {
        guarded_across(here, row, id + 1).await.unwrap();
    }
    row.failing.store(true, SeqCst);
    let waited = here.stats().waited;
    let later = {
        let here = here.clone();
        tokio::spawn(async move { guarded_across(&here, row, id).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while here.stats().waited == waited && !later.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the later reader neither waited nor ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let joined = here.stats().waited > waited;
    row.resume.add_permits(1);
    (first.await.unwrap(), later.await.unwrap(), joined)
}

/// The write of the put scenario: the row changes, and the value written becomes the
/// entry of the reader's function (`#[cache_put]`).
#[cache_put(plain(cache, id))]
async fn put_plain(cache: &Cache, row: &Row, id: u64, value: &str) -> String {
    row.set(value);
    value.to_owned()
}

#[cache_put(locked(cache, id))]
async fn put_locked(cache: &Cache, row: &Row, id: u64, value: &str) -> String {
    row.set(value);
    value.to_owned()
}

#[cache_put(eager(cache, id))]
async fn put_eager(cache: &Cache, row: &Row, id: u64, value: &str) -> String {
    row.set(value);
    value.to_owned()
}

impl Reader {
    async fn put(self, cache: &Cache, row: &Row, id: u64, value: &str) -> String {
        match self {
            Reader::Plain => put_plain(cache, row, id, value).await,
            Reader::Locked => put_locked(cache, row, id, value).await,
            Reader::Eager => put_eager(cache, row, id, value).await,
        }
    }
}

/// The put race: a reader's body reads "old" and pauses; a write puts "new" (the row and
/// the entry); `later_reader` (if asked) starts after it; then the first resumes. The put
/// must win: the paused load's value is not stored over it. The row then changes to
/// "newer" behind the cache's back, so `next_read` says whether the entry is the put's
/// ("new", a hit) or was lost ("newer", a reload) or overwritten ("old").
pub async fn put_during_a_load(cache: &Cache, reader: Reader, id: u64, later_reader: bool) -> Seen {
    let (row, first) = reader.paused_load(cache, id).await;
    assert_eq!(reader.put(cache, row, id, "new").await, "new");
    let later = reader.later_read(cache, row, id, later_reader).await;
    row.resume.add_permits(1);
    let paused_load = first.await.unwrap();
    row.set("newer");
    Seen {
        paused_load,
        later_reader: later,
        next_read: reader.read(cache, row, id).await,
    }
}
