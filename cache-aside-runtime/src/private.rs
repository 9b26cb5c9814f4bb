//! What `#[cached]` expands to calls. Not a public API: no semver promises.

use std::sync::{Arc, LazyLock};

pub use crate::Error;
pub use crate::key::KeyBuilder;
pub use crate::shape::{Opt, Plain, Res, Shape};
pub use crate::spec::FnSpec;
use crate::{Cache, engine::Policy, key::Key, report::Reporter};

/// Things `cache = EXPR` may name: a `Cache`, an `Arc<Cache>`, a `LazyLock<Cache>`, or a
/// reference to any of them.
#[diagnostic::on_unimplemented(
    message = "`cache = ...` must name a `Cache`, got `{Self}`",
    label = "expected a `Cache`, `Arc<Cache>`, `LazyLock<Cache>` or a reference to one"
)]
pub trait AsCache {
    fn as_cache(&self) -> &Cache;
}

impl AsCache for Cache {
    fn as_cache(&self) -> &Cache {
        self
    }
}

impl AsCache for Arc<Cache> {
    fn as_cache(&self) -> &Cache {
        self
    }
}

impl AsCache for LazyLock<Cache> {
    fn as_cache(&self) -> &Cache {
        self
    }
}

impl<T: AsCache + ?Sized> AsCache for &T {
    fn as_cache(&self) -> &Cache {
        (**self).as_cache()
    }
}

pub fn resolve<C: AsCache + ?Sized>(cache: &C) -> Result<&Cache, Error> {
    Ok(cache.as_cache())
}

pub fn default_cache() -> Result<&'static Cache, Error> {
    Cache::get_default()
}

/// A cache and key ready for one call, or why the call goes uncached.
pub enum Prepared<'c> {
    Ready(&'c Cache, Key),
    NoCache(Error),
    BadKey(&'c Cache, Error),
}

/// Builds the key of one call: namespace and prefix, then `args` writes the argument part.
pub fn prepare<'c>(
    cache: Result<&'c Cache, Error>,
    spec: &FnSpec,
    self_type: Option<fn() -> &'static str>,
    args: impl FnOnce(&mut KeyBuilder) -> Result<(), Error>,
) -> Prepared<'c> {
    let cache = match cache {
        Ok(cache) => cache,
        Err(error) => return Prepared::NoCache(error),
    };
    let mut builder = KeyBuilder::new(cache.namespace(), spec.prefix(self_type));
    match args(&mut builder) {
        Ok(()) => Prepared::Ready(cache, builder.finish()),
        Err(error) => Prepared::BadKey(cache, error),
    }
}

/// The `{fn}_cache_key` companion.
pub fn cache_key(prepared: Prepared<'_>) -> Result<String, Error> {
    match prepared {
        Prepared::Ready(_, key) => Ok(key.into_string()),
        Prepared::NoCache(error) | Prepared::BadKey(_, error) => Err(error),
    }
}

/// The `{fn}_invalidate` companion.
pub async fn invalidate(prepared: Prepared<'_>) -> Result<bool, Error> {
    match prepared {
        Prepared::Ready(cache, key) => cache.invalidate(key.as_str()).await,
        Prepared::NoCache(error) | Prepared::BadKey(_, error) => Err(error),
    }
}

/// The `{fn}_invalidate_all` companion.
pub async fn invalidate_all(
    cache: Result<&Cache, Error>,
    spec: &FnSpec,
    self_type: Option<fn() -> &'static str>,
) -> Result<u64, Error> {
    let cache = cache?;
    cache.invalidate_prefix(spec.prefix(self_type)).await
}

/// Failures that happen before there is a cache to count them in.
static UNCACHED: Reporter = Reporter::new();

/// Compiles only if `R` can be cached with shape `S`; the macro spans the call at the
/// return type so a missing `Serialize`/`Deserialize` is reported there.
pub const fn assert_cacheable<S: Shape<R>, R>() {}

/// The body of every `#[cached]` function.
pub async fn get_or_load<S, R, F>(prepared: Prepared<'_>, spec: &FnSpec, load: F) -> R
where
    S: Shape<R>,
    F: Future<Output = R>,
{
    let (cache, key) = match prepared {
        Prepared::Ready(cache, key) => (cache, key),
        Prepared::NoCache(error) => {
            UNCACHED.report("resolve", "", &error);
            return load.await;
        }
        Prepared::BadKey(cache, error) => {
            cache.failed("key", "", &error);
            return load.await;
        }
    };
    let Some(ttl) = spec.ttl.or(cache.default_ttl()) else {
        cache.failed("ttl", key.as_str(), &Error::NoTtl);
        return load.await;
    };
    let policy = Policy {
        ttl,
        none_ttl: spec.none_ttl,
    };
    cache.get_or_load::<S, R, F>(&key, policy, load).await
}
