//! Where bytes live, behind one façade: the engine asks this module for operations
//! (read, write, retime, delete, scan) and capabilities (does it hold locks for other
//! processes? is it remote, so that a slow read can mean a huge entry?), never for a
//! variant. The variants are matched here and nowhere else.
//!
//! One enum, so the hit path is a `match`, not a boxed future. Redis Cluster and an
//! in-process tier in front of Redis become further variants or a wrapper here; the engine
//! above does not change. Every operation takes its deadline from the caller, since
//! functions may set their own `timeout`; the embedded backend never waits, so it ignores it.

mod budget;
mod memory;
pub(crate) mod redis;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

pub(crate) use self::budget::Budget;
pub(crate) use self::memory::MemoryBackend;
use self::redis::breaker::{Breaker, BreakerState};
pub(crate) use self::redis::{Reach, RedisBackend};
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

/// What [`Backend::get_or_lock`] found.
pub(crate) enum LockAttempt {
    /// A fresh value is there: use it.
    Value(Bytes),
    /// The lock is ours: load, then release it.
    Locked,
    /// Another loader holds the lock.
    Busy,
}

/// An entry as read: Redis hands over a `Vec`, the embedded store a `Bytes`. A hit only
/// decodes it; it becomes `Bytes` (a conversion and a shared-buffer drop, measurable per hit)
/// only when the engine keeps it past the call.
pub(crate) enum Read {
    Vec(Vec<u8>),
    Bytes(Bytes),
}

impl Read {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Read::Vec(v) => v,
            Read::Bytes(b) => b,
        }
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        match self {
            Read::Vec(v) => Bytes::from(v),
            Read::Bytes(b) => b,
        }
    }
}

pin_project_lite::pin_project! {
    /// The hit path's read: the Redis command's own future, or the embedded store's answer,
    /// with no `async` layer around either (each layer costs instructions on every call).
    #[project = ReadingProj]
    pub(crate) enum Reading<F> {
        Remote { #[pin] read: F },
        Local { entry: Option<Bytes> },
    }
}

impl<F: Future<Output = Result<Option<Vec<u8>>, Error>>> Future for Reading<F> {
    type Output = Result<Option<Read>, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ReadingProj::Remote { read } => read.poll(cx).map(|r| r.map(|v| v.map(Read::Vec))),
            ReadingProj::Local { entry } => Poll::Ready(Ok(entry.take().map(Read::Bytes))),
        }
    }
}

/// The breaker's figures for `Stats`.
pub(crate) struct BreakerFigures {
    pub(crate) state: BreakerState,
    pub(crate) opened: u64,
    pub(crate) skipped: u64,
}

impl Backend {
    /// A Redis backend on `url`, behind a breaker; connects on first use.
    pub(crate) fn redis(
        url: &str,
        reach: &Reach,
        connect_timeout: Duration,
        breaker: (u32, Duration),
    ) -> Result<Backend, Error> {
        let breaker = Breaker::new(breaker.0, breaker.1);
        Ok(Backend::Redis(RedisBackend::new(
            url,
            reach,
            connect_timeout,
            breaker,
        )?))
    }

    /// A Redis Cluster reached through `seeds`, behind one breaker; connects on first use.
    pub(crate) fn redis_cluster(
        seeds: &[String],
        reach: &Reach,
        connect_timeout: Duration,
        breaker: (u32, Duration),
    ) -> Result<Backend, Error> {
        let breaker = Breaker::new(breaker.0, breaker.1);
        Ok(Backend::Redis(RedisBackend::cluster(
            seeds,
            reach,
            connect_timeout,
            breaker,
        )?))
    }

