//! Stage 4: the get-or-load path, the cache-aside pattern step by step.
//!
//! 1. read the key from the backend (bounded by the cache's timeout);
//! 2. on a hit, decode the envelope and hand the value back;
//! 3. on a miss (absent, undecodable, or the backend failed), run the loader;
//! 4. store what the return type's [`Shape`] says to store, with its TTL, in one command;
//! 5. return the loaded value, whatever happened in step 4.
//!
//! The cache is an optimisation: no failure in steps 1, 2 or 4 reaches the caller.

use std::time::{Duration, SystemTime};

use crate::cache::Cache;
use crate::codec;
use crate::error::Error;
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
        Counters::bump(&self.inner.counters.loads);
        let loaded = load.await;
        self.store::<S, R>(key, policy, &loaded).await;
        loaded
    }

    async fn lookup<S: Shape<R>, R>(&self, key: &Key) -> Lookup<R> {
        let counters = &self.inner.counters;
        let found = match self.bounded(self.inner.backend.get(key.as_str())).await {
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
        let decoded = codec::decode::<S::Value>(&bytes).and_then(|entry| {
            S::hit(entry.value)
                .ok_or_else(|| Error::Decode("an absence marker where a value belongs".into()))
        });
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

    async fn store<S: Shape<R>, R>(&self, key: &Key, policy: Policy, loaded: &R) {
        let (value, ttl) = match S::store(loaded) {
            Store::Value(value) => (Some(value), policy.ttl),
            Store::Absent => match policy.none_ttl {
                Some(ttl) => (None, ttl),
                None => return,
            },
            Store::Skip => return,
        };
        let fresh_until = SystemTime::now() + ttl;
        let written = match codec::encode(self.inner.codec, value, Some(fresh_until)) {
            Ok(bytes) => {
                self.bounded(self.inner.backend.set(key.as_str(), bytes, ttl))
                    .await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            self.failed("set", key.as_str(), &error);
        }
    }

    pub(crate) fn failed(&self, op: &'static str, key: &str, error: &Error) {
        Counters::bump(&self.inner.counters.errors);
        self.inner.reporter.report(op, key, error);
    }
}
