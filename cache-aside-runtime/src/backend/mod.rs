//! Stage 2 of the engine: where bytes live.
//!
//! One enum, so the hit path is a `match`, not a boxed future. Redis Cluster and an
//! in-process tier in front of Redis become further variants or a wrapper here; the engine
//! above does not change. Every operation takes its deadline from the caller, since
//! functions may set their own `timeout`; the embedded backend never waits, so it ignores it.

mod memory;
mod redis;

use std::time::Duration;

use bytes::Bytes;

pub(crate) use self::memory::MemoryBackend;
pub(crate) use self::redis::{Budget, LockAttempt, RedisBackend};
use crate::breaker::BreakerState;
use crate::error::Error;
use crate::key::Layout;

#[allow(
    clippy::large_enum_variant,
    reason = "one per cache, inside its Arc: boxing would add a pointer chase to every hit"
)]
pub(crate) enum Backend {
    Redis(RedisBackend),
    Memory(MemoryBackend),
}

impl Backend {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Redis(_) => "redis",
            Backend::Memory(_) => "memory",
        }
    }

    /// The Redis backend, for the stages that only make sense across processes (locks).
    pub(crate) fn redis(&self) -> Option<&RedisBackend> {
        match self {
            Backend::Redis(b) => Some(b),
            Backend::Memory(_) => None,
        }
    }

    /// The circuit breaker's state and its counters (opened, skipped); the embedded
    /// backend has none.
    pub(crate) fn breaker(&self) -> (BreakerState, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        match self {
            Backend::Redis(b) => (
                b.breaker.state(),
                b.breaker.opened.load(Relaxed),
                b.breaker.skipped.load(Relaxed),
            ),
            Backend::Memory(_) => (BreakerState::Closed, 0, 0),
        }
    }

    /// The entry of `key`; one longer than `limit` (never stored by this library with that
    /// limit) reads as absent.
    pub(crate) async fn get(
        &self,
        key: &str,
        limit: u64,
        timeout: Duration,
    ) -> Result<Option<Bytes>, Error> {
        let entry = match self {
            Backend::Redis(b) => b.get(key, timeout).await?.map(Bytes::from),
            Backend::Memory(b) => b.get(key),
        };
        Ok(entry.filter(|e| e.len() as u64 <= limit))
    }

    /// Stores `value` under `key`, expiring after `ttl`, in one command.
    pub(crate) async fn set(
        &self,
        key: &str,
        value: &Bytes,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<(), Error> {
        match self {
            Backend::Redis(b) => b.set(key, value, ttl, timeout).await,
            Backend::Memory(b) => {
                b.set(key, value.clone(), ttl);
                Ok(())
            }
        }
    }

    /// Swaps the envelope header `old` of `key` for `new`, if `key` still starts with
    /// `old`; payload and expiry stay.
    pub(crate) async fn retime(
        &self,
        key: &str,
        old: &[u8],
        new: &[u8],
        timeout: Duration,
    ) -> Result<(), Error> {
        match self {
            Backend::Redis(b) => b.retime(key, old, new, timeout).await,
            Backend::Memory(b) => {
                b.retime(key, old, new);
                Ok(())
            }
        }
    }

    /// Removes one key; `true` if it existed.
    pub(crate) async fn delete(&self, key: &str, timeout: Duration) -> Result<bool, Error> {
        match self {
            Backend::Redis(b) => b.delete(key, timeout).await,
            Backend::Memory(b) => Ok(b.delete(key)),
        }
    }

    /// Removes every key starting with `{namespace}:{prefix}:` whose rest fits `layout`
    /// (every such key without one); returns how many.
    pub(crate) async fn delete_prefix(
        &self,
        namespace: &str,
        prefix: &str,
        layout: Option<&Layout>,
        timeout: Duration,
    ) -> Result<u64, Error> {
        let start = namespace.len() + prefix.len() + 2;
        let fits = |key: &[u8]| match (layout, key.get(start..)) {
            (None, _) => true,
            (Some(layout), Some(args)) => std::str::from_utf8(args).is_ok_and(|a| layout.fits(a)),
            (Some(_), None) => false,
        };
        match self {
            Backend::Redis(b) => {
                let pattern = crate::key::prefix_pattern(namespace, prefix);
                b.delete_matching(&pattern, &fits, timeout).await
            }
            Backend::Memory(b) => {
                let head = format!("{namespace}:{prefix}:");
                Ok(b.delete_prefix(&head, &|key: &str| fits(key.as_bytes())))
            }
        }
    }

    /// Time left before `key` expires; `None` if it does not exist.
    pub(crate) async fn ttl(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<Duration>, Error> {
        match self {
            Backend::Redis(b) => b.ttl(key, timeout).await,
            Backend::Memory(b) => Ok(b.ttl(key)),
        }
    }
}
