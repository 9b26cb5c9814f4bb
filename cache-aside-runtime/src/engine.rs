//! The get-or-load path, the cache-aside pattern step by step.
//!
//! 1. **read** the key (bounded by the function's timeout, skipped while the breaker is
//!    open);
//! 2. **decide** what the entry is worth ([`Freshness`]): fresh → return it; due for
//!    refresh-ahead or within `stale` → return it and refresh in the background; expired →
//!    keep it as the fail-safe answer and load;
//! 3. **load once**: join the key's single-flight ([`flight`]); the leader takes the
//!    distributed lock if asked ([`lock`]), runs the body, and hands its entry to the
//!    waiters;
//! 4. **store** what the return type's [`Shape`] says to store, with the jittered TTL plus
//!    the stale/fail-safe margin, in one command (releasing the lock in the same script);
//! 5. **return** the loaded value, whatever happened in step 4; if the body failed and an
//!    expired value was kept, return that instead (fail-safe) and back off.
//!
//! [`flight`]: crate::flight
//! [`lock`]: crate::lock
//!
//! The cache is an optimisation: no failure in steps 1, 2 or 4 reaches the caller unless
//! the function asked for it with `on_cache_error = "fail"` ([`Policy::surface_errors`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::backend::{Backend, Budget};
use crate::cache::Cache;
use crate::codec::{self, unix_ms};
use crate::error::Error;
use crate::exact::{self, Same};
use crate::flight::{self, Lead, Outcome, Role, Share};
use crate::key::Key;
use crate::lock::{Acquired, Held};
use crate::policy::{Freshness, Policy};
use crate::shape::{Shape, Store};
use crate::stats::Counters;

/// Starts a background refresh of `key` with this call's body; `false` if none started.
/// Only bodies that can outlive their call (`stale`, `refresh_ahead`) have one.
pub(crate) type Detach<F, V> = fn(&Cache, &Key, Policy, F, Bytes, Same<V>) -> bool;

/// The miss path of a call, boxed and polled through a function that is never inlined: a
/// hit then neither carries the miss path's state (the lock, the flight, the store) in its
/// future nor its code in its poll function. Measured with callgrind on the bench's
/// sequential 150 B hit: fewer instructions and instruction-cache misses per hit; a miss pays
/// one allocation, next to two round trips.
pub(crate) struct Cold<F>(Pin<Box<F>>);

impl<F: Future> Cold<F> {
    /// Builds the future straight into its box: an async fn's future is as large as its
    /// largest state (the miss path's is several KB), and `Box::pin(f())` builds it on the
    /// stack and copies all of it.
    #[inline(always)]
    pub(crate) fn build(make: impl FnOnce() -> F) -> Self {
        Cold(Box::into_pin(Box::write(Box::new_uninit(), make())))
    }
}

impl<F: Future> Future for Cold<F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// An entry as read: Redis hands over a `Vec`, the embedded store a `Bytes`. A hit only
/// decodes it; it becomes `Bytes` (a conversion and a shared-buffer drop, measurable per hit)
/// only when the engine keeps it past the call.
enum Read {
    Vec(Vec<u8>),
    Bytes(Bytes),
}

impl Read {
    fn as_slice(&self) -> &[u8] {
        match self {
            Read::Vec(v) => v,
            Read::Bytes(b) => b,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Read::Vec(v) => Bytes::from(v),
            Read::Bytes(b) => b,
        }
    }
}

/// What a return type allows, as the macro found: handing a result that was not stored to
/// the waiters of its load ([`Share`]), and comparing a value with its decoded copy before
/// storing it ([`Same`]).
pub(crate) struct ValueOps<R, V> {
    share: Option<Share<R>>,
    same: Same<V>,
}

/// A value the engine could serve, with its entry.
struct Found<R> {
    value: R,
    entry: Bytes,
}

