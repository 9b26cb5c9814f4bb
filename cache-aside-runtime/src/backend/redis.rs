//! Redis on a single node, through one multiplexed, self-reconnecting `ConnectionManager`
//! per cache. The manager is created on first use, inside the caller's Tokio runtime, and
//! connects lazily: a Redis that is down at start-up costs a failed (fail-open) call, never
//! a failed constructor.
//!
//! Every command goes through [`RedisBackend::run`]: the circuit breaker admits it (or
//! refuses it in-process), one deadline bounds it including any wait for a reconnection,
//! and reads retry once after a dropped connection, within the same deadline.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation, Value};
use tokio::sync::OnceCell;

use crate::breaker::Breaker;
use crate::deadline;
use crate::error::Error;

/// Size checks after timed-out reads that may run at once (see `drop_if_larger`).
const MAX_SIZE_CHECKS: u32 = 8;

/// Keys asked for per `SCAN` step and deleted per `UNLINK`.
const SCAN_BATCH: usize = 500;
/// Pause before the one retry of a read whose connection dropped.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// `GET` the value if it is still fresh, else try to take the lock. Replies with the
/// value, `1` (lock taken) or `0` (someone else holds it). An entry past its fresh-until
/// time (kept for stale serving) counts as absent. A lock key without a TTL (left by
/// anything but this library) gets `lock_ttl`, so it cannot block every miss forever.
/// An entry over `max_value_bytes` is not ours to serve: absent.
/// KEYS: value, lock. ARGV: token, lock ms, now (Unix ms), max value bytes.
static GET_OR_LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if v and #v >= 12 and #v <= tonumber(ARGV[4]) and string.byte(v, 1) == 202 then
  local fresh = 0
  for i = 5, 12 do fresh = fresh * 256 + string.byte(v, i) end
  if fresh == 0 or fresh > tonumber(ARGV[3]) then return v end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('PTTL', KEYS[2]) == -1 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 0
",
    )
});

/// Extends the lock if this token still holds it. KEYS: lock. ARGV: token, lock ms.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Optionally stores the value, then deletes the lock if this token still holds it: the
/// value lands before the lock goes, so a poller never sees neither. KEYS: lock[, value].
/// ARGV: token[, value, ttl ms].
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if KEYS[2] then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Rewrites an entry's header if it is still the one the caller saw, keeping the payload
/// and the expiry: how fail-safe backs off without clobbering a value another process
/// stored meanwhile. KEYS: value. ARGV: old header, new header.
static RETIME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 12) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2] .. string.sub(v, 13), 'KEEPTTL')
  return 1
end
return 0
",
    )
});

/// What [`RedisBackend::get_or_lock`] found.
pub(crate) enum LockAttempt {
    /// A fresh value is there: use it.
    Value(Bytes),
    /// The lock is ours: load, then release it.
    Locked,
    /// Another loader holds the lock.
    Busy,
}

/// A deadline, and the timeout it was made from (for the error that reports it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// When it was made, on Tokio's clock (which tests may pause), like every time the
    /// engine compares.
    pub(crate) started: tokio::time::Instant,
    pub(crate) until: tokio::time::Instant,
    pub(crate) of: Duration,
}

impl Budget {
    /// `timeout` from now: one clock read, which the hit path also uses for its write.
    pub(crate) fn from_now(timeout: Duration) -> Self {
        let started = tokio::time::Instant::now();
        Budget {
            started,
            until: started + deadline::capped(timeout),
            of: timeout,
        }
    }

    /// What is left of it.
    pub(crate) fn left(&self) -> Duration {
        self.until
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

impl From<Duration> for Budget {
    fn from(timeout: Duration) -> Self {
        Budget::from_now(timeout)
    }
}

/// One command or one script call. A trait, not an enum, so that each use compiles to the
/// command's own future with no dispatch layer around it (the GET of every hit goes here).
trait Command: Sync {
    fn send<'a, T: redis::FromRedisValue + Send + 'static>(
        &'a self,
        conn: &'a mut ConnectionManager,
    ) -> impl Future<Output = redis::RedisResult<T>> + Send + 'a;
}

impl Command for redis::Cmd {
    /// `ConnectionManager::send_packed_command`, not `Cmd::query_async`: the latter goes
    /// through the `ConnectionLike` trait, which boxes the command's future (an allocation
    /// and a dynamic call on every hit).
    async fn send<T: redis::FromRedisValue + Send + 'static>(
        &self,
        conn: &mut ConnectionManager,
    ) -> redis::RedisResult<T> {
        let reply = conn.send_packed_command(self).await?;
        Ok(redis::from_redis_value(reply.extract_error()?)?)
    }
}

impl Command for ScriptInvocation<'_> {
    fn send<'a, T: redis::FromRedisValue + Send + 'static>(
        &'a self,
        conn: &'a mut ConnectionManager,
    ) -> impl Future<Output = redis::RedisResult<T>> + Send + 'a {
        self.invoke_async(conn)
    }
}

