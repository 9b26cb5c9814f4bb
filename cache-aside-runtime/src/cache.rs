//! The [`Cache`] handle: a backend, a namespace, defaults and counters.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cache_aside_settings::defaults;
use tokio::sync::Semaphore;

use crate::backend::{Backend, MemoryBackend, RedisBackend};
use crate::breaker::Breaker;
use crate::codec::Codec;
use crate::error::Error;
use crate::flight::Flights;
use crate::key::{Layout, is_valid_segment};
use crate::limits;
use crate::report::Reporter;
use crate::stats::{Counters, Stats};

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
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Unique per cache built in this process (never reused, unlike an address).
    pub(crate) id: u64,
    pub(crate) backend: Backend,
    pub(crate) namespace: String,
    pub(crate) settings: Settings,
    pub(crate) codec: Codec,
    pub(crate) counters: Counters,
    pub(crate) reporter: Reporter,
    pub(crate) flights: Flights,
    /// Permits for background refreshes: `max_refreshes` at a time.
    pub(crate) refresh_slots: Arc<Semaphore>,
}

/// The cache-wide defaults a function's own options override.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) timeout: Duration,
    pub(crate) max_value_bytes: u64,
    pub(crate) jitter: f64,
    pub(crate) fail_safe: Option<Duration>,
    pub(crate) fail_safe_backoff: Duration,
    pub(crate) stale: Option<Duration>,
    pub(crate) refresh_ahead: Option<f64>,
    pub(crate) lock: bool,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
    pub(crate) flight_wait: Duration,
}

/// Settings for a [`Cache`]; finish with [`redis`](Self::redis), [`memory`](Self::memory)
/// or [`from_env`](Self::from_env).
///
/// Each setting is checked there against its range ([`limits`](crate::limits)): durations
/// from 1 ms to 365 days (`timeout` from 1 ms, `Duration::MAX` for none), `jitter` from 0 to
/// 0.5, `refresh_ahead` strictly between 0 and 1, counts from 1 (`max_refreshes` up to
/// 2^20). A value outside is [`Error::Config`] naming the setting and its range; the
/// attribute's options take the same ranges.
#[derive(Clone, Debug)]
#[must_use]
pub struct CacheBuilder {
    namespace: String,
    settings: Settings,
    memory_bytes: u64,
    breaker_failures: u32,
    breaker_cooldown: Duration,
    max_refreshes: usize,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            settings: Settings {
                default_ttl: None,
                timeout: defaults::TIMEOUT,
                max_value_bytes: defaults::MAX_VALUE_BYTES,
                jitter: defaults::JITTER,
                fail_safe: None,
                fail_safe_backoff: defaults::FAIL_SAFE_BACKOFF,
                stale: None,
                refresh_ahead: None,
                lock: defaults::LOCK,
                lock_ttl: defaults::LOCK_TTL,
                lock_wait: defaults::LOCK_WAIT,
                flight_wait: defaults::FLIGHT_WAIT,
            },
            memory_bytes: defaults::MEMORY_MAX_BYTES,
            breaker_failures: defaults::BREAKER_FAILURES,
            breaker_cooldown: defaults::BREAKER_COOLDOWN,
            max_refreshes: defaults::MAX_REFRESHES,
        }
    }
}

impl CacheBuilder {
    #[cfg(test)]
    pub(crate) fn settings_for_tests(self) -> Settings {
        self.settings
    }