    /// The embedded store, capped at `max_bytes`.
    pub(crate) fn memory(max_bytes: u64) -> Backend {
        Backend::Memory(MemoryBackend::new(max_bytes))
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Redis(b) if b.is_cluster() => "redis-cluster",
            Backend::Redis(_) => "redis",
            Backend::Memory(_) => "memory",
        }
    }

    /// Does a lock taken here keep other processes from loading? Only a shared store's
    /// does; the embedded backend has no other processes.
    #[inline]
    pub(crate) fn holds_locks(&self) -> bool {
        matches!(self, Backend::Redis(_))
    }

    /// Can a read be slow because the entry is huge (a remote store copying it out)? Then
    /// a read that times out is worth a size check ([`drop_if_larger`](Self::drop_if_larger)).
    pub(crate) fn reads_can_stall(&self) -> bool {
        matches!(self, Backend::Redis(_))
    }

    /// The circuit breaker's state and its counters (opened, skipped); the embedded
    /// backend has none.
    pub(crate) fn breaker(&self) -> BreakerFigures {
        use std::sync::atomic::Ordering::Relaxed;
        match self {
            Backend::Redis(b) => BreakerFigures {
                state: b.breaker.state(),
                opened: b.breaker.opened.load(Relaxed),
                skipped: b.breaker.skipped.load(Relaxed),
            },
            Backend::Memory(_) => BreakerFigures {
                state: BreakerState::Closed,
                opened: 0,
                skipped: 0,
            },
        }
    }

    /// The hit path's read of `key`, within `budget`. Always inlined, so that the Redis
    /// command's future is built where the caller's future keeps it, not copied there.
    #[inline(always)]
    pub(crate) fn read<'a>(
        &'a self,
        key: &'a str,
        budget: Budget,
    ) -> Reading<impl Future<Output = Result<Option<Vec<u8>>, Error>> + 'a> {
        match self {
            Backend::Redis(redis) => Reading::Remote {
                read: redis.get(key, budget),
            },
            Backend::Memory(memory) => Reading::Local {
                entry: memory.get(key),
            },
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

    /// Reads `key` if fresh at `now_ms` and at most `max_bytes` long, else tries to take
    /// the lock (its key and token) for `lock_ttl`. A backend that [holds no
    /// locks](Self::holds_locks) has no other process to exclude: the lock is this caller's.
    pub(crate) async fn get_or_lock(
        &self,
        key: &str,
        lock: (&str, &str),
        lock_ttl: Duration,
        now_ms: u64,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<LockAttempt, Error> {
        match self {
            Backend::Redis(b) => {
                b.get_or_lock(key, lock, lock_ttl, now_ms, max_bytes, timeout)
                    .await
            }
            Backend::Memory(_) => Ok(LockAttempt::Locked),
        }
    }

    /// Pushes the lock's expiry out by `lock_ttl`; `false` if this token lost it.
    pub(crate) async fn extend_lock(
        &self,
        lock: &str,
        token: &str,
        lock_ttl: Duration,
        timeout: Duration,
    ) -> Result<bool, Error> {
        match self {
            Backend::Redis(b) => b.extend_lock(lock, token, lock_ttl, timeout).await,
            Backend::Memory(_) => Ok(true),
        }
    }

    /// Stores `value` (if any) and releases the lock if this token holds it, in one step.
    pub(crate) async fn release(
        &self,
        lock: &str,
        token: &str,
        value: Option<(&str, &Bytes, Duration)>,
        timeout: Duration,
    ) -> Result<(), Error> {
        match (self, value) {
            (Backend::Redis(b), value) => {
                let value = value.map(|(key, bytes, ttl)| (key, &bytes[..], ttl));
                b.release(lock, token, value, timeout).await
            }
            (Backend::Memory(b), Some((key, bytes, ttl))) => {
                b.set(key, bytes.clone(), ttl);
                Ok(())
            }
            (Backend::Memory(_), None) => Ok(()),
        }
    }

    /// Deletes `key` if its entry is larger than `max` bytes; its size if it did. `None`
    /// if no check ran (too many running, or a backend whose [reads cannot
    /// stall](Self::reads_can_stall)).
    pub(crate) async fn drop_if_larger(
        &self,
        key: &str,
        max: u64,
        timeout: Duration,
    ) -> Option<Result<Option<u64>, Error>> {
        match self {
            Backend::Redis(b) => b.drop_if_larger(key, max, timeout).await,
            Backend::Memory(_) => None,
        }
    }
}
