//! The body of every `#[cached]` function: resolve the policy, hand the call to the engine,
//! or run the body uncached.

use crate::engine::{Cold, ErrorMode, ValueOps};
use crate::error::Error;
use crate::events;
use crate::exact::Same;
use crate::flight::Share;
use crate::keyspace;
use crate::shape::Shape;
use crate::spec::FnSpec;

use super::{Body, Prepared};

/// The body of every `#[cached]` function: fails open. `share`: see [`Probe`](super::Probe); `same`:
/// see [`EqProbe`](super::EqProbe).
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
                events::uncached("resolve", &error);
                break 'cached error;
            }
            Prepared::BadKey(cache, error) => {
                cache.engine().events().of(spec).failed("key", "", &error);
                break 'cached error;
            }
        };
        // Before the first read: a batch function sharing its keys checks its type (see
        // `keyspace`).
        if keyspace::stores::<S::Value>(spec) {
            let error = super::shared(spec, spec.prefix_seen().unwrap_or(""));
            cache.engine().events().of(spec).failed("key", "", &error);
            break 'cached error;
        }
        let engine = cache.engine();
        let mut resolved = None;
        let Some(policy) = engine.policy(spec, &mut resolved) else {
            engine
                .events()
                .of(spec)
                .failed("ttl", key.as_str(), &Error::NoTtl);
            break 'cached Error::NoTtl;
        };
        let mode = match surface {
            Some(_) => ErrorMode::Surface,
            None => ErrorMode::FailOpen,
        };
        let detach = detach.map(|d| d.0);
        let ops = ValueOps { share, same };
        // A span per call at `trace`, its outcome recorded by the events; only when a
        // subscriber wants it, so the hit path costs one level check otherwise. The call is
        // built in each branch: built before them, its future was moved into the await
        // (+3% instructions per hit).
        let result = if tracing::level_enabled!(tracing::Level::TRACE) {
            traced::<S, R, F>(engine, &key, spec, policy, mode, load, detach, ops).await
        } else {
            engine
                .get_or_load::<S, R, _>(&key, spec, policy, mode, load, detach, ops)
                .await
        };
        return match result {
            Ok(value) => value,
            Err(error) => match surface {
                Some(surface) => surface(error),
                None => unreachable!("a fail-open call surfaced {error}"),
            },
        };
    };
    Cold::build(|| uncached(error, surface, load)).await
}

/// A call inside its `cache_aside.call` span, out of line: the untraced hit path keeps its
/// code and its future small.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn traced<'a, S, R, F>(
    engine: &'a std::sync::Arc<crate::engine::Engine>,
    key: &'a crate::key::Key,
    spec: &'static FnSpec,
    policy: &'a crate::policy::Policy,
    mode: ErrorMode,
    load: F,
    detach: Option<crate::engine::Detach<F, S::Value>>,
    ops: ValueOps<R, S::Value>,
) -> Cold<impl Future<Output = Result<R, Error>> + 'a>
where
    S: Shape<R> + 'static,
    F: Future<Output = R> + 'a,
    R: 'a,
{
    let span = tracing::trace_span!(
        "cache_aside.call",
        function = spec.name(),
        outcome = tracing::field::Empty
    );
    Cold::build(move || {
        let call = engine.get_or_load::<S, R, F>(key, spec, policy, mode, load, detach, ops);
        tracing::Instrument::instrument(call, span)
    })
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
