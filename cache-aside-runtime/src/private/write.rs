//! What `#[cache_evict]` and `#[cache_put]` call. A read function's hidden companions
//! `{fn}_cache_entry(args)` and `{fn}_cache_entries()` build an [`Entry`] or [`Entries`]
//! before the write's body runs, through the read's own `prepare`, so a write can never
//! name another key than the read computes; after the body, the write evicts or puts them.
//!
//! Both fail open, like a read: a cache failure is counted and logged, and the write's
//! result is returned as the body gave it.

use std::marker::PhantomData;

use super::Prepared;
use crate::cache::Cache;
use crate::error::Error;
use crate::events;
use crate::exact::Same;
use crate::key::Key;
use crate::keyspace;
use crate::shape::Shape;
use crate::spec::FnSpec;

/// Where an entry is, or why there is none to write.
enum Target {
    Ready(Cache, Key),
    NoCache(Error),
    BadKey(Cache, Error),
}

/// One entry of a read function, for the arguments its `{fn}_cache_entry` companion was
/// given: `R` is the read's return type, `S` its shape.
///
/// No `S: Shape<R>` bound here or on [`entry`]: a read whose return type cannot be cached
/// is reported once, at its return type, not again at its hidden companion.
pub struct Entry<S, R> {
    target: Target,
    spec: &'static FnSpec,
    of: PhantomData<fn() -> (S, R)>,
}

/// The `{fn}_cache_entry` companion: the entry a call with these arguments reads.
pub fn entry<S, R>(prepared: Prepared<'_>, spec: &'static FnSpec) -> Entry<S, R> {
    let target = match prepared {
        Prepared::Ready(cache, key) => Target::Ready(cache.clone(), key),
        Prepared::NoCache(error) => Target::NoCache(error),
        Prepared::BadKey(cache, error) => Target::BadKey(cache.clone(), error),
    };
    Entry {
        target,
        spec,
        of: PhantomData,
    }
}

impl<S, R> Entry<S, R> {
    /// The cache and key, or reports why there are none.
    fn ready(&self, op: &'static str) -> Option<(&Cache, &Key)> {
        match &self.target {
            Target::Ready(cache, key) => Some((cache, key)),
            Target::NoCache(error) => {
                events::uncached(op, error);
                None
            }
            Target::BadKey(cache, error) => {
                cache
                    .engine()
                    .events()
                    .of(self.spec)
                    .failed("key", "", error);
                None
            }
        }
    }

    /// `#[cache_evict(f(args))]`: deletes the entry, revoking its lease.
    pub async fn evict(&self) {
        let Some((cache, key)) = self.ready("evict") else {
            return;
        };
        let engine = cache.engine();
        match engine.invalidate(key.as_str()).await {
            Ok(_) => engine.events().of(self.spec).evicted(),
            Err(error) => engine
                .events()
                .of(self.spec)
                .failed("evict", key.as_str(), &error),
        }
    }
}

impl<S: Shape<R>, R> Entry<S, R> {
    /// What a put takes: the read's success type. Called through the pointer, so that a
    /// write returning another type is a mismatch at its return type, with no note about
    /// this crate's functions.
    pub fn accepts(&self) -> fn(&S::Success) -> &S::Success {
        |success| success
    }

    /// The probe choosing how stored values are compared (see [`EqProbe`](super::EqProbe)),
    /// for the read's value type, which the write's expansion cannot name.
    pub fn probe(&self) -> super::EqProbe<S::Value> {
        super::EqProbe::new()
    }

    /// `#[cache_put(f(args))]`: stores `success` as the entry.
    pub async fn put(&self, success: &S::Success, same: Same<S::Value>) {
        if crate::keyspace::stores::<S::Value>(self.spec) {
            return;
        }
        let Some((cache, key)) = self.ready("put") else {
            return;
        };
        // Failures are reported inside; the write's result stands either way.
        let _ = cache
            .engine()
            .put::<S, R>(key, self.spec, success, same)
            .await;
    }
}

/// Every entry of one read function: `#[cache_evict(f(..))]`.
pub struct Entries {
    cache: Result<Cache, Error>,
    spec: &'static FnSpec,
    path: &'static str,
    generics: &'static str,
}

/// The `{fn}_cache_entries` companion.
pub fn entries(
    cache: Result<&Cache, Error>,
    spec: &'static FnSpec,
    path: &'static str,
    generics: &'static str,
) -> Entries {
    Entries {
        cache: cache.cloned(),
        spec,
        path,
        generics,
    }
}

impl Entries {
    /// Deletes every entry of the function, as its `_invalidate_all` does.
    pub async fn evict(&self) {
        let cache = match &self.cache {
            Ok(cache) => cache,
            Err(error) => return events::uncached("evict", error),
        };
        let engine = cache.engine();
        let done = super::invalidate_all(Ok(cache), self.spec, self.path, self.generics).await;
        match done {
            Ok(_) => engine.events().of(self.spec).evicted(),
            Err(error) => {
                let prefix = keyspace::prefix_of(self.spec, self.path, self.generics);
                engine
                    .events()
                    .of(self.spec)
                    .failed("evict", prefix, &error);
            }
        }
    }
}

/// Every entry carrying one tag: `#[cache_evict(tag = "user:{id}")]`. The tag is rendered
/// when the write starts, from its arguments as given.
pub struct TagTarget {
    cache: Result<Cache, Error>,
    /// The storage key of the tag's set, or why the tag did not render.
    sets: Result<Option<String>, Error>,
}

/// A `tag = ..` target of `#[cache_evict]`.
pub fn tag_target(
    cache: Result<&Cache, Error>,
    render: impl FnOnce(&mut crate::tag::TagWriter<'_>) -> Result<(), Error>,
) -> TagTarget {
    let cache = cache.cloned();
    let sets = match &cache {
        Ok(cache) => {
            let mut writer = crate::tag::TagWriter::new(cache.namespace());
            render(&mut writer).map(|()| writer.finish())
        }
        Err(error) => Err(Error::Config(error.to_string())),
    };
    TagTarget { cache, sets }
}

impl TagTarget {
    /// Deletes every entry carrying the tag, revoking their leases; fails open.
    pub async fn evict(&self) {
        let cache = match &self.cache {
            Ok(cache) => cache,
            Err(error) => return events::uncached("evict tag", error),
        };
        let engine = cache.engine();
        let sets = match &self.sets {
            Ok(sets) => sets,
            Err(error) => return engine.events().failed("evict tag", "", error),
        };
        for set in sets.iter().flat_map(|sets| sets.split('\n')) {
            match engine.invalidate_tag_set(set).await {
                Ok(_) => engine.events().tag_evicted(),
                Err(error) => engine.events().failed("evict tag", set, &error),
            }
        }
    }
}
