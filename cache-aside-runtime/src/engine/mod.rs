//! The engine: the get-or-load path, the cache-aside pattern step by step, one file per
//! stage.
//!
//! 1. **read** the key (bounded by the function's timeout, skipped while the breaker is
//!    open) — [`read`](self::read), the hot path;
//! 2. **decide** what the entry is worth ([`Freshness`](crate::policy::Freshness)): fresh →
//!    return it; due for refresh-ahead or within `stale` → return it and refresh in the
//!    background ([`refresh`](self::refresh)); expired → keep it as the fail-safe answer
//!    and load — also [`read`](self::read);
//! 3. **load once**: join the key's single-flight ([`flight`](crate::flight)); the leader
//!    takes the distributed lock if asked ([`lock`](self::lock)), runs the body, and hands
//!    its entry to the waiters — [`miss`](self::miss);
//! 4. **store** what the return type's [`Shape`](crate::shape::Shape) says to store, with
//!    the jittered TTL plus the stale/fail-safe margin, in one command (releasing the lock in
//!    the same script) — [`store`](self::store);
//! 5. **return** the loaded value, whatever happened in step 4; if the body failed and an
//!    expired value was kept, return that instead (fail-safe) and back off.
//!
//! Invalidation (`_invalidate`, prefixes, `ttl_of`, `#[cache_evict]`) is
//! [`invalidate`](self::invalidate); write-through (`#[cache_put]`) is [`put`](self::put).
//!
//! The cache is an optimisation: no failure in steps 1, 2 or 4 reaches the caller unless
//! the function asked for it with `on_cache_error = "fail"` ([`ErrorMode::Surface`]).
//!
//! What a call carries is split in two: the function's [`Policy`] (resolved once per
//! function and cache, immutable) and the call's own [`Call`] (its key, what is left of its
//! time budget for writes, its error mode). Every event goes through [`Events`].

mod batch;
mod invalidate;
mod lease;
mod miss;
mod put;
mod read;
mod refresh;
mod store;
mod tags;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

pub(crate) use self::batch::Failed;
pub(crate) use self::refresh::spawn_refresh;
use crate::backend::Backend;
use crate::envelope::{self, Codec};
use crate::error::Error;
use crate::events::Events;
use crate::exact::Same;
use crate::flight::{Flights, Share};
use crate::key::Key;
use crate::policy::Policy;
use crate::settings::Settings;
use crate::shape::Shape;
use crate::spec::FnSpec;
use crate::stats::Stats;

/// One cache's engine: its backend, namespace, settings, codec, events, in-flight loads
/// and refresh permits. [`Cache`](crate::Cache) is a handle to one.
pub(crate) struct Engine {
    /// Unique per cache built in this process (never reused, unlike an address).
    id: u64,
    backend: Backend,
    namespace: String,
    settings: Settings,
    codec: Codec,
    events: Events,
    flights: Flights,
    /// Permits for background refreshes: `max_refreshes` at a time.
    refresh_slots: Arc<Semaphore>,
    /// `lock_ttl` in milliseconds, as the read's `PX` argument.
    lease_ms: String,
    /// Invalidations this cache made: single-flight joins no load one of them overtook.
    invalidations: std::sync::atomic::AtomicU64,
}

/// What a cache failure does to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorMode {
    /// The default: the call goes on without the cache.
    FailOpen,
    /// `on_cache_error = "fail"`: cache failures become the call's `Err`.
    Surface,
}

/// One call's own state past its read: its key and function, how it treats cache
/// failures, and what is left of its `timeout` for its writes.
pub(crate) struct Call<'k> {
    pub(crate) key: &'k Key,
    pub(crate) spec: &'static FnSpec,
    pub(crate) mode: ErrorMode,
    /// What the call's read left of `timeout` for its writes: a call spends at most one
    /// `timeout` on the cache, so a hung Redis costs `timeout` once, not per operation.
    /// Reduced by each lock attempt and back-off; a refresh starts with a whole `timeout`.
    pub(crate) write_left: Duration,
    /// Where the call adds the microseconds its body ran, when it times itself (feature
    /// `metrics`: its time on the cache is its whole time less its body's).
    pub(crate) body_us: Option<&'k std::sync::atomic::AtomicU64>,
    /// The lease of another load that the call's read found, when the call loads without
    /// one (0: none): what its value is worth to the callers waiting for it (see
    /// `store.rs::unleased`).
    pub(crate) saw: u64,
}

