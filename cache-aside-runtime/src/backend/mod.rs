//! Stage 2 of the engine: where bytes live.
//!
//! One enum, so the hit path is a `match`, not a boxed future. Redis Cluster and an
//! in-process tier in front of Redis become further variants or a wrapper here; the engine
//! above does not change.

mod memory;
mod redis;

use std::time::Duration;

use bytes::Bytes;

pub(crate) use self::memory::MemoryBackend;
pub(crate) use self::redis::RedisBackend;
use crate::error::Error;

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

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        match self {
            Backend::Redis(b) => b.get(key).await,
            Backend::Memory(b) => Ok(b.get(key)),
        }
    }

    /// Stores `value` under `key`, expiring after `ttl`, in one command.
    pub(crate) async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), Error> {
        match self {
            Backend::Redis(b) => b.set(key, value, ttl).await,
            Backend::Memory(b) => {
                b.set(key, value, ttl);
                Ok(())
            }
        }
    }

    /// Removes one key; `true` if it existed.
    pub(crate) async fn delete(&self, key: &str) -> Result<bool, Error> {
        match self {
            Backend::Redis(b) => b.delete(key).await,
            Backend::Memory(b) => Ok(b.delete(key)),
        }
    }

    /// Removes every key starting with `{namespace}:{prefix}:`; returns how many.
    pub(crate) async fn delete_prefix(&self, namespace: &str, prefix: &str) -> Result<u64, Error> {
        match self {
            Backend::Redis(b) => {
                b.delete_matching(&crate::key::prefix_pattern(namespace, prefix))
                    .await
            }
            Backend::Memory(b) => Ok(b.delete_prefix(&format!("{namespace}:{prefix}:"))),
        }
    }

    /// Time left before `key` expires; `None` if it does not exist.
    pub(crate) async fn ttl(&self, key: &str) -> Result<Option<Duration>, Error> {
        match self {
            Backend::Redis(b) => b.ttl(key).await,
            Backend::Memory(b) => Ok(b.ttl(key)),
        }
    }
}
