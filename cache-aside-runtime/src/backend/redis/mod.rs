//! Redis on a single node, through one multiplexed, self-reconnecting `ConnectionManager`
//! per cache. The manager is created on first use, inside the caller's Tokio runtime, and
//! connects lazily: a Redis that is down at start-up costs a failed (fail-open) call, never
//! a failed constructor.
//!
//! Every command goes through [`RedisBackend::run`]: the circuit breaker admits it (or
//! refuses it in-process), one deadline bounds it including any wait for a reconnection,
//! and reads retry once after a dropped connection, within the same deadline.
//!
//! What this folder owns: the connection (`Connection`, one `ConnectionManager` today, the
//! place a cluster connection goes), the scripts (`scripts`), the pooled `GET` commands
//! (`pool`), the per-command deadlines (`deadline`) and the breaker (`breaker`).

pub(crate) mod breaker;
mod connection;
pub(crate) mod deadline;
mod pool;
mod scan;
mod scripts;
#[cfg(feature = "sentinel")]
mod sentinel;

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use redis::Value;

use self::breaker::Breaker;
use self::connection::{Command, Connection, Eval};
pub(crate) use self::connection::{Reach, redact};
use self::scripts::{DROP_IF_LARGER, EXTEND, FILL, HOLDS, LEASE, RELEASE, TAG, TTL};
use super::{Ask, Budget, LeaseAttempt, REPLACE, Restore};
use crate::envelope::{self, HEADER_LEN, unix_ms};
use crate::error::Error;

/// Size checks after timed-out reads that may run at once (see `drop_if_larger`).
const MAX_SIZE_CHECKS: u32 = 8;

/// Pause before the one retry of a read whose connection dropped.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

pub(crate) struct RedisBackend {
    conn: Connection,
    pub(crate) breaker: Breaker,
    /// Size checks running: a few at a time (the reads queued behind a huge reply time out
    /// too, and their checks must not crowd out the one of the huge key), never a pile.
    checking: AtomicU32,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisBackend {
    /// One node at `url`.
    pub(crate) fn new(
        url: &str,
        reach: &Reach,
        connect_timeout: Duration,
        breaker: Breaker,
    ) -> Result<Self, Error> {
        Ok(Self::on(
            Connection::single(url, reach, connect_timeout)?,
            breaker,
        ))
    }

    /// A Redis Cluster reached through `seeds`.
    pub(crate) fn cluster(
        seeds: &[String],
        reach: &Reach,
        connect_timeout: Duration,
        breaker: Breaker,
    ) -> Result<Self, Error> {
        let conn = Connection::cluster(seeds, reach, connect_timeout)?;
        Ok(Self::on(conn, breaker))
    }

    /// The primary that the sentinels at `urls` name for `service`.
    #[cfg(feature = "sentinel")]
    pub(crate) fn sentinel(
        urls: &[String],
        service: &str,
        reach: &Reach,
        connect_timeout: Duration,
        breaker: Breaker,
    ) -> Result<Self, Error> {
        let conn = Connection::sentinel(urls, service, reach, connect_timeout)?;
        Ok(Self::on(conn, breaker))
    }

    /// Is this a cluster?
    pub(crate) fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// Is this a primary that sentinels name?
    pub(crate) fn is_sentinel(&self) -> bool {
        self.conn.is_sentinel()
    }

    fn on(conn: Connection, breaker: Breaker) -> Self {
        RedisBackend {
            conn,
            breaker,
            checking: AtomicU32::new(0),
        }
    }

    /// Deletes `key` if its entry is larger than `max` bytes, on the side connection; its
    /// size if it did. `None` if another check is running. Each step is bounded by `timeout`.
    pub(crate) async fn drop_if_larger(
        &self,
        key: &str,
        max: u64,
        timeout: Duration,
    ) -> Option<Result<Option<u64>, Error>> {
        if self.checking.fetch_add(1, Relaxed) >= MAX_SIZE_CHECKS {
            self.checking.fetch_sub(1, Relaxed);
            return None;
        }
        let check = async {
            let mut conn = self.conn.side().await?;
            let mut call = Eval::new(&DROP_IF_LARGER, key, 1, 20);
            call.arg(max);
            let len: u64 = call.send(&mut conn).await?;
            if len == 0 {
                return Ok(None);
            }
            // The timeouts that led here, this key's and its neighbours', were its doing.
            self.breaker.forgive();
            Ok(Some(len))
        };
        let result = tokio::time::timeout(timeout, check)
            .await
            .unwrap_or(Err(Error::Timeout(timeout)));
        self.checking.fetch_sub(1, Relaxed);
        Some(result)
    }

    /// One operation under the breaker and a deadline. `retry_read`: run it once more if the
    /// connection dropped (only for idempotent commands).
    async fn run<T: redis::FromRedisValue + Send + 'static>(
        &self,
        budget: impl Into<Budget>,
        retry_read: bool,
        op: &impl Command,
    ) -> Result<T, Error> {
        let budget = budget.into();
        let Some(permit) = self.breaker.admit() else {
            return Err(Error::CircuitOpen);
        };
        let attempt = async {
            let mut conn = match self.conn.ready() {
                Some(link) => link,
                None => self.conn.connect().await?,
            };
            match op.send(&mut conn).await {
                Err(e) if retry_read && (e.is_connection_dropped() || e.is_io_error()) => {
                    // Told even if the retry works: a Sentinel-managed primary that was
                    // demoted drops its clients, and the retry reaches it as a replica.
                    self.conn.failed(&Error::Redis(e));
                    tokio::time::sleep(RETRY_PAUSE).await;
                    Ok(op.send(&mut conn).await?)
                }
                other => Ok(other?),
            }
        };
        // The real clock, not Tokio's (see `deadline`); what is left of the budget, which
        // the caller may have spent in part.
        let result = deadline::bound(deadline::after(budget.left()), attempt)
            .await
            .unwrap_or(Err(Error::Timeout(budget.of)));
        permit.record(!matches!(&result, Err(e) if e.is_timeout() || e.is_connection()));
        if let Err(error) = &result {
            self.conn.failed(error);
        }
        result
    }

