//! How the macro hands over a call's body: in the caller's future only, or able to run as
//! a background refresh.

use crate::engine::{Detach, spawn_refresh};
use crate::shape::Shape;

/// How the macro hands over a call's body.
pub trait Body<R>: Sized {
    type Fut: Future<Output = R>;
    /// The body, and how to run it as a background refresh if it can outlive the call.
    fn split<S: Shape<R> + 'static>(self) -> Split<Self::Fut, S::Value>;
}

/// How to start a background refresh with a body (the engine's `Detach`), opaque.
pub struct Detacher<F, V>(pub(super) Detach<F, V>);

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
        let detach: Detach<F, S::Value> = spawn_refresh::<S, R, F>;
        (self.0, Some(Detacher(detach)))
    }
}