/// Reused `GET` commands, per thread, like the key buffers ([`crate::reuse`]): a `redis::Cmd`
/// is two allocations (its bytes and its argument offsets), two of the six a hit makes
/// beyond decoding the value. Only `GET`s are pooled: their size is the key's, while a
/// `SET` holds a value of any size.
mod get_pool {
    use std::cell::RefCell;
    use std::ops::{Deref, DerefMut};

    use crate::reuse::{self, Free};

    /// The longest key whose command is worth keeping.
    const MAX_KEY: usize = 512;

    thread_local!(static FREE: Free<redis::Cmd> = const { RefCell::new(Vec::new()) });

    /// An empty command, returned to this thread's pool when dropped.
    pub(super) struct Pooled {
        cmd: redis::Cmd,
        keep: bool,
    }

    impl Pooled {
        pub(super) fn take(key_len: usize) -> Pooled {
            let keep = key_len <= MAX_KEY;
            let reused = if keep { reuse::take(&FREE) } else { None };
            let cmd = match reused {
                Some(cmd) => cmd,
                None => redis::Cmd::with_capacity(2, "GET".len() + key_len.max(MAX_KEY / 4)),
            };
            Pooled { cmd, keep }
        }
    }

    impl Deref for Pooled {
        type Target = redis::Cmd;
        fn deref(&self) -> &redis::Cmd {
            &self.cmd
        }
    }

    impl DerefMut for Pooled {
        fn deref_mut(&mut self) -> &mut redis::Cmd {
            &mut self.cmd
        }
    }

