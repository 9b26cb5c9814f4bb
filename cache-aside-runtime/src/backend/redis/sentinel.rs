//! A Sentinel-managed primary: redis-rs's `SentinelClient` names the primary (it asks the
//! sentinels in turn, and checks with `ROLE` that the node it names is a primary), and the
//! cache talks to it through one `ConnectionManager`, as to a single node.
//!
//! redis-rs does not follow a failover by itself: a connection manager keeps reconnecting
//! to the address it was made for. So a command that fails on the connection, or that a
//! demoted primary refuses (`READONLY`), asks the sentinels again, in the background, one
//! question at a time; if they name another node, later commands go to a manager for it.
//! The failing command itself is a cache failure like any other (the call runs its body).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

use super::connection::{Link, manager_for};
use crate::error::Error;

/// The sentinels, and the manager of the primary they named last.
pub(super) struct Sentinel {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The primary's address as the sentinels gave it, and its manager.
    current: RwLock<Option<(String, ConnectionManager)>>,
    /// A question to the sentinels is under way.
    asking: AtomicBool,
    connect_timeout: Duration,
}

/// A question to the sentinels under way; over when dropped.
struct Asking(Arc<Sentinel>);

impl Drop for Asking {
    fn drop(&mut self) {
        self.0.asking.store(false, Relaxed);
    }
}

impl Sentinel {
    /// The primary of `service`, as the sentinels at `urls` name it; asks nothing yet. The
    /// primary and its replicas are reached with `node` (credentials).
    pub(super) fn new(
        urls: &[String],
        service: &str,
        node: redis::RedisConnectionInfo,
        connect_timeout: Duration,
    ) -> Result<Self, Error> {
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
        // redis-rs takes a `String` without TLS support, an `impl AsRef<str>` with it.
        #[allow(clippy::unnecessary_to_owned)]
        let client = SentinelClient::build(
            urls.to_vec(),
            service.to_owned(),
            Some(node),
            SentinelServerType::Master,
        )?;
        Ok(Sentinel {
            sentinels: tokio::sync::Mutex::new(client),
            current: RwLock::new(None),
            asking: AtomicBool::new(false),
            connect_timeout,
        })
    }

    /// The current primary's manager, if the sentinels have named one.
    #[inline]
    pub(super) fn ready(&self) -> Option<Link> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .map(|(_, manager)| Link::Single(manager.clone()))
    }

    /// The primary's manager: the current one, else the sentinels are asked now.
    pub(super) async fn connect(&self) -> Result<Link, Error> {
        if let Some(link) = self.ready() {
            return Ok(link);
        }
        self.ask().await
    }

    /// A new manager of its own to the current primary (the side connection).
    pub(super) async fn open(&self) -> Result<Link, Error> {
        let client = self.primary().await?;
        Ok(Link::Single(manager_for(&client, self.connect_timeout)?))
    }

    /// A command failed with `error`: if it may mean the primary moved, the sentinels are
    /// asked again, in the background (unless a question is under way already).
    pub(super) fn failed(self: &Arc<Self>, error: &Error) {
        let moved = error.is_connection()
            || error.is_timeout()
            || matches!(error, Error::Redis(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !moved || self.asking.swap(true, Relaxed) {
            return;
        }
        // Owned by the task: however it ends (done, or dropped with its runtime before it
        // ran), the next failure may ask again.
        let asking = Asking(Arc::clone(self));
        runtime.spawn(async move {
            if let Err(error) = asking.0.ask().await {
                tracing::debug!(error = %crate::error::Chain(&error), "cache-aside: the sentinels did not name a primary");
            }
            drop(asking);
        });
    }

    /// Asks the sentinels for the primary; a new manager if it is another node than the
    /// current one's.
    async fn ask(&self) -> Result<Link, Error> {
        let client = self.primary().await?;
        let addr = client.get_connection_info().addr().to_string();
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if let Some((known, manager)) = current.as_ref()
            && *known == addr
        {
            return Ok(Link::Single(manager.clone()));
        }
        let manager = manager_for(&client, self.connect_timeout)?;
        if current.is_some() {
            tracing::info!(primary = %addr, "cache-aside: the sentinels name a new primary");
        }
        *current = Some((addr, manager.clone()));
        Ok(Link::Single(manager))
    }

    /// The primary's client, as the sentinels name it, within the connect timeout (per
    /// sentinel asked, and for the check of the node it names).
    async fn primary(&self) -> Result<redis::Client, Error> {
        let bound = self.connect_timeout * 3;
        // Boxed: redis-rs's lookup is a deep future, and every future that may connect
        // (the engine's, through `Connection::connect`) would otherwise hold it inline.
        let ask: std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>> =
            Box::pin(async { self.sentinels.lock().await.async_get_client().await });
        match tokio::time::timeout(bound, ask).await {
            Ok(client) => Ok(client?),
            Err(_) => Err(Error::Timeout(bound)),
        }
    }
}
