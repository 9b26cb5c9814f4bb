//! The cache-wide settings a function's own options override, as the builder checked them.
//! Their ranges and defaults are defined once, in `cache-aside-settings` (see
//! [`limits`](crate::limits)).

use std::time::Duration;

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
    /// Loads store only under their lease; `false` only in tests of the race it closes.
    pub(crate) fenced: bool,
    /// Misses pause at random between the steps where another call's write can slip in;
    /// `true` only in tests that look for interleavings a quiet machine rarely makes.
    pub(crate) pauses: bool,
    /// Calls record their time (feature `metrics`); `false` only in the bench's row that
    /// measures what recording costs.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) timed: bool,
}

impl Default for Settings {
    fn default() -> Self {
        use cache_aside_settings::defaults;
        Settings {
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
            fenced: true,
            pauses: false,
            timed: true,
        }
    }
}
