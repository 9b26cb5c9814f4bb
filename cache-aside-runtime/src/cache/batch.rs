//! [`Cache::get_many`], and the core it shares with `#[cached(batch)]`: build each key's
//! key, resolve the policy, hand the batch to the engine, or run the body uncached.

use std::collections::HashSet;

use foldhash::fast::RandomState;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Cache;
use crate::batch::{Batch, BatchMap};
use crate::engine::{ErrorMode, Failed};
use crate::error::Error;
use crate::events;
use crate::exact::Same;
use crate::key::{Key, KeyBuilder};
use crate::keyspace;
use crate::spec::FnSpec;
use crate::tag::{BatchTags, TagWriter, render_templates};

impl Cache {
    /// Gets many keys at once, loading those that miss in one call of `load`: the batch
    /// read of [`batch`](crate::batch) for code that is not a function of its own.
    ///
    /// Each key's entry is the one `#[cached(prefix = ..)]` with `batch`'s prefix and that
    /// key as its one key argument would use. `load` is given the keys that missed (each
    /// once) and returns a map of those it found; a key it leaves out is an absence,
    /// stored with `none_ttl` if `batch` sets one, and a key it was not asked for is
    /// dropped. Its `Err` is returned as is. The cache fails open: if Redis is down, `load`
    /// gets every key. Values must be `PartialEq`: one is stored only if it reads back
    /// equal. One `Batch` serves one value type: used with another, it runs uncached.
    ///
    /// ```no_run
    /// use std::collections::HashMap;
    /// use std::time::Duration;
    /// use cache_aside_runtime::{Cache, batch::Batch};
    /// # #[derive(Debug)] struct DbError;
    /// # async fn names_from_db(ids: &[u64]) -> Result<HashMap<u64, String>, DbError> { Ok(HashMap::new()) }
    ///
    /// static NAMES: Batch = Batch::new("name").ttl(Duration::from_secs(60));
    ///
    /// # async fn demo(cache: &Cache) -> Result<(), DbError> {
    /// let names: HashMap<u64, String> = cache
    ///     .get_many(&NAMES, [1, 2, 3], |missing| async move { names_from_db(&missing).await })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_many<K, M, E, F, Fut>(
        &self,
        batch: &'static Batch,
        keys: impl IntoIterator<Item = K>,
        load: F,
    ) -> Result<M, E>
    where
        K: Serialize + Clone,
        M: BatchMap<Key = K>,
        M::Value: Serialize + DeserializeOwned + PartialEq,
        F: FnMut(Vec<K>) -> Fut,
        Fut: Future<Output = Result<M, E>>,
    {
        let items: Vec<K> = keys.into_iter().collect();
        // A value is stored only if it reads back equal (see the keys guide): its serialized
        // forms alone miss what serialization drops (a `#[serde(skip)]` field).
        let same = Same(Some(|a: &M::Value, b: &M::Value| a == b));
        run(
            Ok(self),
            &batch.spec,
            ("cache_aside_runtime::batch", ""),
            (items, None),
            (same, None),
            load,
        )
        .await
    }
}

/// The batch core, for both doors: keys, policy, engine; or the body uncached.
#[allow(clippy::type_complexity)]
pub(crate) async fn run<K, M, E, F, Fut>(
    cache: Result<&Cache, Error>,
    spec: &'static FnSpec,
    (path, generics): (&'static str, &'static str),
    (items, tags): (Vec<K>, Option<BatchTags<K>>),
    (same, surface): (Same<M::Value>, Option<fn(Error) -> E>),
    mut body: F,
) -> Result<M, E>
where
    M: BatchMap<Key = K>,
    M::Value: Serialize + DeserializeOwned,
    K: Serialize + Clone,
    F: FnMut(Vec<K>) -> Fut,
    Fut: Future<Output = Result<M, E>>,
{
    if items.is_empty() {
        return Ok(M::build(std::iter::empty()));
    }
    let cache = match cache {
        Ok(cache) => cache,
        Err(error) => {
            events::uncached("resolve", &error);
            return uncached(items, body, surface.map(|s| s(error))).await;
        }
    };
    let engine = cache.engine();
    let (keys, items) = match keys_of(cache, spec, (path, generics), items, tags) {
        Ok(built) => built,
        Err((error, items)) => {
            engine.events().of(spec).failed("key", "", &error);
            return uncached(items, body, surface.map(|s| s(error))).await;
        }
    };
    let mut resolved = None;
    let Some(policy) = engine.policy(spec, &mut resolved) else {
        let first = keys.first().map_or("", Key::as_str);
        engine.events().of(spec).failed("ttl", first, &Error::NoTtl);
        return uncached(items, body, surface.map(|s| s(Error::NoTtl))).await;
    };
    // Another function writing these keys with another type (see `keyspace`), or, for a
    // `Batch` of `get_many`, the same static used with a second value type. (A generic
    // function's instantiations share one spec, but each has a prefix of its own.)
    let value_type = std::any::type_name::<M::Value>();
    let first_type = match generics.is_empty() {
        true => spec.value_type.get().copied().filter(|t| *t != value_type),
        false => None,
    };
    let refused = match (keyspace::stores::<M::Value>(spec), first_type) {
        (true, _) => Some(shared(spec, keyspace::prefix_of(spec, path, generics))),
        (false, Some(first)) => Some(Error::Config(format!(
            "the Batch {:?} is used with a second value type, {value_type} (first {first}): \
             it runs uncached for it; give each value type a Batch of its own",
            spec.name()
        ))),
        (false, None) => None,
    };
    if let Some(error) = refused {
        engine.events().of(spec).failed("key", "", &error);
        return uncached(items, body, surface.map(|s| s(error))).await;
    }
    let load = |asked: Vec<usize>| {
        let asked: Vec<K> = asked.into_iter().map(|i| items[i].clone()).collect();
        let loading = body(asked.clone());
        async move {
            let mut map = loading.await?;
            Ok(asked.iter().map(|key| map.take(key)).collect())
        }
    };
    let mode = match surface {
        Some(_) => ErrorMode::Surface,
        None => ErrorMode::FailOpen,
    };
    // One `cache_aside.call` span for the batch, as for a one-key call; each key's outcome
    // is a trace event of its own inside it.
    let span = tracing::trace_span!(
        "cache_aside.call",
        function = spec.name(),
        outcome = tracing::field::Empty
    );
    let call = engine.get_many(&keys, spec, policy, mode, load, same);
    let values = match tracing::Instrument::instrument(call, span).await {
        Ok(values) => values,
        Err(Failed::Body(error)) => return Err(error),
        // Only with `surface` (`ErrorMode::Surface`).
        Err(Failed::Cache(error)) => match surface {
            Some(surface) => return Err(surface(error)),
            None => return uncached(items, body, None).await,
        },
    };
    let pairs = items
        .iter()
        .zip(values)
        .filter_map(|(key, value)| Some((key.clone(), value?)));
    Ok(M::build(pairs))
}

