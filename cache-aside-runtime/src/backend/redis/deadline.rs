//! Deadlines for Redis commands, cheaper than a Tokio timer per command.
//!
//! Every command is bounded (a Redis that stops answering must not hang the caller), and
//! nearly every command answers long before its deadline. A `tokio::time::timeout` pays for
//! the rare case on every call: it inserts an entry into Tokio's timer wheel when the
//! command first waits and removes it when the reply comes, about 1,150 instructions per
//! command, 7% of a Redis hit among 64 concurrent callers (callgrind, `bench --count`).
//!
//! Here a waiting command instead parks its waker and deadline in a slot of a small
//! per-thread-sharded table: one uncontended lock to take the slot and one to free it. One
//! watchdog thread, shared by every cache and runtime, sleeps until the earliest deadline in
//! the table, wakes the commands whose deadline has passed, and sleeps again; a waiting
//! command that finds itself marked expired returns [`Elapsed`]. It is a plain thread, so
//! it serves every Tokio runtime (tests often create one per test) and needs none running.
//!
//! Deadlines are on the real clock ([`std::time::Instant`]): a Redis reply arrives in real
//! time, also under a paused Tokio clock. A deadline fires a little late (the watchdog's
//! wake-up latency, well under a millisecond on an idle machine), never early.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{LazyLock, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

pin_project_lite::pin_project! {
    /// `fut`, bounded by a deadline: see [`bound`].
    pub(crate) struct Bounded<F> {
        #[pin]
        fut: F,
        deadline: Instant,
        slot: Option<Slot>,
    }
}

/// The deadline passed before the future finished.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// Runs `fut` until it finishes or `deadline` passes, whichever is first. Like
/// `tokio::time::timeout_at`, it polls `fut` first, so a future that is ready at once is
/// never cut short.
pub(crate) fn bound<F: Future>(deadline: Instant, fut: F) -> Bounded<F> {
    Bounded {
        fut,
        deadline,
        slot: None,
    }
}

impl<F: Future> Future for Bounded<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.fut.poll(cx) {
            // Dropping the slot frees it at once: the watchdog never sees a finished command.
            *this.slot = None;
            return Poll::Ready(Ok(output));
        }
        match this.slot {
            None => match Slot::take(*this.deadline, cx.waker()) {
                Some(slot) => *this.slot = Some(slot),
                None => return Poll::Ready(Err(Elapsed)),
            },
            Some(slot) => {
                if slot.expired(cx.waker()) {
                    *this.slot = None;
                    return Poll::Ready(Err(Elapsed));
                }
            }
        }
        Poll::Pending
    }
}

/// Shards of the table: a thread keeps to one, so two workers rarely share a lock.
const SHARDS: usize = 16;

/// A waiting command's place in the table; freeing it is its `Drop`.
struct Slot {
    shard: &'static Shard,
    index: usize,
}

impl Slot {
    /// Parks `waker` until `deadline`. `None` if the watchdog thread cannot be started (the
    /// next command tries again), which makes this command time out at once: the cache
    /// fails open, the caller is served.
    fn take(deadline: Instant, waker: &Waker) -> Option<Slot> {
        let watchdog = match WATCHDOG.get() {
            Some(watchdog) => watchdog,
            None => Watchdog::start()?,
        };
        let shard = Shard::mine();
        // Cloned before the lock: a waker's clone is its owner's code.
        let waker = Some(waker.clone());
        let index = shard.lock().insert(Entry {
            deadline,
            waker,
            expired: false,
        });
        // The watchdog sleeps until `next_wake`; wake it if this deadline comes sooner. While
        // it scans, `next_wake` is `u64::MAX`, so a slot taken behind the scan wakes it too
        // (see `Watchdog::run`).
        if TABLE.nanos(deadline) < TABLE.next_wake.load(SeqCst) {
            watchdog.unpark();
        }
        Some(Slot { shard, index })
    }

    /// Whether the watchdog expired this slot; if not, keeps the latest waker.
    fn expired(&self, waker: &Waker) -> bool {
        let mut entries = self.shard.lock();
        let entry = entries.get_mut(self.index);
        if entry.expired {
            return true;
        }
        if entry.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return false;
        }
        let replaced = entry.waker.replace(waker.clone());
        drop(entries);
        drop(replaced); // outside the lock, like every waker this module drops
        false
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let waker = self.shard.lock().remove(self.index);
        drop(waker); // outside the lock: dropping a waker may run its task's code
    }
}

struct Entry {
    deadline: Instant,
    /// Taken by the watchdog when it wakes the command.
    waker: Option<Waker>,
    expired: bool,
}

