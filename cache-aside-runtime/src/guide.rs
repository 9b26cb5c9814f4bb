//! The manual: one page per topic, beyond what the items' own docs say.
//!
//! Start with [`#[cached]`](crate::cached), whose page lists every option with an example
//! and its hand-written equivalent, and with [`Cache`](crate::Cache) and
//! [`CacheBuilder`](crate::CacheBuilder). The pages below explain how the pieces behave
//! together:
//!
//! | page | read it for |
//! |---|---|
//! | [`freshness`] | how long an entry is served: `ttl`, `jitter`, `stale`, `refresh_ahead`, `xfetch`, `fail_safe` |
//! | [`stampedes`] | what happens when many callers miss one key: single-flight, the Redis lock, their bounds |
//! | [`resilience`] | why a cache failure never fails a call: timeouts, the circuit breaker, refused writes, oversized entries |
//! | [`keys`] | what a key looks like, why two calls never share one, what is stored under it, how to invalidate |
//! | [`performance`] | what a hit and a miss cost next to raw redis-rs, how that is measured, the embedded store's memory |
//! | [`troubleshooting`] | from a symptom to the counter or `redis-cli` command that shows it, to the fix |
//! | [`patterns`] | the specs' seven pitfalls and the option for each, the caching patterns, security, the `cached` crate's options in ours |
//!
//! The pages are written in `docs/` at the repository root, so they read on GitHub as well.

#[doc = include_str!("../../docs/freshness.md")]
pub mod freshness {}

#[doc = include_str!("../../docs/stampedes.md")]
pub mod stampedes {}

#[doc = include_str!("../../docs/resilience.md")]
pub mod resilience {}

#[doc = include_str!("../../docs/keys.md")]
pub mod keys {}

#[doc = include_str!("../../docs/performance.md")]
pub mod performance {}

#[doc = include_str!("../../docs/troubleshooting.md")]
pub mod troubleshooting {}

#[doc = include_str!("../../docs/patterns.md")]
pub mod patterns {}
