//! The range and default of every setting of [cache-aside], defined once.
//!
//! Both `CacheBuilder` (in `cache-aside-runtime`, at run time) and the `#[cached]`
//! attribute (in `cache-aside-macros`, at compile time) check a value against the same
//! [`Setting`], so a value is accepted or refused alike on both. A proc-macro crate cannot
//! export anything but macros, and the runtime depends on the macros, so the table lives in
//! this crate of its own, which both depend on. Use it through the runtime, which
//! re-exports the bounds as `cache_aside_runtime::limits`.
//!
//! [cache-aside]: https://docs.rs/cache-aside-runtime

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::time::Duration;

/// The longest entry lifetime, window or wait a setting may hold: every duration setting
/// but `timeout`. Bounded so that an expiry or a deadline computed from it cannot overflow.
pub const LONGEST: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The shortest duration any setting may hold.
pub const SHORTEST: Duration = Duration::from_millis(1);

/// The most background refreshes that may run at once.
pub const MAX_REFRESHES: usize = 1 << 20;

/// The largest `jitter`: a TTL spread by more than half would expire some entries at once
/// and keep others twice as long.
pub const MAX_JITTER: f64 = 0.5;

/// The largest XFetch beta: beyond it nearly every hit would refresh.
pub const MAX_XFETCH: f64 = 10.0;

/// What values a setting takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Range {
    /// A duration from [`SHORTEST`] to `max`.
    Duration {
        /// The longest accepted.
        max: Duration,
    },
    /// A float between `min` and `max`, each end included or not.
    Fraction {
        /// The lower end.
        min: f64,
        /// Whether `min` itself is accepted.
        min_inclusive: bool,
        /// The upper end.
        max: f64,
        /// Whether `max` itself is accepted.
        max_inclusive: bool,
    },
    /// A whole number from 1 to `max`.
    Count {
        /// The largest accepted.
        max: u64,
    },
}

/// One setting: its name (as the builder method and the attribute option spell it), its
/// range, and its default where it has one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Setting {
    /// The builder method's and the attribute option's name.
    pub name: &'static str,
    /// The values it takes.
    pub range: Range,
}

const fn duration(name: &'static str) -> Setting {
    Setting {
        name,
        range: Range::Duration { max: LONGEST },
    }
}

/// `ttl`, and the builder's `default_ttl`.
pub const TTL: Setting = duration("ttl");
/// The builder's `default_ttl`: the range of `ttl`.
pub const DEFAULT_TTL: Setting = duration("default_ttl");
/// `none_ttl`.
pub const NONE_TTL: Setting = duration("none_ttl");
/// `stale`.
pub const STALE: Setting = duration("stale");
/// `fail_safe`.
pub const FAIL_SAFE: Setting = duration("fail_safe");
/// `fail_safe_backoff` (builder only).
pub const FAIL_SAFE_BACKOFF: Setting = duration("fail_safe_backoff");
/// `lock_ttl` (builder only).
pub const LOCK_TTL: Setting = duration("lock_ttl");
/// `lock_wait` (builder only).
pub const LOCK_WAIT: Setting = duration("lock_wait");
/// `flight_wait`.
pub const FLIGHT_WAIT: Setting = duration("flight_wait");
/// The breaker's cool-down (builder only).
pub const BREAKER_COOLDOWN: Setting = duration("breaker cooldown");
/// `timeout`: any length, `Duration::MAX` meaning none. The runtime caps the deadline it
/// computes from it; no expiry is computed from it.
pub const TIMEOUT: Setting = Setting {
    name: "timeout",
    range: Range::Duration { max: Duration::MAX },
};
/// `jitter`: 0 (off) to [`MAX_JITTER`].
pub const JITTER: Setting = Setting {
    name: "jitter",
    range: Range::Fraction {
        min: 0.0,
        min_inclusive: true,
        max: MAX_JITTER,
        max_inclusive: true,
    },
};
/// `refresh_ahead`: strictly between 0 and 1.
pub const REFRESH_AHEAD: Setting = Setting {
    name: "refresh_ahead",
    range: Range::Fraction {
        min: 0.0,
        min_inclusive: false,
        max: 1.0,
        max_inclusive: false,
    },
};
/// `xfetch`: above 0, at most [`MAX_XFETCH`].
pub const XFETCH: Setting = Setting {
    name: "xfetch",
    range: Range::Fraction {
        min: 0.0,
        min_inclusive: false,
        max: MAX_XFETCH,
        max_inclusive: true,
    },
};
/// `max_value_bytes`.
pub const MAX_VALUE_BYTES: Setting = Setting {
    name: "max_value_bytes",
    range: Range::Count { max: u64::MAX },
};
/// `memory_max_bytes` (builder only).
pub const MEMORY_MAX_BYTES: Setting = Setting {
    name: "memory_max_bytes",
    range: Range::Count { max: u64::MAX },
};
/// `max_refreshes` (builder only).
pub const MAX_REFRESHES_SETTING: Setting = Setting {
    name: "max_refreshes",
    range: Range::Count {
        max: MAX_REFRESHES as u64,
    },
};
/// The breaker's failure threshold (builder only).
pub const BREAKER_FAILURES: Setting = Setting {
    name: "breaker failures",
    range: Range::Count {
        max: u32::MAX as u64,
    },
};

