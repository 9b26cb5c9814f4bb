//! Leases: what makes invalidation race-free, and the distributed lock.
//!
//! The race they close (the specs' pitfall 2): a reader misses and its body reads the old
//! row; a writer updates the row and invalidates; the reader then stores the old row, which
//! every later read returns until its TTL ends. With leases, a load takes its key's lease
//! before its body runs, and stores only if the key still carries that lease:
//!
//! - **Taking it.** An empty key gets a placeholder (an envelope header marked PENDING and
//!   EMPTY, with the lease's random token); a kept value (stale, or kept for fail-safe) has
//!   its header marked PENDING with the token, and stays readable. A function that has been
//!   missing lately takes it in its read (`SET key <placeholder> NX GET PX lock_ttl`: one
//!   command, so a miss costs two round trips, like a hand-written `GET` then `SET`);
//!   others read with a plain `GET` and take it when they miss (see
//!   [`MissScore`](crate::policy::MissScore)).
//! - **Filling it.** The value is stored only if the key still holds the caller's token
//!   (one script, `FILL`). An invalidation deletes the key, lease and all; a put replaces
//!   it. Either way a load that began before it stores nothing, and returns its value to
//!   its own callers only.
//! - **Keeping it.** The holder extends it every third of `lock_ttl` while its body runs,
//!   and gives it up (placeholder deleted, kept value restored) if it stores nothing. A key
//!   marked PENDING lives no longer than its lease, so a holder that dies leaves nothing
//!   behind after `lock_ttl`.
//! - **Another load's lease.** Found in the key, it means another call is loading it: with
//!   `lock`, the caller waits for its value (polling, with a growing pause, until the value
//!   appears, the lease is free to take, or `lock_wait` runs out); without, it runs its own
//!   body and returns the result without storing it. Unless the lease is this cache's own
//!   (a token's high half is the cache's, at random): a call of this process took it in its
//!   read after this call's read missed, and its load answers both ([`Engine::relay`]).
//!
//! In process, single-flight never hands a caller the value of a load an invalidation
//! overtook: a caller joins a load holding the lease its read saw, or one no invalidation
//! of this cache followed, and takes the latter's value only if it was stored (see
//! [`flight`](crate::flight)).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::{Call, Engine};
use crate::backend::{Ask, LeaseAttempt, Restore};
use crate::envelope::unix_ms;
use crate::error::Error;
use crate::flight::{Follow, Lead, Seen};
use crate::key::Key;
use crate::policy::Policy;
use crate::spec::FnSpec;

/// How many times a relay looks for the load that took a key's lease before loading the
/// key itself: half of them yielding to other tasks, half pausing 1 ms.
const RELAY_TURNS: usize = 16;

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// The pauses of a wait for a key another process holds (`lock = true`), between polls:
/// doubling from [`FIRST_PAUSE`] to [`MAX_PAUSE`], until `lock_wait` is over.
pub(super) struct Polls {
    deadline: Instant,
    pause: Duration,
}

impl Polls {
    pub(super) fn new(wait: Duration) -> Self {
        Polls {
            deadline: Instant::now() + wait,
            pause: FIRST_PAUSE,
        }
    }

    /// Sleeps until the next poll; `false`, at once, if the wait is over.
    pub(super) async fn pause(&mut self) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // Randomised so that a fleet of waiters does not poll in lock-step.
        let jittered = self.pause.mul_f64(0.5 + fastrand::f64());
        tokio::time::sleep(jittered.min(left)).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        true
    }
}

/// A lease this call holds: its key and token, what the key becomes if it is given up
/// without a value, and the engine to give it up through if the holder never does.
pub(crate) struct Held {
    pub(crate) key: String,
    pub(crate) token: u64,
    restore: Restore,
    owner: Arc<Engine>,
    released: AtomicBool,
    /// Its keep-alive found it lost (reported once).
    lost: AtomicBool,
}

/// What [`Engine::acquire`] got.
pub(crate) enum Acquired {
    Held(Held),
    /// A fresh value is there (another load stored it meanwhile).
    Value(Bytes),
    /// Another load holds the lease (and, with `lock`, `lock_wait` ran out): load without it.
    /// Its token.
    Busy(u64),
}