impl Cache {
    pub(crate) async fn get_or_load<S, R, F>(
        &self,
        key: &Key,
        policy: &Policy,
        load: F,
        detach: Option<Detach<F, S::Value>>,
        share: Option<Share<R>>,
        same: Same<S::Value>,
    ) -> Result<R, Error>
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let counters = &self.inner.counters;
        // 1. read
        // One clock read: the read's deadline, and what is left of it for the write.
        let budget = Budget::from_now(policy.timeout);
        // The backend's `get`, with no future of its own around the Redis read: every layer
        // of `async` on the hit path costs instructions per call (see `Cold`).
        let read = match &self.inner.backend {
            Backend::Redis(redis) => redis
                .get(key.as_str(), budget)
                .await
                .map(|v| v.map(Read::Vec)),
            Backend::Memory(memory) => Ok(memory.get(key.as_str()).map(Read::Bytes)),
        };
        let entry = match read {
            Ok(entry) => entry,
            Err(error) => {
                if error.is_timeout() {
                    self.check_size(key, policy);
                }
                self.failed("get", key.as_str(), &error);
                if policy.surface_errors {
                    return Err(error);
                }
                None
            }
        };
        // 2. decide
        let mut kept = None;
        let entry = entry.filter(|e| self.fits(key, e.as_slice(), policy));
        if let Some(entry) = entry {
            match decode_entry::<S, R>(entry.as_slice()) {
                Ok((value, fresh_ms)) => {
                    let freshness = policy.classify(fresh_ms);
                    match (freshness, detach) {
                        (Freshness::Fresh, _) | (Freshness::RefreshDue, None) => {
                            counters.hits.bump();
                            return Ok(value);
                        }
                        (Freshness::RefreshDue | Freshness::Stale, Some(detach)) => {
                            counters.hits.bump();
                            if freshness == Freshness::Stale {
                                Counters::bump(&counters.stale_served);
                            }
                            detach(self, key, *policy, load, entry.into_bytes(), same);
                            return Ok(value);
                        }
                        (Freshness::Stale | Freshness::Expired, _) => {
                            let entry = entry.into_bytes();
                            kept = Some(Found { value, entry });
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(key = key.as_str(), %error, "cache-aside: corrupt entry; reloading");
                    Counters::bump(&counters.corrupt);
                }
            }
        }
        Counters::bump(&counters.misses);
        let mut policy = *policy;
        policy.write_timeout = budget.left();
        // 3-5 out of line: the hit path's future and code stay small (see [`Cold`]).
        let ops = ValueOps { share, same };
        Cold::build(|| self.miss::<S, R, F>(key, policy, load, kept, ops, budget.started)).await
    }

    /// A miss: load once, store, return.
    async fn miss<S: Shape<R>, R, F: Future<Output = R>>(
        &self,
        key: &Key,
        policy: Policy,
        load: F,
        kept: Option<Found<R>>,
        ops: ValueOps<R, S::Value>,
        read_at: tokio::time::Instant,
    ) -> Result<R, Error> {
        let counters = &self.inner.counters;
        // 3. load once
        loop {
            let outcome = match self.inner.flights.join(key.as_str(), read_at) {
                Role::Leader(lead) => {
                    return self
                        .lead::<S, R, F>(key, policy, load, kept, lead, ops)
                        .await;
                }
                Role::Waiter(theirs) => {
                    Counters::bump(&counters.waited);
                    // Bounded: a leader whose caller stopped polling it (a `select!` busy
                    // elsewhere) is not cancelled, and would hold every waiter.
                    match tokio::time::timeout(policy.flight_wait, flight::wait(theirs)).await {
                        Ok(outcome) => outcome,
                        Err(_) => {
                            Counters::bump(&counters.flight_timeouts);
                            tracing::debug!(
                                key = key.as_str(),
                                "cache-aside: the load this call waited for is taking longer than flight_wait; loading without it"
                            );
                            Outcome::NotStored
                        }
                    }
                }
                Role::Done(outcome) => {
                    Counters::bump(&counters.waited);
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
                        Counters::bump(&counters.stale_served);
                        Counters::bump(&counters.fail_safe);
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
                .load::<S, R, F>(key, policy, load, kept, None, ops.same)
                .await;
            return result;
        }
    }

    /// The single-flight leader: across processes too, if the lock is on.
    async fn lead<S: Shape<R>, R, F: Future<Output = R>>(
        &self,
        key: &Key,
        policy: Policy,
        load: F,
        kept: Option<Found<R>>,
        lead: Lead,
        ops: ValueOps<R, S::Value>,
    ) -> Result<R, Error> {
        let mut held = None;
        let mut policy = policy;
        if let (Some(lock), Some(redis)) = (policy.lock, self.inner.backend.redis()) {
            match self.acquire(redis, key, &mut policy, lock).await {
                Ok(Acquired::Held(h)) => held = Some(h),
                Ok(Acquired::Value(entry)) => {
                    if let Ok((value, _)) = decode_entry::<S, R>(&entry) {
                        lead.finish(Outcome::Stored(entry));
                        return Ok(value);
                    }
                }
                Ok(Acquired::GaveUp) => {}
                Err(error) => {
                    self.failed("lock", key.as_str(), &error);
                    if policy.surface_errors {
                        return Err(error);
                    }
                }
            }
        }
        let (result, outcome) = self
            .load::<S, R, F>(key, policy, load, kept, held, ops.same)
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
        key: &Key,
        policy: Policy,
        load: F,
        kept: Option<Found<R>>,
        held: Option<Held>,
        same: Same<S::Value>,
    ) -> (Result<R, Error>, Outcome) {
        let counters = &self.inner.counters;
        Counters::bump(&counters.loads);
        let loaded = self.run_body(held.as_ref(), &policy, load).await;
        // A bool first: a `Store` borrowing `loaded` must not live across the awaits below,
        // or the call's future stops being `Send` for return types holding a `dyn Trait`
        // (`Box<dyn Error + Send + Sync>`: "one type is more general than the other").
        let (failed, absent) = match S::store(&loaded) {
            Store::Skip => (true, false),
            Store::Absent => (false, true),
            Store::Value(_) => (false, false),
        };
        if let (true, Some(kept)) = (failed, kept) {
            Counters::bump(&counters.fail_safe);
            Counters::bump(&counters.stale_served);
            tracing::debug!(
                key = key.as_str(),
                "cache-aside: body failed; fail-safe serves the kept value"
            );
            // Two commands, one budget: what the back-off takes, the release cannot.
            let mut policy = policy;
            let started = std::time::Instant::now();
            self.back_off(key, &kept.entry, &policy).await;
            policy.write_timeout = policy.write_timeout.saturating_sub(started.elapsed());
            // Only releases the lock (a lock left held releases itself when dropped); a
            // failure is counted and logged inside.
            self.write(key, None, held.as_ref(), &policy).await.ok();
            return (Ok(kept.value), Outcome::Stale(kept.entry));
        }
        let encoded = self.encode::<S, R>(key, &policy, &loaded, same);
        let (entry, written) = self.store(key, &policy, encoded, held.as_ref()).await;
        let outcome = match entry {
            Some(entry) => Outcome::Stored(entry),
            // `None` without `none_ttl`: every waiter can make its own, no `Clone` needed.
            None if absent => Outcome::Absent,
            None => Outcome::NotStored,
        };
        match written {
            Err(error) if policy.surface_errors => (Err(error), outcome),
            _ => (Ok(loaded), outcome),
        }
    }

    /// Encodes what the shape says to store and writes it (releasing `held`). Returns the
    /// entry, written or not, so that waiters are served even when the backend is down.
    ///
    /// Takes the result of [`encode`](Self::encode) rather than `&R`, so no `&R` is held
    /// across an await: a refresh task's future is `Send` without asking `R: Sync`.
    pub(crate) async fn store(
        &self,
        key: &Key,
        policy: &Policy,
        encoded: Result<Option<(Bytes, Duration)>, Error>,
        held: Option<&Held>,
    ) -> (Option<Bytes>, Result<(), Error>) {
        match encoded {
            Ok(Some((entry, ttl))) if entry.len() as u64 <= policy.max_value_bytes => {
                let written = self.write(key, Some((&entry, ttl)), held, policy).await;
                if written.is_err() {
                    Counters::bump(&self.inner.counters.store_errors);
                }
                (Some(entry), written)
            }
            Ok(Some((entry, _))) => {
                Counters::bump(&self.inner.counters.oversized);
                tracing::debug!(
                    key = key.as_str(),
                    bytes = entry.len(),
                    "cache-aside: value above max_value_bytes; not stored"
                );
                (Some(entry), self.write(key, None, held, policy).await)
            }
            Ok(None) => (None, self.write(key, None, held, policy).await),
            Err(error) => {
                self.write(key, None, held, policy).await.ok();
                (None, Err(error))
            }
        }
    }

    /// The entry to store for `loaded` and its physical TTL (jittered TTL plus the
    /// stale/fail-safe margin); `None` if the shape stores nothing.
    pub(crate) fn encode<S: Shape<R>, R>(
        &self,
        key: &Key,
        policy: &Policy,
        loaded: &R,
        same: Same<S::Value>,
    ) -> Result<Option<(Bytes, Duration)>, Error> {
        let (value, ttl) = match (S::store(loaded), policy.none_ttl) {
            (Store::Value(value), _) => (Some(value), policy.ttl),
            (Store::Absent, Some(none_ttl)) => (None, none_ttl),
            (Store::Absent, None) | (Store::Skip, _) => return Ok(None),
        };
        let ttl = policy.jittered(ttl);
        let bytes = match codec::encode(self.inner.codec, value, Some(SystemTime::now() + ttl)) {
            Ok(bytes) => bytes,
            Err(error) => {
                self.failed("encode", key.as_str(), &error);
                return Err(error);
            }
        };
        // An oversized value is not stored anyway (`store` counts it): no need to decode it.
        if let Some(value) = value
            && bytes.len() as u64 <= policy.max_value_bytes
            && !exact::round_trips(
                value,
                || codec::decode_raw::<S::Value>(&bytes).ok()?.0,
                same,
            )
        {
            self.unstorable(key, policy);
            return Ok(None);
        }
        Ok(Some((Bytes::from(bytes), ttl + policy.keep())))
    }

    /// Is an entry as read within `max_value_bytes`? One that is not was written by someone
    /// else (this library stores nothing larger): a miss, which the load overwrites.
    #[inline]
    fn fits(&self, key: &Key, entry: &[u8], policy: &Policy) -> bool {
        if entry.len() as u64 <= policy.max_value_bytes {
            return true;
        }
        Counters::bump(&self.inner.counters.oversized);
        tracing::debug!(
            key = key.as_str(),
            "cache-aside: an entry over max_value_bytes is there; reading it as a miss"
        );
        false
    }

    /// After a read that timed out: if the entry is larger than this function stores, the
    /// read was slow because of it, and it would make every read of its key time out (and
    /// the write after it be skipped), so it is deleted. In a spawned task, with its own
    /// timeout: the call does not wait for it. A deletion also closes the breaker, whose
    /// failures were that entry's doing (`Breaker::forgive`).
    #[cold]
    fn check_size(&self, key: &Key, policy: &Policy) {
        let (Some(_), Ok(runtime)) = (
            self.inner.backend.redis(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let (cache, key, max) = (
            self.clone(),
            key.as_str().to_owned(),
            policy.max_value_bytes,
        );
        // Its own bound, not the call's: it may have to connect first, and a Redis copying
        // out a reply of hundreds of MB answers slowly for a while.
        let timeout = self.inner.settings.timeout.max(Duration::from_secs(5));
        runtime.spawn(async move {
            let Some(redis) = cache.inner.backend.redis() else {
                return;
            };
            match redis.drop_if_larger(&key, max, timeout).await {
                Some(Ok(Some(len))) => tracing::warn!(
                    key,
                    bytes = len,
                    "cache-aside: an entry over max_value_bytes made its reads time out; deleted it"
                ),
                Some(Err(error)) => cache.failed("size check", &key, &error),
                Some(Ok(None)) | None => {}
            }
        });
    }

    /// A value the codec would not give back exactly: returned, never stored.
    #[cold]
    fn unstorable(&self, key: &Key, policy: &Policy) {
        Counters::bump(&self.inner.counters.unstorable);
        let spec = policy.spec;
        if !spec
            .warned_unstorable
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                function = spec.name(),
                key = key.as_str(),
                "cache-aside: a returned value would not read back exactly from JSON (NaN, \
                 infinity, Some(None) inside it, or an untagged enum); such values are returned \
                 but not cached (stats().unstorable); logged once per function"
            );
        }
    }

    /// Writes `entry` with its physical TTL, and releases `held` in the same round trip.
    /// Skipped when the call's read used up the timeout: Redis is hung or unreachable, and
    /// waiting for it a second time would double what the outage costs the caller.
    pub(crate) async fn write(
        &self,
        key: &Key,
        entry: Option<(&Bytes, Duration)>,
        held: Option<&Held>,
        policy: &Policy,
    ) -> Result<(), Error> {
        if policy.write_timeout.is_zero() && (entry.is_some() || held.is_some()) {
            let error = Error::Timeout(policy.timeout);
            self.failed("set", key.as_str(), &error);
            return Err(error);
        }
        let (op, result) = match (held, self.inner.backend.redis()) {
            (Some(held), Some(redis)) => {
                let entry = entry.map(|(bytes, ttl)| (key, bytes, ttl));
                ("release", self.release(redis, held, entry, policy).await)
            }
            _ => match entry {
                Some((bytes, ttl)) => (
                    "set",
                    self.inner
                        .backend
                        .set(key.as_str(), bytes, ttl, policy.write_timeout)
                        .await,
                ),
                None => return Ok(()),
            },
        };
        if let Err(error) = &result {
            self.failed(op, key.as_str(), error);
        }
        result
    }

    /// Marks a kept entry fresh for `fail_safe_backoff`, so the next calls are served by it
    /// instead of running a failing body again; only if nobody replaced it meanwhile.
    pub(crate) async fn back_off(&self, key: &Key, entry: &[u8], policy: &Policy) {
        // Never shorter than it is: a refresh that started early (refresh-ahead, XFetch)
        // and failed must not cut a still-fresh entry down to the back-off.
        let backoff = SystemTime::now() + policy.fail_safe_backoff;
        let until = codec::fresh_until(entry).map_or(backoff, |fresh| fresh.max(backoff));
        let (Some(old), Some(new)) = (
            entry.first_chunk::<{ codec::HEADER_LEN }>(),
            codec::retimed_header(entry, until),
        ) else {
            return;
        };
        let retimed = self
            .inner
            .backend
            .retime(key.as_str(), old, &new, policy.write_timeout)
            .await;
        if let Err(error) = retimed {
            self.failed("retime", key.as_str(), &error);
        }
        tracing::trace!(
            key = key.as_str(),
            until = unix_ms(until),
            "cache-aside: backing off"
        );
    }

    pub(crate) fn failed(&self, op: &'static str, key: &str, error: &Error) {
        Counters::bump(&self.inner.counters.errors);
        self.inner.reporter.report(op, key, error);
    }
}

/// Decodes an envelope into the function's return type and its fresh-until time (Unix ms,
/// 0 for none).
fn decode_entry<S: Shape<R>, R>(bytes: &[u8]) -> Result<(R, u64), Error> {
    let (value, fresh_ms) = codec::decode_raw::<S::Value>(bytes)?;
    let value = S::hit(value)
        .ok_or_else(|| Error::Decode("an absence marker where a value belongs".into()))?;
    Ok((value, fresh_ms))
}
