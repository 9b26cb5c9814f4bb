//! Steps 1 and 2, the hot path: read the key, decide what the entry is worth. Shared later
//! by single and batch reads. A hit ends here; everything else goes to [`miss`](super::miss)
//! out of line.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{Call, Cold, Detach, Engine, ErrorMode, Found, ValueOps, decode_entry};
use crate::backend::{Budget, Read};
use crate::envelope;
use crate::error::Error;
use crate::flight::Seen;
use crate::key::Key;
#[cfg(feature = "metrics")]
use crate::metrics::Outcome;
use crate::policy::{Freshness, Policy};
use crate::shape::Shape;
use crate::spec::FnSpec;

impl Engine {
    /// Get or load one key: the whole pattern for one call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn get_or_load<S, R, F>(
        self: &Arc<Self>,
        key: &Key,
        spec: &'static FnSpec,
        policy: &Policy,
        mode: ErrorMode,
        load: F,
        detach: Option<Detach<F, S::Value>>,
        ops: ValueOps<R, S::Value>,
    ) -> Result<R, Error>
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        // 1. read
        // One clock read: the read's deadline, and what is left of it for the write.
        let budget = Budget::from_now(policy.timeout);
        // Before the read, as its time is: a load joined by this count began its read after
        // the same invalidations of this cache (see `flight`).
        let epoch = self.epoch();
        // A function that has been missing takes its lease in the read (see `lease`).
        let ask = self.ask_on_read(spec);
        let entry = match self.backend.read(key.as_str(), ask.as_ref(), budget).await {
            Ok(entry) => entry,
            Err(error) => {
                if let (Some(ask), true) = (&ask, error.is_timeout()) {
                    self.abandon(key.as_str(), ask.token, policy);
                }
                self.read_failed(key, spec, policy, &error);
                if mode == ErrorMode::Surface {
                    return Err(error);
                }
                return self
                    .missed::<S, R, F>(
                        key,
                        spec,
                        policy,
                        mode,
                        load,
                        None,
                        ops,
                        (budget, epoch),
                        Seen::Failed,
                    )
                    .await;
            }
        };
        // 2. decide
        let found = entry.is_some();
        let Some(entry) = entry.filter(|e| self.fits(key, spec, e.as_slice(), policy)) else {
            // The lease is the caller's only if the read found the key empty: an entry too
            // large to be ours kept its place (`NX`), and the miss leases over it.
            let seen = match (found, &ask) {
                (false, Some(ask)) => Seen::Taken(ask.token),
                _ => Seen::Free,
            };
            return self
                .missed::<S, R, F>(
                    key,
                    spec,
                    policy,
                    mode,
                    load,
                    None,
                    ops,
                    (budget, epoch),
                    seen,
                )
                .await;
        };
        match decode_entry::<S, R>(entry.as_slice()) {
            Ok((value, fresh_ms)) => {
                let freshness = policy.classify(fresh_ms);
                match (freshness, detach) {
                    (Freshness::Fresh, _) | (Freshness::RefreshDue, None) => {
                        let events = self.events.of(spec);
                        events.hit();
                        spec.misses.hit();
                        #[cfg(feature = "metrics")]
                        if events.timed() {
                            events.call_took(Outcome::Hit, budget.started.elapsed());
                        }
                        return Ok(value);
                    }
                    (Freshness::RefreshDue | Freshness::Stale, Some(detach)) => {
                        let events = self.events.of(spec);
                        events.hit();
                        spec.misses.hit();
                        if freshness == Freshness::Stale {
                            events.served_stale();
                        }
                        #[cfg(feature = "metrics")]
                        if events.timed() {
                            let outcome = match freshness {
                                Freshness::Stale => Outcome::Stale,
                                _ => Outcome::Hit,
                            };
                            events.call_took(outcome, budget.started.elapsed());
                        }
                        // Unless a refresh holds the lease already (here or elsewhere).
                        if !envelope::head(entry.as_slice()).is_some_and(|h| h.pending) {
                            detach(self, key, spec, *policy, load, entry.into_bytes(), ops.same);
                        }
                        return Ok(value);
                    }
                    (Freshness::Stale | Freshness::Expired, _) => {
                        let entry = entry.into_bytes();
                        let seen = Seen::of(&entry);
                        let kept = Some(Found { value, entry });
                        return self
                            .missed::<S, R, F>(
                                key,
                                spec,
                                policy,
                                mode,
                                load,
                                kept,
                                ops,
                                (budget, epoch),
                                seen,
                            )
                            .await;
                    }
                }
            }
            // Another load's placeholder: a miss, not a corrupt entry.
            Err(_) if envelope::head(entry.as_slice()).is_some_and(|h| h.empty) => {}
            Err(error) => self.events.of(spec).corrupt(key.as_str(), &error),
        }
        let seen = match (Seen::of(entry.as_slice()), &ask) {
            // This read's own placeholder: a first attempt took the lease, its reply was
            // lost with the connection, and the retry found it.
            (Seen::Leased(token), Some(ask)) if token == ask.token => Seen::Taken(token),
            (seen, _) => seen,
        };
        self.missed::<S, R, F>(
            key,
            spec,
            policy,
            mode,
            load,
            None,
            ops,
            (budget, epoch),
            seen,
        )
        .await
    }

    /// Steps 3-5, out of line: the hit path's future and code stay small (see [`Cold`]).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn missed<'a, S, R, F>(
        self: &'a Arc<Self>,
        key: &'a Key,
        spec: &'static FnSpec,
        policy: &Policy,
        mode: ErrorMode,
        load: F,
        kept: Option<Found<R>>,
        ops: ValueOps<R, S::Value>,
        (budget, epoch): (Budget, u64),
        seen: Seen,
    ) -> Cold<impl Future<Output = Result<R, Error>> + 'a>
    where
        S: Shape<R> + 'a,
        F: Future<Output = R> + 'a,
        R: 'a,
    {
        self.events.of(spec).miss();
        spec.misses.miss();
        let seen = if self.settings.fenced {
            seen
        } else {
            Seen::Unknown
        };
        let write_left = budget.left();
        let policy = *policy;
        #[cfg(not(feature = "metrics"))]
        return Cold::build(move || {
            let call = Call {
                key,
                spec,
                mode,
                write_left,
                body_us: None,
                saw: 0,
            };
            self.miss::<S, R, F>(call, policy, load, kept, ops, (budget.started, epoch), seen)
        });
        // The call's time on the cache: all of it but its body's.
        #[cfg(feature = "metrics")]
        Cold::build(move || async move {
            let body_us = std::sync::atomic::AtomicU64::new(0);
            let call = Call {
                key,
                spec,
                mode,
                write_left,
                body_us: Some(&body_us),
                saw: 0,
            };
            let result = self
                .miss::<S, R, F>(call, policy, load, kept, ops, (budget.started, epoch), seen)
                .await;
            let events = self.events.of(spec);
            if events.timed() {
                let body = std::time::Duration::from_micros(body_us.into_inner());
                events.call_took(Outcome::Miss, budget.started.elapsed().saturating_sub(body));
            }
            result
        })
    }

    /// Step 2 for an entry read apart from a call's first read (a batch's, a re-read):
    /// `Ok` with the hit's value (`None`: an absence marker), or `Err` with what a miss saw.
    pub(super) fn decide<V: DeserializeOwned>(
        &self,
        key: &Key,
        spec: &'static FnSpec,
        policy: &Policy,
        entry: Option<Read>,
    ) -> Result<Option<V>, Seen> {
        let Some(entry) = entry.filter(|e| self.fits(key, spec, e.as_slice(), policy)) else {
            return Err(Seen::Free);
        };
        let bytes = entry.as_slice();
        match envelope::decode_raw::<V>(bytes) {
            Ok((value, fresh_ms)) => match policy.classify(fresh_ms) {
                Freshness::Fresh | Freshness::RefreshDue => Ok(value),
                Freshness::Stale | Freshness::Expired => Err(Seen::of(bytes)),
            },
            // Another load's placeholder: a miss, not a corrupt entry.
            Err(_) if envelope::head(bytes).is_some_and(|h| h.empty) => Err(Seen::of(bytes)),
            Err(error) => {
                self.events.of(spec).corrupt(key.as_str(), &error);
                Err(Seen::of(bytes))
            }
        }
    }

    /// Is an entry as read within `max_value_bytes`? One that is not was written by someone
    /// else (this library stores nothing larger): a miss, which the load overwrites.
    #[inline]
    pub(super) fn fits(
        &self,
        key: &Key,
        spec: &'static FnSpec,
        entry: &[u8],
        policy: &Policy,
    ) -> bool {
        if entry.len() as u64 <= policy.max_value_bytes {
            return true;
        }
        self.events.of(spec).oversized_entry(key.as_str());
        false
    }

    /// A read that failed: reported, and after a timeout, a size check.
    #[cold]
    fn read_failed(
        self: &Arc<Self>,
        key: &Key,
        spec: &'static FnSpec,
        policy: &Policy,
        error: &Error,
    ) {
        if error.is_timeout() {
            self.check_size(key, policy);
        }
        // A read that takes the lease is a write too: a full Redis refuses it.
        let events = self.events.of(spec);
        if error.is_out_of_memory() {
            events.store_failed();
        }
        events.failed("get", key.as_str(), error);
    }

    /// After a read that timed out: if the entry is larger than this function stores, the
    /// read was slow because of it, and it would make every read of its key time out (and
    /// the write after it be skipped), so it is deleted. In a spawned task, with its own
    /// timeout: the call does not wait for it. A deletion also closes the breaker, whose
    /// failures were that entry's doing.
    fn check_size(self: &Arc<Self>, key: &Key, policy: &Policy) {
        let (true, Ok(runtime)) = (
            self.backend.reads_can_stall(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let (engine, key, max) = (
            Arc::clone(self),
            key.as_str().to_owned(),
            policy.max_value_bytes,
        );
        // Its own bound, not the call's: it may have to connect first, and a Redis copying
        // out a reply of hundreds of MB answers slowly for a while.
        let timeout = self.settings.timeout.max(std::time::Duration::from_secs(5));
        runtime.spawn(async move {
            match engine.backend.drop_if_larger(&key, max, timeout).await {
                Some(Ok(Some(len))) => engine.events.huge_entry_deleted(&key, len),
                Some(Err(error)) => engine.events.failed("size check", &key, &error),
                Some(Ok(None)) | None => {}
            }
        });
    }
}