impl Held {
    /// The lease `token` on `key`, just taken.
    pub(crate) fn new(engine: &Arc<Engine>, key: &str, token: u64, policy: &Policy) -> Held {
        Held {
            key: key.to_owned(),
            token,
            restore: Restore {
                fresh_ms: None,
                keep_ms: u64::try_from(policy.keep().as_millis()).unwrap_or(u64::MAX),
            },
            owner: Arc::clone(engine),
            released: AtomicBool::new(false),
            lost: AtomicBool::new(false),
        }
    }

    /// Once the lease is given up, the kept value is marked fresh until `until`
    /// (fail-safe's back-off); no effect on a placeholder.
    pub(crate) fn backing_off_until(&mut self, until: SystemTime) {
        self.restore.fresh_ms = Some(unix_ms(until));
    }

    /// Marks the lease as given up or filled: dropping it then does nothing.
    pub(super) fn done(&self) {
        self.released.store(true, Relaxed);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.released.load(Relaxed) {
            return;
        }
        // A holder dropped mid-load (its call cancelled, its body panicked) gives the lease
        // up from a spawned task rather than leaving the key PENDING for `lock_ttl`. Best
        // effort, never blocking the drop: without a runtime, the lease just expires.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let owner = Arc::clone(&self.owner);
        let (key, token) = (std::mem::take(&mut self.key), self.token);
        let restore = self.restore;
        runtime.spawn(async move {
            let timeout = owner.settings.timeout;
            if let Err(error) = owner.backend.release(&key, token, &restore, timeout).await {
                owner.events.failed("release", &key, &error);
            }
        });
    }
}

