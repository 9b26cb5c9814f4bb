//! The [`Cache`] handle: a backend, a namespace, defaults and counters.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::backend::{Backend, MemoryBackend, RedisBackend};
use crate::codec::Codec;
use crate::error::Error;
use crate::flight::Flights;
use crate::key::is_valid_segment;
use crate::report::Reporter;
use crate::stats::{Counters, Stats};

/// Namespace used when the builder sets none.
pub const DEFAULT_NAMESPACE: &str = "ca";
/// Per-operation timeout used when the builder sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// Size cap of the embedded backend when the builder sets none: 64 MiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;

static DEFAULT_CACHE: OnceLock<Cache> = OnceLock::new();

/// A cache handle: cheap to clone (one `Arc`), shared by every function that uses it.
///
/// ```no_run
/// # async fn demo() -> Result<(), cache_aside_runtime::Error> {
/// use std::time::Duration;
/// use cache_aside_runtime::Cache;
///
/// let cache = Cache::builder()
///     .namespace("shop")
///     .default_ttl(Duration::from_secs(300))
///     .redis("redis://127.0.0.1:6379/")?;
/// cache.set_default()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) backend: Backend,
    pub(crate) namespace: String,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) codec: Codec,
    pub(crate) counters: Counters,
    pub(crate) reporter: Reporter,
    pub(crate) flights: Flights,
}

/// Settings for a [`Cache`]; finish with [`redis`](Self::redis), [`memory`](Self::memory)
/// or [`from_env`](Self::from_env).
#[derive(Clone, Debug)]
#[must_use]
pub struct CacheBuilder {
    namespace: String,
    default_ttl: Option<Duration>,
    timeout: Duration,
    memory_bytes: u64,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            default_ttl: None,
            timeout: DEFAULT_TIMEOUT,
            memory_bytes: DEFAULT_MEMORY_BYTES,
        }
    }
}

impl CacheBuilder {
    /// First segment of every key (default `ca`): `[A-Za-z0-9_.-/]` only, so that prefix
    /// patterns need no escaping. Use one per application or environment sharing a Redis.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// TTL for functions whose `#[cached]` gives none.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Upper bound on each cache read or write (default 250 ms). A read that takes longer is
    /// a miss; a write that takes longer is abandoned. The call itself still succeeds.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Size cap of the embedded backend, keys plus values (default 64 MiB).
    pub fn memory_max_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// A cache on the Redis at `url` (`redis://127.0.0.1:6379/0`, `unix:///path/redis.sock`). TLS
    /// (the `rediss` scheme) is not enabled in this release.
    /// Does not connect yet: the first call does, and a Redis that is down is a miss.
    pub fn redis(self, url: &str) -> Result<Cache, Error> {
        let backend = Backend::Redis(RedisBackend::new(url, self.timeout)?);
        self.build(backend)
    }

    /// A cache held in this process: bounded, no Redis needed.
    pub fn memory(self) -> Result<Cache, Error> {
        let backend = Backend::Memory(MemoryBackend::new(self.memory_bytes));
        self.build(backend)
    }

    /// Redis at `$REDIS_URL` if it is set, else the embedded backend; says which in a
    /// `tracing` info line.
    pub fn from_env(self) -> Result<Cache, Error> {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => {
                tracing::info!(url = %redact(&url), "cache-aside: using Redis from REDIS_URL");
                self.redis(&url)
            }
            _ => {
                tracing::info!(
                    "cache-aside: REDIS_URL is not set; using the embedded in-process cache"
                );
                self.memory()
            }
        }
    }

    fn build(self, backend: Backend) -> Result<Cache, Error> {
        if !is_valid_segment(&self.namespace) {
            return Err(Error::Config(format!(
                "namespace {:?} must be non-empty and use only A-Z a-z 0-9 _ . - /",
                self.namespace
            )));
        }
        if self.default_ttl == Some(Duration::ZERO) || self.timeout.is_zero() {
            return Err(Error::Config(
                "default_ttl and timeout must be greater than zero".into(),
            ));
        }
        Ok(Cache {
            inner: Arc::new(Inner {
                backend,
                namespace: self.namespace,
                default_ttl: self.default_ttl,
                codec: Codec::default(),
                counters: Counters::default(),
                reporter: Reporter::default(),
                flights: Flights::default(),
            }),
        })
    }
}

/// `redis://user:secret@127.0.0.1` → `redis://user:***@127.0.0.1`, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Cache {
    /// Settings for a new cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// A Redis cache with default settings.
    pub fn redis(url: &str) -> Result<Cache, Error> {
        Cache::builder().redis(url)
    }

    /// An embedded in-process cache with default settings.
    pub fn memory() -> Cache {
        Cache::builder()
            .memory()
            .expect("default settings are valid")
    }

    /// Redis at `$REDIS_URL` if set, else the embedded backend.
    pub fn from_env() -> Result<Cache, Error> {
        Cache::builder().from_env()
    }

    /// Makes this the cache of every `#[cached]` function without `cache = ...`. Once per
    /// process; a second call is [`Error::DefaultAlreadySet`].
    pub fn set_default(&self) -> Result<(), Error> {
        DEFAULT_CACHE
            .set(self.clone())
            .map_err(|_| Error::DefaultAlreadySet)
    }

    /// The cache set by [`set_default`](Self::set_default).
    pub fn get_default() -> Result<&'static Cache, Error> {
        DEFAULT_CACHE.get().ok_or(Error::NoDefaultCache)
    }

    /// The key namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The TTL for functions that set none.
    pub fn default_ttl(&self) -> Option<Duration> {
        self.inner.default_ttl
    }

    /// `"redis"` or `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// Deletes one key (as returned by a `{fn}_cache_key` companion); `true` if it existed.
    pub async fn invalidate(&self, key: &str) -> Result<bool, Error> {
        self.inner.backend.delete(key).await
    }

    /// Deletes every key of one prefix in this cache's namespace, with `SCAN` + `UNLINK`
    /// batches on Redis. Returns how many keys were removed. Other prefixes are untouched:
    /// `invalidate_prefix("user")` removes `ns:user:*`, never `ns:users:*`.
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, Error> {
        if !is_valid_segment(prefix) {
            return Err(Error::Config(format!(
                "prefix {prefix:?} must be non-empty and use only A-Z a-z 0-9 _ . - /"
            )));
        }
        // Not under one timeout: each SCAN/UNLINK step is bounded on its own, and a large
        // prefix legitimately takes many steps.
        self.inner
            .backend
            .delete_prefix(&self.inner.namespace, prefix)
            .await
    }

    /// Time until `key` expires; `None` if it is not cached.
    pub async fn ttl_of(&self, key: &str) -> Result<Option<Duration>, Error> {
        self.inner.backend.ttl(key).await
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.backend_name())
            .field("namespace", &self.inner.namespace)
            .field("default_ttl", &self.inner.default_ttl)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_logged_urls() {
        assert_eq!(
            redact("redis://u:pw@127.0.0.1:6379/0"),
            "redis://u:***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://:pw@127.0.0.1/"), "redis://:***@127.0.0.1/");
        assert_eq!(redact("redis://127.0.0.1/"), "redis://127.0.0.1/");
    }

    #[test]
    fn rejects_bad_settings() {
        for builder in [
            Cache::builder().namespace("a:b"),
            Cache::builder().namespace(""),
            Cache::builder().default_ttl(Duration::ZERO),
            Cache::builder().timeout(Duration::ZERO),
        ] {
            assert!(matches!(builder.memory(), Err(Error::Config(_))));
        }
        assert!(Cache::redis("not a url").is_err());
    }
}
