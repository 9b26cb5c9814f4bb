//! Steps 3 and 5: a miss loads once. Callers of one key in this process share one load
//! (single-flight); the leader takes the key's lease unless its read did (waiting for
//! another process's load if the lock is on), runs the body, stores its result under the
//! lease, and hands its outcome to the waiters; a failed body is answered by the kept
//! value when fail-safe allows.

use std::sync::Arc;
use std::time::SystemTime;

use super::lease::{Acquired, Held};
use super::tags::Tagged;
use super::{Call, Engine, Found, ValueOps, decode_entry};
use crate::backend::{Budget, REPLACE};
use crate::envelope::unix_ms;
use crate::error::Error;
use crate::exact::Same;
use crate::flight::{self, Follow, Lead, Outcome, Role, Seen};
use crate::policy::Policy;
use crate::shape::{Shape, Store};

impl Engine {
    /// A miss: load once, store, return.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn miss<S: Shape<R>, R, F: Future<Output = R>>(
        self: &Arc<Self>,
        call: Call<'_>,
        policy: Policy,
        load: F,
        kept: Option<Found<R>>,
        ops: ValueOps<R, S::Value>,
        (mut read_at, mut epoch): (tokio::time::Instant, u64),
        mut seen: Seen,
    ) -> Result<R, Error> {
        let key = call.key.as_str();
        // The read took the lease, and callers that saw it already began a load: this
        // caller waits for it and stores its value under the lease (given up if dropped).
        let mut own = match seen {
            Seen::Taken(token) => Some(Held::new(self, key, token, &policy)),
            _ => None,
        };
        let mut reread = false;
        loop {
            self.pause().await;
            let outcome = match self.flights.join(key, read_at, seen, epoch) {
                Role::Leader(lead) => {
                    return self
                        .lead::<S, R, F>(call, policy, load, kept, lead, ops, (seen, read_at), own)
                        .await;
                }
                Role::Waiter(theirs) => {
                    self.events.of(call.spec).waited();
                    // Bounded: a leader whose caller stopped polling it (a `select!` busy
                    // elsewhere) is not cancelled, and would hold every waiter.
                    let waited = tokio::time::timeout(policy.flight_wait, flight::wait(theirs));
                    waited.await.unwrap_or_else(|_| {
                        self.events.of(call.spec).flight_timeout(key);
                        Outcome::NotStored
                    })
                }
                Role::Done(outcome) => {
                    self.events.of(call.spec).waited();
                    outcome
                }
            };
            match outcome {
                // The leader was cancelled: try to lead (or wait for whoever does).
                Outcome::Abandoned => continue,
                // A load this caller may not trust stored nothing: what the key holds now
                // is current (a value another load stored meanwhile); else join or lead a
                // load by what this read sees. Once: a second time, it loads for itself.
                Outcome::Reread if !reread && own.is_none() => {
                    reread = true;
                    read_at = tokio::time::Instant::now();
                    epoch = self.epoch();
                    let budget = Budget::from_now(call.write_left);
                    let entry = self.backend.read(key, None, budget).await.ok().flatten();
                    match self.decide::<S::Value>(call.key, call.spec, &policy, entry) {
                        Ok(value) => match S::hit(value) {
                            Some(value) => return Ok(value),
                            None => seen = Seen::Free,
                        },
                        Err(now) => seen = now,
                    }
                    continue;
                }
                outcome => {
                    let taken = self.take::<S, R>(&call, &policy, outcome, &mut own, &ops);
                    if let Some(value) = taken.await {
                        return Ok(value);
                    }
                }
            }
            // Nothing shareable: this caller loads for itself.
            let (result, _) = self
                .load::<S, R, F>(call, &policy, load, kept, own, ops.same, None)
                .await;
            return result;
        }
    }

    /// What a waiter takes from the load it waited for: its value, or `None` if there is
    /// none this caller may take. A caller holding the key's lease (its read took it) writes
    /// the stored value under it, so that its placeholder does not outlive the wait.
    async fn take<S: Shape<R>, R>(
        self: &Arc<Self>,
        call: &Call<'_>,
        policy: &Policy,
        outcome: Outcome,
        own: &mut Option<Held>,
        ops: &ValueOps<R, S::Value>,
    ) -> Option<R> {
        match outcome {
            Outcome::Stored(entry) => {
                if let Ok((value, _)) = decode_entry::<S, R>(&entry) {
                    if let Some(held) = own.take() {
                        // Its expiry as its writer set it: fresh-until plus `keep`.
                        let fresh = crate::envelope::fresh_until(&entry)
                            .and_then(|t| t.duration_since(SystemTime::now()).ok())
                            .unwrap_or(policy.ttl);
                        let ttl = fresh + policy.keep();
                        self.write(call, policy, Some((&entry, ttl)), Some(&held))
                            .await
                            .ok();
                    }
                    return Some(value);
                }
            }
            Outcome::Stale(entry) => {
                if let Ok((value, _)) = decode_entry::<S, R>(&entry) {
                    self.events.of(call.spec).fail_safe();
                    return Some(value);
                }
            }
            Outcome::Shared(result) => {
                if let Some(value) = ops.share.as_ref().and_then(|s| (s.take)(&*result)) {
                    return Some(value);
                }
            }
            Outcome::Absent => {
                if let Some(value) = S::hit(None) {
                    return Some(value);
                }
            }
            // Waiters never get `Dropped`: `flight` turns it into `Stored` or `NotStored`
            // by what the waiter saw; `Abandoned` and `Reread` are the caller's to act on.
            Outcome::NotStored | Outcome::Dropped(_) | Outcome::Reread | Outcome::Abandoned => {}
        }
        None
    }

    /// The single-flight leader: takes the lease (see [`lease`]), then loads.
    #[allow(clippy::too_many_arguments)]
    async fn lead<S: Shape<R>, R, F: Future<Output = R>>(
        self: &Arc<Self>,
        mut call: Call<'_>,
        policy: Policy,
        load: F,
        kept: Option<Found<R>>,
        lead: Lead,
        ops: ValueOps<R, S::Value>,
        (seen, read_at): (Seen, tokio::time::Instant),
        own: Option<Held>,
    ) -> Result<R, Error> {
        let lock = policy.lock && self.backend.holds_locks();
        let mut held = None;
        match seen {
            Seen::Taken(_) => held = own,
            // Another load stores the key; this one answers its own callers.
            Seen::Leased(token) if !lock => {
                call.saw = token;
                lead.starting(0);
            }
            // The read failed: no lease to take. With leases off, the lock still is one.
            Seen::Unknown | Seen::Failed if self.settings.fenced || !lock => lead.starting(0),
            Seen::Free | Seen::Leased(_) | Seen::Unknown | Seen::Failed => {
                let token = self.token();
                lead.starting(token);
                let mut point = unix_ms(SystemTime::now());
                loop {
                    let sent = tokio::time::Instant::now();
                    match self.acquire(&mut call, &policy, token, point, lock).await {
                        Ok(Acquired::Held(h)) => held = Some(h),
                        Ok(Acquired::Value(entry)) => match decode_entry::<S, R>(&entry) {
                            Ok((value, _)) => {
                                lead.storing_since(sent);
                                lead.finish(Outcome::Stored(entry));
                                return Ok(value);
                            }
                            // Fresh but unreadable (written by hand, or another schema):
                            // lease it anyway, and replace it.
                            Err(_) if point != REPLACE => {
                                point = REPLACE;
                                continue;
                            }
                            Err(_) => {}
                        },
                        // Perhaps a read of this process took it after this one missed:
                        // that load answers this one's callers too.
                        Ok(Acquired::Busy(theirs)) if !lock => {
                            let relayed = self.relay_one::<S, R>(
                                &call,
                                &policy,
                                (&lead, theirs),
                                read_at,
                                &ops,
                            );
                            if let Some((value, outcome)) = relayed.await {
                                lead.finish(outcome.relayed());
                                return Ok(value);
                            }
                        }
                        Ok(Acquired::Busy(_)) => {}
                        Err(error) => {
                            // A lease is a load's first write: a full Redis refuses it.
                            self.events.of(call.spec).store_failed();
                            self.events
                                .of(call.spec)
                                .failed("lease", call.key.as_str(), &error);
                            if call.surfaces() {
                                return Err(error);
                            }
                        }
                    }
                    break;
                }
            }
        }
        let (result, outcome) = self
            .load::<S, R, F>(call, &policy, load, kept, held, ops.same, Some(&lead))
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

    /// After a lease attempt found the key leased: the value of the load holding it, if that
    /// load is this process's (see [`relay`](Engine::relay)), with the outcome to hand this
    /// call's waiters.
    async fn relay_one<S: Shape<R>, R>(
        self: &Arc<Self>,
        call: &Call<'_>,
        policy: &Policy,
        (lead, theirs): (&Lead, u64),
        read_at: tokio::time::Instant,
        ops: &ValueOps<R, S::Value>,
    ) -> Option<(R, Outcome)> {
        // This call holds no lease: nothing to write under one.
        let mut own = None;
        let outcome = match self.relay(call.key, lead, theirs, read_at).await? {
            Follow::Done(outcome) => outcome,
            Follow::Wait(waiting) => {
                self.events.of(call.spec).waited();
                tokio::time::timeout(policy.flight_wait, flight::wait(waiting))
                    .await
                    .unwrap_or(Outcome::NotStored)
            }
        };
        let taken = self.take::<S, R>(call, policy, outcome.clone(), &mut own, ops);
        Some((taken.await?, outcome))
    }

    /// Runs the body and stores its result; with fail-safe, a failed body is answered by
    /// the kept value. Returns what single-flight waiters should get; `lead` is their
    /// flight, if any, told when the store is sent.
    #[allow(clippy::too_many_arguments)]
    async fn load<S: Shape<R>, R, F: Future<Output = R>>(
        &self,
        mut call: Call<'_>,
        policy: &Policy,
        load: F,
        kept: Option<Found<R>>,
        held: Option<Held>,
        same: Same<S::Value>,
        lead: Option<&Lead>,
    ) -> (Result<R, Error>, Outcome) {
        self.events.of(call.spec).load();
        let mut held = held;
        let (tagged, tag_failed) = self
            .tag_load(call.key, call.spec, policy, &mut held, call.write_left)
            .await;
        if let (Some(error), true) = (tag_failed, call.surfaces()) {
            return (Err(error), Outcome::NotStored);
        }
        let loaded = self
            .run_body(
                held.as_ref().as_slice(),
                (call.spec, call.body_us),
                policy,
                load,
            )
            .await;
        // A bool first: a `Store` borrowing `loaded` must not live across the awaits below,
        // or the call's future stops being `Send` for return types holding a `dyn Trait`
        // (`Box<dyn Error + Send + Sync>`: "one type is more general than the other").
        let (failed, absent) = match S::store(&loaded) {
            Store::Skip => (true, false),
            Store::Absent => (false, true),
            Store::Value(_) => (false, false),
        };
        if let (true, Some(kept)) = (failed, kept) {
            self.events
                .of(call.spec)
                .fail_safe_answered(call.key.as_str());
            self.fall_back(&mut call, policy, &kept.entry, held).await;
            return (Ok(kept.value), Outcome::Stale(kept.entry));
        }
        let encoded = match tagged {
            Tagged::No => Ok(None),
            _ => self.encode::<S, R>(&call, policy, &loaded, same, held.as_ref()),
        };
        let (entry, written) = match tagged {
            // Again as it is stored: its sets keep it for as long as the entry lives from
            // now (the body may have run longer than the first score allowed for).
            Tagged::Yes => {
                lead.inspect(|l| l.storing());
                let store = self.store(&call, policy, encoded, held.as_ref());
                let retag = self.tag_entry(call.key, call.spec, policy, call.write_left);
                tokio::join!(store, retag).0
            }
            _ => {
                lead.inspect(|l| l.storing());
                self.store(&call, policy, encoded, held.as_ref()).await
            }
        };
        let outcome = match (entry, &written) {
            (Some(entry), _) => self.handed(entry, &written),
            // `None` without `none_ttl`: every waiter can make its own, no `Clone` needed.
            (None, _) if absent => Outcome::Absent,
            (None, _) => Outcome::NotStored,
        };
        match written {
            Err(error) if call.surfaces() => (Err(error), outcome),
            _ => (Ok(loaded), outcome),
        }
    }

    /// After a failed body answered by a kept entry (fail-safe) or a failed refresh: the
    /// entry backs off (marked fresh for `fail_safe_backoff`, so the next calls are served by
    /// it instead of running a failing body again) as the lease is given up, in one step.
    /// Only the lease's holder backs the entry off: without the lease, another load is
    /// under way, and its outcome replaces the entry.
    pub(super) async fn fall_back(
        &self,
        call: &mut Call<'_>,
        policy: &Policy,
        entry: &[u8],
        held: Option<Held>,
    ) {
        let Some(mut held) = held else {
            return;
        };
        // Never shorter than it is: a refresh that started early (refresh-ahead, XFetch)
        // and failed must not cut a still-fresh entry down to the back-off.
        let backoff = SystemTime::now() + policy.fail_safe_backoff;
        let until = crate::envelope::fresh_until(entry).map_or(backoff, |fresh| fresh.max(backoff));
        held.backing_off_until(until);
        let key = call.key.as_str();
        // A failure is counted and logged inside.
        if self.write(call, policy, None, Some(&held)).await.is_ok() {
            self.events.backing_off(key, until);
        }
    }
}
