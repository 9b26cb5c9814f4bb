//! In-process single-flight: concurrent misses on one key share one load.
//!
//! The first caller to miss becomes the leader and runs its own body; the others wait for
//! the leader's outcome instead of running theirs. The leader hands over the encoded entry
//! it stored, or tried to: waiters whose own reads failed too are served by it when Redis
//! is down.
//!
//! No task is spawned: the leader's body borrows the caller's arguments, so it runs in the
//! caller's future. If that future is dropped mid-load, its guard marks the flight
//! abandoned and one waiter takes over as the new leader with its own body: nobody hangs.
//! When the leader's result is not stored (an `Err`, or `None` without `none_ttl`), waiters
//! get it through a [`Share`]: a clone of the result if the return type is `Clone`, or a
//! clone of the `Err` if the error type is. A `None` needs neither: each waiter makes its
//! own ([`Outcome::Absent`]). An error that cannot be cloned makes each waiter run its own
//! body: handing waiters a different error (its message, say) would change what callers
//! match on, a `NotFound` turning into a generic failure.
//!
//! A [`Lead`] owns what it needs, so a background refresh can carry it into a spawned task.
//!
//! **Invalidations.** A caller is never handed the value of a load that an invalidation it
//! must see overtook ([`Seen`]). It joins a load holding the lease its read saw in the key,
//! whose value it may always take (the caller started before any invalidation that revoked
//! that lease). It also joins a load no invalidation by this cache has followed (this
//! process's `_invalidate`, `invalidate_prefix`, ...), but takes its value only if the load
//! stored it: a load whose fill was dropped lost its lease to an invalidation, perhaps
//! another process's, that the caller may have started after, and a load without a lease
//! (another held it) is worth no more than that lease; so the caller reads the key again,
//! and loads for itself if it is still empty ([`Outcome::Dropped`], [`Outcome::Reread`]). Otherwise the caller leads a load of its own, which takes the
//! key's slot; the older one still answers its own waiters.

use std::any::Any;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

// Tokio's clock, as the engine's read times: a test that pauses it must not see a load
// finish after a read that began later.
use tokio::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// The entry the leader stored (envelope bytes).
    Stored(Bytes),
    /// The leader's body failed and fail-safe answered with this expired entry.
    Stale(Bytes),
    /// The leader's result was a `None` that was not stored (no `none_ttl`): each waiter
    /// makes its own `None`.
    Absent,
    /// The leader's result was not stored, and is handed over (see [`Share`]).
    Shared(Shared),
    /// The leader's result was not stored and cannot be shared; each waiter loads for itself.
    NotStored,
    /// The leader was cancelled before finishing.
    Abandoned,
    /// The leader's value was not stored: its lease was revoked (an invalidation or a put
    /// overtook it), it had none (another load held it), or the write failed (perhaps
    /// after an invalidation revoked the lease). Only waiters that saw the lease it held or
    /// saw, or whose reads failed, take it; the others get `Reread`, never this.
    Dropped(Bytes),
    /// For a waiter that joined by this cache's invalidation count, a load that was not
    /// stored: its value may predate an invalidation the waiter must see (another
    /// process's). The waiter reads the key again: whatever is stored there now is current.
    Reread,
}

/// The loads under way and just finished, by key. Hashed with foldhash: SipHash cost a few
/// hundred instructions per miss (one insert, one removal), and a per-process seed keeps
/// user-chosen keys from being crafted into collisions.
type Running = Arc<Mutex<State>>;

impl Outcome {
    /// What a load hands its own waiters when its outcome is another load's (a batch
    /// relaying the one-key load that took its key's lease): a value goes only to callers
    /// that trust this load by lease, the others read the key again. The other load may
    /// have begun before an invalidation that this load's callers started after (its
    /// value was taken by lease, which a later invalidation does not void for the taker).
    pub(crate) fn relayed(self) -> Outcome {
        match self {
            Outcome::Stored(entry) | Outcome::Dropped(entry) => Outcome::Dropped(entry),
            other => other,
        }
    }

    /// Bytes of entry it holds.
    fn bytes(&self) -> usize {
        match self {
            Outcome::Stored(entry) | Outcome::Stale(entry) | Outcome::Dropped(entry) => entry.len(),
            _ => 0,
        }
    }
}

