//! The [`Cache`] handle, a façade over one engine: the only code that touches its fields.
//! Its builder is [`CacheBuilder`].

pub(crate) mod batch;
mod builder;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cache_aside_settings::defaults;

pub use self::builder::CacheBuilder;
use crate::engine::Engine;
use crate::error::Error;
use crate::stats::{FunctionStats, Stats};

/// Namespace used when the builder sets none.
pub const DEFAULT_NAMESPACE: &str = defaults::NAMESPACE;
/// Per-operation timeout used when the builder sets none.
pub const DEFAULT_TIMEOUT: Duration = defaults::TIMEOUT;
/// Size cap of the embedded backend when the builder sets none: 64 MiB.
pub const DEFAULT_MEMORY_BYTES: u64 = defaults::MEMORY_MAX_BYTES;
/// Largest entry stored when the builder sets none: 8 MiB. Larger values are returned, not
/// stored: a multi-megabyte `GET` stalls every other command on the connection.
pub const DEFAULT_MAX_VALUE_BYTES: u64 = defaults::MAX_VALUE_BYTES;

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
    engine: Arc<Engine>,
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

    /// A Redis Cluster at `$REDIS_CLUSTER_URLS`, else Redis at `$REDIS_URL`, else the
    /// embedded backend; see [`CacheBuilder::from_env`].
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
        self.engine.namespace()
    }

    /// The TTL for functions that set none.
    pub fn default_ttl(&self) -> Option<Duration> {
        self.engine.settings().default_ttl
    }

    /// `"redis"`, `"redis-cluster"`, `"redis-sentinel"` or `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        self.engine.backend_name()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }

    /// A snapshot of the counters per `#[cached]` function that ran with this cache, in
    /// the order they first counted: the same counters as [`stats`](Self::stats), for that
    /// function's calls only (its reads, refreshes, and the `#[cache_put]` /
    /// `#[cache_evict]` writes that name it), labelled by its name and prefix, never by a
    /// key. Summed over the functions they give `stats()`, except for failures of
    /// background work no call owns (a lease released or kept alive after its call, a size
    /// check), which only the cache counts.
    ///
    /// ```no_run
    /// # async fn demo(cache: cache_aside_runtime::Cache) {
    /// for f in cache.stats_by_function() {
    ///     println!("{} ({:?}): {:.1}% hits", f.function, f.prefix, 100.0 * f.stats.hit_ratio());
    /// }
    /// # }
    /// ```
    pub fn stats_by_function(&self) -> Vec<FunctionStats> {
        self.engine.stats_by_function()
    }

    /// Publishes this cache's counters, per function, through the `metrics` facade (cargo
    /// feature `metrics`; names and labels in [`crate::metrics`]). Call it where the
    /// figures are read: in a Prometheus `/metrics` handler before rendering, or on a timer
    /// for push exporters. It reads the counters the cache keeps anyway, and the call times
    /// gathered since the last time (each hit adds one to a striped bucket: no allocation,
    /// no lock).
    #[cfg(feature = "metrics")]
    pub fn record_metrics(&self) {
        let whole = self.stats();
        crate::metrics::record(self.namespace(), &whole, &self.stats_by_function());
        self.engine.publish_call_times();
    }

    /// Deletes every entry carrying `tag` (see [`tag`](crate::tag)), whichever function
    /// wrote it, and revokes the leases of loads of them under way; how many keys it deleted
    /// (entries, and the placeholders of loads under way). Fails like any cache operation when Redis does (the entries then stay until
    /// they expire: retry, or invalidate by prefix).
    pub async fn invalidate_tag(&self, tag: &crate::tag::Tag) -> Result<u64, Error> {
        self.engine.invalidate_tag(tag).await
    }

    /// Deletes one key (as returned by a `{fn}_cache_key` companion); `true` if it existed.
    ///
    /// Only keys of this cache's namespace: any other key is [`Error::OutsideNamespace`]
    /// and nothing is deleted, so a handle for `shop` never touches `blog:post:1`.
    pub async fn invalidate(&self, key: &str) -> Result<bool, Error> {
        self.engine.invalidate(key).await
    }

    /// Deletes every key of one prefix in this cache's namespace, with `SCAN` + `UNLINK`
    /// batches on Redis. Returns how many keys were removed. Other prefixes are untouched:
    /// `invalidate_prefix("user")` removes `ns:user:*`, never `ns:users:*`. Every function
    /// whose prefix this is loses its entries; a function's `_invalidate_all` companion
    /// removes only its own.
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, Error> {
        self.engine.invalidate_prefix(prefix).await
    }

    /// Time until `key` expires; `None` if it is not cached. Only keys of this cache's
    /// namespace, like [`invalidate`](Self::invalidate).
    pub async fn ttl_of(&self, key: &str) -> Result<Option<Duration>, Error> {
        self.engine.ttl_of(key).await
    }

    fn from_engine(engine: Engine) -> Cache {
        Cache {
            engine: Arc::new(engine),
        }
    }

    /// The engine behind this handle, for the generated code's calls and the companions.
    #[inline]
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.backend_name())
            .field("namespace", &self.namespace())
            .field("default_ttl", &self.default_ttl())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
