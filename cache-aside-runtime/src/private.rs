//! What `#[cached]` expands to calls. Not a public API: no semver promises.

use std::marker::PhantomData;
use std::sync::{Arc, LazyLock};

pub use crate::Error;
pub use crate::key::{KeyBuilder, Layout};
pub use crate::shape::{Opt, Plain, Res, Shape};
pub use crate::spec::FnSpec;

use crate::engine::{Cold, Detach};
pub use crate::exact::Same;
use crate::policy::Policy;
use crate::{Cache, key::Key, refresh, report::Reporter};

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
    let prefix = spec.prefix(path, generics);
    if spec.shares_keys() {
        return Prepared::BadKey(cache, shared(spec, prefix));
    }
    let mut builder = KeyBuilder::new(cache.namespace(), prefix);
    match args(&mut builder) {
        Ok(()) => Prepared::Ready(cache, builder.finish(&spec.layout)),
        Err(error) => Prepared::BadKey(cache, error),
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
    let prefix = spec.prefix(path, generics);
    if spec.shares_keys() {
        // Its layout would also match the other function's keys.
        return Err(shared(spec, prefix));
    }
    cache.invalidate_layout(prefix, &spec.layout).await
}

/// Failures that happen before there is a cache to count them in.
static UNCACHED: Reporter = Reporter::new();

/// Compiles only if `R` can be cached with shape `S`; the macro spans the call at the
/// return type so a missing `Serialize`/`Deserialize` is reported there.
pub const fn assert_cacheable<S: Shape<R>, R>() {}

/// Return types that can carry a cache failure: `on_cache_error = "fail"`.
#[diagnostic::on_unimplemented(
    message = "`on_cache_error = \"fail\"` needs a `Result` whose error type implements `From<cache_aside_runtime::Error>`; `{Self}` does not",
    label = "cache failures would have nowhere to go",
    note = "add `impl From<cache_aside_runtime::Error> for YourError`, or drop `on_cache_error` to fail open"
)]
pub trait Surface {}

#[diagnostic::do_not_recommend]
impl<T, E: From<Error>> Surface for Result<T, E> {}

/// The macro spans this at `on_cache_error`.
pub const fn assert_surface<R: Surface>() {}

/// How the macro hands over a call's body.
pub trait Body<R>: Sized {
    type Fut: Future<Output = R>;
    /// The body, and how to run it as a background refresh if it can outlive the call.
    fn split<S: Shape<R> + 'static>(self) -> Split<Self::Fut, S::Value>;
}

/// How to start a background refresh with a body (the engine's `Detach`), opaque.
pub struct Detacher<F, V>(Detach<F, V>);

/// A body's future, and how to run it as a background refresh if it can outlive the call.
pub type Split<F, V> = (F, Option<Detacher<F, V>>);

/// A body that runs in the caller's future only: it may borrow the arguments.
pub struct Foreground<F>(pub F);

/// A body that may run as a background refresh (`stale`, `refresh_ahead`): it owns its
/// arguments and can move to another thread.
pub struct Background<F>(F);

/// Wraps a body for `stale`/`refresh_ahead`; the macro spans the call at the option so a
/// body that borrows or is not `Send` is reported there.
pub fn background<F>(body: F) -> Background<F>
where
    F: Future<Output: Send + 'static> + Send + 'static,
{
    Background(body)
}

impl<R, F: Future<Output = R>> Body<R> for Foreground<F> {
    type Fut = F;
    fn split<S: Shape<R> + 'static>(self) -> Split<F, S::Value> {
        (self.0, None)
    }
}

impl<R, F> Body<R> for Background<F>
where
    R: Send + 'static,
    F: Future<Output = R> + Send + 'static,
{
    type Fut = F;
    fn split<S: Shape<R> + 'static>(self) -> Split<F, S::Value> {
        let detach: Detach<F, S::Value> = refresh::spawn_refresh::<S, R, F>;
        (self.0, Some(Detacher(detach)))
    }
}

pub use crate::flight::Share;

/// Autoref specialisation: `(&&EqProbe::<V>::new()).same()` is `V`'s `PartialEq` when it
/// has one ([`ByEq`]), else [`Same::NONE`] ([`NotEq`]): what the store-time round-trip
/// check compares a value with its decoded copy by, beside their serialized forms.
pub struct EqProbe<V>(PhantomData<fn() -> V>);

impl<V> EqProbe<V> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        EqProbe(PhantomData)
    }
}

pub trait ByEq<V> {
    fn same(&self) -> Same<V>;
}

impl<V: PartialEq> ByEq<V> for &EqProbe<V> {
    fn same(&self) -> Same<V> {
        Same(Some(|a, b| a == b))
    }
}

pub trait NotEq<V> {
    fn same(&self) -> Same<V>;
}

impl<V> NotEq<V> for EqProbe<V> {
    fn same(&self) -> Same<V> {
        Same::NONE
    }
}

/// Autoref specialisation: `(&&&Probe::<R>::new()).sharer()` picks the way to hand a load's
/// unstored result (an `Err`) to the calls that waited for it, by the first trait whose impl
/// applies: [`ByClone`] (`R: Clone`), [`ErrByClone`] (`Result<T, E>` with `E: Clone`), else
/// [`NotShared`] (each waiter runs its own body).
pub struct Probe<R>(PhantomData<fn() -> R>);

