//! Background refreshes, for `stale` (stale-while-revalidate) and `refresh_ahead`.
//!
//! The call that finds a stale (or nearly expired) entry returns it at once and hands its
//! own body to a spawned Tokio task, which loads and stores the new value. Refreshes are
//! bounded three ways: one per key in this process (the refresh leads the key's
//! single-flight), one per key across processes when the lock is on (a refresh never
//! waits for a lock: if another process holds it, that process is refreshing), and at most
//! `max_refreshes` per cache (beyond it the refresh is dropped and a later call retries).
//! A failed refresh backs off like fail-safe, so a failing body is not retried per call.

use std::sync::atomic::AtomicU64;

use bytes::Bytes;

use crate::backend::LockAttempt;
use crate::cache::Cache;

use crate::codec::{self, unix_ms};
use crate::exact::Same;
use crate::flight::{Lead, Outcome, Role};
use crate::key::Key;
use crate::lock::Held;
use crate::policy::Policy;
use crate::shape::{Shape, Store};
use crate::stats::Counters;

/// Counts a refresh as failed unless disarmed: a body that panics unwinds through it.
struct FailureGuard<'a>(Option<&'a AtomicU64>);

impl Drop for FailureGuard<'_> {
    fn drop(&mut self) {
        if let Some(counter) = self.0 {
            Counters::bump(counter);
        }
    }
}

/// The [`Detach`](crate::engine::Detach) of bodies that can outlive their call.
pub(crate) fn spawn_refresh<S, R, F>(
    cache: &Cache,
    key: &Key,
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
    let counters = &cache.inner.counters;
    // A refresh runs on its own time, not the call's: the full timeout for each write.
    let policy = Policy {
        write_timeout: policy.timeout,
        ..policy
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    // `now`: a refresh answers no read of its own, so no finished load stands in for it.
    let now = tokio::time::Instant::now();
    let Role::Leader(lead) = cache.inner.flights.join(key.as_str(), now) else {
        return false; // already loading in this process
    };
    let Ok(permit) = cache.inner.refresh_slots.clone().try_acquire_owned() else {
        Counters::bump(&counters.refreshes_dropped);
        return false;
    };
    Counters::bump(&counters.refreshes);
    let cache = cache.clone();
    let key = key.clone();
    runtime.spawn(async move {
        cache
            .refresh::<S, R, F>(&key, policy, load, current, lead, same)
            .await;
        drop(permit);
    });
    true
}

impl Cache {
    async fn refresh<S: Shape<R>, R, F: Future<Output = R>>(
        &self,
        key: &Key,
        policy: Policy,
        load: F,
        current: Bytes,
        lead: Lead,
        same: Same<S::Value>,
    ) {
        let counters = &self.inner.counters;
        // Between this call's read and now, another caller or process may have refreshed
        // the entry: look again (taking the lock in the same step if it is on). Refreshed
        // means fresh past the deadline this call saw: true of a new value, and of a
        // fail-safe back-off, and the one test that also holds for an XFetch refresh, which
        // may start while the entry is still fresh.
        let point = codec::fresh_until(&current).map_or(0, unix_ms);
        let mut held = None;
        let redis = self.inner.backend.redis();
        let current_state = match (policy.lock, redis) {
            (Some(lock), Some(redis)) => {
                let h = Held::new(key);
                let attempt = redis
                    .get_or_lock(
                        key.as_str(),
                        (&h.key, &h.token),
                        lock.ttl,
                        point,
                        policy.max_value_bytes,
                        policy.timeout,
                    )
                    .await;
                if matches!(attempt, Ok(LockAttempt::Locked)) {
                    held = Some(h.taken(self));
                }
                attempt
            }
            _ => match self
                .inner
                .backend
                .get(key.as_str(), policy.max_value_bytes, policy.timeout)
                .await
            {
                Ok(Some(entry))
                    if codec::fresh_until(&entry).is_some_and(|t| unix_ms(t) > point) =>
                {
                    Ok(LockAttempt::Value(entry))
                }
                // Still due (or unreadable): go ahead, as if the lock had been taken.
                other => other.map(|_| LockAttempt::Locked),
            },
        };
        match current_state {
            Ok(LockAttempt::Locked) => {}
            // Refreshed already.
            Ok(LockAttempt::Value(entry)) => return lead.finish(Outcome::Stored(entry)),
            // Another process holds the lock: it is refreshing.
            Ok(LockAttempt::Busy) => return lead.finish(Outcome::NotStored),
            Err(error) => self.failed("refresh", key.as_str(), &error),
        }
        Counters::bump(&counters.loads);
        let mut guard = FailureGuard(Some(&counters.refresh_failures));
        let loaded = self.run_body(held.as_ref(), &policy, load).await;
        if matches!(S::store(&loaded), Store::Skip) {
            drop(guard);
            tracing::debug!(
                key = key.as_str(),
                "cache-aside: background refresh failed; backing off"
            );
            let mut policy = policy;
            let started = std::time::Instant::now();
            self.back_off(key, &current, &policy).await;
            policy.write_timeout = policy.write_timeout.saturating_sub(started.elapsed());
            // Releases the lock, if held; a failure is counted and logged inside.
            self.write(key, None, held.as_ref(), &policy).await.ok();
            return lead.finish(Outcome::NotStored);
        }
        guard.0 = None;
        let encoded = self.encode::<S, R>(key, &policy, &loaded, same);
        drop(loaded);
        let (entry, _) = self.store(key, &policy, encoded, held.as_ref()).await;
        lead.finish(entry.map_or(Outcome::NotStored, Outcome::Stored));
    }
}