impl Engine {
    /// The lease a read should take with it, if any: on a backend where that costs a hit
    /// nothing, always; on Redis, for functions that have been missing lately.
    #[inline]
    pub(super) fn ask_on_read(&self, spec: &FnSpec) -> Option<Ask<'_>> {
        let asks =
            self.settings.fenced && (!self.backend.leases_on_read_cost() || spec.misses.high());
        asks.then(|| self.ask(self.token()))
    }

    /// A command that would take the lease `token` timed out: it may still run, and leave
    /// the key PENDING with nobody to fill it (every other load would then skip storing it
    /// for `lock_ttl`). Gives the token up in the background, as a dropped holder does; no
    /// effect if the command never ran.
    pub(super) fn abandon(self: &Arc<Self>, key: &str, token: u64, policy: &Policy) {
        drop(Held::new(self, key, token, policy));
    }

    pub(super) fn ask(&self, token: u64) -> Ask<'_> {
        Ask {
            token,
            ttl: self.settings.lock_ttl,
            ms: &self.lease_ms,
        }
    }

    /// Takes the lease of the call's key, or finds the fresh value another load stored.
    /// `token`: the lease's, announced to single-flight before. With `wait` (the lock), a lease
    /// held by another load is polled with a growing pause until it is free or `lock_wait`
    /// runs out; without, it is `Busy` at once. Each attempt is bounded by what is left of
    /// the call's `timeout` (`write_left`, which this reduces by the time the attempts
    /// take): a call spends at most one `timeout` on the cache, the lease included.
    pub(super) async fn acquire(
        self: &Arc<Self>,
        call: &mut Call<'_>,
        policy: &Policy,
        token: u64,
        point_ms: u64,
        wait: bool,
    ) -> Result<Acquired, Error> {
        let key = call.key.as_str();
        let ask = self.ask(token);
        let mut polls = Polls::new(self.settings.lock_wait);
        let mut waited = false;
        loop {
            if call.write_left.is_zero() && self.backend.remote() {
                return Err(Error::Timeout(policy.timeout));
            }
            let sent = Instant::now();
            let attempt = self
                .backend
                .lease(key, &ask, point_ms, policy.max_value_bytes, call.write_left)
                .await;
            call.spent_since(sent);
            if matches!(&attempt, Err(error) if error.is_timeout()) {
                self.abandon(key, token, policy);
            }
            let theirs = match attempt? {
                LeaseAttempt::Value(bytes) => return Ok(Acquired::Value(bytes)),
                LeaseAttempt::Leased => {
                    let held = Held::new(self, key, token, policy);
                    return Ok(Acquired::Held(held));
                }
                LeaseAttempt::Busy(theirs) if !wait => return Ok(Acquired::Busy(theirs)),
                LeaseAttempt::Busy(theirs) => theirs,
            };
            if !waited {
                waited = true;
                self.events.of(call.spec).lock_wait();
            }
            if !polls.pause().await {
                self.events.of(call.spec).lock_timeout(key);
                return Ok(Acquired::Busy(theirs));
            }
        }
    }

    /// Runs a body: as is, or, when this call holds leases, while extending them; notes
    /// how long it took for XFetch.
    pub(super) async fn run_body<F: Future>(
        &self,
        held: &[&Held],
        (spec, body_us): (&'static FnSpec, Option<&std::sync::atomic::AtomicU64>),
        policy: &Policy,
        load: F,
    ) -> F::Output {
        // XFetch scales its early refreshes by the load time; `Stats` sums it, and derives
        // the time hits saved from it.
        let started = Instant::now();
        // The body's own spans (the database query) nest under this one.
        let span = tracing::debug_span!("cache_aside.load", function = spec.name());
        let load = tracing::Instrument::instrument(load, span);
        let loaded = match held {
            [] => load.await,
            held => self.hold(held, policy, load).await,
        };
        let took = started.elapsed();
        if let Some(body_us) = body_us {
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            body_us.fetch_add(us, Relaxed);
        }
        if policy.xfetch.is_some() {
            spec.load_time.loaded_in(took);
        }
        self.events.of(spec).loaded_in(took);
        loaded
    }

    /// Runs `load` while extending each of `held` every third of `lock_ttl` (all at once:
    /// on one connection, the commands share round trips).
    async fn hold<F: Future>(&self, held: &[&Held], policy: &Policy, load: F) -> F::Output {
        let ttl = self.settings.lock_ttl;
        let keep_alive = async {
            #[allow(clippy::infinite_loop)]
            loop {
                tokio::time::sleep(ttl / 3).await;
                match held {
                    [one] => self.extend_lease(one, ttl, policy.timeout).await,
                    many => {
                        let each = many
                            .iter()
                            .map(|h| self.extend_lease(h, ttl, policy.timeout));
                        futures_util::future::join_all(each).await;
                    }
                }
            }
        };
        tokio::select! {
            // The body first: one that is ready at once never arms the keep-alive's timer.
            biased;
            out = load => out,
            () = keep_alive => unreachable!("the keep-alive loop never ends"),
        }
    }

    /// Extends one lease, reporting its loss once.
    async fn extend_lease(&self, held: &Held, ttl: Duration, timeout: Duration) {
        match self
            .backend
            .extend(&held.key, held.token, ttl, timeout)
            .await
        {
            Ok(true) => {}
            Ok(false) if !held.lost.swap(true, Relaxed) => self.events.lock_lost(&held.key),
            Ok(false) => {}
            Err(error) => self.events.failed("lease", &held.key, &error),
        }
    }

    /// Stores `entry` under the lease `held`; `Ok(false)` if the lease was lost (an
    /// invalidation or a put overtook the load).
    pub(super) async fn fill(
        &self,
        held: &Held,
        entry: &Bytes,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<bool, Error> {
        // Tried once, answered or not: a drop must not give the lease up after it.
        held.done();
        self.backend
            .fill(&held.key, held.token, entry, ttl, timeout)
            .await
    }

    /// Gives `held` up without a value.
    pub(super) async fn release(&self, held: &Held, timeout: Duration) -> Result<(), Error> {
        held.done();
        self.backend
            .release(&held.key, held.token, &held.restore, timeout)
            .await
    }

    /// A fresh lease token, marked as this cache's (see [`Flights::owns`](crate::flight::Flights::owns)).
    pub(super) fn token(&self) -> u64 {
        self.flights.token()
    }

    /// After a lease attempt found `key` leased by `theirs`: if that lease is this cache's
    /// (a read that took it after this call's read missed, but before its lease attempt),
    /// the load to wait for, or its outcome, as a read that saw the lease would join it;
    /// `None` to load without the lease (another process's load, or one that ended long
    /// ago).
    pub(super) async fn relay(
        &self,
        key: &Key,
        own: &Lead,
        theirs: u64,
        read_at: tokio::time::Instant,
    ) -> Option<Follow> {
        if !self.flights.owns(theirs) {
            return None;
        }
        let (seen, epoch) = (Seen::Leased(theirs), self.epoch());
        // The call holding the lease may not have joined the key's flight yet (its reply is
        // on its way): then the key's flight is still this call's own. Give it a few turns.
        for turn in 0..RELAY_TURNS {
            match self.flights.follow(key.as_str(), read_at, seen, epoch)? {
                Follow::Wait(waiting) if own.leads(&waiting) => {
                    drop(waiting);
                    if turn < RELAY_TURNS / 2 {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                follow => return Some(follow),
            }
        }
        None
    }
}
