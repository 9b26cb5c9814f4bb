//! Batch reads (`#[cached(batch)]`, [`Cache::get_many`](crate::Cache::get_many)): many keys
//! in one round trip, one body call for the keys that missed, their results stored at once.
//!
//! 1. **read** every key in one `MGET` (one per slot on a cluster, which redis-rs splits);
//!    decide each entry as a one-key read does: fresh → a hit (an absence marker is a hit
//!    with no value), anything else → a miss;
//! 2. **join** each missing key's single-flight: a key another call of this process is
//!    loading is waited for, the others are led by this call;
//! 3. **lease** each led key (all at once: on one connection the commands share round
//!    trips), as a one-key miss does;
//! 4. **load** the led keys in one call of the body, the waits running beside it, the
//!    leases kept alive while it runs;
//! 5. **store** each result under its lease, at once; a key the body did not return is an
//!    absence (`none_ttl`), and its waiters are told so;
//! 6. a key whose wait ended with nothing to take (its leader failed or was cancelled) is
//!    loaded in a second call of the body, not stored.
//!
//! Every entry is the one a one-key function with the same prefix reads and writes, with
//! the same lease rules, so invalidating one key (or a `#[cache_evict]`) covers it, and a
//! batch racing an invalidation stores nothing the invalidation should have removed.

mod lead;
mod poll;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::lease::Held;
use super::tags::Tagged;
use super::{Call, Engine, ErrorMode};
use crate::backend::{Budget, apart, as_one_call};
use crate::envelope;
use crate::error::Error;
use crate::exact::Same;
use crate::flight::{self, Lead, Outcome, Role, Seen, Waiting};
use crate::key::Key;
use crate::policy::Policy;
use crate::spec::FnSpec;

/// What step 3 made of a led key.
enum Leased<V> {
    Lead(Led),
    /// Its value, stored by another load meanwhile.
    Found(usize, Option<V>),
    /// Another call of this process took its lease: wait for that load, and hand its
    /// outcome to this call's waiters.
    Relay(usize, Lead, Waiting),
    /// With `lock = true`, another process holds its lease: wait for its value (see
    /// `poll`), beside the body.
    Poll(usize, Lead),
}

/// What step 3 made of the led keys: those this call loads, and those others do.
#[derive(Default)]
struct Leases {
    leading: Vec<Led>,
    relays: Vec<(usize, Lead, Waiting)>,
    polls: Vec<(usize, Lead)>,
}

/// Step 2's roles: the keys this call leads (with what their read saw), the waits for
/// other calls' loads, and the keys left for step 6.
struct Joined {
    led: Vec<(usize, Lead, Seen)>,
    waits: Vec<(usize, Waiting)>,
    again: Vec<usize>,
}

/// A key this call leads the load of: its index, its flight, its lease if it took one,
/// and the lease of another load its read found if it loads without one (0: none).
struct Led {
    index: usize,
    lead: Lead,
    held: Option<Held>,
    saw: u64,
    /// Whether it joined its tags' sets before the body (see `tags`).
    tagged: Tagged,
    /// A cache failure on its way to the body (its lease, its tags): the batch's `Err` with
    /// `on_cache_error = "fail"`.
    failed: Option<Error>,
}

/// Why a batch failed: its body's error, or (with `on_cache_error = "fail"`,
/// [`ErrorMode::Surface`]) the cache's. A batch that fails so drops what it holds: its
/// leases are given up and its flights' waiters load for themselves, as when a call is
/// cancelled.
pub(crate) enum Failed<E> {
    Body(E),
    Cache(Error),
}

