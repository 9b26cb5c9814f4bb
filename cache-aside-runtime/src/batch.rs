//! Batch reads: many keys in one round trip, one body call for those that missed.
//!
//! Two doors lead to the same stage of the engine:
//!
//! - `#[cached(batch, ...)]` on an `async fn` whose one key argument is a collection of
//!   keys ([`BatchKeys`]: `&[K]`, `Vec<K>`, `&Vec<K>`, `HashSet<K>`, `BTreeSet<K>`) and
//!   whose return type is a map from key to value ([`BatchMap`]: `HashMap<K, V>`,
//!   `BTreeMap<K, V>`), or a `Result` of one. Its body is run with that argument holding
//!   only the keys that missed.
//! - [`Cache::get_many`](crate::Cache::get_many) with a [`Batch`] for code that is not a
//!   function of its own.
//!
//! ```no_run
//! use std::collections::HashMap;
//! use cache_aside_runtime::cached;
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct User { name: String }
//! # #[derive(Debug)] struct DbError;
//! # async fn load_users(ids: &[u64]) -> Result<HashMap<u64, User>, DbError> { Ok(HashMap::new()) }
//!
//! #[cached(ttl = 60, prefix = "user")]
//! async fn get_user(id: u64) -> Result<Option<User>, DbError> {
//!     Ok(load_users(&[id]).await?.remove(&id))
//! }
//!
//! /// One `MGET` for every id; one query for the ids that missed; each user stored where
//! /// `get_user` reads it, so `get_user_invalidate(7)` covers both.
//! #[cached(batch, ttl = 60, prefix = "user")]
//! async fn get_users(ids: &[u64]) -> Result<HashMap<u64, User>, DbError> {
//!     load_users(ids).await
//! }
//! ```
//!
//! # What a batch does
//!
//! - **Keys.** Each key's entry is the one a one-key function with the same prefix (and no
//!   other key argument) uses: `get_users(&[7, 8])` reads `get_user(7)`'s and
//!   `get_user(8)`'s entries. Both may run in one process, and share entries, as long as
//!   they store the same value type (`User` for `Option<User>` and for a map of `User`s):
//!   two functions storing different types under one key would hand each other's values
//!   out, so such a pair runs uncached, with a warning, as any two functions whose keys meet
//!   do. So do a batch and a function whose `tags` are not the batch's, from when both have
//!   run in the process: the entries one of them wrote would lack a tag the other's carry,
//!   and invalidating it would miss them. A key repeated in the argument is read and loaded
//!   once.
//! - **Tags.** `tags = ["user:{ids}"]` tags each key's entry, a placeholder naming the key
//!   collection standing for each key (`{ids.team}`: a field of it); see
//!   [`tag`](crate::tag). Each loaded key joins its tags' sets after its lease and before
//!   the body, all at once; a key that could not be tagged is returned, not stored.
//! - **Reads.** One `MGET` of every key (on Redis Cluster, redis-rs splits it into one
//!   per slot). Fresh entries are hits; an absence marker (`none_ttl`) is a hit with no
//!   value: the key is left out of the map.
//! - **Loads.** The body runs once, with the keys that missed and that no other call of
//!   this process is loading; keys another call is loading (a one-key read or another
//!   batch) are waited for, beside the body (single-flight per key), and so are keys whose
//!   lease another call of this process took after this one chose to load them. Each loaded key takes
//!   its lease first, like a one-key miss, so an invalidation or a put during the body
//!   wins: that key's value is returned to this call, not stored. If a waited-for load
//!   ends with nothing to hand over (its body failed, or it was cancelled), the body runs a
//!   second time for those keys, and their values are returned, not stored.
//! - **Stores.** Every key the body returned is stored with the TTL and jitter; every key
//!   it was asked and left out is stored as an absence with `none_ttl` if set (else
//!   nothing is stored, and the next call asks again). A key the body returned but was not
//!   asked for is ignored, cached or not. A value that would not read back exactly is returned, not
//!   stored, as for any function.
//! - **Errors.** The cache fails open: Redis down, every key is loaded by the body. An
//!   `Err` from the body is returned as is, and none of the keys that call was asked for is
//!   stored (when it is the rare second call, the first call's keys were stored already).
//!   With `on_cache_error = "fail"` (a `Result` whose error is `From<`[`Error`](crate::Error)`>`),
//!   the first cache failure is the call's `Err`: a failed read, a refused lease or tag
//!   (before the body runs), or a failed store (after it: its values are lost). Its cache
//!   work shares one `timeout`, reads and writes of every key: a batch of thousands of keys
//!   may need a larger one.
//!
//! With `lock = true` ([`Batch::lock`]), a key another process is loading is waited for,
//! beside the body, up to the cache's `lock_wait`, as a one-key miss with the lock waits.
//!
//! What a batch does not do (yet): `stale`, `refresh_ahead`, `xfetch`, `fail_safe` and
//! `key = "..."` templates are refused on a batch function, and it has no companions:
//! invalidate its entries through the one-key function sharing them,
//! [`Cache::invalidate`](crate::Cache::invalidate) or a prefix.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::mem::ManuallyDrop;
use std::time::Duration;

