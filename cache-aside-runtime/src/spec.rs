//! What `#[cached]` knows about one function, as a `static` in the generated code.
//!
//! Generated code builds it with [`FnSpec::new`] and one `const` setter per option the
//! attribute gives; options left out fall back to the [`Cache`](crate::Cache)'s settings.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The static description of one cached function. Built by generated code only.
#[doc(hidden)]
pub struct FnSpec {
    module_path: &'static str,
    name: &'static str,
    prefix: Option<&'static str>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) none_ttl: Option<Duration>,
    pub(crate) stale: Option<Duration>,
    /// Bare `stale`: the window is the cache's `.stale(..)`.
    pub(crate) stale_from_cache: bool,
    pub(crate) refresh_ahead: Option<f64>,
    /// Bare `refresh_ahead`: the fraction is the cache's `.refresh_ahead(..)`.
    pub(crate) refresh_ahead_from_cache: bool,
    /// `xfetch = beta`.
    pub(crate) xfetch: Option<f64>,
    /// How long this function's body last took to load, in microseconds: XFetch's delta.
    last_load_us: AtomicU64,
    pub(crate) fail_safe: Option<Duration>,
    pub(crate) jitter: Option<f64>,
    pub(crate) lock: Option<bool>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_value_bytes: Option<u64>,
    derived_prefix: OnceLock<Box<str>>,
    /// The policy resolved with the first cache this function ran with (by cache id).
    policy: OnceLock<(u64, bool, crate::policy::Policy)>,
}

impl std::fmt::Debug for FnSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FnSpec({}::{})", self.module_path, self.name)
    }
}

impl FnSpec {
    pub const fn new(
        module_path: &'static str,
        name: &'static str,
        prefix: Option<&'static str>,
    ) -> Self {
        FnSpec {
            module_path,
            name,
            prefix,
            ttl: None,
            none_ttl: None,
            stale: None,
            stale_from_cache: false,
            refresh_ahead: None,
            refresh_ahead_from_cache: false,
            xfetch: None,
            last_load_us: AtomicU64::new(0),
            fail_safe: None,
            jitter: None,
            lock: None,
            timeout: None,
            max_value_bytes: None,
            derived_prefix: OnceLock::new(),
            policy: OnceLock::new(),
        }
    }

    /// `ttl = ...`
    pub const fn ttl_ms(mut self, ms: u64) -> Self {
        self.ttl = Some(Duration::from_millis(ms));
        self
    }

    /// `none_ttl = ...`
    pub const fn none_ttl_ms(mut self, ms: u64) -> Self {
        self.none_ttl = Some(Duration::from_millis(ms));
        self
    }

    /// `stale = ...`: serve an expired value this long while one background refresh runs.
    pub const fn stale_ms(mut self, ms: u64) -> Self {
        self.stale = Some(Duration::from_millis(ms));
        self
    }

    /// Bare `stale`: serve stale for the window set by `CacheBuilder::stale`.
    pub const fn stale_from_cache(mut self) -> Self {
        self.stale_from_cache = true;
        self
    }

    /// Bare `refresh_ahead`: refresh at the fraction set by `CacheBuilder::refresh_ahead`.
    pub const fn refresh_ahead_from_cache(mut self) -> Self {
        self.refresh_ahead_from_cache = true;
        self
    }

    /// `xfetch = 1.0`: a hit refreshes early with a probability that rises as expiry nears,
    /// scaled by the body's last load time (XFetch).
    pub const fn xfetch(mut self, beta: f64) -> Self {
        self.xfetch = Some(beta);
        self
    }

