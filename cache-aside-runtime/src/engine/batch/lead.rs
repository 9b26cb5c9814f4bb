//! Steps 3 to 5 of a batch for the keys it leads (see the parent module): each key's lease,
//! taken at once (or the load of another call of this process that holds it, relayed), one
//! call of the body, and each result stored under its lease.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Failed, Leased, Leases, Led, surfaced, taken};
use crate::backend::{Budget, REPLACE, apart};
use crate::engine::lease::{Acquired, Held};
use crate::engine::store::Entry;
use crate::engine::tags::Tagged;
use crate::engine::{Call, Engine, ErrorMode};
use crate::envelope::{self, unix_ms};
use crate::error::Error;
use crate::exact::Same;
use crate::flight::{Follow, Lead, Outcome, Seen};
use crate::key::Key;
use crate::policy::Policy;
use crate::shape::Store;
use crate::spec::FnSpec;

impl Engine {
    /// Step 3: a lease for each key this call leads, all at once. A key stored by another
    /// load meanwhile gets its value in `values`; a key leased by another call of this
    /// process is relayed: that load answers it.
    pub(super) async fn lease_led<V: DeserializeOwned>(
        self: &Arc<Self>,
        keys: &[Key],
        spec: &'static FnSpec,
        policy: &Policy,
        led: Vec<(usize, Lead, Seen)>,
        (left, budget): (Duration, Budget),
        values: &mut [Option<V>],
    ) -> Leases {
        let leases = led.into_iter().map(|(index, lead, seen)| {
            let key = &keys[index];
            self.lease_one::<V>(key, spec, policy, (left, budget.started), index, lead, seen)
        });
        let mut sorted = Leases::default();
        for leased in join_all(leases).await {
            match leased {
                Leased::Lead(led) => sorted.leading.push(led),
                Leased::Found(index, value) => values[index] = value,
                Leased::Relay(index, lead, waiting) => sorted.relays.push((index, lead, waiting)),
                Leased::Poll(index, lead) => sorted.polls.push((index, lead)),
            }
        }
        sorted
    }