use cache_aside_settings as settings;

use crate::key::{Layout, is_valid_segment};
use crate::spec::FnSpec;

/// A batch read's settings, for [`Cache::get_many`](crate::Cache::get_many): its prefix
/// and options, as `#[cached(batch, ...)]` takes them. Built in a `static`, where a
/// prefix that is not a valid segment (`[A-Za-z0-9_.-/]`, non-empty) fails to compile.
///
/// ```
/// use std::time::Duration;
/// use cache_aside_runtime::batch::Batch;
///
/// static USERS: Batch = Batch::new("user")
///     .ttl(Duration::from_secs(60))
///     .none_ttl(Duration::from_secs(5));
/// ```
pub struct Batch {
    /// Never dropped: a `Batch` lives in a `static`, and a type with drop glue could not be
    /// built by `const` setters that check their arguments.
    pub(crate) spec: ManuallyDrop<FnSpec>,
}

impl Batch {
    /// A batch under `prefix`, with the cache's default TTL unless [`ttl`](Self::ttl)
    /// gives one.
    ///
    /// # Panics
    /// If `prefix` is empty or holds a character outside `[A-Za-z0-9_.-/]`, or (each
    /// setter) if a setting is outside the range `#[cached]` accepts for it (see
    /// [`limits`](crate::limits)); in a `static`, either is a compile error.
    pub const fn new(prefix: &'static str) -> Batch {
        assert!(
            is_valid_segment(prefix),
            "a batch prefix is non-empty and only [A-Za-z0-9_.-/]"
        );
        Batch {
            spec: ManuallyDrop::new(FnSpec::new(prefix, Some(prefix), Layout::new("{}")).batch()),
        }
    }

    /// How long a loaded value stays fresh (the function's `ttl`).
    pub const fn ttl(self, ttl: Duration) -> Batch {
        assert!(
            settings::TTL.takes_duration(ttl),
            "a batch setting out of its range: ttl"
        );
        Batch {
            spec: ManuallyDrop::new(ManuallyDrop::into_inner(self.spec).ttl_ms(millis(ttl))),
        }
    }

    /// Stores keys the load did not return as absences for this long (`none_ttl`).
    pub const fn none_ttl(self, ttl: Duration) -> Batch {
        assert!(
            settings::NONE_TTL.takes_duration(ttl),
            "a batch setting out of its range: none_ttl"
        );
        Batch {
            spec: ManuallyDrop::new(ManuallyDrop::into_inner(self.spec).none_ttl_ms(millis(ttl))),
        }
    }

    /// Spreads TTLs by up to this fraction (`jitter`, `0.0..=0.5`:
    /// [`MAX_JITTER`](crate::limits::MAX_JITTER)).
    pub const fn jitter(self, fraction: f64) -> Batch {
        assert!(
            settings::JITTER.takes_fraction(fraction),
            "a batch setting out of its range: jitter"
        );
        Batch {
            spec: ManuallyDrop::new(ManuallyDrop::into_inner(self.spec).jitter(fraction)),
        }
    }

