//! The connection commands are sent on, and how a command is sent: one multiplexed,
//! self-reconnecting `ConnectionManager` per cache on a single node, or one redis-rs
//! cluster connection (a multiplexed connection per node, slots tracked, redirections
//! followed) on a Redis Cluster, or the manager of the primary the sentinels name (see
//! `sentinel`). Nothing above this file knows which.

#[cfg(feature = "sentinel")]
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{RedisFuture, Value};
use tokio::sync::OnceCell;

#[cfg(feature = "sentinel")]
use super::sentinel::Sentinel;
use crate::error::Error;

/// What a command is sent on: one node's connection manager, or a cluster connection that
/// routes each command to the node serving its key's slot (following `MOVED` and `ASK`).
/// Both are cheap handles to a shared multiplexed connection.
#[derive(Clone)]
pub(super) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// How to reach the server beyond its URL: credentials and TLS material given on the
/// builder. Its `Debug` shows which are set, never their values.
#[derive(Clone, Default)]
pub(crate) struct Reach {
    /// An ACL user, over the URL's.
    pub(crate) username: Option<String>,
    /// A password, over the URL's.
    pub(crate) password: Option<String>,
    /// PEM: the CA to trust instead of the platform's roots (`rediss://` only).
    pub(crate) root_ca: Option<Vec<u8>>,
    /// PEM: a client certificate and its key, for servers that require them (mutual TLS).
    pub(crate) client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |on: bool| if on { "set" } else { "none" };
        f.debug_struct("Reach")
            .field("username", &self.username)
            .field("password", &set(self.password.is_some()))
            .field("root_ca", &set(self.root_ca.is_some()))
            .field("client_cert", &set(self.client_cert.is_some()))
            .finish()
    }
}

impl Reach {
    fn uses_tls_files(&self) -> bool {
        self.root_ca.is_some() || self.client_cert.is_some()
    }

    /// `url` with the builder's credentials.
    fn info(&self, url: &str) -> Result<redis::ConnectionInfo, Error> {
        let info = parse(url)?;
        let mut redis = info.redis_settings().clone();
        if let Some(user) = &self.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        Ok(info.set_redis_settings(redis))
    }

    #[cfg(feature = "tls")]
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client_cert
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.root_ca.clone(),
        }
    }
}

/// `url` parsed, or an [`Error::Config`] naming it.
fn parse(url: &str) -> Result<redis::ConnectionInfo, Error> {
    use redis::IntoConnectionInfo;
    url.into_connection_info().map_err(|e| bad_url(url, e))
}

/// A URL redis-rs cannot parse is a setting of ours: an [`Error::Config`] naming it, its
/// password hidden (redis-rs's own messages do not repeat the URL).
fn bad_url(url: &str, e: redis::RedisError) -> Error {
    match e.kind() {
        redis::ErrorKind::InvalidClientConfig => {
            Error::Config(format!("redis url {:?}: {e}", redact(url)))
        }
        _ => Error::Redis(e),
    }
}

/// `redis://user:secret@127.0.0.1` → `redis://user:***@127.0.0.1`, for logs and errors:
/// the password of the userinfo (with or without a `scheme://`, which a mistyped URL may
/// lack) and of a `pass=` or `password=` query parameter (a `unix://` socket's).
pub(crate) fn redact(url: &str) -> String {
    let mut shown = match url.rfind('@') {
        Some(at) => {
            let start = url[..at].find("://").map_or(0, |scheme| scheme + 3);
            match url[start..at].find(':') {
                Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    if let Some(query) = shown.find('?') {
        let (head, params) = shown.split_at(query + 1);
        let params: Vec<String> = params
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _))
                    if name.eq_ignore_ascii_case("pass")
                        || name.eq_ignore_ascii_case("password") =>
                {
                    format!("{name}=***")
                }
                _ => param.to_owned(),
            })
            .collect();
        shown = format!("{head}{}", params.join("&"));
    }
    shown
}

/// Does `url` ask for TLS? Its scheme is `rediss` or `valkeys`, in any case, as redis-rs
/// reads it.
fn is_tls(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys")
}

/// Refuses what this build cannot do, naming the feature that would: a `rediss://` URL, or
/// TLS files, without `tls`.
fn check_tls(url: &str, reach: &Reach) -> Result<(), Error> {
    let tls = is_tls(url);
    if tls && !cfg!(feature = "tls") {
        return Err(Error::Config(
            "a rediss:// URL needs the `tls` feature of cache-aside-runtime".to_owned(),
        ));
    }
    if reach.uses_tls_files() && !tls {
        return Err(Error::Config(
            "tls_root_ca and tls_client_cert need rediss:// URLs".to_owned(),
        ));
    }
    Ok(())
}

/// Where the connections go.
#[allow(
    clippy::large_enum_variant,
    reason = "one per cache, read only when a connection is made"
)]
enum Target {
    Single(redis::Client),
    Cluster(ClusterClient),
    #[cfg(feature = "sentinel")]
    Sentinel(Arc<Sentinel>),
}

