//! A Sentinel-managed primary: redis-rs's `SentinelClient` names the primary (it asks the
//! sentinels in turn, and checks with `ROLE` that the node it names is a primary), and the
//! cache talks to it through one `ConnectionManager`, as to a single node.
//!
//! redis-rs does not follow a failover by itself: a connection manager keeps reconnecting
//! to the address it was made for. So a command that fails on the connection, or that a
//! demoted primary refuses (`READONLY`), or whose connection dropped even if its retry
//! worked, asks the sentinels again, in the background, one question at a time; if they
//! name another node, later commands go to managers for it. The failing command itself is a
//! cache failure like any other (the call runs its body). The first question is asked the
//! same way: the first calls wait for its answer within their own deadlines, and it goes on
//! if they give up (a sentinel that drops packets takes redis-rs a second to pass over).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

use tokio::sync::Notify;

use super::connection::{Link, manager_for};
use crate::error::Error;

/// Bound of one question to the sentinels, which runs in the background: redis-rs asks
/// them in turn, each within its own connection timeout (1 s by default), and checks the
/// node they name with `ROLE`.
const ASK_BOUND: Duration = Duration::from_secs(10);

/// The primary the sentinels named last: its address, and the managers for it.
struct Primary {
    addr: String,
    main: ConnectionManager,
    /// For size checks, which should not wait behind a slow reply on `main`.
    side: ConnectionManager,
}

/// The sentinels, and the primary they named last.
pub(super) struct Sentinel {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: RwLock<Option<Primary>>,
    /// A question to the sentinels is under way.
    asking: AtomicBool,
    /// Told when a question installs a primary.
    named: Notify,
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
            named: Notify::new(),
            connect_timeout,
        })
    }

    /// The current primary's manager, if the sentinels have named one.
    #[inline]
    pub(super) fn ready(&self) -> Option<Link> {
        self.with_current(|p| p.main.clone())
    }

    /// The current primary's side manager, if the sentinels have named one.
    pub(super) fn side(&self) -> Option<Link> {
        self.with_current(|p| p.side.clone())
    }

    fn with_current(&self, pick: impl Fn(&Primary) -> ConnectionManager) -> Option<Link> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().map(|p| Link::Single(pick(p)))
    }

    /// The primary's manager (`side`: its side one): the current one, else a question
    /// to the sentinels is started and its answer awaited. Unbounded here: the caller's
    /// deadline bounds it (and the question goes on without it).
    pub(super) async fn connect(self: &Arc<Self>, side: bool) -> Result<Link, Error> {
        loop {
            let named = self.named.notified();
            let mut named = std::pin::pin!(named);
            named.as_mut().enable();
            let link = if side { self.side() } else { self.ready() };
            if let Some(link) = link {
                return Ok(link);
            }
            self.start_asking();
            named.await;
        }
    }

    /// A command failed with `error`: if it may mean the primary moved, the sentinels are
    /// asked again, in the background (unless a question is under way already).
    pub(super) fn failed(self: &Arc<Self>, error: &Error) {
        let read_only = redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        let moved = error.is_connection()
            || error.is_timeout()
            || matches!(error, Error::Redis(e) if e.kind() == read_only);
        if moved {
            self.start_asking();
        }
    }

    /// Starts a question to the sentinels in the background, unless one is under way.
    fn start_asking(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.asking.swap(true, Relaxed) {
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

    /// Asks the sentinels for the primary, within [`ASK_BOUND`]; new managers if it is
    /// another node than the current one. Under the sentinels' lock throughout, so that
    /// an older answer cannot be installed over a newer one.
    async fn ask(&self) -> Result<(), Error> {
        // Boxed: redis-rs's lookup is a deep future, and every future that may connect
        // (the engine's, through `Connection::connect`) would otherwise hold it inline.
        let asked: Pin<Box<dyn Future<Output = Result<(), Error>> + Send + '_>> = Box::pin(async {
            let mut sentinels = self.sentinels.lock().await;
            let client = sentinels.async_get_client().await?;
            self.install(&client)
        });
        match tokio::time::timeout(ASK_BOUND, asked).await {
            Ok(asked) => asked,
            Err(_) => Err(Error::Timeout(ASK_BOUND)),
        }
    }

    /// Makes `client`'s node the current primary, unless it is already.
    fn install(&self, client: &redis::Client) -> Result<(), Error> {
        let addr = client.get_connection_info().addr().to_string();
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|p| p.addr == addr) {
            return Ok(());
        }
        let main = manager_for(client, self.connect_timeout)?;
        let side = manager_for(client, self.connect_timeout)?;
        if current.is_some() {
            tracing::info!(primary = %addr, "cache-aside: the sentinels name a new primary");
        }
        *current = Some(Primary { addr, main, side });
        drop(current);
        self.named.notify_waiters();
        Ok(())
    }
}
