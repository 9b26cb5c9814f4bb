//! How a function's return type maps onto what is stored.
//!
//! The macro picks the shape from the written return type: `Result<T, E>` caches `Ok` only,
//! `Option<T>` caches `Some` and (with `none_ttl`) `None` as an absence marker, anything else
//! is stored as is. Shapes compose: `Result<Option<T>, E>` is `Res<Opt>`.

use std::marker::PhantomData;

use serde::{Serialize, de::DeserializeOwned};

/// What to do with a freshly loaded value.
pub enum Store<'a, V> {
    /// Store this value with the function's TTL.
    Value(&'a V),
    /// Store an absence marker (a `None`) with the `none_ttl`, if one is set.
    Absent,
    /// Do not store anything (an `Err`).
    Skip,
}

/// Adapts a return type `R` to the stored value type.
#[diagnostic::on_unimplemented(
    message = "`{R}` cannot be cached",
    label = "the cached value must implement `serde::Serialize` and `serde::de::DeserializeOwned`"
)]
pub trait Shape<R> {
    /// The type written to the cache.
    type Value: Serialize + DeserializeOwned;
    /// What a successful result holds: `R` without its `Result` (`Option<T>` for
    /// `Result<Option<T>, E>`); what `#[cache_put]` writes.
    type Success;
    /// Classifies a loaded result.
    fn store(result: &R) -> Store<'_, Self::Value>;
    /// Classifies a successful result (never `Store::Skip`).
    fn store_success(success: &Self::Success) -> Store<'_, Self::Value>;
    /// Rebuilds a result from a cache hit (`None`: an absence marker). `None` back means
    /// the entry does not fit this shape and is treated as corrupt.
    fn hit(value: Option<Self::Value>) -> Option<R>;
}

/// Any serializable value: always stored.
pub struct Plain;
/// `Option<T>`: `Some` stored with the TTL, `None` with `none_ttl`.
pub struct Opt;
/// `Result<T, E>`: `Ok` handled by the inner shape, `Err` never stored.
pub struct Res<S>(PhantomData<S>);

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> Shape<T> for Plain {
    type Value = T;
    type Success = T;
    fn store(result: &T) -> Store<'_, T> {
        Store::Value(result)
    }
    fn store_success(success: &T) -> Store<'_, T> {
        Store::Value(success)
    }
    fn hit(value: Option<T>) -> Option<T> {
        value
    }
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> Shape<Option<T>> for Opt {
    type Value = T;
    type Success = Option<T>;
    fn store(result: &Option<T>) -> Store<'_, T> {
        match result {
            Some(v) => Store::Value(v),
            None => Store::Absent,
        }
    }
    fn store_success(success: &Option<T>) -> Store<'_, T> {
        Self::store(success)
    }
    fn hit(value: Option<T>) -> Option<Option<T>> {
        Some(value)
    }
}

impl<T, E, S: Shape<T>> Shape<Result<T, E>> for Res<S> {
    type Value = S::Value;
    type Success = T;
    fn store(result: &Result<T, E>) -> Store<'_, S::Value> {
        match result {
            Ok(v) => S::store(v),
            Err(_) => Store::Skip,
        }
    }
    fn store_success(success: &T) -> Store<'_, S::Value> {
        S::store(success)
    }
    fn hit(value: Option<S::Value>) -> Option<Result<T, E>> {
        S::hit(value).map(Ok)
    }
}
