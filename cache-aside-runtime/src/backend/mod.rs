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
pub(crate) use self::redis::breaker::{apart, as_one_call};
pub(crate) use self::redis::{Reach, RedisBackend, redact};
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

/// What [`Backend::lease`] found.
pub(crate) enum LeaseAttempt {
    /// A fresh value is there: use it.
    Value(Bytes),
    /// The lease is ours: load, then fill or release.
    Leased,
    /// Another load holds the key's lease: its token.
    Busy(u64),
}

/// A lease to take: its token, how long it lasts unless extended, and that duration as
/// the `PX` argument, formatted once per cache.
pub(crate) struct Ask<'a> {
    pub(crate) token: u64,
    pub(crate) ttl: Duration,
    pub(crate) ms: &'a str,
}

/// Most keys in one `MGET` of a batch read.
const MGET_KEYS: usize = 500;

/// The lease point that leases any value not held by another load: the caller found it
/// unreadable.
pub(crate) const REPLACE: u64 = u64::MAX;

/// How a leased value is given back when its lease is given up without a new value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Restore {
    /// A new fresh-until time (Unix ms): fail-safe's back-off.
    pub(crate) fresh_ms: Option<u64>,
    /// The function's `keep`: the value expires at its fresh-until time plus this.
    pub(crate) keep_ms: u64,
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
#[derive(Clone, Copy)]
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

    /// The primary that the sentinels at `urls` name for `service`.
    #[cfg(feature = "sentinel")]
    pub(crate) fn redis_sentinel(
        urls: &[String],
        service: &str,
        reach: &Reach,
        connect_timeout: Duration,
        breaker: (u32, Duration),
    ) -> Result<Backend, Error> {
        let breaker = Breaker::new(breaker.0, breaker.1);
        let backend = RedisBackend::sentinel(urls, service, reach, connect_timeout, breaker)?;
        Ok(Backend::Redis(backend))
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
            Backend::Redis(b) if b.is_sentinel() => "redis-sentinel",
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

    /// Do operations go over the network, so that they can hang and `timeout` bounds them?
    /// The embedded store's are memory writes: a call whose budget ran out (on its own CPU
    /// time, a batch of many thousand keys) still makes them.
    pub(crate) fn remote(&self) -> bool {
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

    /// The hit path's read of `key`, within `budget`, taking the key's lease in the same
    /// step if it is empty and `lease` is given (then `None` means the lease is the
    /// caller's). Always inlined, so that the Redis command's future is built where the
    /// caller's future keeps it, not copied there.
    #[inline(always)]
    pub(crate) fn read<'a>(
        &'a self,
        key: &'a str,
        lease: Option<&'a Ask<'a>>,
        budget: Budget,
    ) -> Reading<impl Future<Output = Result<Option<Vec<u8>>, Error>> + 'a> {
        match self {
            Backend::Redis(redis) => Reading::Remote {
                read: redis.read(key, lease, budget),
            },
            Backend::Memory(memory) => Reading::Local {
                entry: match lease {
                    Some(lease) => memory.get_or_lease(key, lease),
                    None => memory.get(key),
                },
            },
        }
    }

    /// The entries of `keys`, in order, in one round trip within `budget`: a batch read.
    pub(crate) async fn read_many(
        &self,
        keys: &[&str],
        budget: Budget,
    ) -> Result<Vec<Option<Read>>, Error> {
        match self {
            Backend::Redis(redis) if keys.len() <= MGET_KEYS => Ok(redis
                .get_many(keys, budget)
                .await?
                .into_iter()
                .map(|entry| entry.map(Read::Vec))
                .collect()),
            // A long batch in several `MGET`s, sent at once: no reply grows without bound,
            // and Redis serves other clients between them.
            Backend::Redis(redis) => {
                let parts = keys
                    .chunks(MGET_KEYS)
                    .map(|part| redis.get_many(part, budget));
                let mut entries = Vec::with_capacity(keys.len());
                for part in futures_util::future::join_all(parts).await {
                    entries.extend(part?.into_iter().map(|entry| entry.map(Read::Vec)));
                }
                Ok(entries)
            }
            Backend::Memory(memory) => Ok(keys
                .iter()
                .map(|key| memory.get(key).map(Read::Bytes))
                .collect()),
        }
    }

    /// Does taking a lease in the read cost the hit path? On Redis, `SET .. NX GET` costs
    /// Redis more than a `GET`; in process, a hit never takes it.
    #[inline]
    pub(crate) fn leases_on_read_cost(&self) -> bool {
        matches!(self, Backend::Redis(_))
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

    /// Adds `member` to each tag set of `sets`, expiring at `until_ms` (see
    /// [`crate::tag`]), all at once; `true` if some set did not hold it.
    pub(crate) async fn tag(
        &self,
        sets: &[&str],
        member: &str,
        until_ms: u64,
        now_ms: u64,
        timeout: Duration,
    ) -> Result<bool, Error> {
        match self {
            Backend::Redis(b) => {
                let each = sets
                    .iter()
                    .map(|set| b.tag(set, member, until_ms, now_ms, timeout));
                let mut added = false;
                for tagged in futures_util::future::join_all(each).await {
                    added |= tagged?;
                }
                Ok(added)
            }
            Backend::Memory(b) => {
                let mut added = false;
                for set in sets {
                    added |= b.tag(set, member, until_ms, now_ms);
                }
                Ok(added)
            }
        }
    }

    /// Deletes every key in the tag set `set`, and the set; how many keys it deleted
    /// (entries, and placeholders of loads under way). On Redis, a thousand members at a
    /// time: taken out of the set atomically (`ZPOPMIN`), then deleted; a member added
    /// meanwhile stays, and if the deletion fails the members taken go back. Each step is
    /// bounded by `timeout`; the steps by how many members the set can have had.
    pub(crate) async fn invalidate_tag(&self, set: &str, timeout: Duration) -> Result<u64, Error> {
        const STEP: usize = 1000;
        const MAX_STEPS: usize = 100_000;
        match self {
            Backend::Redis(b) => {
                let mut removed = 0;
                for _ in 0..MAX_STEPS {
                    let members = b.take_members(set, STEP, timeout).await?;
                    if members.is_empty() {
                        break;
                    }
                    let keys: Vec<String> = members.iter().map(|(k, _)| k.clone()).collect();
                    let unlinked = futures_util::future::join_all(
                        keys.chunks(MGET_KEYS).map(|part| b.unlink(part, timeout)),
                    )
                    .await;
                    let mut failed = None;
                    for part in unlinked {
                        match part {
                            Ok(n) => removed += n,
                            Err(error) => failed = Some(error),
                        }
                    }
                    if let Some(error) = failed {
                        // Best effort: a later invalidation then finds them again.
                        b.retag(set, &members, timeout).await.ok();
                        return Err(error);
                    }
                    if members.len() < STEP {
                        break;
                    }
                }
                Ok(removed)
            }
            Backend::Memory(b) => Ok(b.invalidate_tag(set)),
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

    /// Takes the lease of `key` unless its entry is fresh at `point_ms` (and at most
    /// `max_bytes` long: then it is returned) or another load holds the lease. With
    /// `point_ms` [`REPLACE`], any value not held by another load is leased.
    pub(crate) async fn lease(
        &self,
        key: &str,
        lease: &Ask<'_>,
        point_ms: u64,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<LeaseAttempt, Error> {
        match self {
            Backend::Redis(b) => b.lease(key, lease, point_ms, max_bytes, timeout).await,
            Backend::Memory(b) => Ok(b.lease(key, lease, point_ms, max_bytes)),
        }
    }

    /// Stores `value` under `key` for `ttl` if the lease `token` still holds the key;
    /// `true` if it did.
    pub(crate) async fn fill(
        &self,
        key: &str,
        token: u64,
        value: &Bytes,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<bool, Error> {
        match self {
            Backend::Redis(b) => b.fill(key, token, value, ttl, timeout).await,
            Backend::Memory(b) => Ok(b.fill(key, token, value, ttl)),
        }
    }

    /// Does another load's lease `token` still hold `key`? `lease_ms`: the lease time a
    /// lease without an expiry (not this library's) is given.
    pub(crate) async fn holds(
        &self,
        key: &str,
        token: u64,
        lease_ms: &str,
        budget: Budget,
    ) -> Result<bool, Error> {
        match self {
            Backend::Redis(b) => b.holds(key, token, lease_ms, budget).await,
            Backend::Memory(b) => Ok(b.lease_holds(key, token)),
        }
    }

    /// Pushes the lease's expiry out to `lease_ttl`; `false` if `token` lost it.
    pub(crate) async fn extend(
        &self,
        key: &str,
        token: u64,
        lease_ttl: Duration,
        timeout: Duration,
    ) -> Result<bool, Error> {
        match self {
            Backend::Redis(b) => b.extend(key, token, lease_ttl, timeout).await,
            Backend::Memory(b) => Ok(b.extend(key, token, lease_ttl)),
        }
    }

    /// Gives the lease `token` up without a new value: a placeholder goes, a leased
    /// value becomes `restore`'s.
    pub(crate) async fn release(
        &self,
        key: &str,
        token: u64,
        restore: &Restore,
        timeout: Duration,
    ) -> Result<(), Error> {
        match self {
            Backend::Redis(b) => b.release(key, token, restore, timeout).await,
            Backend::Memory(b) => {
                b.release(key, token, restore);
                Ok(())
            }
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