#[derive(Default)]
struct State {
    slots: HashMap<Arc<str>, Arc<Flight>, foldhash::fast::RandomState>,
    /// Finished flights still in `slots`, oldest first, forgotten as later loads end once
    /// older than [`KEEP_DONE`] or beyond [`MAX_DONE`] / [`MAX_DONE_BYTES`] (so when loads
    /// stop, the last few stay, within those bounds). A finished flight answers only callers
    /// whose read began before it finished, as if they had waited, however long it stays.
    done: VecDeque<(Arc<str>, Arc<Flight>)>,
    /// Bytes of entries the finished flights in `done` hold.
    done_bytes: usize,
}

/// How long a finished load answers late joiners: a caller's read and its join are
/// microseconds apart, unless its task was descheduled in between.
const KEEP_DONE: Duration = Duration::from_millis(200);
/// At most this many finished loads are remembered, holding at most this many bytes of
/// entries (an entry above `max_value_bytes` is handed to waiters too, and may be large).
const MAX_DONE: usize = 256;
const MAX_DONE_BYTES: usize = 8 << 20;

impl State {
    fn forget_done(&mut self, now: Instant) {
        while let Some((key, flight)) = self.done.front() {
            let (bytes, at) = flight
                .outcome
                .get()
                .map_or((0, now), |(outcome, at)| (outcome.bytes(), *at));
            if now.duration_since(at) < KEEP_DONE
                && self.done.len() <= MAX_DONE
                && self.done_bytes <= MAX_DONE_BYTES
            {
                break;
            }
            self.done_bytes -= bytes;
            // Unless a newer load of the key took the slot meanwhile.
            if self.slots.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
                self.slots.remove(key);
            }
            self.done.pop_front();
        }
    }
}

/// One load: its outcome and when it came, once there, and the waiters to wake then.
#[derive(Default)]
pub(crate) struct Flight {
    outcome: OnceLock<(Outcome, Instant)>,
    done: Notify,
    /// The lease the leader's read saw in the key (another load's), 0 if none.
    seen: u64,
    /// The cache's count of invalidations when the load began.
    epoch: u64,
    /// The lease the leader took or asks for (0: it runs its body without one).
    lease: OnceLock<u64>,
    /// When the leader sent its store (or the check of the lease it went by): a caller
    /// whose read began later may have started after an invalidation that came between
    /// that store and the outcome (see [`Flight::outcome_for`]).
    storing: OnceLock<Instant>,
}

/// What a call's read saw of its key's lease: whether the call holds it, must take it, or
/// found another load's. It decides what the miss does, and which loads it may join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The read took the lease (the key was empty).
    Taken(u64),
    /// Nothing to serve, and no load's lease: the miss takes the lease.
    Free,
    /// Another load's lease, live.
    Leased(u64),
    /// Leases are off: nothing known; any load of the key may answer.
    Unknown,
    /// The read failed: nothing known of the key. A load may answer if this cache made no
    /// invalidation since it began (another process's cannot be seen without a read).
    Failed,
}

impl Seen {
    /// What an entry as read says: another load's lease if it is PENDING, else free to take.
    pub(crate) fn of(entry: &[u8]) -> Seen {
        match crate::envelope::head(entry) {
            Some(head) if head.pending => Seen::Leased(head.token),
            _ => Seen::Free,
        }
    }
}

/// How a caller came to join a load: by the lease its read saw (it may take any value the
/// load returns), or because no invalidation of this cache followed the load's start (it
/// takes only a stored value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trust {
    Lease,
    Epoch,
}

impl Flight {
    /// May a caller that saw `seen`, when this cache had made `epoch` invalidations, join
    /// this load, and how far does it trust its outcome?
    fn answers(&self, seen: Seen, epoch: u64) -> Option<Trust> {
        let holds = |token| self.seen == token || self.lease.get() == Some(&token);
        match seen {
            Seen::Unknown => Some(Trust::Lease),
            Seen::Failed => (self.epoch == epoch).then_some(Trust::Lease),
            // A load begun by callers that saw this caller's own lease (they read the key
            // after it was taken, and joined before this caller did).
            Seen::Taken(token) => (self.seen == token).then_some(Trust::Lease),
            Seen::Leased(token) if holds(token) => Some(Trust::Lease),
            Seen::Leased(_) | Seen::Free => (self.epoch == epoch).then_some(Trust::Epoch),
        }
    }

