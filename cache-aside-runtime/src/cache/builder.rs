//! [`CacheBuilder`]: every setting of a cache, checked against its range before any
//! backend is made.

use std::time::Duration;

use cache_aside_settings::defaults;

use super::Cache;
use crate::backend::{Backend, Reach, redact};
use crate::engine::Engine;
use crate::error::Error;
use crate::key::is_valid_segment;
use crate::limits;
use crate::settings::Settings;

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
    /// Credentials and TLS material; its `Debug` never shows a secret.
    reach: Reach,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            namespace: defaults::NAMESPACE.to_owned(),
            settings: Settings::default(),
            memory_bytes: defaults::MEMORY_MAX_BYTES,
            breaker_failures: defaults::BREAKER_FAILURES,
            breaker_cooldown: defaults::BREAKER_COOLDOWN,
            max_refreshes: defaults::MAX_REFRESHES,
            reach: Reach::default(),
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

    /// Upper bound on the time a call spends on the cache (default 250 ms), the wait for a
    /// (re)connection included: its read gets the whole timeout, and its writes (the lock's
    /// commands too) share what the read left. A read that takes longer is a miss; a write
    /// with no time left is skipped or abandoned. The call itself still succeeds.
    /// `#[cached(timeout = ...)]` overrides it. Invalidation and `ttl_of` bound each step by
    /// it.
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
    /// the entries' sizes. An entry larger than the whole cap is not stored (the call still
    /// returns its value). The allocator may keep more of what evicted entries freed (glibc,
    /// many threads, large values); see [the performance guide](crate::guide::performance).
    /// Tags are kept beside the store, outside the cap: one member per live tagged entry
    /// and tag (a few hundred bytes each), swept of evicted entries whenever they have
    /// doubled since the last sweep.
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

    /// Turns leases off: loads store whatever invalidations happened meanwhile, as before
    /// leases existed. For tests that show the race leases close; never for production.
    #[doc(hidden)]
    pub fn __without_leases(mut self) -> Self {
        self.settings.fenced = false;
        self
    }

    /// Not part of the API: misses pause at random (up to 3 ms) between reading a key and
    /// joining its load, so that randomized tests of invalidation
    /// races meet the interleavings a loaded machine makes. Never for production.
    #[doc(hidden)]
    pub fn __with_pauses(mut self) -> Self {
        self.settings.pauses = true;
        self
    }

    /// Not part of the API: calls do not record their time for the `metrics` feature's
    /// histogram, for the bench row that measures what recording costs.
    #[doc(hidden)]
    pub fn __without_call_times(mut self) -> Self {
        self.settings.timed = false;
        self
    }

    /// Circuit breaker: after `failures` consecutive connection failures or timeouts, skip
    /// Redis for `cooldown`, then let one probe through (defaults: 5 and 2 s). A batch read
    /// counts once, however many of its operations fail.
    pub fn breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.breaker_failures = failures;
        self.breaker_cooldown = cooldown;
        self
    }

    /// Most background refreshes (`stale`, `refresh_ahead`, `xfetch`) running at once
    /// (default 64);
    /// beyond it a stale value is still served and the refresh is left to a later call.
    pub fn max_refreshes(mut self, max: usize) -> Self {
        self.max_refreshes = max;
        self
    }

    /// The ACL user to authenticate as, over one in the URL (`redis://user:pw@host`).
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.reach.username = Some(username.into());
        self
    }

    /// The password to authenticate with (`AUTH`), over one in the URL. It never appears
    /// in a log line, an error or `Debug` output of this crate.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.reach.password = Some(password.into());
        self
    }

    /// With the `tls` feature: trust this CA (PEM) for `rediss://` servers instead of the
    /// platform's roots, for managed Redis or a private CA.
    #[cfg(feature = "tls")]
    pub fn tls_root_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.reach.root_ca = Some(pem.into());
        self
    }

    /// With the `tls` feature: present this client certificate and key (PEM) to servers
    /// that require one (mutual TLS, `tls-auth-clients yes`).
    #[cfg(feature = "tls")]
    pub fn tls_client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.reach.client_cert = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// A cache on the Redis at `url`: `redis://127.0.0.1:6379/0`, `redis://user:pw@host/`,
    /// `unix:///path/redis.sock`, or with the `tls` feature `rediss://host:6380/` (the
    /// platform's roots, or [`tls_root_ca`](Self::tls_root_ca)). `rediss://...#insecure`
    /// skips certificate checks and needs the `tls-insecure` feature: it is as unsafe as it
    /// sounds, for tests only. Without the `tls` feature a `rediss://` URL is
    /// [`Error::Config`], as is a URL that does not parse (its password hidden).
    ///
    /// Does not connect yet: the first call does, and a Redis that is down is a miss.
    pub fn redis(self, url: &str) -> Result<Cache, Error> {
        self.check()?;
        let breaker = (self.breaker_failures, self.breaker_cooldown);
        let backend = Backend::redis(url, &self.reach, self.settings.timeout, breaker)?;
        self.build(backend)
    }

    /// A cache on a Redis Cluster, reached through `seeds` (any of its nodes; one is enough,
    /// more survive a seed being down): `["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]`.
    ///
    /// Each command goes to the primary serving its key's slot, and redirections (`MOVED`,
    /// `ASK`) during a resharding or after a failover are followed within the call's
    /// `timeout`. An entry and its lock share a slot (see the key format in
    /// [the keys guide](crate::guide::keys)), so the lock's scripts work on a cluster.
    /// `invalidate_prefix` and `_invalidate_all` scan every primary (a node that does not
    /// answer, during a failover, fails them with its error: call again). The circuit breaker
    /// is one per cache: failures of any node count towards it. Connects on the first
    /// call; a cluster that cannot be reached is a miss, as with one node.
    pub fn redis_cluster<S: AsRef<str>>(
        self,
        seeds: impl IntoIterator<Item = S>,
    ) -> Result<Cache, Error> {
        self.check()?;
        let seeds: Vec<String> = seeds.into_iter().map(|s| s.as_ref().to_owned()).collect();
        if seeds.is_empty() {
            return Err(Error::Config(
                "redis_cluster needs at least one seed URL".to_owned(),
            ));
        }
        let breaker = (self.breaker_failures, self.breaker_cooldown);
        let backend = Backend::redis_cluster(&seeds, &self.reach, self.settings.timeout, breaker)?;
        self.build(backend)
    }

    /// A cache on a Sentinel-managed primary: the sentinels at `sentinels` (their URLs,
    /// `["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"]`; one is enough, more survive
    /// one being down) name the primary of `service` (the name of their `sentinel monitor`
    /// line), and the cache talks to it as to a single node.
    ///
    /// After a failover, the first command that fails on the old primary (or that a demoted
    /// one refuses with `READONLY`) has the sentinels asked again, in the background, and
    /// later commands go to the primary they name; the calls that failed meanwhile ran
    /// their bodies, as in any outage, and the circuit breaker may skip Redis for its
    /// cool-down. The builder's `username` and `password` are the primary's; a sentinel's
    /// own go in its URL. Not over TLS in this release (an `Error::Config`). Asks nothing
    /// until the first call. Needs the cargo feature `sentinel` (without it, an
    /// `Error::Config` that names it).
    pub fn redis_sentinel<S: AsRef<str>>(
        self,
        sentinels: impl IntoIterator<Item = S>,
        service: &str,
    ) -> Result<Cache, Error> {
        self.check()?;
        let urls: Vec<String> = sentinels
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect();
        if urls.is_empty() || service.trim().is_empty() {
            return Err(Error::Config(
                "redis_sentinel needs at least one sentinel URL and a service name".to_owned(),
            ));
        }
        #[cfg(not(feature = "sentinel"))]
        return Err(Error::Config(
            "redis_sentinel needs the `sentinel` feature of cache-aside-runtime".to_owned(),
        ));
        #[cfg(feature = "sentinel")]
        {
            let breaker = (self.breaker_failures, self.breaker_cooldown);
            let timeout = self.settings.timeout;
            let backend = Backend::redis_sentinel(&urls, service, &self.reach, timeout, breaker)?;
            self.build(backend)
        }
    }

    /// A cache held in this process: bounded, no Redis needed.
    pub fn memory(self) -> Result<Cache, Error> {
        self.check()?;
        let backend = Backend::memory(self.memory_bytes);
        self.build(backend)
    }

    /// A Redis Cluster at `$REDIS_CLUSTER_URLS` (seed URLs separated by commas) if it is
    /// set, else the primary that the sentinels at `$REDIS_SENTINEL_URLS` (separated by
    /// commas) name for `$REDIS_SENTINEL_SERVICE` if the first is set (the second is then
    /// required: an `Error::Config` without it), else Redis at `$REDIS_URL` if that is set,
    /// else the embedded backend; says which in a `tracing` info line. A variable that is
    /// empty or blank counts as unset (`REDIS_URL=` in a compose file), and spaces around a
    /// URL are dropped.
    pub fn from_env(self) -> Result<Cache, Error> {
        if let Ok(seeds) = std::env::var("REDIS_CLUSTER_URLS")
            && !seeds.trim().is_empty()
        {
            let seeds: Vec<&str> = seeds
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let shown: Vec<String> = seeds.iter().map(|s| redact(s)).collect();
            tracing::info!(seeds = ?shown, "cache-aside: using the Redis Cluster from REDIS_CLUSTER_URLS");
            return self.redis_cluster(seeds);
        }
        if let Ok(urls) = std::env::var("REDIS_SENTINEL_URLS")
            && !urls.trim().is_empty()
        {
            let Ok(service) = std::env::var("REDIS_SENTINEL_SERVICE") else {
                return Err(Error::Config(
                    "REDIS_SENTINEL_URLS is set but REDIS_SENTINEL_SERVICE is not".to_owned(),
                ));
            };
            let urls: Vec<&str> = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect();
            let shown: Vec<String> = urls.iter().map(|s| redact(s)).collect();
            tracing::info!(sentinels = ?shown, %service, "cache-aside: using the Sentinel-managed primary from REDIS_SENTINEL_URLS");
            return self.redis_sentinel(urls, &service);
        }
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.trim().is_empty() => {
                let url = url.trim();
                tracing::info!(url = %redact(url), "cache-aside: using Redis from REDIS_URL");
                self.redis(url)
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
        let engine = Engine::new(backend, self.namespace, self.settings, self.max_refreshes);
        Ok(Cache::from_engine(engine))
    }
}