impl Engine {
    /// Get or load many keys: each key's value, or `None` for a key the body did not
    /// return (now or when it was stored). `load` is given the indices of the keys it must
    /// load and answers, in their order, each one's value or `None`; it runs at most twice
    /// (see the module's step 6), and not at all when every key hits. With
    /// [`ErrorMode::Surface`], the first cache failure ends the batch as its `Err`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn get_many<V, E, L, Fut>(
        self: &Arc<Self>,
        keys: &[Key],
        spec: &'static FnSpec,
        policy: &Policy,
        mode: ErrorMode,
        mut load: L,
        same: Same<V>,
    ) -> Result<Vec<Option<V>>, Failed<E>>
    where
        V: Serialize + DeserializeOwned,
        L: FnMut(Vec<usize>) -> Fut,
        Fut: Future<Output = Result<Vec<Option<V>>, E>>,
    {
        // However many of its operations fail, the batch counts once towards the breaker.
        as_one_call(async move {
            let budget = Budget::from_now(policy.timeout);
            // Before the read: a load joined by this count began its read after the same
            // invalidations of this cache (see `flight`).
            let epoch = self.epoch();
            let (mut values, missing, failed) =
                self.read_all::<V>(keys, spec, policy, budget).await;
            if let (Some(error), ErrorMode::Surface) = (failed, mode) {
                return Err(Failed::Cache(error));
            }
            if missing.is_empty() {
                crate::events::outcome("hit");
                #[cfg(feature = "metrics")]
                self.batch_took(
                    spec,
                    crate::metrics::Outcome::Hit,
                    budget,
                    &Default::default(),
                );
                return Ok(values);
            }
            // What the read left of `timeout` for the writes, as for a one-key miss: the body's
            // own time is not the cache's.
            let left = budget.left();
            // Microseconds the body ran: the call's time on the cache is the rest.
            let body_us = AtomicU64::new(0);
            // 2. join
            self.pause().await;
            let Joined {
                led,
                waits,
                mut again,
            } = self.join_batch(keys, spec, missing, (budget, epoch), &mut values);
            // 3. lease
            let leasing = std::time::Instant::now();
            let Leases {
                mut leading,
                relays,
                polls,
            } = self
                .lease_led(keys, spec, policy, led, (left, budget), &mut values)
                .await;
            // The writes after the leases share what they left, as a one-key call's do.
            let left = left.saturating_sub(leasing.elapsed());
            if let Some(error) = surfaced(mode, leading.iter_mut().map(|l| &mut l.failed)) {
                return Err(Failed::Cache(error));
            }
            // 4. and 5. load and store, beside the waits. A led key's flight finishes as soon
            // as its value is stored, whatever this call still waits for: two batches each
            // waiting for a key the other loads must not wait for each other's waits.
            let loading = self.load_led(
                keys,
                spec,
                (policy, mode),
                leading,
                &mut load,
                (left, &body_us),
                same,
            );
            let waited = self.wait_others::<V>(keys, spec, policy, waits, relays);
            let polled = self.poll_held::<V>(keys, spec, policy, polls, left);
            let waited = async {
                let (mut waited, (polled, left)) = tokio::join!(waited, polled);
                waited.extend(polled);
                (waited, left)
            };
            let (loaded, (waited, polls_left)) = tokio::join!(loading, waited);
            for (index, value) in loaded? {
                values[index] = value;
            }
            for (index, value) in waited {
                match value {
                    Some(value) => values[index] = value,
                    None => again.push(index),
                }
            }
            #[cfg(feature = "metrics")]
            self.batch_took(spec, crate::metrics::Outcome::Miss, budget, &body_us);
            // 6. what the waits left.
            self.load_again(
                keys,
                spec,
                (policy, mode),
                again,
                &mut values,
                &mut load,
                (left.min(polls_left), &body_us),
            )
            .await?;
            crate::events::outcome("miss");
            Ok(values)
        })
        .await
    }

    /// The keys other loads answer: the waits for other calls' flights, and the relays.
    /// Each key's value, or `None` if its wait ended with nothing to take.
    async fn wait_others<V: DeserializeOwned>(
        &self,
        keys: &[Key],
        spec: &'static FnSpec,
        policy: &Policy,
        waits: Vec<(usize, Waiting)>,
        relays: Vec<(usize, Lead, Waiting)>,
    ) -> Vec<(usize, Option<Option<V>>)> {
        let waited = join_all(waits.into_iter().map(|(index, waiting)| async move {
            let outcome = tokio::time::timeout(policy.flight_wait, flight::wait(waiting)).await;
            if outcome.is_err() {
                self.events.of(spec).flight_timeout(keys[index].as_str());
            }
            (index, outcome.ok().and_then(taken::<V>))
        }));
        // A key another call leased after this one chose to load it: its load answers this
        // call and the callers waiting for this call's load of the key.
        let relayed = join_all(relays.into_iter().map(|(index, lead, waiting)| async move {
            let outcome = tokio::time::timeout(policy.flight_wait, flight::wait(waiting))
                .await
                .unwrap_or(Outcome::NotStored);
            let value = taken::<V>(outcome.clone());
            lead.finish(outcome.relayed());
            (index, value)
        }));
        let (mut waited, relayed) = tokio::join!(waited, relayed);
        waited.extend(relayed);
        waited
    }

    /// Step 2: each missing key's single-flight, joined. A key whose flight had already
    /// finished gets its value in `values`, or is left for step 6 if there was none to take.
    fn join_batch<V: DeserializeOwned>(
        &self,
        keys: &[Key],
        spec: &'static FnSpec,
        missing: Vec<(usize, Seen)>,
        (budget, epoch): (Budget, u64),
        values: &mut [Option<V>],
    ) -> Joined {
        let (mut led, mut waits, mut again) = (Vec::new(), Vec::new(), Vec::new());
        let fenced = self.settings.fenced;
        let missing: Vec<(usize, Seen)> = missing
            .into_iter()
            .map(|(index, seen)| (index, if fenced { seen } else { Seen::Unknown }))
            .collect();
        let roles = self.flights.join_many(
            missing
                .iter()
                .map(|&(index, seen)| (keys[index].as_str(), seen)),
            budget.started,
            epoch,
        );
        for ((index, seen), role) in missing.into_iter().zip(roles) {
            match role {
                Role::Leader(lead) => led.push((index, lead, seen)),
                Role::Waiter(waiting) => {
                    self.events.of(spec).waited();
                    waits.push((index, waiting));
                }
                Role::Done(outcome) => {
                    self.events.of(spec).waited();
                    match taken::<V>(outcome) {
                        Some(value) => values[index] = value,
                        None => again.push(index),
                    }
                }
            }
        }
        Joined { led, waits, again }
    }

    /// Step 6: the keys whose wait ended with nothing to take. A value stored meanwhile is
    /// current; the rest are loaded in one more call of the body, not stored.
    #[allow(clippy::too_many_arguments)]
    async fn load_again<V, E, L, Fut>(
        self: &Arc<Self>,
        keys: &[Key],
        spec: &'static FnSpec,
        (policy, mode): (&Policy, ErrorMode),
        mut again: Vec<usize>,
        values: &mut [Option<V>],
        load: &mut L,
        (left, body_us): (Duration, &AtomicU64),
    ) -> Result<(), Failed<E>>
    where
        V: Serialize + DeserializeOwned,
        L: FnMut(Vec<usize>) -> Fut,
        Fut: Future<Output = Result<Vec<Option<V>>, E>>,
    {
        // A value stored meanwhile is current (a load this call
        // could not trust, `Outcome::Reread`, stored nothing, but the lease's holder may
        // have); the rest in one more body call, not stored.
        if !again.is_empty() {
            let names: Vec<&str> = again.iter().map(|&i| keys[i].as_str()).collect();
            let entries = match self.backend.read_many(&names, Budget::from_now(left)).await {
                Ok(entries) => entries,
                Err(error) if mode == ErrorMode::Surface => return Err(Failed::Cache(error)),
                Err(_) => Vec::new(),
            };
            let mut found = vec![false; again.len()];
            for ((slot, &index), entry) in found.iter_mut().zip(&again).zip(entries) {
                if let Ok(value) = self.decide::<V>(&keys[index], spec, policy, entry) {
                    values[index] = value;
                    *slot = true;
                }
            }
            let mut found = found.into_iter();
            again.retain(|_| !found.next().unwrap_or(false));
        }
        if !again.is_empty() {
            self.events.of(spec).load();
            let loaded = self
                .run_body(
                    &[],
                    (spec, Some(body_us)),
                    policy,
                    apart(load(again.clone())),
                )
                .await
                .map_err(Failed::Body)?;
            for (index, value) in again.into_iter().zip(loaded) {
                values[index] = value;
            }
        }
        Ok(())
    }

    /// A batch call's time, for the `metrics` feature's histogram: a hit if every key hit.
    #[cfg(feature = "metrics")]
    fn batch_took(
        &self,
        spec: &'static FnSpec,
        outcome: crate::metrics::Outcome,
        budget: Budget,
        body_us: &std::sync::atomic::AtomicU64,
    ) {
        let events = self.events.of(spec);
        if events.timed() {
            let body = body_us.load(std::sync::atomic::Ordering::Relaxed);
            let body = std::time::Duration::from_micros(body);
            events.call_took(outcome, budget.started.elapsed().saturating_sub(body));
        }
    }

    /// Step 1: one read of every key; the hits' values, and the misses with what their
    /// reads saw of the keys' leases. A failed read is a miss of every key, and its error.
    #[allow(clippy::type_complexity)]
    async fn read_all<V: DeserializeOwned>(
        self: &Arc<Self>,
        keys: &[Key],
        spec: &'static FnSpec,
        policy: &Policy,
        budget: Budget,
    ) -> (Vec<Option<V>>, Vec<(usize, Seen)>, Option<Error>) {
        let mut values: Vec<Option<V>> = keys.iter().map(|_| None).collect();
        let names: Vec<&str> = keys.iter().map(Key::as_str).collect();
        let entries = match self.backend.read_many(&names, budget).await {
            Ok(entries) => entries,
            Err(error) => {
                let events = self.events.of(spec);
                events.failed("mget", names.first().copied().unwrap_or(""), &error);
                for _ in keys {
                    events.miss();
                }
                let missing = (0..keys.len()).map(|i| (i, Seen::Failed)).collect();
                return (values, missing, Some(error));
            }
        };
        let mut missing = Vec::new();
        for (index, entry) in entries.into_iter().enumerate() {
            match self.decide::<V>(&keys[index], spec, policy, entry) {
                Ok(value) => {
                    self.events.of(spec).hit();
                    spec.misses.hit();
                    values[index] = value;
                }
                Err(seen) => {
                    self.events.of(spec).miss();
                    spec.misses.miss();
                    missing.push((index, seen));
                }
            }
        }
        (values, missing, None)
    }

    /// A call of one key of a batch, with `left` of its time budget for writes.
    fn call<'k>(&self, key: &'k Key, spec: &'static FnSpec, left: std::time::Duration) -> Call<'k> {
        Call {
            key,
            spec,
            mode: ErrorMode::FailOpen,
            write_left: left,
            body_us: None,
            saw: 0,
        }
    }
}

/// The first of these cache failures, taken, if cache failures are the call's `Err`.
fn surfaced<'a>(
    mode: ErrorMode,
    failures: impl Iterator<Item = &'a mut Option<Error>>,
) -> Option<Error> {
    match mode {
        ErrorMode::Surface => failures.into_iter().find_map(Option::take),
        ErrorMode::FailOpen => None,
    }
}

/// What a waiter of a batch takes from a load's outcome: `Some` with the value (`None`
/// inside: the load found nothing), or `None` if there is nothing to take and the key must
/// be loaded again. A one-key leader's unstored result (`Shared`) is of its own type.
fn taken<V: DeserializeOwned>(outcome: Outcome) -> Option<Option<V>> {
    match outcome {
        Outcome::Stored(entry) | Outcome::Stale(entry) => envelope::decode_raw::<V>(&entry)
            .ok()
            .map(|(value, _)| value),
        Outcome::Absent => Some(None),
        Outcome::Shared(_)
        | Outcome::NotStored
        | Outcome::Abandoned
        | Outcome::Dropped(_)
        | Outcome::Reread => None,
    }
}