    /// The policy for `cache`, when it is the one remembered. Remembers the first it is
    /// asked with.
    pub(crate) fn remembered_policy(
        &'static self,
        cache: &crate::Cache,
        surface_errors: bool,
    ) -> Option<&'static crate::policy::Policy> {
        let id = cache.inner.id;
        let (of, surface, policy) = match self.policy.get() {
            Some(found) => found,
            None => {
                let policy =
                    crate::policy::Policy::resolve(self, &cache.inner.settings, surface_errors)?;
                self.policy.get_or_init(|| (id, surface_errors, policy))
            }
        };
        (*of == id && *surface == surface_errors).then_some(policy)
    }

    /// The body's last load time.
    pub(crate) fn last_load(&self) -> Duration {
        Duration::from_micros(self.last_load_us.load(Relaxed))
    }

    /// Notes how long a load of this function took.
    pub(crate) fn loaded_in(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_load_us.store(us, Relaxed);
    }

    /// `refresh_ahead = 0.8`: a hit past this fraction of the TTL refreshes in the background.
    pub const fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.refresh_ahead = Some(fraction);
        self
    }

    /// `fail_safe = ...`: keep expired values this long to answer when the body fails.
    pub const fn fail_safe_ms(mut self, ms: u64) -> Self {
        self.fail_safe = Some(Duration::from_millis(ms));
        self
    }

    /// `jitter = 0.1`: spread each TTL by up to ±10%.
    pub const fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = Some(fraction);
        self
    }

    /// `lock = true|false`: take a distributed lock before loading.
    pub const fn lock(mut self, on: bool) -> Self {
        self.lock = Some(on);
        self
    }

    /// `timeout = ...`: bound on each cache read or write of this function.
    pub const fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout = Some(Duration::from_millis(ms));
        self
    }

    /// `max_value_bytes = ...`: larger entries are returned but not stored.
    pub const fn max_value_bytes(mut self, bytes: u64) -> Self {
        self.max_value_bytes = Some(bytes);
        self
    }

    /// The key prefix: the attribute's `prefix`, else the function's path with `.` for `::`.
    /// Methods (`self_type` given) use the `Self` type's path instead of the module's, so
    /// `Users::get` and `Orders::get` in one module never share keys.
    pub(crate) fn prefix(&self, self_type: Option<fn() -> &'static str>) -> &str {
        if let Some(prefix) = self.prefix {
            return prefix;
        }
        self.derived_prefix.get_or_init(|| {
            let owner = self_type.map_or(self.module_path, |type_name| type_name());
            derive_prefix(owner, self.name).into_boxed_str()
        })
    }
}

/// `my_app::repo::Users<T>` + `get` → `my_app.repo.Users.get`: generic arguments dropped
/// (statics are shared by all instantiations), `::` as `.`, anything outside the key-safe
/// set as `_`.
fn derive_prefix(owner: &str, name: &str) -> String {
    let owner = owner
        .split('<')
        .next()
        .unwrap_or(owner)
        .trim_start_matches(['&', '*']);
    let mut out = owner.replace("::", ".");
    out.push('.');
    out.push_str(name);
    out.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_prefixes_from_paths() {
        assert_eq!(derive_prefix("app::repo", "get_user"), "app.repo.get_user");
        assert_eq!(
            derive_prefix("app::Users<alloc::string::String>", "get"),
            "app.Users.get"
        );
        assert_eq!(derive_prefix("&app::Users", "get"), "app.Users.get");
        assert_eq!(derive_prefix("r#try", "r#fn"), "r_try.r_fn");
    }

    #[test]
    fn explicit_prefix_wins_and_derived_one_is_cached() {
        static SPEC: FnSpec = FnSpec::new("m", "f", Some("user")).ttl_ms(60_000);
        assert_eq!(SPEC.prefix(None), "user");
        assert_eq!(SPEC.ttl, Some(Duration::from_secs(60)));
        assert_eq!(SPEC.none_ttl, None);
        let spec = FnSpec::new("app::m", "f", None);
        assert_eq!(spec.prefix(Some(|| "app::Repo")), "app.Repo.f");
        assert_eq!(spec.prefix(None), "app.Repo.f");
    }

    #[test]
    fn setters_are_usable_in_statics() {
        static SPEC: FnSpec = FnSpec::new("m", "f", None)
            .stale_ms(1_000)
            .refresh_ahead(0.8)
            .fail_safe_ms(2_000)
            .jitter(0.1)
            .lock(true)
            .timeout_ms(50)
            .max_value_bytes(1 << 20);
        assert_eq!(SPEC.stale, Some(Duration::from_secs(1)));
        assert_eq!(SPEC.refresh_ahead, Some(0.8));
        assert_eq!(SPEC.lock, Some(true));
        assert_eq!(SPEC.max_value_bytes, Some(1 << 20));
    }
}
