//! The range of every setting, in one place: [`CacheBuilder`](crate::CacheBuilder) checks
//! each value against it when the cache is built, and the `#[cached]` attribute's checks
//! (in `cache-aside-macros/src/args.rs`) use the same bounds, so a value is accepted or
//! refused alike on both. An out-of-range value is an [`Error::Config`] naming the setting
//! and its range, never a later panic: every duration is bounded so that a deadline or an
//! expiry computed from it cannot overflow.

use std::time::Duration;

use crate::error::Error;

/// The longest entry lifetime, window or wait a setting may hold: `ttl`, `none_ttl`,
/// `stale`, `fail_safe`, `fail_safe_backoff`, `lock_ttl`, `lock_wait`, `flight_wait` and the
/// breaker's cool-down. The attribute's duration options use the same bound.
pub const LONGEST: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The most background refreshes that may run at once.
pub const MAX_REFRESHES: usize = 1 << 20;

/// The largest `jitter`: a TTL spread by more than half would expire some entries at
/// once and keep others twice as long.
pub const MAX_JITTER: f64 = 0.5;

/// A duration in `[1 ms, LONGEST]`.
pub(crate) fn duration(name: &str, value: Duration) -> Result<(), Error> {
    if value < Duration::from_millis(1) || value > LONGEST {
        return Err(Error::Config(format!(
            "{name} must be between 1 ms and 365 days, got {value:?}"
        )));
    }
    Ok(())
}

/// A timeout: at least 1 ms; `Duration::MAX` means none.
pub(crate) fn timeout(value: Duration) -> Result<(), Error> {
    if value < Duration::from_millis(1) {
        return Err(Error::Config(format!(
            "timeout must be at least 1 ms (Duration::MAX for none), got {value:?}"
        )));
    }
    Ok(())
}

/// `jitter`: in `[0, MAX_JITTER]`, 0 being off.
pub(crate) fn jitter(value: f64) -> Result<(), Error> {
    if !(0.0..=MAX_JITTER).contains(&value) {
        return Err(Error::Config(format!(
            "jitter must be between 0 and 0.5, got {value}"
        )));
    }
    Ok(())
}

/// `refresh_ahead`: strictly between 0 and 1.
pub(crate) fn refresh_ahead(value: f64) -> Result<(), Error> {
    if !(value > 0.0 && value < 1.0) {
        return Err(Error::Config(format!(
            "refresh_ahead must be strictly between 0 and 1, got {value}"
        )));
    }
    Ok(())
}

/// A count in `[1, max]`.
pub(crate) fn count(name: &str, value: u64, max: u64) -> Result<(), Error> {
    if value == 0 || value > max {
        return Err(Error::Config(format!(
            "{name} must be between 1 and {max}, got {value}"
        )));
    }
    Ok(())
}