    /// Steps 4 and 5 for the keys this call leads: one call of the body, then each result
    /// stored under its lease. If the body fails, each lease is released and each flight
    /// finished with nothing stored.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn load_led<V, E, L, Fut>(
        self: &Arc<Self>,
        keys: &[Key],
        spec: &'static FnSpec,
        (policy, mode): (&Policy, ErrorMode),
        leading: Vec<Led>,
        load: &mut L,
        (left, body_us): (Duration, &AtomicU64),
        same: Same<V>,
    ) -> Result<Vec<(usize, Option<V>)>, Failed<E>>
    where
        V: Serialize + DeserializeOwned,
        L: FnMut(Vec<usize>) -> Fut,
        Fut: Future<Output = Result<Vec<Option<V>>, E>>,
    {
        let asked: Vec<usize> = leading.iter().map(|l| l.index).collect();
        if asked.is_empty() {
            return Ok(Vec::new());
        }
        // Tagged keys join their tags' sets before the body runs, at once (see `tags`).
        let tagging = std::time::Instant::now();
        let mut leading = join_all(leading.into_iter().map(|mut led| async move {
            let key = &keys[led.index];
            let failed;
            (led.tagged, failed) = self.tag_load(key, spec, policy, &mut led.held, left).await;
            led.failed = led.failed.take().or(failed);
            led
        }))
        .await;
        if let Some(error) = surfaced(mode, leading.iter_mut().map(|l| &mut l.failed)) {
            return Err(Failed::Cache(error));
        }
        // The stores share what the tags left; the body's own time is not the cache's.
        let left = left.saturating_sub(tagging.elapsed());
        let held: Vec<&Held> = leading.iter().filter_map(|l| l.held.as_ref()).collect();
        self.events.of(spec).load();
        let loaded = self
            .run_body(
                &held,
                (spec, Some(body_us)),
                policy,
                apart(load(asked.clone())),
            )
            .await;
        drop(held);
        let mut loaded = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                let releases = leading.into_iter().map(|led| async move {
                    if let Some(held) = &led.held {
                        let call = self.call(&keys[led.index], spec, left);
                        self.write(&call, policy, None, Some(held)).await.ok();
                    }
                    led.lead.finish(Outcome::NotStored);
                });
                join_all(releases).await;
                return Err(Failed::Body(error));
            }
        };
        // One answer per key asked (the private layer builds them so).
        loaded.resize_with(asked.len(), || None);
        let stores = leading.into_iter().zip(loaded).map(|(led, value)| {
            let mut call = self.call(&keys[led.index], spec, left);
            call.saw = led.saw;
            self.store_one(call, policy, led, value, same)
        });
        let mut stored = join_all(stores).await;
        if let Some(error) = surfaced(mode, stored.iter_mut().map(|(_, _, failed)| failed)) {
            return Err(Failed::Cache(error));
        }
        Ok(stored
            .into_iter()
            .map(|(index, value, _)| (index, value))
            .collect())
    }

    /// Step 3 for one led key: its lease, as a one-key miss takes it; its value if another
    /// load stored one meanwhile (its flight then finished with it); or the load to wait
    /// for, if another call of this process took the lease meanwhile.
    #[allow(clippy::too_many_arguments)]
    async fn lease_one<V: DeserializeOwned>(
        self: &Arc<Self>,
        key: &Key,
        spec: &'static FnSpec,
        policy: &Policy,
        (left, read_at): (std::time::Duration, tokio::time::Instant),
        index: usize,
        lead: Lead,
        seen: Seen,
    ) -> Leased<V> {
        // With the lock, another process's load is waited for (see `poll`), after one lease
        // attempt: it takes a lease that has gone meanwhile, and gives one left without a
        // TTL its `lock_ttl`, as a one-key miss's does.
        let lock = policy.lock && self.backend.holds_locks() && self.settings.fenced;
        let leases = matches!(seen, Seen::Free) || (lock && matches!(seen, Seen::Leased(_)));
        // Another load's lease, or a failed read: load without one (the value is returned,
        // not stored).
        if !leases || !self.settings.fenced {
            lead.starting(0);
            return Leased::Lead(Led {
                index,
                lead,
                held: None,
                tagged: Tagged::Untagged,
                failed: None,
                saw: match seen {
                    Seen::Leased(token) => token,
                    _ => 0,
                },
            });
        }
        let token = self.token();
        lead.starting(token);
        let mut call = self.call(key, spec, left);
        let mut point = unix_ms(SystemTime::now());
        let mut failed = None;
        let held = loop {
            let sent = tokio::time::Instant::now();
            match self.acquire(&mut call, policy, token, point, false).await {
                Ok(Acquired::Held(held)) => break Some(held),
                Ok(Acquired::Value(entry)) => match envelope::decode_raw::<V>(&entry) {
                    Ok((value, _)) => {
                        lead.storing_since(sent);
                        lead.finish(Outcome::Stored(entry));
                        return Leased::Found(index, value);
                    }
                    // Fresh but unreadable: lease it anyway, and replace it.
                    Err(_) if point != REPLACE => point = REPLACE,
                    Err(_) => break None,
                },
                Ok(Acquired::Busy(theirs)) => match self.relay(key, &lead, theirs, read_at).await {
                    Some(Follow::Wait(waiting)) => return Leased::Relay(index, lead, waiting),
                    Some(Follow::Done(outcome)) => match taken::<V>(outcome.clone()) {
                        Some(value) => {
                            lead.finish(outcome.relayed());
                            return Leased::Found(index, value);
                        }
                        None => break None,
                    },
                    None if lock => return Leased::Poll(index, lead),
                    None => break None,
                },
                Err(error) => {
                    // A lease is a load's first write: a full Redis refuses it.
                    let events = self.events.of(spec);
                    events.store_failed();
                    events.failed("lease", key.as_str(), &error);
                    self.drop_wrong_type(key.as_str(), &error);
                    failed = Some(error);
                    break None;
                }
            }
        };
        Leased::Lead(Led {
            index,
            lead,
            held,
            saw: 0,
            tagged: Tagged::Untagged,
            failed,
        })
    }

    /// Step 5 for one led key: encodes and stores its value under its lease, and tells its
    /// waiters; returns its index and value.
    async fn store_one<V: Serialize + DeserializeOwned>(
        &self,
        call: Call<'_>,
        policy: &Policy,
        led: Led,
        value: Option<V>,
        same: Same<V>,
    ) -> (usize, Option<V>, Option<Error>) {
        let Led {
            index,
            lead,
            held,
            tagged,
            ..
        } = led;
        let store = match (&value, tagged) {
            (_, Tagged::No) => Store::Skip,
            (Some(value), _) => Store::Value(value),
            (None, _) => Store::Absent,
        };
        let entry = Entry {
            key: call.key,
            spec: call.spec,
            policy,
            token: held.as_ref().map_or(0, |h| h.token),
        };
        let encoded = self.encode_store(&entry, store, same);
        lead.storing();
        let store = self.store(&call, policy, encoded, held.as_ref());
        // Again as it is stored: its sets keep it for as long as the entry lives from now.
        let (entry, written) = match tagged {
            Tagged::Yes => {
                let retag = self.tag_entry(call.key, call.spec, policy, call.write_left);
                tokio::join!(store, retag).0
            }
            _ => store.await,
        };
        lead.finish(match entry {
            Some(entry) => self.handed(entry, &written),
            None if value.is_none() => Outcome::Absent,
            None => Outcome::NotStored,
        });
        (index, value, written.err())
    }
}
