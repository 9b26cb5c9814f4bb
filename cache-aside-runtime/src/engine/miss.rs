//! Steps 3 and 5: a miss loads once. Callers of one key in this process share one load
//! (single-flight); the leader takes the distributed lock if asked, runs the body, stores
//! its result, and hands its outcome to the waiters; a failed body is answered by the kept
//! value when fail-safe allows.

use std::sync::Arc;

use super::lock::{Acquired, Held};
use super::{Call, Engine, Found, ValueOps, decode_entry};
use crate::error::Error;
use crate::exact::Same;
use crate::flight::{self, Lead, Outcome, Role};
use crate::policy::Policy;
use crate::shape::{Shape, Store};

impl Engine {
    /// A miss: load once, store, return.
    pub(super) async fn miss<S: Shape<R>, R, F: Future<Output = R>>(
        self: &Arc<Self>,
        call: Call<'_>,
        policy: Policy,
        load: F,
        kept: Option<Found<R>>,
        ops: ValueOps<R, S::Value>,
        read_at: tokio::time::Instant,
    ) -> Result<R, Error> {
        let key = call.key.as_str();
        loop {
            let outcome = match self.flights.join(key, read_at) {
                Role::Leader(lead) => {
                    return self
                        .lead::<S, R, F>(call, policy, load, kept, lead, ops)
                        .await;
                }
                Role::Waiter(theirs) => {
                    self.events.waited();
                    // Bounded: a leader whose caller stopped polling it (a `select!` busy
                    // elsewhere) is not cancelled, and would hold every waiter.
                    match tokio::time::timeout(policy.flight_wait, flight::wait(theirs)).await {
                        Ok(outcome) => outcome,
                        Err(_) => {
                            self.events.flight_timeout(key);
                            Outcome::NotStored
                        }
                    }
                }
                Role::Done(outcome) => {
                    self.events.waited();
                    outcome
                }
            };
            match outcome {
                Outcome::Stored(entry) => {
                    if let Ok((value, _)) = decode_entry::<S, R>(&entry) {
                        return Ok(value);
                    }
                }
                Outcome::Stale(entry) => {
                    if let Ok((value, _)) = decode_entry::<S, R>(&entry) {
                        self.events.fail_safe();
                        return Ok(value);
                    }
                }
                Outcome::Shared(result) => {
                    if let Some(value) = ops.share.as_ref().and_then(|s| (s.take)(&*result)) {
                        return Ok(value);
                    }
                }
                Outcome::Absent => {
                    if let Some(value) = S::hit(None) {
                        return Ok(value);
                    }
                }
                // The leader was cancelled: try to lead (or wait for whoever does).
                Outcome::Abandoned => continue,
                Outcome::NotStored => {}
            }
            // Nothing shareable: this caller loads for itself.
            let (result, _) = self
                .load::<S, R, F>(call, &policy, load, kept, None, ops.same)
                .await;
            return result;
        }
    }

    /// The single-flight leader: across processes too, if the lock is on.
    async fn lead<S: Shape<R>, R, F: Future<Output = R>>(
        self: &Arc<Self>,
        mut call: Call<'_>,
        policy: Policy,
        load: F,
        kept: Option<Found<R>>,
        lead: Lead,
        ops: ValueOps<R, S::Value>,
    ) -> Result<R, Error> {
        let mut held = None;
        let lock = policy.lock.filter(|_| self.backend.holds_locks());
        if let Some(lock) = lock {
            match self.acquire(&mut call, &policy, lock).await {
                Ok(Acquired::Held(h)) => held = Some(h),
                Ok(Acquired::Value(entry)) => {
                    if let Ok((value, _)) = decode_entry::<S, R>(&entry) {
                        lead.finish(Outcome::Stored(entry));
                        return Ok(value);
                    }
                }
                Ok(Acquired::GaveUp) => {}
                Err(error) => {
                    self.events.failed("lock", call.key.as_str(), &error);
                    if call.surfaces() {
                        return Err(error);
                    }
                }
            }
        }
        let (result, outcome) = self
            .load::<S, R, F>(call, &policy, load, kept, held, ops.same)
            .await;
        let outcome = match (outcome, &result, ops.share) {
            (Outcome::NotStored, Ok(value), Some(share)) => {
                (share.put)(value).map_or(Outcome::NotStored, Outcome::Shared)
            }
            (outcome, _, _) => outcome,
        };
        lead.finish(outcome);
        result
    }

    /// Runs the body and stores its result; with fail-safe, a failed body is answered by
    /// the kept value. Returns what single-flight waiters should get.
    async fn load<S: Shape<R>, R, F: Future<Output = R>>(
        &self,
        mut call: Call<'_>,
        policy: &Policy,
        load: F,
        kept: Option<Found<R>>,
        held: Option<Held>,
        same: Same<S::Value>,
    ) -> (Result<R, Error>, Outcome) {
        self.events.load();
        let loaded = self.run_body(held.as_ref(), call.spec, policy, load).await;
        // A bool first: a `Store` borrowing `loaded` must not live across the awaits below,
        // or the call's future stops being `Send` for return types holding a `dyn Trait`
        // (`Box<dyn Error + Send + Sync>`: "one type is more general than the other").
        let (failed, absent) = match S::store(&loaded) {
            Store::Skip => (true, false),
            Store::Absent => (false, true),
            Store::Value(_) => (false, false),
        };
        if let (true, Some(kept)) = (failed, kept) {
            self.events.fail_safe_answered(call.key.as_str());
            self.fall_back(&mut call, policy, &kept.entry, held.as_ref())
                .await;
            return (Ok(kept.value), Outcome::Stale(kept.entry));
        }
        let encoded = self.encode::<S, R>(&call, policy, &loaded, same);
        let (entry, written) = self.store(&call, policy, encoded, held.as_ref()).await;
        let outcome = match entry {
            Some(entry) => Outcome::Stored(entry),
            // `None` without `none_ttl`: every waiter can make its own, no `Clone` needed.
            None if absent => Outcome::Absent,
            None => Outcome::NotStored,
        };
        match written {
            Err(error) if call.surfaces() => (Err(error), outcome),
            _ => (Ok(loaded), outcome),
        }
    }

    /// After a failed body answered by a kept entry (fail-safe) or a failed refresh: the
    /// entry backs off, and the lock, if held, is released. Two commands, one budget: what
    /// the back-off takes, the release cannot.
    pub(super) async fn fall_back(
        &self,
        call: &mut Call<'_>,
        policy: &Policy,
        entry: &[u8],
        held: Option<&Held>,
    ) {
        let started = std::time::Instant::now();
        self.back_off(call, policy, entry).await;
        call.spent_since(started);
        // Only releases the lock (a lock left held releases itself when dropped); a
        // failure is counted and logged inside.
        self.write(call, policy, None, held).await.ok();
    }
}