/// A slab of entries: a freed index is reused, so the table's size follows the number of
/// commands waiting at once.
#[derive(Default)]
struct Entries {
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
}

impl Entries {
    fn insert(&mut self, entry: Entry) -> usize {
        match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some(entry);
                index
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        }
    }

    fn get_mut(&mut self, index: usize) -> &mut Entry {
        self.slots[index]
            .as_mut()
            .expect("a deadline slot is freed only by its owner")
    }

    fn remove(&mut self, index: usize) -> Option<Waker> {
        let entry = self.slots[index].take();
        self.free.push(index);
        entry.and_then(|e| e.waker)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// One shard, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Entries>);

impl Shard {
    /// The calling thread's shard.
    fn mine() -> &'static Shard {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static MINE: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
        }
        // `try_with`: a command polled while this thread's locals are torn down uses shard 0.
        &TABLE.shards[MINE.try_with(|i| *i).unwrap_or(0)]
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // A panic under this lock leaves the slab consistent (every step is one assignment
        // or push), so a poisoned lock is still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Table {
    shards: [Shard; SHARDS],
    /// When the watchdog will next wake by itself, in nanoseconds since `epoch`;
    /// `u64::MAX` while it scans or has nothing to wait for.
    next_wake: AtomicU64,
    epoch: Instant,
}

impl Table {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Commands waiting now, in every shard.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

static TABLE: LazyLock<Table> = LazyLock::new(|| Table {
    shards: Default::default(),
    next_wake: AtomicU64::new(u64::MAX),
    epoch: Instant::now(),
});

/// The watchdog thread, once started.
static WATCHDOG: OnceLock<Thread> = OnceLock::new();

struct Watchdog;

impl Watchdog {
    /// Starts the watchdog, once: `None` if the thread cannot be spawned now (out of
    /// threads or memory), so that a passing shortage does not disable deadlines for good.
    #[cold]
    fn start() -> Option<&'static Thread> {
        static STARTING: Mutex<()> = Mutex::new(());
        let _one = STARTING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(watchdog) = WATCHDOG.get() {
            return Some(watchdog);
        }
        let spawned = std::thread::Builder::new()
            .name("cache-aside-deadlines".into())
            .spawn(Watchdog::run);
        match spawned {
            Ok(handle) => Some(WATCHDOG.get_or_init(|| handle.thread().clone())),
            Err(error) => {
                tracing::error!(%error, "cache-aside: cannot start the deadline thread; a Redis command that waits times out at once");
                None
            }
        }
    }

    /// Wakes expired commands, then sleeps until the earliest deadline left (or until a
    /// command with an earlier one unparks it).
    ///
    /// No deadline is missed: `next_wake` is `u64::MAX` from before the scan until the new
    /// value is stored after it. A slot taken in between either was seen by the scan, or its
    /// owner read `next_wake` after the scan had set `u64::MAX` (the shard's lock orders
    /// them) and unparked this thread, whose next `park` then returns at once for a rescan.
    fn run() {
        let mut due: Vec<Waker> = Vec::new();
        loop {
            TABLE.next_wake.store(u64::MAX, SeqCst);
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for shard in &TABLE.shards {
                let mut entries = shard.lock();
                for entry in entries.slots.iter_mut().flatten() {
                    if entry.expired {
                        continue;
                    }
                    if entry.deadline <= now {
                        entry.expired = true;
                        due.extend(entry.waker.take());
                    } else {
                        next = Some(next.map_or(entry.deadline, |n| n.min(entry.deadline)));
                    }
                }
            }
            if !due.is_empty() {
                for waker in due.drain(..) {
                    // A waker is its owner's code: a panic in one must not end every
                    // deadline in the process with this thread.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| waker.wake()));
                }
                // That code may also have parked this thread itself and so taken the token
                // a new command's `unpark` left: scan again rather than sleep on it. Only
                // scans that expired something come here.
                continue;
            }
            match next {
                Some(next) => {
                    TABLE.next_wake.store(TABLE.nanos(next), SeqCst);
                    std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
                }
                None => std::thread::park(),
            }
        }
    }
}

/// `timeout` from now on the real clock.
pub(crate) fn after(timeout: Duration) -> Instant {
    Instant::now() + capped(timeout)
}