/// Every setting, for tests that check each one.
pub const ALL: [Setting; 18] = [
    TTL,
    DEFAULT_TTL,
    NONE_TTL,
    STALE,
    FAIL_SAFE,
    FAIL_SAFE_BACKOFF,
    LOCK_TTL,
    LOCK_WAIT,
    FLIGHT_WAIT,
    BREAKER_COOLDOWN,
    TIMEOUT,
    JITTER,
    REFRESH_AHEAD,
    XFETCH,
    MAX_VALUE_BYTES,
    MEMORY_MAX_BYTES,
    MAX_REFRESHES_SETTING,
    BREAKER_FAILURES,
];

impl Setting {
    /// Is `value` in range? Only for duration settings; any duration is out of range for
    /// another kind.
    pub const fn takes_duration(&self, value: Duration) -> bool {
        match self.range {
            Range::Duration { max } => {
                value.as_nanos() >= SHORTEST.as_nanos() && value.as_nanos() <= max.as_nanos()
            }
            _ => false,
        }
    }

    /// Is `value` in range? Only for fraction settings (`NaN` never is, nor `-0.0`: the
    /// attribute cannot take a negative number, so the builder does not either).
    pub const fn takes_fraction(&self, value: f64) -> bool {
        if value.is_sign_negative() {
            return false;
        }
        match self.range {
            Range::Fraction {
                min,
                min_inclusive,
                max,
                max_inclusive,
            } => {
                let above = if min_inclusive {
                    value >= min
                } else {
                    value > min
                };
                let below = if max_inclusive {
                    value <= max
                } else {
                    value < max
                };
                above && below
            }
            _ => false,
        }
    }

    /// Is `value` in range? Only for count settings.
    pub const fn takes_count(&self, value: u64) -> bool {
        match self.range {
            Range::Count { max } => value >= 1 && value <= max,
            _ => false,
        }
    }

    /// The range in words, for error messages: `between 1 ms and 365 days`.
    pub fn describe(&self) -> String {
        match self.range {
            Range::Duration { max } if max == Duration::MAX => {
                "at least 1 ms (Duration::MAX for none)".to_owned()
            }
            Range::Duration { max } if max == LONGEST => "between 1 ms and 365 days".to_owned(),
            Range::Duration { max } => format!("between 1 ms and {max:?}"),
            Range::Fraction {
                min,
                min_inclusive,
                max,
                max_inclusive,
            } => match (min_inclusive, max_inclusive) {
                (true, true) => format!("between {min} and {max}"),
                (false, false) => format!("strictly between {min} and {max}"),
                (false, true) => format!("greater than {min} and at most {max}"),
                (true, false) => format!("at least {min} and below {max}"),
            },
            Range::Count { max } => format!("between 1 and {max}"),
        }
    }
}

