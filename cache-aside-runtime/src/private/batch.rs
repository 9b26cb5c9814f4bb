//! What `#[cached(batch)]` expands to calls: the return type's shape, then the core it
//! shares with [`Cache::get_many`] (`cache/batch.rs`).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::batch::{BatchKeys, BatchMap};
use crate::cache::{Cache, batch};
use crate::error::Error;
use crate::exact::Same;
use crate::shape::{Plain, Res};
use crate::spec::FnSpec;
use crate::tag::BatchTags;

use super::Surface;

/// A batch function's return type: a map ([`Plain`]) or a `Result` of one ([`Res`]).
#[diagnostic::on_unimplemented(
    message = "a batch function returns a map from key to value, or a `Result` of one, not `{R}`",
    label = "expected `HashMap<K, V>`, `BTreeMap<K, V>`, or a `Result` of one"
)]
pub trait BatchShape<R> {
    /// The map.
    type Map: BatchMap;
    /// The error (`Infallible` for a plain map).
    type Error;
    /// The map, or the body's error.
    fn split(result: R) -> Result<Self::Map, Self::Error>;
    /// The return value of a map or an error.
    fn join(result: Result<Self::Map, Self::Error>) -> R;
}

#[diagnostic::do_not_recommend]
impl<M: BatchMap> BatchShape<M> for Plain {
    type Map = M;
    type Error = std::convert::Infallible;
    fn split(result: M) -> Result<M, Self::Error> {
        Ok(result)
    }
    fn join(result: Result<M, Self::Error>) -> M {
        match result {
            Ok(map) => map,
            Err(never) => match never {},
        }
    }
}

#[diagnostic::do_not_recommend]
impl<M: BatchMap, E> BatchShape<Result<M, E>> for Res<Plain> {
    type Map = M;
    type Error = E;
    fn split(result: Result<M, E>) -> Result<M, E> {
        result
    }
    fn join(result: Result<M, E>) -> Result<M, E> {
        result
    }
}

/// The keys of a batch function's call, owned: generated code hands them over.
pub fn batch_items<K: BatchKeys>(keys: &K) -> Vec<K::Item>
where
    K::Item: Clone,
{
    keys.each().cloned().collect()
}

/// Compiles only if `R` can be a batch function's return type with shape `S`, keyed by
/// `K`'s items; the macro spans it at the return type.
pub const fn assert_batch<S, R, K>()
where
    S: BatchShape<R>,
    K: BatchKeys,
    K::Item: Serialize + Clone,
    S::Map: BatchMap<Key = K::Item>,
    <S::Map as BatchMap>::Value: Serialize + DeserializeOwned,
{
}

/// The body of every `#[cached(batch)]` function.
#[allow(clippy::too_many_arguments)]
pub async fn get_many<S, R, K, F, Fut>(
    cache: Result<&Cache, Error>,
    spec: &'static FnSpec,
    path: &'static str,
    generics: &'static str,
    items: Vec<K>,
    tags: Option<BatchTags<K>>,
    body: F,
    same: Same<<S::Map as BatchMap>::Value>,
) -> R
where
    S: BatchShape<R>,
    S::Map: BatchMap<Key = K>,
    <S::Map as BatchMap>::Value: Serialize + DeserializeOwned,
    K: Serialize + Clone,
    F: FnMut(Vec<K>) -> Fut,
    Fut: Future<Output = R>,
{
    let call = (cache, spec, (path, generics), (items, tags));
    run::<S, R, K, F, Fut>(call, body, (same, None)).await
}

/// [`get_many`] for `#[cached(batch, on_cache_error = "fail")]`: a cache failure is the
/// call's `Err`.
#[allow(clippy::too_many_arguments)]
pub async fn try_get_many<S, R, K, F, Fut>(
    cache: Result<&Cache, Error>,
    spec: &'static FnSpec,
    path: &'static str,
    generics: &'static str,
    items: Vec<K>,
    tags: Option<BatchTags<K>>,
    body: F,
    same: Same<<S::Map as BatchMap>::Value>,
) -> R
where
    S: BatchShape<R>,
    R: Surface<Err = S::Error>,
    S::Map: BatchMap<Key = K>,
    <S::Map as BatchMap>::Value: Serialize + DeserializeOwned,
    K: Serialize + Clone,
    F: FnMut(Vec<K>) -> Fut,
    Fut: Future<Output = R>,
{
    let call = (cache, spec, (path, generics), (items, tags));
    run::<S, R, K, F, Fut>(call, body, (same, Some(R::cache_failure))).await
}

/// What a batch call names: its cache, function, identity, keys and their tags.
type BatchCall<'c, K> = (
    Result<&'c Cache, Error>,
    &'static FnSpec,
    (&'static str, &'static str),
    (Vec<K>, Option<BatchTags<K>>),
);

/// Both doors of the macro: the shape split off, the core run, the shape put back.
#[allow(clippy::type_complexity)]
async fn run<S, R, K, F, Fut>(
    (cache, spec, identity, keys): BatchCall<'_, K>,
    mut body: F,
    checks: (
        Same<<S::Map as BatchMap>::Value>,
        Option<fn(Error) -> S::Error>,
    ),
) -> R
where
    S: BatchShape<R>,
    S::Map: BatchMap<Key = K>,
    <S::Map as BatchMap>::Value: Serialize + DeserializeOwned,
    K: Serialize + Clone,
    F: FnMut(Vec<K>) -> Fut,
    Fut: Future<Output = R>,
{
    let loaded =
        batch::run::<K, S::Map, S::Error, _, _>(cache, spec, identity, keys, checks, |keys| {
            let loading = body(keys);
            async move { S::split(loading.await) }
        })
        .await;
    S::join(loaded)
}
