//! Stage 4: the get-or-load path, the cache-aside pattern step by step.
//!
//! 1. read the key from the backend (Redis calls are bounded by the cache's timeout);
//! 2. on a hit, decode the envelope and hand the value back;
//! 3. on a miss (absent, undecodable, or the backend failed), join the key's flight: the
//!    first caller in this process loads, concurrent ones wait for its entry ([`flight`]);
//! 4. store what the return type's [`Shape`] says to store, with its TTL, in one command;
//! 5. return the loaded value, whatever happened in step 4.
//!
//! [`flight`]: crate::flight
//!
//! The cache is an optimisation: no failure in steps 1, 2 or 4 reaches the caller.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::cache::Cache;
use crate::codec;
use crate::error::Error;
use crate::flight::{self, Outcome, Role};
use crate::key::Key;
use crate::shape::{Shape, Store};
use crate::stats::Counters;

/// The per-function settings the engine needs, resolved against the cache's defaults.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub(crate) ttl: Duration,
    pub(crate) none_ttl: Option<Duration>,
}

enum Lookup<R> {
    Hit(R),
    Miss,
}

impl Cache {
    pub(crate) async fn get_or_load<S, R, F>(&self, key: &Key, policy: Policy, load: F) -> R
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        if let Lookup::Hit(value) = self.lookup::<S, R>(key).await {
            return value;
        }
        let counters = &self.inner.counters;
        loop {
            match self.inner.flights.join(key.as_str()) {
                Role::Leader(lead) => {
                    Counters::bump(&counters.loads);
                    let loaded = load.await;
                    let entry = self.store::<S, R>(key, policy, &loaded).await;
                    lead.finish(entry.map_or(Outcome::NotStored, Outcome::Stored));
                    return loaded;
                }
                Role::Waiter(rx) => {
                    Counters::bump(&counters.waited);
                    match flight::wait(rx).await {
                        Outcome::Stored(bytes) => {
                            if let Ok(value) = decode_entry::<S, R>(&bytes) {
                                return value;
                            }
                        }
                        // The leader was cancelled: try to lead (or wait for whoever does).
                        Outcome::Abandoned | Outcome::Running => continue,
                        Outcome::NotStored => {}
                    }
                    // Nothing shareable: this caller loads for itself.
                    Counters::bump(&counters.loads);
                    let loaded = load.await;
                    self.store::<S, R>(key, policy, &loaded).await;
                    return loaded;
                }
            }
        }
    }

    async fn lookup<S: Shape<R>, R>(&self, key: &Key) -> Lookup<R> {
        let counters = &self.inner.counters;
        let found = match self.inner.backend.get(key.as_str()).await {
            Ok(found) => found,
            Err(error) => {
                self.failed("get", key.as_str(), &error);
                Counters::bump(&counters.misses);
                return Lookup::Miss;
            }
        };
        let Some(bytes) = found else {
            Counters::bump(&counters.misses);
            return Lookup::Miss;
        };
        let decoded = decode_entry::<S, R>(&bytes);
        match decoded {
            Ok(value) => {
                Counters::bump(&counters.hits);
                Lookup::Hit(value)
            }
            Err(error) => {
                tracing::debug!(key = key.as_str(), %error, "cache-aside: corrupt entry; reloading");
                Counters::bump(&counters.corrupt);
                Counters::bump(&counters.misses);
                Lookup::Miss
            }
        }
    }

    /// Stores what the shape says to store; returns the encoded entry, written or not, so
    /// that waiters on this load can be served even when the backend is down.
    async fn store<S: Shape<R>, R>(&self, key: &Key, policy: Policy, loaded: &R) -> Option<Bytes> {
        let (value, ttl) = match S::store(loaded) {
            Store::Value(value) => (Some(value), policy.ttl),
            Store::Absent => (None, policy.none_ttl?),
            Store::Skip => return None,
        };
        let fresh_until = SystemTime::now() + ttl;
        let entry = match codec::encode(self.inner.codec, value, Some(fresh_until)) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                self.failed("encode", key.as_str(), &error);
                return None;
            }
        };
        let written = self
            .inner
            .backend
            .set(key.as_str(), entry.clone(), ttl)
            .await;
        if let Err(error) = written {
            self.failed("set", key.as_str(), &error);
        }
        Some(entry)
    }

    pub(crate) fn failed(&self, op: &'static str, key: &str, error: &Error) {
        Counters::bump(&self.inner.counters.errors);
        self.inner.reporter.report(op, key, error);
    }
}

/// Decodes an envelope into the function's return type.
fn decode_entry<S: Shape<R>, R>(bytes: &[u8]) -> Result<R, Error> {
    let entry = codec::decode::<S::Value>(bytes)?;
    S::hit(entry.value)
        .ok_or_else(|| Error::Decode("an absence marker where a value belongs".into()))
}