/// The defaults of the settings that have one, used by `CacheBuilder::default`.
pub mod defaults {
    use std::time::Duration;

    /// The key namespace.
    pub const NAMESPACE: &str = "ca";
    /// Bound on each cache operation.
    pub const TIMEOUT: Duration = Duration::from_millis(250);
    /// Size cap of the embedded backend: 64 MiB.
    pub const MEMORY_MAX_BYTES: u64 = 64 << 20;
    /// Largest entry stored: 8 MiB.
    pub const MAX_VALUE_BYTES: u64 = 8 << 20;
    /// TTL spread: off.
    pub const JITTER: f64 = 0.0;
    /// How long a fail-safe answer is served before the body is tried again.
    pub const FAIL_SAFE_BACKOFF: Duration = Duration::from_secs(5);
    /// Whether misses take the distributed lock.
    pub const LOCK: bool = false;
    /// How long a lock lives unless extended.
    pub const LOCK_TTL: Duration = Duration::from_secs(5);
    /// Longest wait for another process's load.
    pub const LOCK_WAIT: Duration = Duration::from_secs(5);
    /// Longest wait for another caller's load in this process.
    pub const FLIGHT_WAIT: Duration = Duration::from_secs(5);
    /// Consecutive failures that open the breaker.
    pub const BREAKER_FAILURES: u32 = 5;
    /// How long an open breaker skips Redis.
    pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(2);
    /// Background refreshes at once.
    pub const MAX_REFRESHES: usize = 64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_in_range() {
        let d = |s: Setting, v| assert!(s.takes_duration(v), "{}", s.name);
        d(TIMEOUT, defaults::TIMEOUT);
        d(FAIL_SAFE_BACKOFF, defaults::FAIL_SAFE_BACKOFF);
        d(LOCK_TTL, defaults::LOCK_TTL);
        d(LOCK_WAIT, defaults::LOCK_WAIT);
        d(FLIGHT_WAIT, defaults::FLIGHT_WAIT);
        d(BREAKER_COOLDOWN, defaults::BREAKER_COOLDOWN);
        assert!(JITTER.takes_fraction(defaults::JITTER));
        assert!(MAX_VALUE_BYTES.takes_count(defaults::MAX_VALUE_BYTES));
        assert!(MEMORY_MAX_BYTES.takes_count(defaults::MEMORY_MAX_BYTES));
        assert!(MAX_REFRESHES_SETTING.takes_count(defaults::MAX_REFRESHES as u64));
        assert!(BREAKER_FAILURES.takes_count(u64::from(defaults::BREAKER_FAILURES)));
    }

    #[test]
    fn ranges_take_their_ends_as_documented() {
        assert!(!TTL.takes_duration(Duration::ZERO));
        assert!(TTL.takes_duration(SHORTEST) && TTL.takes_duration(LONGEST));
        assert!(!TTL.takes_duration(LONGEST + SHORTEST));
        assert!(TIMEOUT.takes_duration(Duration::MAX));
        assert!(JITTER.takes_fraction(0.0) && JITTER.takes_fraction(0.5));
        assert!(!JITTER.takes_fraction(-0.0), "refused by the attribute too");
        assert!(!JITTER.takes_fraction(0.51) && !JITTER.takes_fraction(f64::NAN));
        assert!(!REFRESH_AHEAD.takes_fraction(0.0) && !REFRESH_AHEAD.takes_fraction(1.0));
        assert!(XFETCH.takes_fraction(10.0) && !XFETCH.takes_fraction(0.0));
        assert!(!MAX_VALUE_BYTES.takes_count(0) && MAX_VALUE_BYTES.takes_count(u64::MAX));
        assert!(!TTL.takes_fraction(0.1) && !JITTER.takes_count(1));
        for setting in ALL {
            assert!(!setting.describe().is_empty());
        }
    }
}
