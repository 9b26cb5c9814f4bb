//! Autoref specialisation probes: what the generated code learns about a return type
//! without a trait bound (whether it is `PartialEq`, `Clone`, or has a `Clone` error).

use std::marker::PhantomData;

use crate::exact::Same;
use crate::flight::Share;

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

/// Autoref specialisation for `#[cache_evict]` and `#[cache_put]`: what a write's result
/// counts as success. `(&&WriteProbe::of(&result)).success(&result)` is the `Ok` value of
/// any `Result` ([`ResultSuccess`]: whatever alias names it, `fmt::Result` too), else the
/// whole result ([`PlainSuccess`]).
pub struct WriteProbe<R: ?Sized>(PhantomData<fn() -> *const R>);

impl<R: ?Sized> WriteProbe<R> {
    pub fn of(_: &R) -> Self {
        WriteProbe(PhantomData)
    }
}

pub trait ResultSuccess<T, E> {
    fn success<'a>(&self, result: &'a Result<T, E>) -> Option<&'a T>;
}

impl<T, E> ResultSuccess<T, E> for &WriteProbe<Result<T, E>> {
    fn success<'a>(&self, result: &'a Result<T, E>) -> Option<&'a T> {
        result.as_ref().ok()
    }
}

pub trait PlainSuccess<R: ?Sized> {
    fn success<'a>(&self, result: &'a R) -> Option<&'a R>;
}

impl<R: ?Sized> PlainSuccess<R> for WriteProbe<R> {
    fn success<'a>(&self, result: &'a R) -> Option<&'a R> {
        Some(result)
    }
}
