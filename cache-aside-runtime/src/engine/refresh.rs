//! Background refreshes, for `stale` (stale-while-revalidate), `refresh_ahead` and XFetch.
//!
//! The call that finds a stale (or nearly expired) entry returns it at once and hands its
//! own body to a spawned Tokio task, which loads and stores the new value. Refreshes are
//! bounded three ways: one per key in this process (the refresh leads the key's
//! single-flight), one per key across processes (it takes the key's lease, and never waits
//! for one: if another load holds it, that load is refreshing), and at most `max_refreshes`
//! per cache (beyond it the refresh is dropped and a later call retries).
//! A failed refresh backs off like fail-safe, so a failing body is not retried per call.

use std::sync::Arc;

use bytes::Bytes;

use super::lease::Acquired;
use super::{Call, Engine, ErrorMode};
use crate::envelope::{self, unix_ms};
use crate::events::Scoped;
use crate::exact::Same;
use crate::flight::{Lead, Outcome, Role, Seen};
use crate::key::Key;
use crate::policy::Policy;
use crate::shape::{Shape, Store};
use crate::spec::FnSpec;

/// Counts a refresh as failed unless disarmed: a body that panics unwinds through it.
struct FailureGuard<'a>(Option<Scoped<'a>>);

impl Drop for FailureGuard<'_> {
    fn drop(&mut self) {
        if let Some(events) = &self.0 {
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
    let Role::Leader(lead) = engine
        .flights
        .join(key.as_str(), now, Seen::Unknown, engine.epoch())
    else {
        return false; // already loading in this process
    };
    let Ok(permit) = engine.refresh_slots.clone().try_acquire_owned() else {
        engine.events.of(spec).refresh_dropped();
        return false;
    };
    engine.events.of(spec).refresh_started();
    let engine = Arc::clone(engine);
    let key = key.clone();
    runtime.spawn(async move {
        // A refresh runs on its own time, not the call's: the full timeout for each write.
        let call = Call {
            key: &key,
            spec,
            mode: ErrorMode::FailOpen,
            write_left: policy.timeout,
            body_us: None,
            saw: 0,
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
        // Between the call's read and now, another caller or process may have refreshed the
        // entry: the lease step looks again. Refreshed means fresh past the deadline the call
        // saw: true of a new value, and of a fail-safe back-off, and the one test that also
        // holds for an XFetch refresh, which may start while the entry is still fresh.
        let point = envelope::fresh_until(&current).map_or(0, unix_ms);
        let token = self.token();
        lead.starting(token);
        let held = if self.settings.fenced {
            match self.acquire(&mut call, &policy, token, point, false).await {
                Ok(Acquired::Held(held)) => Some(held),
                // Refreshed already.
                Ok(Acquired::Value(entry)) => return lead.finish(Outcome::Stored(entry)),
                // Another load holds the lease: it is refreshing.
                Ok(Acquired::Busy(_)) => return lead.finish(Outcome::NotStored),
                // No lease, so nothing could be stored: a later call retries.
                Err(error) => {
                    self.events
                        .of(call.spec)
                        .failed("refresh", call.key.as_str(), &error);
                    return lead.finish(Outcome::NotStored);
                }
            }
        } else {
            None
        };
        // A tagged entry joins its tags' sets before its body runs (see `tags`).
        if call.key.has_tags()
            && self
                .tag_entry(call.key, call.spec, &policy, call.write_left)
                .await
                .is_err()
        {
            if let Some(held) = held {
                self.release(&held, call.write_left).await.ok();
            }
            return lead.finish(Outcome::NotStored);
        }
        self.events.of(call.spec).load();
        let mut guard = FailureGuard(Some(self.events.of(call.spec)));
        let loaded = self
            .run_body(held.as_ref().as_slice(), (call.spec, None), &policy, load)
            .await;
        if matches!(S::store(&loaded), Store::Skip) {
            drop(guard);
            self.events.refresh_backing_off(call.key.as_str());
            self.fall_back(&mut call, &policy, &current, held).await;
            return lead.finish(Outcome::NotStored);
        }
        guard.0 = None;
        let encoded = self.encode::<S, R>(&call, &policy, &loaded, same, held.as_ref());
        drop(loaded);
        lead.storing();
        let (entry, written) = if call.key.has_tags() {
            // Again as it is stored: its sets keep it as long as the new entry lives.
            let store = self.store(&call, &policy, encoded, held.as_ref());
            let retag = self.tag_entry(call.key, call.spec, &policy, call.write_left);
            tokio::join!(store, retag).0
        } else {
            self.store(&call, &policy, encoded, held.as_ref()).await
        };
        lead.finish(match entry {
            Some(entry) => self.handed(entry, &written),
            None => Outcome::NotStored,
        });
    }
}
