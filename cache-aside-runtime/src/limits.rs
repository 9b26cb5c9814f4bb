//! The range of every setting: [`CacheBuilder`](crate::CacheBuilder) checks each value
//! against it when the cache is built, and the `#[cached]` attribute checks its options
//! against the same table at compile time (both read `cache-aside-settings`), so a value is
//! accepted or refused alike on both. An out-of-range value is an [`Error::Config`] naming
//! the setting and its range, never a later panic: every duration is bounded so that a
//! deadline or an expiry computed from it cannot overflow.

use std::time::Duration;

use cache_aside_settings::Setting;
pub use cache_aside_settings::{LONGEST, MAX_JITTER, MAX_REFRESHES, MAX_XFETCH};

use crate::error::Error;

/// A duration setting's value in its range.
pub(crate) fn duration(setting: Setting, value: Duration) -> Result<(), Error> {
    match setting.takes_duration(value) {
        true => Ok(()),
        false => Err(out_of_range(setting, format_args!("{value:?}"))),
    }
}

/// A fraction setting's value in its range.
pub(crate) fn fraction(setting: Setting, value: f64) -> Result<(), Error> {
    match setting.takes_fraction(value) {
        true => Ok(()),
        false => Err(out_of_range(setting, format_args!("{value}"))),
    }
}

/// A count setting's value in its range.
pub(crate) fn count(setting: Setting, value: u64) -> Result<(), Error> {
    match setting.takes_count(value) {
        true => Ok(()),
        false => Err(out_of_range(setting, format_args!("{value}"))),
    }
}

#[cold]
fn out_of_range(setting: Setting, got: std::fmt::Arguments<'_>) -> Error {
    Error::Config(format!(
        "{} must be {}, got {got}",
        setting.name,
        setting.describe()
    ))
}