    // The hit and store commands are sized up front: `redis::cmd(..).arg(..)` starts with
    // an 8-byte buffer and grows it by reallocation, which cost ~2% of hit throughput at 64
    // concurrent callers and, for a 4 KB entry, several copies of the value.

    /// The entry of `key`. A plain `GET`: `GETRANGE key 0 max` would bound what a huge
    /// foreign entry costs a read, but it cost the bench's 64-task hit row about 5% of
    /// Redis's time per hit; the engine deletes such an entry instead, after the first read
    /// it slows past the timeout (`drop_if_larger`), and reads one that arrives in time as
    /// a miss.
    pub(crate) async fn get(
        &self,
        key: &str,
        budget: impl Into<Budget>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let mut cmd = pool::Pooled::take(key.len());
        cmd.arg("GET").arg(key);
        self.run(budget, true, &*cmd).await
    }

    /// The hit path's read: a `GET`, or with `lease`, `SET key <placeholder> NX GET PX ms`
    /// (Redis 7.0 and later), which takes the key's lease in the same command if the key is
    /// empty; `None` then means the lease is the caller's.
    pub(crate) async fn read(
        &self,
        key: &str,
        lease: Option<&Ask<'_>>,
        budget: Budget,
    ) -> Result<Option<Vec<u8>>, Error> {
        let Some(lease) = lease else {
            return self.get(key, budget).await;
        };
        let mut cmd = pool::Pooled::take(key.len() + HEADER_LEN + 16);
        cmd.arg("SET")
            .arg(key)
            .arg(&envelope::placeholder(lease.token)[..])
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(lease.ms);
        // Retried after a dropped connection like a `GET`: if the first attempt took the
        // lease, the retry returns this very placeholder, which the engine knows by its token.
        match self.run(budget, true, &*cmd).await {
            // A full Redis with `noeviction` refuses every `SET`, even one that would write
            // nothing: read the entry anyway, as a `GET` (hits keep working).
            // An empty key then is a failed read: the lease was not taken. So does a replica
            // (`READONLY`): hits keep working there too.
            Err(error) if error.is_out_of_memory() || error.is_read_only() => {
                match self.get(key, budget).await {
                    Ok(None) => Err(error),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// The entries of `keys`, in order, in one `MGET` (on a cluster, redis-rs splits it by
    /// slot and reassembles the replies). Retried once after a dropped connection, like a
    /// `GET`.
    pub(crate) async fn get_many(
        &self,
        keys: &[&str],
        budget: Budget,
    ) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let bytes: usize = keys.iter().map(|k| k.len() + 16).sum();
        let mut cmd = redis::Cmd::with_capacity(keys.len() + 1, bytes + 8);
        cmd.arg("MGET");
        for key in keys {
            cmd.arg(*key);
        }
        self.run(budget, true, &cmd).await
    }

    /// Adds `member` to the tag set `set`, scored `until_ms` (see [`TAG`]); `true` if the
    /// set did not hold it.
    pub(crate) async fn tag(
        &self,
        set: &str,
        member: &str,
        until_ms: u64,
        now_ms: u64,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let mut call = Eval::new(&TAG, set, 3, member.len() + 40);
        call.arg(member).arg(until_ms).arg(now_ms);
        // Idempotent: retried after a dropped connection like a read.
        let added: i64 = self.run(timeout, true, &call).await?;
        Ok(added > 0)
    }

    /// Takes up to `count` members out of the tag set `set`, with their scores.
    pub(crate) async fn take_members(
        &self,
        set: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<(String, f64)>, Error> {
        let cmd = redis::cmd("ZPOPMIN").arg(set).arg(count).to_owned();
        // Not retried: a lost reply's members are gone from the set.
        self.run(timeout, false, &cmd).await
    }

    /// Puts `members` back into the tag set `set` (never lowering a score).
    pub(crate) async fn retag(
        &self,
        set: &str,
        members: &[(String, f64)],
        timeout: Duration,
    ) -> Result<(), Error> {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(set).arg("GT");
        for (member, score) in members {
            cmd.arg(*score).arg(member);
        }
        let _: i64 = self.run(timeout, true, &cmd).await?;
        Ok(())
    }

    /// Deletes `keys` (on a cluster, redis-rs splits the command by slot); how many existed.
    pub(crate) async fn unlink(&self, keys: &[String], timeout: Duration) -> Result<u64, Error> {
        let cmd = redis::cmd("UNLINK").arg(keys).to_owned();
        self.run(timeout, true, &cmd).await
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        timeout: Duration,
    ) -> Result<(), Error> {
        // SET key value PX millis: `u64::MAX` has 20 digits.
        let mut cmd = redis::Cmd::with_capacity(5, 3 + key.len() + value.len() + 2 + 20);
        cmd.arg("SET").arg(key).arg(value).arg("PX").arg(ms(ttl));
        self.run(timeout, false, &cmd).await
    }

    pub(crate) async fn delete(&self, key: &str, timeout: Duration) -> Result<bool, Error> {
        let cmd = redis::cmd("UNLINK").arg(key).to_owned();
        let removed: u64 = self.run(timeout, true, &cmd).await?;
        Ok(removed > 0)
    }

    pub(crate) async fn ttl(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<Duration>, Error> {
        let call = Eval::new(&TTL, key, 0, 0);
        let millis: i64 = self.run(timeout, true, &call).await?;
        // -2: no such key (or a placeholder); -1: no expiry, which this library never writes.
        Ok(match millis {
            -2 => None,
            -1 => Some(Duration::MAX),
            ms => Some(Duration::from_millis(ms.max(0) as u64)),
        })
    }

    /// Takes the lease of `key` unless its value is fresh at `point_ms` or another load
    /// holds it (see [`LEASE`]).
    pub(crate) async fn lease(
        &self,
        key: &str,
        lease: &Ask<'_>,
        point_ms: u64,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<LeaseAttempt, Error> {
        let mut call = Eval::new(&LEASE, key, 6, 8 + 20 + 20 + 20 + HEADER_LEN + 1);
        call.arg(&lease.token.to_be_bytes()[..])
            .arg(lease.ms)
            .arg(point_ms)
            .arg(max_bytes.min(i64::MAX as u64))
            .arg(&envelope::placeholder(lease.token)[..])
            .arg(if point_ms == REPLACE { "1" } else { "0" });
        let reply: Value = self.run(timeout, false, &call).await?;
        Ok(match reply {
            Value::BulkString(bytes) => LeaseAttempt::Value(Bytes::from(bytes)),
            Value::Int(1) => LeaseAttempt::Leased,
            Value::Array(token) => LeaseAttempt::Busy(match token.as_slice() {
                [Value::BulkString(token)] => token
                    .first_chunk()
                    .map_or(0, |token| u64::from_be_bytes(*token)),
                _ => 0,
            }),
            _ => LeaseAttempt::Busy(0),
        })
    }

    /// Stores `value` if the lease `token` still holds `key`; `true` if it did.
    pub(crate) async fn fill(
        &self,
        key: &str,
        token: u64,
        value: &[u8],
        ttl: Duration,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let mut call = Eval::new(&FILL, key, 3, 8 + value.len() + 20);
        call.arg(&token.to_be_bytes()[..]).arg(value).arg(ms(ttl));
        let stored: i64 = self.run(timeout, false, &call).await?;
        Ok(stored == 1)
    }

    /// Pushes the lease's expiry out to `lease_ttl`; `false` if `token` lost it.
    pub(crate) async fn extend(
        &self,
        key: &str,
        token: u64,
        lease_ttl: Duration,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let mut call = Eval::new(&EXTEND, key, 2, 8 + 20);
        call.arg(&token.to_be_bytes()[..]).arg(ms(lease_ttl));
        let extended: i64 = self.run(timeout, false, &call).await?;
        Ok(extended == 1)
    }

    /// Does another load's lease `token` still hold `key` (see [`HOLDS`])?
    pub(crate) async fn holds(
        &self,
        key: &str,
        token: u64,
        lease_ms: &str,
        budget: Budget,
    ) -> Result<bool, Error> {
        let mut call = Eval::new(&HOLDS, key, 2, 8 + 20);
        call.arg(&token.to_be_bytes()[..]).arg(lease_ms);
        let holds: i64 = self.run(budget, true, &call).await?;
        Ok(holds == 1)
    }

    /// Gives the lease `token` up without a new value (see [`RELEASE`]).
    pub(crate) async fn release(
        &self,
        key: &str,
        token: u64,
        restore: &Restore,
        timeout: Duration,
    ) -> Result<(), Error> {
        let mut call = Eval::new(&RELEASE, key, 4, 8 + 8 + 20 + 20);
        call.arg(&token.to_be_bytes()[..])
            .arg(
                restore
                    .fresh_ms
                    .map(u64::to_be_bytes)
                    .as_ref()
                    .map_or(&[][..], |f| &f[..]),
            )
            .arg(restore.keep_ms)
            .arg(unix_ms(SystemTime::now()));
        self.run::<i64>(timeout, false, &call).await?;
        Ok(())
    }
}
