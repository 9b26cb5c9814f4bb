//! The connection commands are sent on, and how a command is sent. One multiplexed,
//! self-reconnecting `ConnectionManager` per cache today; a Redis Cluster connection becomes
//! a second kind of [`Link`] here, and nothing above this file changes.

use std::time::Duration;

use redis::ScriptInvocation;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use tokio::sync::OnceCell;

use crate::error::Error;

/// What a command is sent on.
pub(super) type Link = ConnectionManager;

/// The cache's connections to one Redis: the main one, made on first use, and a side one
/// for size checks.
pub(super) struct Connection {
    client: redis::Client,
    connect_timeout: Duration,
    manager: OnceCell<ConnectionManager>,
    /// A second connection, made the first time a read times out, for the size check that
    /// follows: on the main one it would wait behind the very reply that was too slow.
    side: OnceCell<MultiplexedConnection>,
}

impl Connection {
    /// Parses `url`; connects nothing yet.
    pub(super) fn new(url: &str, connect_timeout: Duration) -> Result<Self, Error> {
        Ok(Connection {
            client: redis::Client::open(url)?,
            connect_timeout,
            manager: OnceCell::new(),
            side: OnceCell::new(),
        })
    }

    /// The main connection once made (a cheap clone of the shared manager); before the
    /// first command, [`connect`](Self::connect). Not an `async fn`: the hit path awaits
    /// nothing here.
    #[inline]
    pub(super) fn ready(&self) -> Option<Link> {
        self.manager.get().cloned()
    }

    /// The side connection, made on first use.
    pub(super) async fn side(&self) -> Result<MultiplexedConnection, Error> {
        let side = self
            .side
            .get_or_try_init(|| self.client.get_multiplexed_async_connection())
            .await?;
        Ok(side.clone())
    }

    /// The first command's way to the connection manager; later ones find it set.
    #[cold]
    pub(super) async fn connect(&self) -> Result<ConnectionManager, Error> {
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
}

/// One command or one script call. A trait, not an enum, so that each use compiles to the
/// command's own future with no dispatch layer around it (the GET of every hit goes here).
pub(super) trait Command: Sync {
    fn send<'a, T: redis::FromRedisValue + Send + 'static>(
        &'a self,
        conn: &'a mut Link,
    ) -> impl Future<Output = redis::RedisResult<T>> + Send + 'a;
}

impl Command for redis::Cmd {
    /// `ConnectionManager::send_packed_command`, not `Cmd::query_async`: the latter goes
    /// through the `ConnectionLike` trait, which boxes the command's future (an allocation
    /// and a dynamic call on every hit).
    async fn send<T: redis::FromRedisValue + Send + 'static>(
        &self,
        conn: &mut Link,
    ) -> redis::RedisResult<T> {
        let reply = conn.send_packed_command(self).await?;
        Ok(redis::from_redis_value(reply.extract_error()?)?)
    }
}

impl Command for ScriptInvocation<'_> {
    fn send<'a, T: redis::FromRedisValue + Send + 'static>(
        &'a self,
        conn: &'a mut Link,
    ) -> impl Future<Output = redis::RedisResult<T>> + Send + 'a {
        self.invoke_async(conn)
    }
}
