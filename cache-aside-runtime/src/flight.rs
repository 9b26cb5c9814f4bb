//! In-process single-flight: concurrent misses on one key share one load.
//!
//! The first caller to miss becomes the leader and runs its own body; the others wait for
//! the leader's outcome instead of running theirs. The leader hands over the encoded entry
//! it stored, so waiters are served even when the backend write failed (Redis down).
//!
//! No task is spawned: the leader's body borrows the caller's arguments, so it runs in the
//! caller's future. If that future is dropped mid-load, its guard marks the flight
//! abandoned and one waiter takes over as the new leader with its own body: nobody hangs.
//! When the leader's result is not stored (an `Err`, or `None` without `none_ttl`), waiters
//! get a clone of it if the return type is `Clone` ([`Share`]); otherwise they run their
//! own bodies, since a result that is not `Clone` cannot be handed to many.
//!
//! A [`Lead`] owns what it needs, so a background refresh can carry it into a spawned task.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    Running,
    /// The entry the leader stored (envelope bytes).
    Stored(Bytes),
    /// The leader's body failed and fail-safe answered with this expired entry.
    Stale(Bytes),
    /// The leader's result was not stored, and is handed over as is (see [`Share`]).
    Shared(Arc<dyn Any + Send + Sync>),
    /// The leader's result was not stored and cannot be shared; each waiter loads for itself.
    NotStored,
    /// The leader was cancelled before finishing.
    Abandoned,
}

type Running = Arc<Mutex<HashMap<Box<str>, watch::Receiver<Outcome>>>>;

/// How a result that is not stored (an `Err`) reaches the waiters of its load: the leader
/// puts a clone in the flight, each waiter takes a clone out. Exists only for `Clone`
/// return types, which the macro detects (`__private::Probe`).
pub struct Share<R> {
    pub(crate) put: fn(&R) -> Arc<dyn Any + Send + Sync>,
    /// `None` if the flight holds another type: two functions given the same `prefix`.
    pub(crate) take: fn(&(dyn Any + Send + Sync)) -> Option<R>,
}

impl<R: Clone + Send + Sync + 'static> Share<R> {
    pub(crate) fn by_clone() -> Share<R> {
        Share {
            put: |r| Arc::new(r.clone()),
            take: |any| any.downcast_ref::<R>().cloned(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Flights {
    running: Running,
}

pub(crate) enum Role {
    Leader(Lead),
    Waiter(watch::Receiver<Outcome>),
}

/// Held by the leader; reports `Abandoned` if dropped before [`Lead::finish`].
pub(crate) struct Lead {
    running: Running,
    key: Box<str>,
    tx: Option<watch::Sender<Outcome>>,
}

impl Flights {
    pub(crate) fn join(&self, key: &str) -> Role {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = running.get(key) {
            return Role::Waiter(rx.clone());
        }
        let (tx, rx) = watch::channel(Outcome::Running);
        let key: Box<str> = key.into();
        running.insert(key.clone(), rx);
        Role::Leader(Lead {
            running: Arc::clone(&self.running),
            key,
            tx: Some(tx),
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.running.lock().unwrap().len()
    }
}

impl Lead {
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: Outcome) {
        if let Some(tx) = self.tx.take() {
            // Remove first: a caller arriving after this point starts a fresh lookup, which
            // finds the stored entry (or loads again if it was not stored).
            self.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.key);
            let _ = tx.send(outcome);
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.end(Outcome::Abandoned);
    }
}

/// Waits until the leader is done; a leader that vanished counts as abandoned.
pub(crate) async fn wait(mut rx: watch::Receiver<Outcome>) -> Outcome {
    match rx.wait_for(|o| !matches!(o, Outcome::Running)).await {
        Ok(outcome) => outcome.clone(),
        Err(_) => Outcome::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_then_waiters_get_its_outcome() {
        let flights = Flights::default();
        let Role::Leader(lead) = flights.join("k") else {
            panic!("first is leader")
        };
        let Role::Waiter(rx) = flights.join("k") else {
            panic!("second waits")
        };
        assert!(matches!(flights.join("other"), Role::Leader(_)));
        lead.finish(Outcome::Stored(Bytes::from_static(b"v")));
        assert!(matches!(wait(rx).await, Outcome::Stored(b) if b == "v"));
        assert_eq!(flights.len(), 0);
        assert!(
            matches!(flights.join("k"), Role::Leader(_)),
            "finished flights are gone"
        );
    }

    #[tokio::test]
    async fn a_dropped_leader_abandons_the_flight() {
        let flights = Flights::default();
        let lead = flights.join("k");
        let Role::Waiter(rx) = flights.join("k") else {
            panic!("second waits")
        };
        drop(lead);
        assert!(matches!(wait(rx).await, Outcome::Abandoned));
        assert_eq!(flights.len(), 0);
    }
}
