//! Cache-aside in one attribute.
//!
//! ```no_run
//! use cache_aside_runtime::{Cache, cached};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct User;
//! # #[derive(Debug)] struct DbError;
//! # async fn load_user_from_db(id: u64) -> Result<User, DbError> { Ok(User) }
//!
//! #[cached(ttl = 60, prefix = "user")]
//! async fn get_user(id: u64) -> Result<User, DbError> {
//!     load_user_from_db(id).await
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! Cache::from_env()?.set_default()?; // Redis at $REDIS_URL, else in-process
//! let user = get_user(42).await;     // miss: runs the body, stores `Ok` for 60 s
//! let again = get_user(42).await;    // hit: one GET, no database
//! get_user_invalidate(42).await?;    // the next call reloads
//! # Ok(()) }
//! ```
//!
//! [`#[cached]`](cached) rewrites an `async fn` into: build the key from the arguments, read
//! the cache, on a miss run the original body, store the result with its TTL, return it.
//! This crate is the engine behind it, in stages that each do one job (see
//! `docs/architecture.md` in the repository for the whole layout):
//!
//! | stage | job |
//! |---|---|
//! | key | `{namespace}:{prefix}:{arguments}`, escaped, deterministic and injective |
//! | policy | a function's options over its cache's settings; freshness rules |
//! | engine | the get-or-load path, step by step; fails open on every cache error |
//! | flight | concurrent misses on one key share one load (single-flight) |
//! | lease | one loader per key across processes, and loads overtaken by an invalidation or a put store nothing (a token in the entry) |
//! | write | [`#[cache_evict]`](cache_evict) and [`#[cache_put]`](cache_put): a write evicts or stores the entries of the reads it names, with the reads' own keys |
//! | tags | entries carry tags (`tags = ["user:{id}"]`); one invalidation removes every entry of a tag, race-free ([`tag`]) |
//! | batch | many keys in one round trip, one body call for the misses ([`batch`]) |
//! | refresh | bounded background refreshes: stale-while-revalidate, refresh-ahead, XFetch |
//! | envelope | JSON inside a small versioned header with a fresh-until time ([`inspect`]) |
//! | backend | Redis, one node or a cluster (breaker, deadlines, scans of every primary), or the embedded store |
//!
//! A cache never fails a call: when Redis is down, slow, or holds garbage, the function
//! body runs and its result is returned; the failure is logged (rate-limited) and counted
//! in [`Cache::stats`] (per function: [`Cache::stats_by_function`]).
//!
//! The [`guide`] has a page per topic: freshness, stampedes, resilience, keys,
//! troubleshooting, performance, patterns.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
pub mod batch;
mod cache;
mod engine;
mod envelope;
mod error;
mod events;
mod exact;
mod flight;
pub mod guide;
pub mod inspect;
mod key;
mod keyspace;
pub mod limits;
#[cfg(feature = "metrics")]
pub mod metrics;
mod policy;
mod report;
mod reuse;
mod settings;
mod shape;
mod spec;
mod stats;
pub mod tag;

#[doc(hidden)]
#[path = "private/mod.rs"]
pub mod __private;

pub use cache_aside_macros::{cache_evict, cache_put, cached};

pub use crate::backend::redis::breaker::BreakerState;
pub use crate::cache::{
    Cache, CacheBuilder, DEFAULT_MAX_VALUE_BYTES, DEFAULT_MEMORY_BYTES, DEFAULT_NAMESPACE,
    DEFAULT_TIMEOUT,
};
pub use crate::error::{Cause, Error};
pub use crate::stats::{FunctionStats, Stats};