    /// The outcome as a caller trusting it that far, whose read began at `read_at`, gets
    /// it. A stored value is current for a caller whose read began before the store was
    /// sent: an invalidation finished before that read would have revoked the lease first,
    /// and the store would have been dropped. A caller that read later (by the count of
    /// this cache's invalidations only) reads the key again: another process may have
    /// invalidated it since the store.
    fn outcome_for(&self, outcome: &Outcome, trust: Trust, read_at: Instant) -> Outcome {
        let late = || self.storing.get().is_some_and(|sent| read_at >= *sent);
        match (outcome, trust) {
            (Outcome::Dropped(entry), Trust::Lease) => Outcome::Stored(entry.clone()),
            (Outcome::Dropped(_), Trust::Epoch) => Outcome::Reread,
            (Outcome::Stored(_), Trust::Epoch) if late() => Outcome::Reread,
            // A fail-safe answer is the kept entry the leader's read found: an invalidation
            // since (this caller may have read the key empty after it) took that entry.
            (Outcome::Stale(_), Trust::Epoch) => Outcome::Reread,
            (outcome, _) => outcome.clone(),
        }
    }
}

/// How a result that is not stored (an `Err`) reaches the waiters of its load: the leader
/// puts something in the flight, each waiter makes its own result from it. The macro picks
/// the richest way the return type allows (`__private::Probe`).
pub struct Share<R> {
    /// `None`: this result cannot be shared (an `Ok` that was not stored, for the ways that
    /// carry only errors).
    pub(crate) put: fn(&R) -> Option<Shared>,
    /// `None` if the flight holds another type: two functions given the same `prefix`.
    pub(crate) take: fn(&(dyn Any + Send + Sync)) -> Option<R>,
}

type Shared = Arc<dyn Any + Send + Sync>;

impl<R: Clone + Send + Sync + 'static> Share<R> {
    /// Any result, cloned.
    pub(crate) fn by_clone() -> Share<R> {
        Share {
            put: |r| Some(Arc::new(r.clone())),
            take: |any| any.downcast_ref::<R>().cloned(),
        }
    }
}

/// What [`Share::err_by_clone`] puts in the flight: a type of its own, so that another
/// function given the same prefix, whose return type is `E` itself, cannot take the error
/// for its value.
struct SharedErr<E>(E);

impl<T, E: Clone + Send + Sync + 'static> Share<Result<T, E>> {
    /// The `Err`, cloned; `T` need not be `Clone`.
    pub(crate) fn err_by_clone() -> Share<Result<T, E>> {
        Share {
            put: |r| match r {
                Err(e) => Some(Arc::new(SharedErr(e.clone()))),
                Ok(_) => None,
            },
            take: |any| {
                let SharedErr(e) = any.downcast_ref::<SharedErr<E>>()?;
                Some(Err(e.clone()))
            },
        }
    }
}

pub(crate) struct Flights {
    running: Running,
    /// The high half of every lease token this cache makes, random: a lease found in a key
    /// is known to be a call's of this cache (see [`Flights::owns`]).
    tokens: u64,
}

const LOW_HALF: u64 = u32::MAX as u64;

impl Default for Flights {
    fn default() -> Flights {
        Flights {
            running: Running::default(),
            tokens: fastrand::u64(..) & !LOW_HALF,
        }
    }
}

pub(crate) enum Role {
    Leader(Lead),
    Waiter(Waiting),
    /// A load of this key finished after this caller's read began: its outcome.
    Done(Outcome),
}

/// A load a caller may join without leading one (see [`Flights::follow`]).
pub(crate) enum Follow {
    /// It is under way.
    Wait(Waiting),
    /// It finished after the caller's read began: its outcome.
    Done(Outcome),
}

/// A waiter's place in a load: the flight, and how far it trusts the outcome.
pub(crate) struct Waiting {
    flight: Arc<Flight>,
    trust: Trust,
    read_at: Instant,
}

/// Held by the leader; reports `Abandoned` if dropped before [`Lead::finish`] (its future
/// was cancelled, or its body panicked).
pub(crate) struct Lead {
    running: Running,
    key: Arc<str>,
    flight: Arc<Flight>,
    ended: bool,
}

impl Flights {
    /// A fresh lease token: this cache's high half, a random low half. Never 0: a header's
    /// token field is 0 when no lease wrote it.
    pub(crate) fn token(&self) -> u64 {
        self.tokens | fastrand::u64(1..=LOW_HALF)
    }