/// The cache's connections to its Redis: the main one, made on first use, and a side one
/// for size checks.
pub(super) struct Connection {
    target: Target,
    connect_timeout: Duration,
    main: OnceCell<Link>,
    /// A second connection, made the first time a read times out, for the size check that
    /// follows: on the main one it would wait behind the very reply that was too slow.
    side: OnceCell<Link>,
}

impl Connection {
    /// One node at `url`; connects nothing yet.
    pub(super) fn single(
        url: &str,
        reach: &Reach,
        connect_timeout: Duration,
    ) -> Result<Self, Error> {
        check_tls(url, reach)?;
        let info = reach.info(url)?;
        #[cfg(feature = "tls")]
        let client = match reach.uses_tls_files() {
            true => redis::Client::build_with_tls(info, reach.certificates())?,
            false => redis::Client::open(info)?,
        };
        #[cfg(not(feature = "tls"))]
        let client = redis::Client::open(info)?;
        Ok(Self::with(Target::Single(client), connect_timeout))
    }

    /// A cluster reached through the `seeds`; connects nothing yet.
    pub(super) fn cluster(
        seeds: &[String],
        reach: &Reach,
        connect_timeout: Duration,
    ) -> Result<Self, Error> {
        let mut infos = Vec::with_capacity(seeds.len());
        for seed in seeds {
            check_tls(seed, reach)?;
            infos.push(reach.info(seed)?);
        }
        let builder = ClusterClient::builder(infos);
        #[cfg(feature = "tls")]
        let builder = match reach.uses_tls_files() {
            true => builder.certs(reach.certificates()),
            false => builder,
        };
        // No response timeout (redis-rs's default): `run` bounds every command with the
        // caller's deadline, redirections and retries included, and a Tokio timer per
        // command is what the deadline table saves (see `deadline`).
        let client = builder
            .connection_timeout(connect_timeout)
            .retries(3)
            .min_retry_wait(5)
            .max_retry_wait(100)
            .build()?;
        Ok(Self::with(Target::Cluster(client), connect_timeout))
    }

    /// The primary that the sentinels at `urls` name for `service`; asks nothing yet.
    #[cfg(feature = "sentinel")]
    pub(super) fn sentinel(
        urls: &[String],
        service: &str,
        reach: &Reach,
        connect_timeout: Duration,
    ) -> Result<Self, Error> {
        if reach.uses_tls_files() || urls.iter().any(|url| is_tls(url)) {
            return Err(Error::Config(
                "redis_sentinel: TLS to sentinels is not supported in this release".to_owned(),
            ));
        }
        for url in urls {
            parse(url)?;
        }
        // The builder's credentials are the primary's (the URL only carries them); a
        // sentinel's own go in its URL.
        let node = reach.info("redis://127.0.0.1/")?.redis_settings().clone();
        let sentinel = Sentinel::new(urls, service, node, connect_timeout)?;
        Ok(Self::with(
            Target::Sentinel(Arc::new(sentinel)),
            connect_timeout,
        ))
    }

    fn with(target: Target, connect_timeout: Duration) -> Self {
        Connection {
            target,
            connect_timeout,
            main: OnceCell::new(),
            side: OnceCell::new(),
        }
    }

    /// Is this a cluster (so that a scan must visit every primary)?
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Is this a primary that sentinels name?
    pub(super) fn is_sentinel(&self) -> bool {
        #[cfg(feature = "sentinel")]
        return matches!(self.target, Target::Sentinel(_));
        #[cfg(not(feature = "sentinel"))]
        false
    }

    /// The main connection once made (a cheap clone of the shared one); before the first
    /// command, [`connect`](Self::connect). Not an `async fn`: the hit path awaits nothing
    /// here.
    #[inline]
    pub(super) fn ready(&self) -> Option<Link> {
        match self.main.get() {
            Some(link) => Some(link.clone()),
            // A Sentinel-managed primary's manager changes with the primary: never `main`.
            None => self.sentinel_ready(),
        }
    }

    #[cold]
    #[inline(never)]
    fn sentinel_ready(&self) -> Option<Link> {
        match &self.target {
            #[cfg(feature = "sentinel")]
            Target::Sentinel(sentinel) => sentinel.ready(),
            _ => None,
        }
    }

    /// A command failed with `error`: on a Sentinel-managed primary, the primary may have
    /// moved (see `sentinel`).
    #[cold]
    #[inline(never)]
    pub(super) fn failed(&self, _error: &Error) {
        #[cfg(feature = "sentinel")]
        if let Target::Sentinel(sentinel) = &self.target {
            sentinel.failed(_error);
        }
    }

    /// The side connection, made on first use.
    pub(super) async fn side(&self) -> Result<Link, Error> {
        #[cfg(feature = "sentinel")]
        if let Target::Sentinel(sentinel) = &self.target {
            return sentinel.connect(true).await;
        }
        let side = self
            .side
            .get_or_try_init(|| async { self.open().await })
            .await?;
        Ok(side.clone())
    }

