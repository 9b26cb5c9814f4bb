//! A call's time on the backend: one deadline for its read, what is left of it for its
//! writes.

use std::time::Duration;

use super::redis::deadline;

/// A deadline, and the timeout it was made from (for the error that reports it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// When it was made, on Tokio's clock (which tests may pause), like every time the
    /// engine compares.
    pub(crate) started: tokio::time::Instant,
    pub(crate) until: tokio::time::Instant,
    pub(crate) of: Duration,
}

impl Budget {
    /// `timeout` from now: one clock read, which the hit path also uses for its write.
    pub(crate) fn from_now(timeout: Duration) -> Self {
        let started = tokio::time::Instant::now();
        Budget {
            started,
            until: started + deadline::capped(timeout),
            of: timeout,
        }
    }

    /// What is left of it.
    pub(crate) fn left(&self) -> Duration {
        self.until
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

impl From<Duration> for Budget {
    fn from(timeout: Duration) -> Self {
        Budget::from_now(timeout)
    }
}