    impl Drop for Pooled {
        fn drop(&mut self) {
            if !self.keep {
                return;
            }
            let mut cmd = std::mem::take(&mut self.cmd);
            cmd.clear();
            reuse::give(&FREE, cmd);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A command back from the pool carries nothing of its last use: had `clear` been
        /// skipped, the second GET would be sent as `GET a GET b`.
        #[test]
        fn a_reused_command_is_empty() {
            let mut first = Pooled::take(1);
            first.arg("GET").arg("a");
            drop(first);
            let mut second = Pooled::take(1);
            second.arg("GET").arg("b");
            assert_eq!(
                second.get_packed_command(),
                b"*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"
            );
            assert_eq!(
                FREE.with(|free| free.borrow().len()),
                0,
                "it came from the pool"
            );
        }

        #[test]
        fn a_command_for_an_over_long_key_is_not_kept() {
            let mut long = Pooled::take(MAX_KEY + 1);
            long.arg("GET").arg("x".repeat(MAX_KEY + 1));
            drop(long);
            assert_eq!(FREE.with(|free| free.borrow().len()), 0);
        }
    }
}

pub(crate) struct RedisBackend {
    client: redis::Client,
    connect_timeout: Duration,
    manager: OnceCell<ConnectionManager>,
    pub(crate) breaker: Breaker,
    /// A second connection, made the first time a read times out, for the size check that
    /// follows: on the main one it would wait behind the very reply that was too slow.
    side: OnceCell<redis::aio::MultiplexedConnection>,
    /// Size checks running: a few at a time (the reads queued behind a huge reply time out
    /// too, and their checks must not crowd out the one of the huge key), never a pile.
    checking: AtomicU32,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisBackend {
    pub(crate) fn new(
        url: &str,
        connect_timeout: Duration,
        breaker: Breaker,
    ) -> Result<Self, Error> {
        Ok(RedisBackend {
            client: redis::Client::open(url)?,
            connect_timeout,
            manager: OnceCell::new(),
            breaker,
            side: OnceCell::new(),
            checking: AtomicU32::new(0),
        })
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
            let mut conn = self
                .side
                .get_or_try_init(|| self.client.get_multiplexed_async_connection())
                .await?
                .clone();
            let len: u64 = redis::cmd("STRLEN").arg(key).query_async(&mut conn).await?;
            if len <= max {
                return Ok(None);
            }
            let _: u64 = redis::cmd("UNLINK").arg(key).query_async(&mut conn).await?;
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
            let mut conn = match self.manager.get() {
                Some(manager) => manager.clone(),
                None => self.connect().await?,
            };
            match op.send(&mut conn).await {
                Err(e) if retry_read && (e.is_connection_dropped() || e.is_io_error()) => {
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
        result
    }

    /// The first command's way to the connection manager; later ones find it set.
    #[cold]
    async fn connect(&self) -> Result<ConnectionManager, Error> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                // No response timeout here: `run` bounds every command with the caller's
                // own deadline, which may differ per function.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(None)
                    .set_number_of_retries(1)
                    // redis-rs waits 100 ms before its reconnect retry by default; a refused
                    // connection should fail the call fast (the breaker takes it from there).
                    .set_min_delay(Duration::from_millis(10));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await?;
        Ok(manager.clone())
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
        let mut cmd = get_pool::Pooled::take(key.len());
        cmd.arg("GET").arg(key);
        self.run(budget, true, &*cmd).await
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

    /// Replaces the header `old` of `key` by `new` if it is still there (see [`RETIME`]).
    pub(crate) async fn retime(
        &self,
        key: &str,
        old: &[u8],
        new: &[u8],
        timeout: Duration,
    ) -> Result<(), Error> {
        let mut call = RETIME.prepare_invoke();
        call.key(key).arg(old).arg(new);
        self.run::<i64>(timeout, false, &call).await?;
        Ok(())
    }

    pub(crate) async fn delete(&self, key: &str, timeout: Duration) -> Result<bool, Error> {
        let cmd = redis::cmd("UNLINK").arg(key).to_owned();
        let removed: u64 = self.run(timeout, true, &cmd).await?;
        Ok(removed > 0)
    }

    /// `SCAN MATCH` + `UNLINK` in batches of the keys `keep` accepts: never `KEYS`, which
    /// blocks the server. Each step is bounded on its own.
    pub(crate) async fn delete_matching(
        &self,
        pattern: &str,
        keep: &(dyn Fn(&[u8]) -> bool + Sync),
        timeout: Duration,
    ) -> Result<u64, Error> {
        let mut cursor = 0u64;
        let mut removed = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let (next, mut keys): (u64, Vec<Vec<u8>>) = self.run(timeout, true, &scan).await?;
            keys.retain(|key| keep(key));
            if !keys.is_empty() {
                let unlink = redis::cmd("UNLINK").arg(&keys).to_owned();
                removed += self.run::<u64>(timeout, true, &unlink).await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    pub(crate) async fn ttl(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<Duration>, Error> {
        let cmd = redis::cmd("PTTL").arg(key).to_owned();
        let millis: i64 = self.run(timeout, true, &cmd).await?;
        // -2: no such key; -1: no expiry, which this library never writes.
        Ok(match millis {
            -2 => None,
            -1 => Some(Duration::MAX),
            ms => Some(Duration::from_millis(ms.max(0) as u64)),
        })
    }

    /// Reads `key` if fresh at `now_ms` and at most `max_bytes` long, else tries to take
    /// the lock (its key and token) for `lock_ttl`.
    pub(crate) async fn get_or_lock(
        &self,
        key: &str,
        (lock, token): (&str, &str),
        lock_ttl: Duration,
        now_ms: u64,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<LockAttempt, Error> {
        let mut call = GET_OR_LOCK.prepare_invoke();
        call.key(key)
            .key(lock)
            .arg(token)
            .arg(ms(lock_ttl))
            .arg(now_ms)
            .arg(max_bytes.min(i64::MAX as u64));
        let reply: Value = self.run(timeout, false, &call).await?;
        Ok(match reply {
            Value::BulkString(bytes) => LockAttempt::Value(Bytes::from(bytes)),
            Value::Int(1) => LockAttempt::Locked,
            _ => LockAttempt::Busy,
        })
    }

    /// Pushes the lock's expiry out by `lock_ttl`; `false` if this token lost it.
    pub(crate) async fn extend_lock(
        &self,
        lock: &str,
        token: &str,
        lock_ttl: Duration,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let mut call = EXTEND.prepare_invoke();
        call.key(lock).arg(token).arg(ms(lock_ttl));
        let extended: i64 = self.run(timeout, false, &call).await?;
        Ok(extended == 1)
    }

    /// Stores `value` (if any) and releases the lock if this token holds it, in one step.
    pub(crate) async fn release(
        &self,
        lock: &str,
        token: &str,
        value: Option<(&str, &[u8], Duration)>,
        timeout: Duration,
    ) -> Result<(), Error> {
        let mut call = RELEASE.prepare_invoke();
        call.key(lock).arg(token);
        if let Some((key, bytes, ttl)) = value {
            call.key(key).arg(bytes).arg(ms(ttl));
        }
        self.run::<i64>(timeout, false, &call).await?;
        Ok(())
    }
}
