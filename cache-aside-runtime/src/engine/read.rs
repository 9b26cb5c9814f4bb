//! Steps 1 and 2, the hot path: read the key, decide what the entry is worth. Shared later
//! by single and batch reads. A hit ends here; everything else goes to [`miss`](super::miss)
//! out of line.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{Call, Cold, Detach, Engine, ErrorMode, Found, ValueOps, decode_entry};
use crate::backend::{Ask, Budget, Read};
use crate::envelope;
use crate::error::Error;
use crate::flight::Seen;
use crate::key::Key;
#[cfg(feature = "metrics")]
use crate::metrics::Outcome;
use crate::policy::{Freshness, Policy};
use crate::shape::Shape;
use crate::spec::FnSpec;

/// What step 2 made of a call's first read.
enum Decided<R> {
    /// The entry's value, the call's answer.
    Hit(R),
    /// The entry's value, the call's answer; the entry is due for a refresh, which the call
    /// starts in the background.
    Refresh(R, Read),
    /// A miss: the entry kept for fail-safe (if any), and what the read saw of the lease.
    Miss(Option<Found<R>>, Seen),
}

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
        let decided = match self.backend.read(key.as_str(), ask.as_ref(), budget).await {
            // 2. decide
            Ok(entry) => {
                let refresh = detach.is_some();
                self.decide_first::<S, R>(key, spec, policy, entry, ask.as_ref(), refresh, budget)
            }
            Err(error) => {
                if let (Some(ask), true) = (&ask, error.is_timeout()) {
                    self.abandon(key.as_str(), ask.token, policy);
                }
                self.read_failed(key, spec, policy, &error);
                if mode == ErrorMode::Surface {
                    return Err(error);
                }
                Decided::Miss(None, Seen::Failed)
            }
        };
        match decided {
            Decided::Hit(value) => Ok(value),
            Decided::Refresh(value, entry) => {
                if let Some(detach) = detach {
                    detach(self, key, spec, *policy, load, entry.into_bytes(), ops.same);
                }
                Ok(value)
            }
            Decided::Miss(kept, seen) => {
                let at = (budget, epoch);
                self.missed::<S, R, F>(key, spec, policy, mode, load, kept, ops, at, seen)
                    .await
            }
        }
    }

    /// Step 2 for a call's first read: a hit (counted here), a hit whose entry a refresh
    /// in the background replaces (`refresh`: the call can start one), or a miss with what
    /// the read found.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn decide_first<S: Shape<R>, R>(
        &self,
        key: &Key,
        spec: &'static FnSpec,
        policy: &Policy,
        entry: Option<Read>,
        ask: Option<&Ask>,
        refresh: bool,
        budget: Budget,
    ) -> Decided<R> {
        let found = entry.is_some();
        let Some(entry) = entry.filter(|e| self.fits(key, spec, e.as_slice(), policy)) else {
            // The lease is the caller's only if the read found the key empty: an entry too
            // large to be ours kept its place (`NX`), and the miss leases over it.
            let seen = match (found, ask) {
                (false, Some(ask)) => Seen::Taken(ask.token),
                _ => Seen::Free,
            };
            return Decided::Miss(None, seen);
        };
        match decode_entry::<S, R>(entry.as_slice()) {
            Ok((value, fresh_ms)) => {
                let freshness = policy.classify(fresh_ms);
                if let Freshness::Stale | Freshness::Expired = freshness
                    && !(refresh && freshness == Freshness::Stale)
                {
                    let entry = entry.into_bytes();
                    let seen = Seen::of(&entry);
                    return Decided::Miss(Some(Found { value, entry }), seen);
                }
                let events = self.events.of(spec);
                spec.misses.hit();
                let refreshing = refresh && freshness != Freshness::Fresh;
                // A stale answer is a hit too, with one outcome: `stale`.
                match refreshing && freshness == Freshness::Stale {
                    true => events.served_stale(),
                    false => events.hit(),
                }
                #[cfg(feature = "metrics")]
                if events.timed() {
                    let outcome = match (refreshing, freshness) {
                        (true, Freshness::Stale) => Outcome::Stale,
                        _ => Outcome::Hit,
                    };
                    events.call_took(outcome, budget.started.elapsed());
                }
                #[cfg(not(feature = "metrics"))]
                let _ = budget;
                // Unless a refresh holds the lease already (here or elsewhere).
                if refreshing && !envelope::head(entry.as_slice()).is_some_and(|h| h.pending) {
                    return Decided::Refresh(value, entry);
                }
                return Decided::Hit(value);
            }
            // Another load's placeholder, or an absence (a batch's `none_ttl`) where this
            // function's type has no room for one: a miss, not a corrupt entry.
            Err(_) if envelope::head(entry.as_slice()).is_some_and(|h| h.empty || h.absent) => {}
            Err(error) => self.events.of(spec).corrupt(key.as_str(), &error),
        }
        let seen = match (Seen::of(entry.as_slice()), ask) {
            // This read's own placeholder: a first attempt took the lease, its reply was
            // lost with the connection, and the retry found it.
            (Seen::Leased(token), Some(ask)) if token == ask.token => Seen::Taken(token),
            (seen, _) => seen,
        };
        Decided::Miss(None, seen)
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
        self.drop_wrong_type(key.as_str(), error);
        // A read that takes the lease is a write too: a full Redis refuses it.
        let events = self.events.of(spec);
        if error.is_out_of_memory() {
            events.store_failed();
        }
        events.failed("get", key.as_str(), error);
    }

    /// After a command on `key` failed because the key holds another type than a string
    /// (written there by something else): the key is deleted, in a spawned task, so that the
    /// next load stores its entry there, as over any other entry that does not decode.
    pub(super) fn drop_wrong_type(self: &Arc<Self>, key: &str, error: &Error) {
        let (true, Ok(runtime)) = (error.is_wrong_type(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (engine, key) = (Arc::clone(self), key.to_owned());
        runtime.spawn(async move {
            let timeout = engine.settings.timeout;
            if let Err(error) = engine.backend.delete(&key, timeout).await {
                engine.events.failed("delete", &key, &error);
            }
        });
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