    /// First segment of every key (default `ca`): `[A-Za-z0-9_.-/]` only, so that prefix
    /// patterns need no escaping. Use one per application or environment sharing a Redis.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// TTL for functions whose `#[cached]` gives none.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.settings.default_ttl = Some(ttl);
        self
    }

    /// Upper bound on each cache read or write (default 250 ms), the wait for a
    /// (re)connection included. A read that takes longer is a miss; a write that takes longer
    /// is abandoned. The call itself still succeeds. `#[cached(timeout = ...)]` overrides it.
    ///
    /// Measured on the real clock, also under a paused Tokio clock. One background thread,
    /// `cache-aside-deadlines`, shared by every cache, wakes the commands that run out of
    /// time: cheaper per command than a Tokio timer each.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// Size cap of the embedded backend (default 64 MiB): keys, values and about 512 bytes
    /// of bookkeeping per entry, so that what the store holds stays within the cap whatever
    /// the entries' sizes. The allocator may keep more of what evicted entries freed (glibc,
    /// many threads, large values); see the README.
    pub fn memory_max_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// Largest encoded entry to store (default 8 MiB); a larger value is returned to the
    /// caller but not stored, and counted in `stats().oversized`.
    pub fn max_value_bytes(mut self, bytes: u64) -> Self {
        self.settings.max_value_bytes = bytes;
        self
    }

    /// Spread every TTL by up to `±fraction` (e.g. `0.1`), so keys written together do not
    /// expire together. `0` (the default) turns it off.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.settings.jitter = fraction;
        self
    }

    /// The stale-while-revalidate window of functions marked with a bare `stale`
    /// (`#[cached(ttl = 60, stale)]`): after their TTL, serve the old value this long while one
    /// background refresh replaces it. Functions opt in because the refresh runs their body
    /// in a spawned task, which needs an owned, `Send` body; `stale = "5m"` on a function
    /// sets its own window. Without this setting, a bare `stale` serves nothing stale.
    pub fn stale(mut self, window: Duration) -> Self {
        self.settings.stale = Some(window);
        self
    }

    /// The refresh-ahead point of functions marked with a bare `refresh_ahead`: a hit after
    /// this fraction of the TTL (strictly between 0 and 1) refreshes in the background. Same
    /// opt-in rule as [`stale`](Self::stale); `refresh_ahead = 0.8` on a function wins.
    pub fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.settings.refresh_ahead = Some(fraction);
        self
    }

    /// Keep values this long past their TTL, to answer with the last good value when a
    /// function's body fails (`stats().fail_safe`). Off by default.
    pub fn fail_safe(mut self, keep: Duration) -> Self {
        self.settings.fail_safe = Some(keep);
        self
    }

    /// After a failed body was answered by fail-safe (or a refresh failed), serve the old
    /// value for this long before running the body again (default 5 s).
    pub fn fail_safe_backoff(mut self, backoff: Duration) -> Self {
        self.settings.fail_safe_backoff = backoff;
        self
    }

    /// Take a Redis lock before loading, so that one process in the fleet loads a missing
    /// key while the others wait for its value (default off: it adds a round trip to every
    /// miss, and single-flight already covers one process). `#[cached(lock = ...)]`
    /// overrides it. The embedded backend has no other processes and ignores it.
    pub fn lock(mut self, on: bool) -> Self {
        self.settings.lock = on;
        self
    }

    /// How long a lock lives unless its holder extends it (default 5 s). A holder extends
    /// it every third of this while its body runs, so a slow load keeps it; a holder that
    /// dies frees the key after at most this long.
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.settings.lock_ttl = ttl;
        self
    }

    /// Longest a caller waits for another process's load (default 5 s); after that it loads
    /// itself (`stats().lock_timeouts`).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.settings.lock_wait = wait;
        self
    }

    /// Longest a miss waits for another caller's load of the same key in this process
    /// (single-flight; default 5 s); after that it runs its own body
    /// (`stats().flight_timeouts`). A load normally ends or is cancelled well before:
    /// this bounds the wait behind a caller that stopped polling its call mid-load (a
    /// `select!` busy in another branch). `#[cached(flight_wait = ...)]` overrides it.
    pub fn flight_wait(mut self, wait: Duration) -> Self {
        self.settings.flight_wait = wait;
        self
    }

    /// Circuit breaker: after `failures` consecutive connection failures or timeouts, skip
    /// Redis for `cooldown`, then let one probe through (defaults: 5 and 2 s).
    pub fn breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.breaker_failures = failures;
        self.breaker_cooldown = cooldown;
        self
    }

    /// Most background refreshes (`stale`, `refresh_ahead`) running at once (default 64);
    /// beyond it a stale value is still served and the refresh is left to a later call.
    pub fn max_refreshes(mut self, max: usize) -> Self {
        self.max_refreshes = max;
        self
    }

    /// A cache on the Redis at `url` (`redis://127.0.0.1:6379/0`, `unix:///path/redis.sock`). TLS
    /// (the `rediss` scheme) is not enabled in this release.
    /// Does not connect yet: the first call does, and a Redis that is down is a miss.
    pub fn redis(self, url: &str) -> Result<Cache, Error> {
        self.check()?;
        let breaker = Breaker::new(self.breaker_failures, self.breaker_cooldown);
        let backend = Backend::Redis(RedisBackend::new(url, self.settings.timeout, breaker)?);
        self.build(backend)
    }

    /// A cache held in this process: bounded, no Redis needed.
    pub fn memory(self) -> Result<Cache, Error> {
        self.check()?;
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

    /// Every setting against its range ([`limits`]): the first out of range, named.
    fn check(&self) -> Result<(), Error> {
        if !is_valid_segment(&self.namespace) {
            return Err(Error::Config(format!(
                "namespace {:?} must be non-empty and use only A-Z a-z 0-9 _ . - /",
                self.namespace
            )));
        }
        use cache_aside_settings as set;
        let s = &self.settings;
        if let Some(ttl) = s.default_ttl {
            limits::duration(set::DEFAULT_TTL, ttl)?;
        }
        limits::duration(set::TIMEOUT, s.timeout)?;
        for (setting, value) in [
            (set::STALE, s.stale),
            (set::FAIL_SAFE, s.fail_safe),
            (set::FAIL_SAFE_BACKOFF, Some(s.fail_safe_backoff)),
            (set::LOCK_TTL, Some(s.lock_ttl)),
            (set::LOCK_WAIT, Some(s.lock_wait)),
            (set::FLIGHT_WAIT, Some(s.flight_wait)),
            (set::BREAKER_COOLDOWN, Some(self.breaker_cooldown)),
        ] {
            if let Some(value) = value {
                limits::duration(setting, value)?;
            }
        }
        limits::fraction(set::JITTER, s.jitter)?;
        if let Some(at) = s.refresh_ahead {
            limits::fraction(set::REFRESH_AHEAD, at)?;
        }
        limits::count(set::MAX_VALUE_BYTES, s.max_value_bytes)?;
        limits::count(set::MEMORY_MAX_BYTES, self.memory_bytes)?;
        limits::count(set::MAX_REFRESHES_SETTING, self.max_refreshes as u64)?;
        limits::count(set::BREAKER_FAILURES, u64::from(self.breaker_failures))?;
        Ok(())
    }

    fn build(self, backend: Backend) -> Result<Cache, Error> {
        Ok(Cache {
            inner: Arc::new(Inner {
                id: {
                    static NEXT: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(1);
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                },
                backend,
                namespace: self.namespace,
                settings: self.settings,
                codec: Codec::default(),
                counters: Counters::default(),
                reporter: Reporter::default(),
                flights: Flights::default(),
                refresh_slots: Arc::new(Semaphore::new(self.max_refreshes)),
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
        self.inner.settings.default_ttl
    }

    /// `"redis"` or `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot(self.inner.backend.breaker())
    }

    /// Deletes one key (as returned by a `{fn}_cache_key` companion); `true` if it existed.
    ///
    /// Only keys of this cache's namespace: any other key is [`Error::OutsideNamespace`]
    /// and nothing is deleted, so a handle for `shop` never touches `blog:post:1`.
    pub async fn invalidate(&self, key: &str) -> Result<bool, Error> {
        self.own_key(key)?;
        self.inner
            .backend
            .delete(key, self.inner.settings.timeout)
            .await
    }

    /// Deletes every key of one prefix in this cache's namespace, with `SCAN` + `UNLINK`
    /// batches on Redis. Returns how many keys were removed. Other prefixes are untouched:
    /// `invalidate_prefix("user")` removes `ns:user:*`, never `ns:users:*`. Every function
    /// whose prefix this is loses its entries; a function's `_invalidate_all` companion
    /// removes only its own.
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, Error> {
        if !is_valid_segment(prefix) {
            return Err(Error::Config(format!(
                "prefix {prefix:?} must be non-empty and use only A-Z a-z 0-9 _ . - /"
            )));
        }
        self.delete_prefix(prefix, None).await
    }

    /// The keys of `prefix` that fit one function's layout: its `_invalidate_all`.
    pub(crate) async fn invalidate_layout(
        &self,
        prefix: &str,
        layout: &Layout,
    ) -> Result<u64, Error> {
        self.delete_prefix(prefix, Some(layout)).await
    }

    async fn delete_prefix(&self, prefix: &str, layout: Option<&Layout>) -> Result<u64, Error> {
        // Not under one timeout: each SCAN/UNLINK step is bounded on its own, and a large
        // prefix legitimately takes many steps.
        self.inner
            .backend
            .delete_prefix(
                &self.inner.namespace,
                prefix,
                layout,
                self.inner.settings.timeout,
            )
            .await
    }

    /// Time until `key` expires; `None` if it is not cached. Only keys of this cache's
    /// namespace, like [`invalidate`](Self::invalidate).
    pub async fn ttl_of(&self, key: &str) -> Result<Option<Duration>, Error> {
        self.own_key(key)?;
        self.inner
            .backend
            .ttl(key, self.inner.settings.timeout)
            .await
    }

    fn own_key(&self, key: &str) -> Result<(), Error> {
        let namespace = &self.inner.namespace;
        match key.strip_prefix(namespace.as_str()) {
            Some(rest) if rest.starts_with(':') => Ok(()),
            _ => Err(Error::OutsideNamespace {
                key: key.to_owned(),
                namespace: namespace.clone(),
            }),
        }
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.backend_name())
            .field("namespace", &self.inner.namespace)
            .field("default_ttl", &self.inner.settings.default_ttl)
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

    /// Every setting at 0, at its bounds and at `MAX`: accepted, or an `Error::Config`
    /// that names it; never a panic, here or in a call.
    #[test]
    fn every_setting_is_checked_against_its_range() {
        use crate::limits::{LONGEST, MAX_REFRESHES};
        let ms = Duration::from_millis;
        type Set = fn(CacheBuilder, Duration) -> CacheBuilder;
        let durations: [(&str, Set); 8] = [
            ("default_ttl", |b, d| b.default_ttl(d)),
            ("stale", |b, d| b.stale(d)),
            ("fail_safe", |b, d| b.fail_safe(d)),
            ("fail_safe_backoff", |b, d| b.fail_safe_backoff(d)),
            ("lock_ttl", |b, d| b.lock_ttl(d)),
            ("lock_wait", |b, d| b.lock_wait(d)),
            ("flight_wait", |b, d| b.flight_wait(d)),
            ("breaker cooldown", |b, d| b.breaker(5, d)),
        ];
        for (name, set) in durations {
            for (value, ok) in [
                (Duration::ZERO, false),
                (ms(1), true),
                (LONGEST, true),
                (LONGEST + ms(1), false),
                (Duration::MAX, false),
            ] {
                verdict(
                    name,
                    set(Cache::builder(), value),
                    ok,
                    &format!("{value:?}"),
                );
            }
        }
        for (value, ok) in [
            (Duration::ZERO, false),
            (ms(1), true),
            (Duration::MAX, true),
        ] {
            verdict(
                "timeout",
                Cache::builder().timeout(value),
                ok,
                &format!("{value:?}"),
            );
        }
        for (value, ok) in [
            (-0.1, false),
            (0.0, true),
            (0.5, true),
            (0.51, false),
            (f64::NAN, false),
        ] {
            verdict(
                "jitter",
                Cache::builder().jitter(value),
                ok,
                &value.to_string(),
            );
        }
        for (value, ok) in [
            (0.0, false),
            (0.01, true),
            (0.99, true),
            (1.0, false),
            (f64::INFINITY, false),
        ] {
            verdict(
                "refresh_ahead",
                Cache::builder().refresh_ahead(value),
                ok,
                &value.to_string(),
            );
        }
        for (value, ok) in [
            (0, false),
            (1, true),
            (MAX_REFRESHES, true),
            (MAX_REFRESHES + 1, false),
            (usize::MAX, false),
        ] {
            verdict(
                "max_refreshes",
                Cache::builder().max_refreshes(value),
                ok,
                &value.to_string(),
            );
        }
        for (value, ok) in [(0, false), (1, true), (u64::MAX, true)] {
            verdict(
                "max_value_bytes",
                Cache::builder().max_value_bytes(value),
                ok,
                &value.to_string(),
            );
            verdict(
                "memory_max_bytes",
                Cache::builder().memory_max_bytes(value),
                ok,
                &value.to_string(),
            );
        }
        for (value, ok) in [(0, false), (1, true), (u32::MAX, true)] {
            let builder = Cache::builder().breaker(value, Duration::from_secs(1));
            verdict("breaker failures", builder, ok, &value.to_string());
        }
        for namespace in ["a:b", "", "a b", "{x}"] {
            verdict(
                "namespace",
                Cache::builder().namespace(namespace),
                false,
                namespace,
            );
        }
        assert!(Cache::redis("not a url").is_err());
    }

    fn verdict(name: &str, builder: CacheBuilder, ok: bool, value: &str) {
        match builder.memory() {
            Ok(_) => assert!(ok, "{name} = {value} was accepted"),
            Err(Error::Config(message)) => {
                assert!(!ok, "{name} = {value}: {message}");
                assert!(message.starts_with(name), "{name} = {value}: {message}");
            }
            Err(other) => panic!("{name} = {value}: {other}"),
        }
    }

    /// The longest settings the builder takes serve calls without overflowing a deadline or
    /// an expiry anywhere.
    #[tokio::test]
    async fn calls_with_the_longest_settings_do_not_overflow() {
        use crate::limits::LONGEST;
        let cache = Cache::builder()
            .default_ttl(LONGEST)
            .stale(LONGEST)
            .fail_safe(LONGEST)
            .fail_safe_backoff(LONGEST)
            .lock_ttl(LONGEST)
            .lock_wait(LONGEST)
            .flight_wait(LONGEST)
            .refresh_ahead(0.99)
            .jitter(0.5)
            .timeout(Duration::MAX)
            .memory()
            .unwrap();
        static SPEC: crate::spec::FnSpec =
            crate::spec::FnSpec::new("f", Some("long"), crate::key::Layout::new(""))
                .stale_from_cache();
        for _ in 0..3 {
            let prepared = crate::__private::prepare(Ok(&cache), &SPEC, "m::f", "", |_| Ok(()));
            let body = crate::__private::Foreground(async { 7u32 });
            let value = crate::__private::get_or_load::<crate::shape::Plain, u32, _, _>(
                prepared,
                &SPEC,
                body,
                None,
                crate::exact::Same::NONE,
            )
            .await;
            assert_eq!(value, 7);
        }
        assert_eq!(cache.stats().hits, 2);
    }
}