    /// Was the lease `token` taken by a call of this cache? (Two caches share a high half
    /// once in 2^32: then a lease of the other is taken for one of this cache's, which
    /// costs a relay a few ms looking for a load that is not here, and lets a late reader
    /// take a load's value within [`KEEP_DONE`] of its end.)
    pub(crate) fn owns(&self, token: u64) -> bool {
        token & !LOW_HALF == self.tokens
    }

    /// Joins the load of `key`, for a caller whose read of the cache began at `read_at`
    /// and saw `seen`, when the cache had made `epoch` invalidations.
    pub(crate) fn join(&self, key: &str, read_at: Instant, seen: Seen, epoch: u64) -> Role {
        let mut state = self.running.lock().unwrap_or_else(|e| e.into_inner());
        self.join_locked(&mut state, key, read_at, seen, epoch)
    }

    /// [`join`](Self::join) for each of `keys`, under one lock: two batches asking for the
    /// same keys at once never split them between two loads (each leading some keys and
    /// waiting for the others').
    pub(crate) fn join_many<'k>(
        &self,
        keys: impl Iterator<Item = (&'k str, Seen)>,
        read_at: Instant,
        epoch: u64,
    ) -> Vec<Role> {
        let mut state = self.running.lock().unwrap_or_else(|e| e.into_inner());
        keys.map(|(key, seen)| self.join_locked(&mut state, key, read_at, seen, epoch))
            .collect()
    }

    /// [`join`](Self::join) without leading: the load of `key` such a caller may wait for
    /// or take the outcome of, if any. Leaves the key's slot as it is.
    pub(crate) fn follow(
        &self,
        key: &str,
        read_at: Instant,
        seen: Seen,
        epoch: u64,
    ) -> Option<Follow> {
        let state = self.running.lock().unwrap_or_else(|e| e.into_inner());
        self.found(&state, key, read_at, seen, epoch)
    }

    fn join_locked(
        &self,
        state: &mut State,
        key: &str,
        read_at: Instant,
        seen: Seen,
        epoch: u64,
    ) -> Role {
        match self.found(state, key, read_at, seen, epoch) {
            Some(Follow::Wait(waiting)) => return Role::Waiter(waiting),
            Some(Follow::Done(outcome)) => return Role::Done(outcome),
            None => {}
        }
        let key: Arc<str> = key.into();
        let flight = Flight {
            seen: match seen {
                Seen::Leased(token) => token,
                _ => 0,
            },
            epoch,
            ..Flight::default()
        };
        if let Seen::Taken(token) = seen {
            let _ = flight.lease.set(token);
        }
        let flight = Arc::new(flight);
        state.slots.insert(Arc::clone(&key), Arc::clone(&flight));
        Role::Leader(Lead {
            running: Arc::clone(&self.running),
            key,
            flight,
            ended: false,
        })
    }

    /// The load in `key`'s slot, if the caller may join it: to wait for, or finished with
    /// an outcome for it.
    fn found(
        &self,
        state: &State,
        key: &str,
        read_at: Instant,
        seen: Seen,
        epoch: u64,
    ) -> Option<Follow> {
        let found = state
            .slots
            .get(key)
            .and_then(|f| Some((f, f.answers(seen, epoch)?)));
        if let Some((flight, trust)) = found {
            match flight.outcome.get() {
                None => {
                    let flight = Arc::clone(flight);
                    return Some(Follow::Wait(Waiting {
                        flight,
                        trust,
                        read_at,
                    }));
                }
                // It finished between this caller's read and now: the read may have missed
                // the very entry that load stored. Loading again would double the load.
                // Or the read, though later, still found the lease that load went by, and
                // that lease is a call's of this cache: its holder waited for that load and
                // has yet to store its value, moments from now. Not a lease of another
                // process: that stays for as long as its load runs (seconds, or `lock_ttl`
                // if it died), and a value loaded beside it then is past its TTL by now.
                Some((outcome, at))
                    if *at > read_at
                        || (trust == Trust::Lease
                            && matches!(seen, Seen::Leased(token) if self.owns(token))
                            && Instant::now().duration_since(*at) < KEEP_DONE) =>
                {
                    return Some(Follow::Done(flight.outcome_for(outcome, trust, read_at)));
                }
                // It finished before this read: its outcome is what the read saw. Lead anew.
                Some(_) => {}
            }
        }
        None
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.running.lock().unwrap().slots.len()
    }
}