impl<R> Probe<R> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

pub trait ByClone<R> {
    fn sharer(&self) -> Option<Share<R>>;
}

impl<R: Clone + Send + Sync + 'static> ByClone<R> for &&Probe<R> {
    fn sharer(&self) -> Option<Share<R>> {
        Some(Share::by_clone())
    }
}

pub trait ErrByClone<R> {
    fn sharer(&self) -> Option<Share<R>>;
}

impl<T, E: Clone + Send + Sync + 'static> ErrByClone<Result<T, E>> for &Probe<Result<T, E>> {
    fn sharer(&self) -> Option<Share<Result<T, E>>> {
        Some(Share::err_by_clone())
    }
}

pub trait NotShared<R> {
    fn sharer(&self) -> Option<Share<R>>;
}

impl<R> NotShared<R> for Probe<R> {
    fn sharer(&self) -> Option<Share<R>> {
        None
    }
}

/// The body of every `#[cached]` function: fails open. `share`: see [`Probe`]; `same`:
/// see [`EqProbe`].
///
/// Not an `async fn`: it hands back `run`'s future as is, so the hit path has one layer of
/// state machine less (each costs instructions on every call).
pub fn get_or_load<S, R, F, B>(
    prepared: Prepared<'_>,
    spec: &'static FnSpec,
    body: B,
    share: Option<Share<R>>,
    same: Same<S::Value>,
) -> impl Future<Output = R>
where
    S: Shape<R> + 'static,
    F: Future<Output = R>,
    B: Body<R, Fut = F>,
{
    run::<S, R, F, B>(prepared, spec, body, share, same, None)
}

/// The body of `#[cached(on_cache_error = "fail")]` functions: cache failures become `Err`.
pub fn try_get_or_load<S, T, E, F, B>(
    prepared: Prepared<'_>,
    spec: &'static FnSpec,
    body: B,
    share: Option<Share<Result<T, E>>>,
    same: Same<S::Value>,
) -> impl Future<Output = Result<T, E>>
where
    S: Shape<Result<T, E>> + 'static,
    F: Future<Output = Result<T, E>>,
    B: Body<Result<T, E>, Fut = F>,
    E: From<Error>,
{
    run::<S, Result<T, E>, F, B>(prepared, spec, body, share, same, Some(surface::<T, E>))
}

fn surface<T, E: From<Error>>(error: Error) -> Result<T, E> {
    Err(E::from(error))
}

/// `surface`: how a cache failure becomes the call's result (`on_cache_error = "fail"`);
/// `None` fails open: the engine never reports a failure, and the body's value is returned.
///
/// The body's future is the type parameter `F` here and in the two functions above, never
/// the projection `B::Fut`: a projection in this future's type makes rustc fail to prove the
/// call's future `Send + 'static` when `R` holds a `dyn Trait` (a function returning
/// `Result<T, Box<dyn Error + Send + Sync>>` could not be `tokio::spawn`ed: "one type is more
/// general than the other"). `tests/tests/stampede.rs` spawns one.
async fn run<S, R, F, B>(
    prepared: Prepared<'_>,
    spec: &'static FnSpec,
    body: B,
    share: Option<Share<R>>,
    same: Same<S::Value>,
    surface: Option<fn(Error) -> R>,
) -> R
where
    S: Shape<R> + 'static,
    F: Future<Output = R>,
    B: Body<R, Fut = F>,
{
    let (load, detach) = body.split::<S>();
    // Every way the call can go uncached ends in one boxed await below: each `await` of the
    // body inline would put another copy of the body's state into this future and of its
    // polling into the hit path's code (see `engine::Cold`).
    let error = 'cached: {
        let (cache, key) = match prepared {
            Prepared::Ready(cache, key) => (cache, key),
            Prepared::NoCache(error) => {
                UNCACHED.report("resolve", "", &error);
                break 'cached error;
            }
            Prepared::BadKey(cache, error) => {
                cache.failed("key", "", &error);
                break 'cached error;
            }
        };
        let resolved;
        let policy = match spec.remembered_policy(cache, surface.is_some()) {
            Some(policy) => policy,
            None => match Policy::resolve(spec, &cache.inner.settings, surface.is_some()) {
                Some(policy) => {
                    resolved = policy;
                    &resolved
                }
                None => {
                    cache.failed("ttl", key.as_str(), &Error::NoTtl);
                    break 'cached Error::NoTtl;
                }
            },
        };
        let detach = detach.map(|d| d.0);
        return match cache
            .get_or_load::<S, R, _>(&key, policy, load, detach, share, same)
            .await
        {
            Ok(value) => value,
            Err(error) => match surface {
                Some(surface) => surface(error),
                None => unreachable!("a fail-open call surfaced {error}"),
            },
        };
    };
    Cold::build(|| uncached(error, surface, load)).await
}

/// A call the cache cannot serve: its error, or the body's result.
async fn uncached<R>(
    error: Error,
    surface: Option<fn(Error) -> R>,
    load: impl Future<Output = R>,
) -> R {
    match surface {
        Some(surface) => surface(error),
        None => load.await,
    }
}