    /// The tags each key's entry carries (`tags`; see [`tag`](crate::tag)): templates of a
    /// name, then `:`-separated segments, each fixed text or `{}` standing for the key.
    /// `Batch::new("user").tags(&["user:{}"])` tags key 7's entry `user:7`, as
    /// `#[cached(tags = ["user:{id}"])]` on `get_user(id)` does; a one-key function sharing
    /// the batch's entries must have the same tags (see [`batch`](crate::batch)).
    pub const fn tags(self, templates: &'static [&'static str]) -> Batch {
        let mut i = 0;
        while i < templates.len() {
            assert!(
                crate::tag::is_batch_template(templates[i]),
                "a batch tag is a name, then `:`-separated segments, each [A-Za-z0-9_.-/] or `{{}}`"
            );
            i += 1;
        }
        Batch {
            spec: ManuallyDrop::new(ManuallyDrop::into_inner(self.spec).tag_templates(templates)),
        }
    }

    /// Bounds each cache read or write of the batch (`timeout`).
    pub const fn timeout(self, timeout: Duration) -> Batch {
        assert!(
            settings::TIMEOUT.takes_duration(timeout),
            "a batch setting out of its range: timeout"
        );
        Batch {
            spec: ManuallyDrop::new(
                ManuallyDrop::into_inner(self.spec).timeout_ms(millis(timeout)),
            ),
        }
    }

    /// `lock`: a key another process is loading (it holds the key's lease) is waited for,
    /// up to the cache's `lock_wait`, beside the load of the others, instead of being
    /// loaded once more. Off by default, or the cache's [`lock`](crate::CacheBuilder::lock).
    pub const fn lock(self, on: bool) -> Batch {
        Batch {
            spec: ManuallyDrop::new(ManuallyDrop::into_inner(self.spec).lock(on)),
        }
    }

    /// How long to wait for another call's load of a key (`flight_wait`).
    pub const fn flight_wait(self, wait: Duration) -> Batch {
        assert!(
            settings::FLIGHT_WAIT.takes_duration(wait),
            "a batch setting out of its range: flight_wait"
        );
        Batch {
            spec: ManuallyDrop::new(
                ManuallyDrop::into_inner(self.spec).flight_wait_ms(millis(wait)),
            ),
        }
    }

    /// Larger entries are returned but not stored (`max_value_bytes`).
    pub const fn max_value_bytes(self, bytes: u64) -> Batch {
        assert!(
            settings::MAX_VALUE_BYTES.takes_count(bytes),
            "a batch setting out of its range: max_value_bytes"
        );
        Batch {
            spec: ManuallyDrop::new(ManuallyDrop::into_inner(self.spec).max_value_bytes(bytes)),
        }
    }
}

const fn millis(d: Duration) -> u64 {
    let ms = d.as_millis();
    if ms > u64::MAX as u128 {
        u64::MAX
    } else {
        ms as u64
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("prefix", &self.spec.name())
            .finish_non_exhaustive()
    }
}

/// A collection of keys a batch function takes: `&[K]`, `&Vec<K>`, `Vec<K>`, `HashSet<K>`,
/// `BTreeSet<K>`, `&HashSet<K>`, `&BTreeSet<K>`.
#[diagnostic::on_unimplemented(
    message = "a batch function's key argument must be a collection of keys, not `{Self}`",
    label = "expected `&[K]`, `Vec<K>`, `&Vec<K>`, `HashSet<K>` or `BTreeSet<K>`"
)]
pub trait BatchKeys {
    /// One key.
    type Item;
    /// The keys, in the collection's order.
    fn each(&self) -> impl Iterator<Item = &Self::Item>;
}

/// A key collection the body can be handed with only the keys that missed: built as
/// [`Owned`](Self::Owned), then lent (or cloned) out as the argument's type.
#[diagnostic::on_unimplemented(
    message = "a batch body cannot be handed its missing keys as `{Self}`",
    label = "use `&[K]`, `Vec<K>`, `&Vec<K>`, `HashSet<K>` or `BTreeSet<K>` (or a reference to a set)"
)]
pub trait Rebind<'a>: BatchKeys + Sized {
    /// What holds the missing keys while the body runs.
    type Owned: 'a;
    /// Collects the missing keys.
    fn own(missing: Vec<Self::Item>) -> Self::Owned;
    /// The argument the body sees.
    fn rebind(owned: &'a Self::Owned) -> Self;
}

impl<T> BatchKeys for &[T] {
    type Item = T;
    fn each(&self) -> impl Iterator<Item = &T> {
        self.iter()
    }
}

impl<'a, T: 'a> Rebind<'a> for &'a [T] {
    type Owned = Vec<T>;
    fn own(missing: Vec<T>) -> Vec<T> {
        missing
    }
    fn rebind(owned: &'a Vec<T>) -> Self {
        owned
    }
}

impl<T> BatchKeys for &Vec<T> {
    type Item = T;
    fn each(&self) -> impl Iterator<Item = &T> {
        self.iter()
    }
}