impl Lead {
    /// The leader asks for the lease `token` (0: it runs its body without one): callers
    /// whose reads see that lease in the key may join (see [`Seen`]).
    pub(crate) fn starting(&self, token: u64) {
        let _ = self.flight.lease.set(token);
    }

    /// The leader sends its store now (see [`Flight::outcome_for`]).
    pub(crate) fn storing(&self) {
        self.storing_since(Instant::now());
    }

    /// The outcome the leader is about to hand over was established by a command sent at
    /// `sent` (a lease attempt that found a value stored): a caller whose read began
    /// later reads the key again, as after a store.
    pub(crate) fn storing_since(&self, sent: Instant) {
        let _ = self.flight.storing.set(sent);
    }

    /// Is `waiting` a place in this very load?
    pub(crate) fn leads(&self, waiting: &Waiting) -> bool {
        Arc::ptr_eq(&self.flight, &waiting.flight)
    }

    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        {
            let mut state = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let ours = state
                .slots
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight));
            if matches!(outcome, Outcome::Abandoned) {
                // Nothing to answer late joiners with: the next caller leads (unless a newer
                // load of the key took the slot meanwhile).
                if ours {
                    state.slots.remove(&self.key);
                }
            } else if ours {
                state.done_bytes += outcome.bytes();
                state
                    .done
                    .push_back((Arc::clone(&self.key), Arc::clone(&self.flight)));
            }
            // A load overtaken by a newer one answers only its own waiters.
            // Set under the lock, so a join sees a flight either running or finished.
            let _ = self.flight.outcome.set((outcome, now));
            state.forget_done(now);
        }
        self.flight.done.notify_waiters();
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.end(Outcome::Abandoned);
    }
}