/// `timeout`, at most 30 years: `Duration::MAX` is a valid setting ("no timeout"), and adding
/// it to a clock reading would overflow and panic; 30 years is as far as Tokio's own timers go.
pub(crate) fn capped(timeout: Duration) -> Duration {
    timeout.min(Duration::from_secs(86_400 * 365 * 30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    /// The table is shared by every test in this binary; the tests that count its slots take
    /// turns (an async lock: the async tests hold it across their awaits).
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
        SERIAL.lock().await
    }

    fn serial_blocking() -> tokio::sync::MutexGuard<'static, ()> {
        SERIAL.blocking_lock()
    }

    #[tokio::test]
    async fn a_command_that_never_answers_times_out_at_its_deadline_not_before() {
        let _serial = serial().await;
        let start = Instant::now();
        let deadline = start + Duration::from_millis(60);
        let result = bound(deadline, std::future::pending::<()>()).await;
        assert_eq!(result, Err(Elapsed));
        assert!(Instant::now() >= deadline, "fired before its deadline");
        assert_eq!(TABLE.waiting(), 0, "the expired slot was not freed");
    }

    #[tokio::test]
    async fn an_answer_before_the_deadline_is_returned_and_frees_the_slot() {
        let _serial = serial().await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut call = Box::pin(bound(after(Duration::from_secs(30)), rx));
        assert!(poll_once(call.as_mut()).is_pending());
        assert_eq!(TABLE.waiting(), 1, "a waiting command holds a slot");
        tx.send(7).unwrap();
        assert_eq!(poll_once(call.as_mut()), Poll::Ready(Ok(Ok(7))));
        // Freed when the answer came, not only when the future is dropped.
        assert_eq!(TABLE.waiting(), 0, "the answered command kept its slot");
        drop(call);
    }

    #[tokio::test]
    async fn a_ready_future_is_never_cut_short_even_past_its_deadline() {
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(bound(past, async { 5 }).await, Ok(5));
    }

    #[test]
    fn a_dropped_command_frees_its_slot() {
        let _serial = serial_blocking();
        let mut call = Box::pin(bound(
            after(Duration::from_secs(30)),
            std::future::pending::<()>(),
        ));
        assert!(poll_once(call.as_mut()).is_pending());
        assert_eq!(TABLE.waiting(), 1);
        drop(call);
        assert_eq!(TABLE.waiting(), 0);
    }

    /// The watchdog sleeps until the earliest deadline it knows; a later command with an
    /// earlier deadline must wake it, or that command waits for the first one's.
    #[tokio::test]
    async fn an_earlier_deadline_taken_later_fires_on_time() {
        let _serial = serial().await;
        let mut far = Box::pin(bound(
            after(Duration::from_secs(60)),
            std::future::pending::<()>(),
        ));
        assert!(poll_once(far.as_mut()).is_pending());
        // Until the watchdog has scanned and gone to sleep until a deadline, any new slot
        // wakes it (`next_wake` is `u64::MAX`): wait for that sleep, bounded.
        let give_up = Instant::now() + Duration::from_secs(10);
        while TABLE.next_wake.load(SeqCst) == u64::MAX && Instant::now() < give_up {
            tokio::task::yield_now().await;
        }
        assert_ne!(
            TABLE.next_wake.load(SeqCst),
            u64::MAX,
            "the watchdog never slept"
        );
        let near = bound(
            after(Duration::from_millis(50)),
            std::future::pending::<()>(),
        );
        let result = tokio::time::timeout(Duration::from_secs(10), near).await;
        assert_eq!(
            result.expect("the near deadline waited for the far one"),
            Err(Elapsed)
        );
        drop(far);
        assert_eq!(TABLE.waiting(), 0);
    }

    /// A command polled again with another waker (it moved to another task's context) is
    /// woken through the new one.
    #[test]
    fn the_latest_waker_is_the_one_woken() {
        let _serial = serial_blocking();
        struct Named(&'static str, std::sync::mpsc::Sender<&'static str>);
        impl Wake for Named {
            fn wake(self: Arc<Self>) {
                let _ = self.1.send(self.0);
            }
        }
        let (woken, rx) = std::sync::mpsc::channel();
        let first = Waker::from(Arc::new(Named("first", woken.clone())));
        let second = Waker::from(Arc::new(Named("second", woken)));
        let mut call = Box::pin(bound(
            after(Duration::from_millis(30)),
            std::future::pending::<()>(),
        ));
        let mut poll = |waker: &Waker| call.as_mut().poll(&mut Context::from_waker(waker));
        assert!(poll(&first).is_pending());
        assert!(poll(&second).is_pending());
        // The watchdog wakes it about 30 ms from now; after 10 s it never will.
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("second"));
        assert_eq!(poll(&second), Poll::Ready(Err(Elapsed)));
        assert!(rx.try_recv().is_err(), "a replaced waker was woken");
    }

    fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(Waker::noop()))
    }
}
