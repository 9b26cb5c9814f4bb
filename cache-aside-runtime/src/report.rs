//! Logging of cache failures without flooding: every failure at `debug`, and at most one
//! `warn` per interval per cache, carrying how many were folded into it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::error::{Chain, Error};

const WARN_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct Reporter {
    /// Milliseconds since `epoch()` of the last warning, plus one (0: never warned).
    last_warn: AtomicU64,
    folded: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter::new()
    }
}

impl Reporter {
    pub(crate) const fn new() -> Self {
        Reporter {
            last_warn: AtomicU64::new(0),
            folded: AtomicU64::new(0),
        }
    }

    pub(crate) fn report(&self, op: &'static str, key: &str, error: &Error) {
        let chain = Chain(error);
        tracing::debug!(op, key, error = %chain, "cache-aside: cache operation failed; the call goes on without it");
        let now = epoch().elapsed().as_millis() as u64 + 1;
        let last = self.last_warn.load(Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .last_warn
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            let folded = self.folded.swap(0, Relaxed);
            // A key's, a value's or an entry's serde error can quote the data (a custom
            // `Serialize` message, "invalid type: string \"...\""): at `warn`, only what
            // failed; the cause is in the `debug` line.
            let error: &dyn std::fmt::Display = match error {
                Error::Key(_) | Error::Encode(_) | Error::Decode(_) => error,
                _ => &chain,
            };
            tracing::warn!(
                op,
                key_prefix = key_prefix(key),
                %error,
                similar_since_last_warning = folded,
                "cache-aside: cache operation failed; the call goes on without it"
            );
        } else {
            self.folded.fetch_add(1, Relaxed);
        }
    }
}

/// `{namespace}:{prefix}` of a key, for lines at `info` and above: the arguments part holds
/// user data, so only `debug` lines carry a whole key.
pub(crate) fn key_prefix(key: &str) -> &str {
    match key.match_indices(':').nth(1) {
        Some((at, _)) => &key[..at],
        None => key,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_prefix_leaves_the_arguments_out() {
        assert_eq!(super::key_prefix("ca:user:ada@example.com"), "ca:user");
        assert_eq!(super::key_prefix("ca:user:a:b"), "ca:user");
        assert_eq!(super::key_prefix("ca:user"), "ca:user");
    }
}
