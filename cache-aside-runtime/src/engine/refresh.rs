//! Background refreshes, for `stale` (stale-while-revalidate), `refresh_ahead` and XFetch.
//!
//! The call that finds a stale (or nearly expired) entry returns it at once and hands its
//! own body to a spawned Tokio task, which loads and stores the new value. Refreshes are
//! bounded three ways: one per key in this process (the refresh leads the key's
//! single-flight), one per key across processes when the lock is on (a refresh never
//! waits for a lock: if another process holds it, that process is refreshing), and at most
//! `max_refreshes` per cache (beyond it the refresh is dropped and a later call retries).
//! A failed refresh backs off like fail-safe, so a failing body is not retried per call.

use std::sync::Arc;

use bytes::Bytes;

use super::lock::Held;
use super::{Call, Engine, ErrorMode};
use crate::backend::LockAttempt;
use crate::envelope::{self, unix_ms};
use crate::error::Error;
use crate::events::Events;
use crate::exact::Same;
use crate::flight::{Lead, Outcome, Role};
use crate::key::Key;
use crate::policy::Policy;
use crate::shape::{Shape, Store};
use crate::spec::FnSpec;

/// Counts a refresh as failed unless disarmed: a body that panics unwinds through it.
struct FailureGuard<'a>(Option<&'a Events>);

impl Drop for FailureGuard<'_> {
    fn drop(&mut self) {
        if let Some(events) = self.0 {
            events.refresh_failed();
        }
    }
}

/// The [`Detach`](super::Detach) of bodies that can outlive their call.
pub(crate) fn spawn_refresh<S, R, F>(
    engine: &Arc<Engine>,
    key: &Key,
    spec: &'static FnSpec,
    policy: Policy,
    load: F,
    current: Bytes,
    same: Same<S::Value>,
) -> bool
where
    S: Shape<R> + 'static,
    R: Send + 'static,
    F: Future<Output = R> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    // `now`: a refresh answers no read of its own, so no finished load stands in for it.
    let now = tokio::time::Instant::now();
    let Role::Leader(lead) = engine.flights.join(key.as_str(), now) else {
        return false; // already loading in this process
    };
    let Ok(permit) = engine.refresh_slots.clone().try_acquire_owned() else {
        engine.events.refresh_dropped();
        return false;
    };
    engine.events.refresh_started();
    let engine = Arc::clone(engine);
    let key = key.clone();
    runtime.spawn(async move {
        // A refresh runs on its own time, not the call's: the full timeout for each write.
        let call = Call {
            key: &key,
            spec,
            mode: ErrorMode::FailOpen,
            write_left: policy.timeout,
        };
        engine
            .refresh::<S, R, F>(call, policy, load, current, lead, same)
            .await;
        drop(permit);
    });
    true
}

impl Engine {
    async fn refresh<S: Shape<R>, R, F: Future<Output = R>>(
        self: &Arc<Self>,
        mut call: Call<'_>,
        policy: Policy,
        load: F,
        current: Bytes,
        lead: Lead,
        same: Same<S::Value>,
    ) {
        let (state, held) = self.recheck(&call, &policy, &current).await;
        match state {
            Ok(LockAttempt::Locked) => {}
            // Refreshed already.
            Ok(LockAttempt::Value(entry)) => return lead.finish(Outcome::Stored(entry)),
            // Another process holds the lock: it is refreshing.
            Ok(LockAttempt::Busy) => return lead.finish(Outcome::NotStored),
            Err(error) => self.events.failed("refresh", call.key.as_str(), &error),
        }
        self.events.load();
        let mut guard = FailureGuard(Some(&self.events));
        let loaded = self.run_body(held.as_ref(), call.spec, &policy, load).await;
        if matches!(S::store(&loaded), Store::Skip) {
            drop(guard);
            self.events.refresh_backing_off(call.key.as_str());
            self.fall_back(&mut call, &policy, &current, held.as_ref())
                .await;
            return lead.finish(Outcome::NotStored);
        }
        guard.0 = None;
        let encoded = self.encode::<S, R>(&call, &policy, &loaded, same);
        drop(loaded);
        let (entry, _) = self.store(&call, &policy, encoded, held.as_ref()).await;
        lead.finish(entry.map_or(Outcome::NotStored, Outcome::Stored));
    }

    /// Between the call's read and now, another caller or process may have refreshed the
    /// entry: look again (taking the lock in the same step if it is on). Refreshed means
    /// fresh past the deadline the call saw: true of a new value, and of a fail-safe
    /// back-off, and the one test that also holds for an XFetch refresh, which may start
    /// while the entry is still fresh. Still due (or unreadable): go ahead, as if the lock
    /// had been taken.
    async fn recheck(
        self: &Arc<Self>,
        call: &Call<'_>,
        policy: &Policy,
        current: &[u8],
    ) -> (Result<LockAttempt, Error>, Option<Held>) {
        let key = call.key;
        let point = envelope::fresh_until(current).map_or(0, unix_ms);
        if let Some(lock) = policy.lock.filter(|_| self.backend.holds_locks()) {
            let h = Held::new(key);
            let attempt = self
                .backend
                .get_or_lock(
                    key.as_str(),
                    (&h.key, &h.token),
                    lock.ttl,
                    point,
                    policy.max_value_bytes,
                    policy.timeout,
                )
                .await;
            let held = matches!(attempt, Ok(LockAttempt::Locked)).then(|| h.taken(self));
            return (attempt, held);
        }
        let read = self
            .backend
            .get(key.as_str(), policy.max_value_bytes, policy.timeout)
            .await;
        let state = match read {
            Ok(Some(entry))
                if envelope::fresh_until(&entry).is_some_and(|t| unix_ms(t) > point) =>
            {
                Ok(LockAttempt::Value(entry))
            }
            other => other.map(|_| LockAttempt::Locked),
        };
        (state, None)
    }
}