impl<'a, T: 'a> Rebind<'a> for &'a Vec<T> {
    type Owned = Vec<T>;
    fn own(missing: Vec<T>) -> Vec<T> {
        missing
    }
    fn rebind(owned: &'a Vec<T>) -> Self {
        owned
    }
}

impl<T> BatchKeys for Vec<T> {
    type Item = T;
    fn each(&self) -> impl Iterator<Item = &T> {
        self.iter()
    }
}

impl<'a, T: Clone + 'a> Rebind<'a> for Vec<T> {
    type Owned = Vec<T>;
    fn own(missing: Vec<T>) -> Vec<T> {
        missing
    }
    fn rebind(owned: &'a Vec<T>) -> Self {
        owned.clone()
    }
}

impl<T, S> BatchKeys for HashSet<T, S> {
    type Item = T;
    fn each(&self) -> impl Iterator<Item = &T> {
        self.iter()
    }
}

impl<'a, T: Clone + Eq + Hash + 'a, S: BuildHasher + Default + Clone + 'a> Rebind<'a>
    for HashSet<T, S>
{
    type Owned = HashSet<T, S>;
    fn own(missing: Vec<T>) -> Self::Owned {
        missing.into_iter().collect()
    }
    fn rebind(owned: &'a Self::Owned) -> Self {
        owned.clone()
    }
}

impl<T, S> BatchKeys for &HashSet<T, S> {
    type Item = T;
    fn each(&self) -> impl Iterator<Item = &T> {
        self.iter()
    }
}

impl<'a, T: Eq + Hash + 'a, S: BuildHasher + Default + 'a> Rebind<'a> for &'a HashSet<T, S> {
    type Owned = HashSet<T, S>;
    fn own(missing: Vec<T>) -> Self::Owned {
        missing.into_iter().collect()
    }
    fn rebind(owned: &'a Self::Owned) -> Self {
        owned
    }
}

impl<T> BatchKeys for BTreeSet<T> {
    type Item = T;
    fn each(&self) -> impl Iterator<Item = &T> {
        self.iter()
    }
}

impl<'a, T: Clone + Ord + 'a> Rebind<'a> for BTreeSet<T> {
    type Owned = BTreeSet<T>;
    fn own(missing: Vec<T>) -> Self::Owned {
        missing.into_iter().collect()
    }
    fn rebind(owned: &'a Self::Owned) -> Self {
        owned.clone()
    }
}

impl<T> BatchKeys for &BTreeSet<T> {
    type Item = T;
    fn each(&self) -> impl Iterator<Item = &T> {
        self.iter()
    }
}

impl<'a, T: Ord + 'a> Rebind<'a> for &'a BTreeSet<T> {
    type Owned = BTreeSet<T>;
    fn own(missing: Vec<T>) -> Self::Owned {
        missing.into_iter().collect()
    }
    fn rebind(owned: &'a Self::Owned) -> Self {
        owned
    }
}

/// A map a batch returns, from key to value: `HashMap<K, V>` or `BTreeMap<K, V>`.
#[diagnostic::on_unimplemented(
    message = "a batch function returns a map from key to value, not `{Self}`",
    label = "expected `HashMap<K, V>` or `BTreeMap<K, V>` (or a `Result` of one)"
)]
pub trait BatchMap: Sized {
    /// Its key.
    type Key;
    /// Its value: what is stored per key.
    type Value;
    /// Takes `key`'s value out.
    fn take(&mut self, key: &Self::Key) -> Option<Self::Value>;
    /// The map of these pairs.
    fn build(pairs: impl Iterator<Item = (Self::Key, Self::Value)>) -> Self;
}

impl<K: Eq + Hash, V, S: BuildHasher + Default> BatchMap for HashMap<K, V, S> {
    type Key = K;
    type Value = V;
    fn take(&mut self, key: &K) -> Option<V> {
        self.remove(key)
    }
    fn build(pairs: impl Iterator<Item = (K, V)>) -> Self {
        pairs.collect()
    }
}

impl<K: Ord, V> BatchMap for BTreeMap<K, V> {
    type Key = K;
    type Value = V;
    fn take(&mut self, key: &K) -> Option<V> {
        self.remove(key)
    }
    fn build(pairs: impl Iterator<Item = (K, V)>) -> Self {
        pairs.collect()
    }
}