/// The batch without the cache: the body once, with each key once (when the keys encode),
/// and only the keys asked for in its answer, as the cached path gives them; or `failed`,
/// the cache's failure as the call's `Err` (`on_cache_error = "fail"`).
async fn uncached<K, M, E, F, Fut>(items: Vec<K>, mut body: F, failed: Option<E>) -> Result<M, E>
where
    M: BatchMap<Key = K>,
    K: Serialize + Clone,
    F: FnMut(Vec<K>) -> Fut,
    Fut: Future<Output = Result<M, E>>,
{
    if let Some(failed) = failed {
        return Err(failed);
    }
    let mut seen = HashSet::with_capacity_and_hasher(items.len(), RandomState::default());
    let mut asked = Vec::with_capacity(items.len());
    for item in items.iter() {
        let mut text = KeyBuilder::bare(String::new());
        match text.value(item) {
            Ok(()) if !seen.insert(text.into_text()) => {}
            // Unencodable: no way to tell repeats apart; every item goes to the body.
            Err(_) => {
                asked = items.clone();
                break;
            }
            Ok(()) => asked.push(item.clone()),
        }
    }
    let mut map = body(asked.clone()).await?;
    let pairs: Vec<(K, M::Value)> = asked
        .into_iter()
        .filter_map(|key| {
            let value = map.take(&key)?;
            Some((key, value))
        })
        .collect();
    Ok(M::build(pairs.into_iter()))
}

/// Each item's key (carrying its tags), with items whose keys repeat an earlier one's left
/// out; or why the batch goes uncached, with every item: a key or a tag that does not
/// render.
#[allow(clippy::type_complexity)]
fn keys_of<K: Serialize>(
    cache: &Cache,
    spec: &'static FnSpec,
    (path, generics): (&'static str, &'static str),
    items: Vec<K>,
    tags: Option<BatchTags<K>>,
) -> Result<(Vec<Key>, Vec<K>), (Error, Vec<K>)> {
    let prefix = keyspace::prefix_of(spec, path, generics);
    if spec.shares_keys() {
        return Err((shared(spec, prefix), items));
    }
    let mut keys = Vec::with_capacity(items.len());
    for item in &items {
        let mut builder = KeyBuilder::new(cache.namespace(), prefix);
        if let Err(error) = builder.value(item) {
            return Err((error, items));
        }
        let key = builder.finish(&spec.layout);
        let key = match (tags, spec.tag_templates) {
            (None, []) => key,
            (render, templates) => {
                let mut writer = TagWriter::new(cache.namespace());
                let rendered = match render {
                    Some(render) => render(&mut writer, item),
                    None => render_templates(&mut writer, templates, item),
                };
                if let Err(error) = rendered {
                    return Err((error, items));
                }
                key.tagged(writer.finish())
            }
        };
        keys.push(key);
    }
    // A key repeated is read and loaded once: the first item of each key stays.
    let mut seen = HashSet::with_capacity_and_hasher(keys.len(), RandomState::default());
    let first: Vec<bool> = keys.iter().map(|key| seen.insert(key.as_str())).collect();
    drop(seen);
    if first.iter().all(|&f| f) {
        return Ok((keys, items));
    }
    let mut first_iter = first.iter();
    let (keys, kept) = keys
        .into_iter()
        .zip(items)
        .filter(|_| *first_iter.next().unwrap_or(&false))
        .unzip();
    Ok((keys, kept))
}

#[cold]
fn shared(spec: &FnSpec, prefix: &str) -> Error {
    Error::SharedKeys {
        function: spec.name(),
        prefix: prefix.to_owned(),
    }
}