/// Waits until the leader is done. Every leader ends, if only by being dropped.
pub(crate) async fn wait(waiting: Waiting) -> Outcome {
    let Waiting {
        flight,
        trust,
        read_at,
    } = waiting;
    loop {
        let notified = flight.done.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before looking, so an outcome set in between still wakes this waiter.
        notified.as_mut().enable();
        if let Some((outcome, _)) = flight.outcome.get() {
            return flight.outcome_for(outcome, trust, read_at);
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_then_waiters_get_its_outcome() {
        let flights = Flights::default();
        let read = Instant::now();
        let Role::Leader(lead) = flights.join("k", read, Seen::Unknown, 0) else {
            panic!("first is leader")
        };
        let Role::Waiter(rx) = flights.join("k", read, Seen::Unknown, 0) else {
            panic!("second waits")
        };
        assert!(matches!(
            flights.join("other", read, Seen::Unknown, 0),
            Role::Leader(_)
        ));
        lead.finish(Outcome::Stored(Bytes::from_static(b"v")));
        assert!(matches!(wait(rx).await, Outcome::Stored(b) if b == "v"));
        // A caller whose read began before the load finished takes its outcome; one whose
        // read began after it leads a new load.
        assert!(
            matches!(flights.join("k", read, Seen::Unknown, 0), Role::Done(Outcome::Stored(b)) if b == "v")
        );
        assert!(
            matches!(
                flights.join("k", Instant::now(), Seen::Unknown, 0),
                Role::Leader(_)
            ),
            "a read after the load finished is not answered by it"
        );
    }

    /// Who joins what after an invalidation: a caller that saw the load's lease takes even
    /// a dropped value; one that joined because this cache invalidated nothing since takes
    /// only a stored one; after an invalidation of this cache, only the lease joins.
    #[tokio::test]
    async fn a_dropped_value_goes_only_to_callers_that_saw_its_lease() {
        let flights = Flights::default();
        let read = Instant::now();
        let Role::Leader(lead) = flights.join("k", read, Seen::Free, 0) else {
            panic!("first is leader")
        };
        lead.starting(7);
        let Role::Waiter(by_lease) = flights.join("k", read, Seen::Leased(7), 1) else {
            panic!("the lease joins whatever this cache invalidated")
        };
        let Role::Waiter(by_epoch) = flights.join("k", read, Seen::Free, 0) else {
            panic!("no invalidation since: joins")
        };
        assert!(matches!(
            flights.join("k", read, Seen::Free, 1),
            Role::Leader(_)
        ));
        lead.finish(Outcome::Dropped(Bytes::from_static(b"old")));
        assert!(matches!(wait(by_lease).await, Outcome::Stored(b) if b == "old"));
        assert!(matches!(wait(by_epoch).await, Outcome::Reread));
    }

    /// A batch whose key's lease another load took waits for that load, and hands its
    /// value on: to its own callers that saw its lease, never to one that joined it by the
    /// count of invalidations (it may have read the key after another process invalidated
    /// it, and the other load's value, taken by lease, may predate that).
    #[tokio::test]
    async fn a_relayed_value_goes_only_to_callers_that_trust_the_relay_by_lease() {
        let flights = Flights::default();
        let read = Instant::now();
        let Role::Leader(relay) = flights.join("k", read, Seen::Free, 0) else {
            panic!("first is leader")
        };
        relay.starting(7);
        let Role::Waiter(by_epoch) = flights.join("k", read, Seen::Free, 0) else {
            panic!("no invalidation since: joins")
        };
        let Role::Waiter(by_failed) = flights.join("k", read, Seen::Failed, 0) else {
            panic!("a failed read joins a load with its count")
        };
        relay.finish(Outcome::Stored(Bytes::from_static(b"theirs")).relayed());
        assert!(matches!(wait(by_epoch).await, Outcome::Reread));
        assert!(matches!(wait(by_failed).await, Outcome::Stored(b) if b == "theirs"));
        assert!(matches!(Outcome::Absent.relayed(), Outcome::Absent));
    }

    /// A load that found a value stored by another (its lease attempt answered with it)
    /// hands it to callers whose reads began before that attempt only.
    #[tokio::test]
    async fn a_found_value_goes_only_to_callers_that_read_before_it_was_found() {
        let flights = Flights::default();
        let early = Instant::now();
        let Role::Leader(lead) = flights.join("k", early, Seen::Free, 0) else {
            panic!("first is leader")
        };
        let Role::Waiter(before) = flights.join("k", early, Seen::Free, 0) else {
            panic!("joins")
        };
        let sent = Instant::now();
        let Role::Waiter(after) = flights.join("k", sent, Seen::Free, 0) else {
            panic!("joins")
        };
        lead.storing_since(sent);
        lead.finish(Outcome::Stored(Bytes::from_static(b"found")));
        assert!(matches!(wait(before).await, Outcome::Stored(b) if b == "found"));
        assert!(matches!(wait(after).await, Outcome::Reread));
    }

    #[tokio::test]
    async fn a_dropped_leader_abandons_the_flight() {
        let flights = Flights::default();
        let read = Instant::now();
        let lead = flights.join("k", read, Seen::Unknown, 0);
        let Role::Waiter(rx) = flights.join("k", read, Seen::Unknown, 0) else {
            panic!("second waits")
        };
        drop(lead);
        assert!(matches!(wait(rx).await, Outcome::Abandoned));
        assert_eq!(
            flights.len(),
            0,
            "an abandoned load leaves nothing to answer with"
        );
    }

    #[test]
    fn finished_loads_are_forgotten_by_age_and_by_count() {
        let flights = Flights::default();
        let read = Instant::now();
        for i in 0..MAX_DONE + 10 {
            let Role::Leader(lead) = flights.join(&i.to_string(), read, Seen::Unknown, 0) else {
                panic!("a new key leads")
            };
            lead.finish(Outcome::NotStored);
        }
        assert_eq!(flights.len(), MAX_DONE, "bounded by count");
        let oldest = flights.join("0", read, Seen::Unknown, 0);
        assert!(matches!(oldest, Role::Leader(_)), "oldest forgotten");
        let mut state = flights.running.lock().unwrap();
        state.forget_done(Instant::now() + KEEP_DONE);
        assert_eq!(state.slots.len(), 1, "only the running load of 0 is left");
        drop(state);
        drop(oldest);
    }

    #[test]
    fn finished_loads_hold_a_bounded_number_of_bytes() {
        let flights = Flights::default();
        let read = Instant::now();
        let big = Bytes::from(vec![0u8; MAX_DONE_BYTES / 2 + 1]);
        for key in ["a", "b", "c"] {
            let Role::Leader(lead) = flights.join(key, read, Seen::Unknown, 0) else {
                panic!("a new key leads")
            };
            lead.finish(Outcome::Stored(big.clone()));
        }
        let state = flights.running.lock().unwrap();
        assert_eq!(state.done.len(), 1, "two entries would pass the byte bound");
        assert_eq!(state.done_bytes, big.len());
        assert!(state.slots.contains_key("c") && !state.slots.contains_key("a"));
    }
}
