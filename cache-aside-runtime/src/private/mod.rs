//! What `#[cached]` expands to calls. Not a public API: no semver promises.

mod batch;
mod body;
mod probes;
mod run;
mod write;

use std::sync::{Arc, LazyLock};

pub use self::batch::{BatchShape, assert_batch, batch_items, get_many, try_get_many};
pub use self::body::{Background, Body, Detacher, Foreground, Split, background};
pub use self::probes::{
    ByClone, ByEq, EqProbe, ErrByClone, NotEq, NotShared, PlainSuccess, Probe, ResultSuccess,
    WriteProbe,
};
pub use self::run::{get_or_load, try_get_or_load};
pub use self::write::{Entries, Entry, TagTarget, entries, entry, tag_target};
pub use crate::batch::{BatchKeys, BatchMap, Rebind};
pub use crate::error::Error;
pub use crate::exact::Same;
pub use crate::flight::Share;
pub use crate::key::{KeyBuilder, Layout, Map, Seq};
pub use crate::shape::{Opt, Plain, Res, Shape};
pub use crate::spec::FnSpec;
pub use crate::tag::{BatchTags, TagWriter};
/// Several write targets at once.
pub use tokio::join;

use crate::cache::Cache;
use crate::key::Key;
use crate::keyspace;

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

/// A handle of its own to the cache `cache` names, for a call whose body moves what the
/// expression reads (`self.cache` with `self: Arc<Self>`).
pub fn owned<C: AsCache + ?Sized>(cache: &C) -> Cache {
    cache.as_cache().clone()
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
///
/// `path` and `generics` name the function's instantiation: the `type_name` of a closure
/// in the generated function, and of a helper generic over its own type and const
/// parameters (`""` when it has none). See `FnSpec::prefix`.
pub fn prepare<'c>(
    cache: Result<&'c Cache, Error>,
    spec: &'static FnSpec,
    path: &'static str,
    generics: &'static str,
    args: impl FnOnce(&mut KeyBuilder) -> Result<(), Error>,
) -> Prepared<'c> {
    let cache = match cache {
        Ok(cache) => cache,
        Err(error) => return Prepared::NoCache(error),
    };
    let prefix = keyspace::prefix_of(spec, path, generics);
    if spec.shares_keys() {
        return Prepared::BadKey(cache, shared(spec, prefix));
    }
    let mut builder = KeyBuilder::new(cache.namespace(), prefix);
    match args(&mut builder) {
        Ok(()) => Prepared::Ready(cache, builder.finish(&spec.layout)),
        Err(error) => Prepared::BadKey(cache, error),
    }
}

/// [`prepare`] for a function with `tags`: `tags` renders the call's tags, which the key
/// then carries (see [`crate::tag`]). A tag that does not render makes the call uncached.
pub fn prepare_tagged<'c>(
    cache: Result<&'c Cache, Error>,
    spec: &'static FnSpec,
    path: &'static str,
    generics: &'static str,
    args: impl FnOnce(&mut KeyBuilder) -> Result<(), Error>,
    tags: impl FnOnce(&mut TagWriter<'_>) -> Result<(), Error>,
) -> Prepared<'c> {
    match prepare(cache, spec, path, generics, args) {
        Prepared::Ready(cache, key) => {
            let mut writer = TagWriter::new(cache.namespace());
            match tags(&mut writer) {
                Ok(()) => Prepared::Ready(cache, key.tagged(writer.finish())),
                Err(error) => Prepared::BadKey(cache, error),
            }
        }
        other => other,
    }
}

/// One key built outside a call, for the property tests of the key format: `args` writes
/// the arguments part as generated code does.
pub fn key_of(
    namespace: &str,
    prefix: &str,
    layout: Layout,
    args: impl FnOnce(&mut KeyBuilder) -> Result<(), Error>,
) -> Result<String, Error> {
    let mut builder = KeyBuilder::new(namespace, prefix);
    args(&mut builder)?;
    Ok(builder.finish(&layout).into_string())
}

#[cold]
fn shared(spec: &FnSpec, prefix: &str) -> Error {
    Error::SharedKeys {
        function: spec.name(),
        prefix: prefix.to_owned(),
    }
}

/// The `type_name` of a value: generated code passes a closure of its own for `path`.
pub fn type_name_of<T: ?Sized>(_: &T) -> &'static str {
    ::core::any::type_name::<T>()
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

/// The `{fn}_invalidate_all` companion: the keys under the function's prefix whose
/// arguments part fits its layout, so a neighbour sharing the prefix keeps its entries.
pub async fn invalidate_all(
    cache: Result<&Cache, Error>,
    spec: &'static FnSpec,
    path: &'static str,
    generics: &'static str,
) -> Result<u64, Error> {
    let cache = cache?;
    let prefix = keyspace::prefix_of(spec, path, generics);
    if spec.shares_keys() {
        // Its layout would also match the other function's keys.
        return Err(shared(spec, prefix));
    }
    cache.engine().invalidate_layout(prefix, &spec.layout).await
}

/// Compiles only if `R` can be cached with shape `S`; the macro spans the call at the
/// return type so a missing `Serialize`/`Deserialize` is reported there.
pub const fn assert_cacheable<S: Shape<R>, R>() {}

/// Return types that can carry a cache failure: `on_cache_error = "fail"`.
#[diagnostic::on_unimplemented(
    message = "`on_cache_error = \"fail\"` needs a `Result` whose error type implements `From<cache_aside_runtime::Error>`; `{Self}` does not",
    label = "cache failures would have nowhere to go",
    note = "add `impl From<cache_aside_runtime::Error> for YourError`, or drop `on_cache_error` to fail open"
)]
pub trait Surface {
    /// The `Err` a cache failure becomes.
    type Err;
    /// A cache failure as that `Err`.
    fn cache_failure(error: Error) -> Self::Err;
}

#[diagnostic::do_not_recommend]
impl<T, E: From<Error>> Surface for Result<T, E> {
    type Err = E;
    fn cache_failure(error: Error) -> E {
        E::from(error)
    }
}

/// The macro spans this at `on_cache_error`.
pub const fn assert_surface<R: Surface>() {}