impl Call<'_> {
    fn surfaces(&self) -> bool {
        self.mode == ErrorMode::Surface
    }

    /// Takes what `started` to now cost off the write budget.
    fn spent_since(&mut self, started: std::time::Instant) {
        self.write_left = self.write_left.saturating_sub(started.elapsed());
    }
}

/// Starts a background refresh of `key` with this call's body; `false` if none started.
/// Only bodies that can outlive their call (`stale`, `refresh_ahead`) have one.
pub(crate) type Detach<F, V> =
    fn(&Arc<Engine>, &Key, &'static FnSpec, Policy, F, Bytes, Same<V>) -> bool;

/// What a return type allows, as the macro found: handing a result that was not stored to
/// the waiters of its load ([`Share`]), and comparing a value with its decoded copy before
/// storing it ([`Same`]).
pub(crate) struct ValueOps<R, V> {
    pub(crate) share: Option<Share<R>>,
    pub(crate) same: Same<V>,
}

/// A value the engine could serve, with its entry.
struct Found<R> {
    value: R,
    entry: Bytes,
}

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

impl Engine {
    pub(crate) fn new(
        backend: Backend,
        namespace: String,
        settings: Settings,
        max_refreshes: usize,
    ) -> Engine {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let lease_ms = settings.lock_ttl.as_millis().max(1).to_string();
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let events = Events::new(id, &namespace, settings.timed);
        Engine {
            lease_ms,
            invalidations: std::sync::atomic::AtomicU64::new(0),
            id,
            backend,
            namespace,
            settings,
            codec: Codec::default(),
            events,
            flights: Flights::default(),
            refresh_slots: Arc::new(Semaphore::new(max_refreshes)),
        }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// With `__with_pauses` (tests only): a random pause, up to 3 ms, in three calls of
    /// eight, between a read and the join of its key's load, where a loaded machine may
    /// deschedule a call and let another's write in.
    async fn pause(&self) {
        if self.settings.pauses && fastrand::u8(..) < 96 {
            tokio::time::sleep(Duration::from_micros(fastrand::u64(0..3000))).await;
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    pub(crate) fn stats(&self) -> Stats {
        self.events.snapshot(self.backend.breaker())
    }

    pub(crate) fn stats_by_function(&self) -> Vec<crate::stats::FunctionStats> {
        self.events.snapshot_by_function(self.backend.breaker())
    }

    /// Publishes the call-time histograms (feature `metrics`).
    #[cfg(feature = "metrics")]
    pub(crate) fn publish_call_times(&self) {
        self.events.publish_call_times();
    }

    /// The events door, for failures met before a call reaches the engine (a key argument
    /// that does not serialize, a function without a TTL).
    pub(crate) fn events(&self) -> &Events {
        &self.events
    }

    /// The policy `spec` resolved with this cache, when it is the one remembered. Remembers
    /// the first cache it is asked with.
    #[inline]
    pub(crate) fn remembered_policy(&self, spec: &'static FnSpec) -> Option<&'static Policy> {
        let (of, policy) = match spec.policy.get() {
            Some(found) => found,
            None => {
                let policy = self.resolve_policy(spec)?;
                spec.policy.get_or_init(|| (self.id, policy))
            }
        };
        (*of == self.id).then_some(policy)
    }

    /// `spec`'s policy for a call: the one remembered for it, or else resolved into `slot`
    /// (the function is used with a second cache); `None` if neither its options nor this
    /// cache's settings give a TTL.
    #[inline]
    pub(crate) fn policy<'a>(
        &self,
        spec: &'static FnSpec,
        slot: &'a mut Option<Policy>,
    ) -> Option<&'a Policy> {
        match self.remembered_policy(spec) {
            Some(policy) => Some(policy),
            None => {
                *slot = self.resolve_policy(spec);
                slot.as_ref()
            }
        }
    }

    /// `spec`'s options over this cache's settings; `None` if neither gives a TTL.
    pub(crate) fn resolve_policy(&self, spec: &'static FnSpec) -> Option<Policy> {
        Policy::resolve(&spec.options, &spec.load_time, &self.settings)
    }
}

/// Decodes an envelope into the function's return type and its fresh-until time (Unix ms,
/// 0 for none).
fn decode_entry<S: Shape<R>, R>(bytes: &[u8]) -> Result<(R, u64), Error> {
    let (value, fresh_ms) = envelope::decode_raw::<S::Value>(bytes)?;
    let value = S::hit(value)
        .ok_or_else(|| Error::Decode("an absence marker where a value belongs".into()))?;
    Ok((value, fresh_ms))
}
