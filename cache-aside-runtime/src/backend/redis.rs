//! Redis on a single node, through one multiplexed, self-reconnecting `ConnectionManager`
//! per cache. The manager is created on first use, inside the caller's Tokio runtime, and
//! connects lazily: a Redis that is down at start-up costs a failed (fail-open) call, never
//! a failed constructor.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::error::Error;

/// Keys asked for per `SCAN` step and deleted per `UNLINK`.
const SCAN_BATCH: usize = 500;

pub(crate) struct RedisBackend {
    client: redis::Client,
    timeout: Duration,
    manager: OnceCell<ConnectionManager>,
}

impl RedisBackend {
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, Error> {
        Ok(RedisBackend {
            client: redis::Client::open(url)?,
            timeout,
            manager: OnceCell::new(),
        })
    }

    /// One command under the cache's timeout. The bound covers the wait for a (re)connection
    /// too, which redis-rs's own response timeout does not.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        let op = async {
            let mut conn = self.conn().await?;
            Ok(cmd.query_async::<T>(&mut conn).await?)
        };
        tokio::time::timeout(self.timeout, op)
            .await
            .unwrap_or(Err(Error::Timeout(self.timeout)))
    }

    async fn conn(&self) -> Result<ConnectionManager, Error> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await?;
        Ok(manager.clone())
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        let value: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(key)).await?;
        Ok(value.map(Bytes::from))
    }

    pub(crate) async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), Error> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.query(
            redis::cmd("SET")
                .arg(key)
                .arg(&value[..])
                .arg("PX")
                .arg(millis),
        )
        .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool, Error> {
        let removed: u64 = self.query(redis::cmd("UNLINK").arg(key)).await?;
        Ok(removed > 0)
    }

    /// `SCAN MATCH` + `UNLINK` in batches: never `KEYS`, which blocks the server. Each step
    /// is bounded on its own.
    pub(crate) async fn delete_matching(&self, pattern: &str) -> Result<u64, Error> {
        let mut cursor = 0u64;
        let mut removed = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let (next, keys): (u64, Vec<Vec<u8>>) = self.query(&scan).await?;
            if !keys.is_empty() {
                removed += self.query::<u64>(redis::cmd("UNLINK").arg(&keys)).await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    pub(crate) async fn ttl(&self, key: &str) -> Result<Option<Duration>, Error> {
        let millis: i64 = self.query(redis::cmd("PTTL").arg(key)).await?;
        // -2: no such key; -1: no expiry, which this library never writes.
        Ok(match millis {
            -2 => None,
            -1 => Some(Duration::MAX),
            ms => Some(Duration::from_millis(ms.max(0) as u64)),
        })
    }
}