    /// The first command's way to the main connection; later ones find it set.
    #[cold]
    pub(super) async fn connect(&self) -> Result<Link, Error> {
        #[cfg(feature = "sentinel")]
        if let Target::Sentinel(sentinel) = &self.target {
            return sentinel.connect(false).await;
        }
        let link = self.main.get_or_try_init(|| self.open()).await?;
        Ok(link.clone())
    }

    /// A new connection of its own (a manager connects lazily; a cluster connection
    /// connects to the seeds and reads the slots now).
    async fn open(&self) -> Result<Link, Error> {
        Ok(match &self.target {
            Target::Single(client) => Link::Single(manager_for(client, self.connect_timeout)?),
            Target::Cluster(client) => Link::Cluster(client.get_async_connection().await?),
            #[cfg(feature = "sentinel")]
            Target::Sentinel(sentinel) => sentinel.connect(false).await?,
        })
    }
}

/// A connection manager for one node, which connects on its first command.
pub(super) fn manager_for(
    client: &redis::Client,
    connect_timeout: Duration,
) -> Result<ConnectionManager, Error> {
    // No response timeout here: `run` bounds every command with the caller's own
    // deadline, which may differ per function.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(None)
        .set_number_of_retries(1)
        // redis-rs waits 100 ms before its reconnect retry by default; a refused
        // connection should fail the call fast (the breaker takes it from there).
        .set_min_delay(Duration::from_millis(10));
    Ok(ConnectionManager::new_lazy_with_config(
        client.clone(),
        config,
    )?)
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(m) => m.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(m) => m.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(m) => m.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
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
    /// On one node, `ConnectionManager::send_packed_command`, not `Cmd::query_async`: the
    /// latter goes through the `ConnectionLike` trait, which boxes the command's future (an
    /// allocation and a dynamic call on every hit). The cluster connection has only the
    /// trait's way. Not an `async fn`: the single-node future is picked up front, built
    /// in place, and is the same as with no cluster support at all (the bench's hit rows).
    #[inline(always)]
    fn send<'a, T: redis::FromRedisValue + Send + 'static>(
        &'a self,
        conn: &'a mut Link,
    ) -> impl Future<Output = redis::RedisResult<T>> + Send + 'a {
        match conn {
            Link::Single(manager) => Either::Left {
                future: on_manager(self, manager),
            },
            Link::Cluster(cluster) => Either::Right {
                future: on_cluster(self, cluster),
            },
        }
    }
}

async fn on_manager<T: redis::FromRedisValue>(
    cmd: &redis::Cmd,
    manager: &mut ConnectionManager,
) -> redis::RedisResult<T> {
    let reply = manager.send_packed_command(cmd).await?;
    Ok(redis::from_redis_value(reply.extract_error()?)?)
}

/// Through `ConnectionLike`, the one way redis-rs routes any command by its keys (a
/// multi-key `UNLINK` split by slot included).
async fn on_cluster<T: redis::FromRedisValue>(
    cmd: &redis::Cmd,
    cluster: &mut ClusterConnection,
) -> redis::RedisResult<T> {
    let reply = cluster.req_packed_command(cmd).await?;
    Ok(redis::from_redis_value(reply.extract_error()?)?)
}

pin_project_lite::pin_project! {
    /// One of two futures of one output.
    #[project = EitherProj]
    enum Either<L, R> {
        Left { #[pin] future: L },
        Right { #[pin] future: R },
    }
}

impl<L: Future, R: Future<Output = L::Output>> Future for Either<L, R> {
    type Output = L::Output;

    #[inline]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<L::Output> {
        match self.project() {
            EitherProj::Left { future } => future.poll(cx),
            EitherProj::Right { future } => future.poll(cx),
        }
    }
}

/// A call of a one-key script: `EVALSHA <sha> 1 <key> <args...>`, built as one command
/// sized up front. redis-rs's `ScriptInvocation` puts each argument in a vector of its own
/// and copies them all into a command when sent: a lease's fill copied its value twice
/// (the bench's miss row). A script Redis does not have yet (`NOSCRIPT`, after a restart or
/// a failover) is loaded, and the call sent again.
pub(crate) struct Eval<'s> {
    script: &'s redis::Script,
    cmd: redis::Cmd,
}

impl<'s> Eval<'s> {
    /// The call of `script` on `key`, with room for `args` arguments of `bytes` bytes.
    pub(crate) fn new(script: &'s redis::Script, key: &str, args: usize, bytes: usize) -> Self {
        let hash = script.get_hash();
        let mut cmd = redis::Cmd::with_capacity(4 + args, 8 + hash.len() + key.len() + bytes);
        cmd.arg("EVALSHA").arg(hash).arg(1).arg(key);
        Eval { script, cmd }
    }

    /// Adds an argument (`ARGV[i]`).
    pub(crate) fn arg(&mut self, arg: impl redis::ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }
}

impl Command for Eval<'_> {
    async fn send<T: redis::FromRedisValue + Send + 'static>(
        &self,
        conn: &mut Link,
    ) -> redis::RedisResult<T> {
        let no_script = redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);
        match self.cmd.send(conn).await {
            Err(e) if e.kind() == no_script => {
                self.script.load_async(conn).await?;
                self.cmd.send(conn).await
            }
            other => other,
        }
    }
}
