//! The one error type of the runtime.
//!
//! The engine never returns these from a cached call: a cached function fails open, running
//! its body when the cache cannot help. They surface from the APIs that are about the cache
//! itself: building a [`Cache`](crate::Cache), invalidation, key companions, `ttl_of`.

use std::time::Duration;

/// The cause carried by [`Error::Encode`], [`Error::Decode`] and [`Error::Key`], as their
/// [`source`](std::error::Error::source): serde's error, or our description of a malformed
/// entry. Boxed so that other codecs can bring their own error types. Their `Display` says
/// what failed and leaves the cause to `source()`, so an error reporter that prints the
/// chain (`anyhow`'s `{:#}`) shows each part once; this crate's own logs print the chain.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in the cache layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis answered with an error, or the connection failed.
    ///
    /// redis-rs's own error stays in the API on purpose: it says which command failed and
    /// how (`is_timeout`, `is_connection_refusal`, the server's error code), and this crate
    /// is built on redis-rs 1.x, which follows semver. [`Error::is_timeout`] and
    /// [`Error::is_connection`] answer the common questions without naming it.
    #[error("Redis error")]
    Redis(#[from] redis::RedisError),
    /// The circuit breaker is open: Redis failed repeatedly and is skipped for a cool-down.
    #[error("circuit open: Redis is skipped after repeated failures")]
    CircuitOpen,
    /// A cache operation took longer than the configured timeout.
    #[error("cache operation timed out after {0:?}")]
    Timeout(Duration),
    /// A value could not be encoded for storage.
    #[error("could not encode the value")]
    Encode(#[source] Cause),
    /// A stored value could not be decoded (corrupt, truncated, or another schema).
    #[error("could not decode the cached value")]
    Decode(#[source] Cause),
    /// A key argument's `Serialize` impl failed.
    #[error("could not build the key")]
    Key(#[source] Cause),
    /// `#[cached]` without `cache = ...` ran before a default cache was set.
    #[error(
        "no default cache is set: call `Cache::set_default` (or pass `cache = ...` to #[cached]) before the first cached call"
    )]
    NoDefaultCache,
    /// `Cache::set_default` was called twice.
    #[error("the default cache is already set")]
    DefaultAlreadySet,
    /// Neither the function nor the cache has a TTL.
    #[error("no TTL: give #[cached] a `ttl = ...` or the cache a `default_ttl`")]
    NoTtl,
    /// [`Cache::invalidate`](crate::Cache::invalidate) or
    /// [`Cache::ttl_of`](crate::Cache::ttl_of) was given a key of another namespace.
    #[error("key {key:?} is outside this cache's namespace {namespace:?}")]
    OutsideNamespace {
        /// The key given.
        key: String,
        /// The cache's namespace.
        namespace: String,
    },
    /// Another `#[cached]` function can write this function's keys (a shared `prefix`
    /// with layouts that can render one text): both run uncached in this process until one
    /// gets its own prefix.
    #[error(
        "`{function}` can write the same keys as another cached function under prefix {prefix:?}; it runs uncached until one of them gets its own `prefix`"
    )]
    SharedKeys {
        /// The function called.
        function: &'static str,
        /// The prefix both write under.
        prefix: String,
    },
    /// A builder setting is invalid.
    #[error("invalid cache configuration: {0}")]
    Config(String),
}

impl Error {
    /// Did the operation time out (ours, or redis-rs's response timeout)?
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Redis(e) => e.is_timeout(),
            _ => false,
        }
    }

    /// Did Redis refuse a write for want of memory (`OOM`: `maxmemory` reached under the
    /// `noeviction` policy)? Counted in `Stats::store_errors`.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, Error::Redis(e) if e.code() == Some("OOM"))
    }

    /// Did a replica refuse a write (`READONLY`: the URL names a replica, or a primary that
    /// was demoted)?
    pub(crate) fn is_read_only(&self) -> bool {
        matches!(self, Error::Redis(e) if e.code() == Some("READONLY"))
    }

    /// Did Redis find another type than a string at the key (`WRONGTYPE`: a list, a hash...
    /// written there by something else)?
    pub(crate) fn is_wrong_type(&self) -> bool {
        matches!(self, Error::Redis(e) if e.code() == Some("WRONGTYPE"))
    }

    /// Is this a connection problem (refused, reset, dropped) rather than a bad command?
    pub fn is_connection(&self) -> bool {
        matches!(self, Error::Redis(e) if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped())
    }

    /// Was the stored value unreadable? The engine counts these as corrupt entries.
    pub fn is_decode(&self) -> bool {
        matches!(self, Error::Decode(_))
    }
}

/// An error and its causes, `: `-separated, for log lines.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut said = self.0.to_string();
        f.write_str(&said)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            // A wrapper that displays as its cause (redis-rs's errors do) would print it
            // twice.
            let this = error.to_string();
            if this != said {
                write!(f, ": {this}")?;
            }
            said = this;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// A cause is the error's `source()`, not part of its message, so a chain is printed
    /// with each part once.
    #[test]
    fn causes_are_sources_printed_once() {
        let json = serde_json::from_slice::<u8>(b"x").unwrap_err();
        let error = Error::Decode(json.into());
        assert_eq!(error.to_string(), "could not decode the cached value");
        let cause = error.source().expect("the serde error");
        assert!(cause.to_string().contains("expected value"), "{cause}");
        let chain = Chain(&error).to_string();
        assert_eq!(chain, format!("could not decode the cached value: {cause}"));
        // redis-rs's error displays as its own cause: said once.
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused here");
        let redis = Error::Redis(redis::RedisError::from(io));
        assert_eq!(Chain(&redis).to_string(), "Redis error: refused here");
    }
}
