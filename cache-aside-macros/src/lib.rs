//! The `#[cached]` attribute of [cache-aside]. Depend on `cache-aside-runtime`, which
//! re-exports it and does all the work; this crate only parses, checks and emits one call.
//!
//! [cache-aside]: https://docs.rs/cache-aside-runtime

mod args;
mod expand;
mod func;
mod key;

use proc_macro::TokenStream;

/// Turns an `async fn` into a cache-aside wrapper: build the key from the arguments, read
/// the cache, on a miss run the original body, store the result with its TTL, return it.
///
/// ```text
/// use cache_aside_runtime::cached;
///
/// #[cached(ttl = 60, prefix = "user")]
/// async fn get_user(id: u64) -> Result<User, DbError> {
///     db.load_user(id).await
/// }
/// ```
///
/// is, by hand:
///
/// ```text
/// async fn get_user(id: u64) -> Result<User, DbError> {
///     let key = format!("{namespace}:user:{id}");
///     if let Ok(Some(bytes)) = redis.get(&key).await {
///         if let Ok(user) = decode(&bytes) { return Ok(user); }   // corrupt: reload
///     }                                                           // Redis down: load
///     let result = db.load_user(id).await;
///     if let Ok(user) = &result { let _ = redis.set_px(&key, encode(user), 60_000).await; }
///     result
/// }
/// ```
///
/// A cache failure never fails the call: a Redis that is down, slow or holds garbage makes
/// the call a miss; the body runs and its value is returned (unless
/// `on_cache_error = "fail"`, below).
///
/// # Return types
///
/// The value must implement `serde::Serialize` and `serde::de::DeserializeOwned`.
/// - `Result<T, E>`: `Ok(T)` is cached, `Err` never is (`E` need not serialize).
/// - `Option<T>`: `Some` is cached; `None` only with `none_ttl`.
/// - `Result<Option<T>, E>`: both rules.
/// - anything else: cached as is. `""`, `0`, `false`, `[]`, `()` are hits like any value.
///
/// The shape is read from the written type (`Result<..>`, `io::Result<..>`, `Option<..>`);
/// through a type alias with another name the value is cached as a plain value.
///
/// A hit returns what the body returned. Before storing, the value is decoded back from
/// its JSON and compared with the original, with `==` if the stored type is `PartialEq`
/// and always by their serialized forms; a value that would come back different is
/// returned to the caller but not stored, counted in `stats().unstorable` and logged once
/// per function. JSON cannot hold `NaN`, `±inf`, nor a `Some(None)` (or `Some(())`) inside
/// the value (all three read back as `null`), an `#[serde(untagged)]` enum may read back as
/// an earlier variant, and a `#[serde(skip)]` field comes back as its default. Without
/// `PartialEq`, the serialized forms cannot show the last two when the variants serialize
/// alike or the field is skipped: derive `PartialEq` on such types.
///
/// # Options
///
/// **`ttl = 60`** or **`ttl = "90s"`** (`ms`, `s`, `m`, `h`, `d`, combinable: `"1h30m"`):
/// how long an entry lives. Required unless the cache has a `default_ttl`. Zero, negative
/// or malformed values are compile errors.
///
/// **`none_ttl = "30s"`**: cache `None` (and `Ok(None)`) for this long, so a missing row
/// does not hit the database on every call. Without it `None` is not cached.
///
/// ```text
/// #[cached(ttl = "10m", none_ttl = "30s")]
/// async fn find_user(email: &str) -> Option<User> { db.find(email).await }
/// ```
///
/// **`prefix = "user"`**: the key prefix; letters, digits, `_ . - /`. Default: the function's
/// path with `.` for `::` (`my_app.repo.get_user`; for methods the path runs through the
/// `Self` type, as in `my_app.repo.Users.get`), so two functions do not share keys by
/// accident. Characters a name holds beyond letters, digits and `_` are written `-XX`
/// (`Repo<u8>` is `Repo-3Cu8-3E`). A generic function, or a method of a generic `impl`, adds
/// its type and const arguments to the prefix, given or derived (`rows-3Capp.Orders-3E` for
/// `row_count::<Orders>` with `prefix = "rows"`): each instantiation has its own entries and
/// its own `_invalidate_all`. Functions sharing a prefix must have layouts that keep their
/// keys apart (`prefix = "user"` beside `key = "user:{id}:posts:{page}"`); two whose keys
/// could meet run uncached once both have run in a process (see the README's Keys).
///
/// **`key = "user:{id}:posts:{page}"`**: an explicit key. The text before the first `:` is the
/// prefix; `{name}` is an argument, `{name.field}` a field of one, `{self.field}` one of the
/// receiver. Fixed text uses letters, digits, `_ . - / :`, and two values need a `:` between
/// them (`"t:{a}{b}"` or `"t:{a}-{b}"` could not tell `(1, 23)` from `(12, 3)`); one value
/// may have fixed text around it (`"doc:v{version}.json"`). Checked at compile time: a name
/// that is not an argument is an error, and so is a key argument missing from the template
/// (it would make different calls share an entry).
///
/// **`skip(db, conn)`**: arguments left out of the key (pools, clients, request context).
/// `self` is never part of the key.
///
/// **`cache = EXPR`**: the cache to use: a `Cache`, `Arc<Cache>`, `LazyLock<Cache>` or a
/// reference to one, e.g. `cache = self.cache` or `cache = CACHE`. Without it, the default set
/// by `Cache::set_default`; if none was set the call runs uncached and an error is logged.
///
/// ```text
/// impl Users {
///     #[cached(ttl = 300, cache = self.cache, skip(tx))]
///     async fn get(&self, tx: &Tx, id: u64) -> Result<User, DbError> { tx.user(id).await }
/// }
/// ```
///
/// **`crate = path`**: where the runtime is, if the dependency is renamed
/// (`crate = ::my_cache`).
///
/// # Freshness and resilience
///
/// Durations take the same forms as `ttl`; options left out use the cache's settings
/// (`Cache::builder()`).
///
/// **`stale = "5m"`**: after the TTL, keep serving the old value for this long while one
/// background task reloads it (stale-while-revalidate).
///
/// ```text
/// #[cached(ttl = "1m", stale = "5m")]
/// async fn prices(region: String) -> Result<Prices, DbError> { db.prices(&region).await }
/// ```
///
/// is, by hand:
///
/// ```text
/// match redis.get(&key).await {
///     Some(e) if e.age < 1m => Ok(e.value),
///     Some(e) if e.age < 1m + 5m => {
///         tokio::spawn(async move { store(&key, db.prices(&region).await) }); // one per key
///         Ok(e.value)
///     }
///     _ => load_and_store(&key, db.prices(&region).await),  // kept for 1m + 5m
/// }
/// ```
///
/// **`refresh_ahead = 0.8`** (a float strictly between 0 and 1): a hit after this fraction
/// of the TTL returns the value and reloads it in the background, so a busy key is replaced
/// before it expires and no caller waits for the reload.
///
/// ```text
/// #[cached(ttl = "10m", refresh_ahead = 0.8)]
/// async fn config(name: String) -> Config { .. }
/// // by hand: on a hit with e.age > 8m, tokio::spawn(reload(key)) and return e.value
/// ```
///
/// **`xfetch = 1.0`** (a float in (0, 10], the beta of XFetch): probabilistic early refresh.
/// Each hit refreshes in the background with probability `exp(-left / (load * beta))`,
/// `left` being the entry's remaining freshness and `load` how long this function's body
/// last took. Far from expiry that is next to never; near it each hit is likelier to, so
/// under steady traffic one caller in the fleet refreshes a little before expiry, instead
/// of every process at one fixed point (as `refresh_ahead` does without `lock`).
///
/// ```text
/// #[cached(ttl = "10m", xfetch = 1.0)]
/// async fn feed(user: u64) -> Feed { .. }
/// // by hand: on a hit, if now + last_load * beta * -ln(rand()) >= e.fresh_until,
/// //          tokio::spawn(reload(key)); return e.value
/// ```
///
/// Bare **`stale`** and **`refresh_ahead`** (no value) take the window and fraction from the
/// cache (`Cache::builder().stale(..)`, `.refresh_ahead(..)`), so one setting serves every
/// function that opts in; a cache without the setting serves nothing stale.
///
/// With `stale`, `refresh_ahead` or `xfetch` the body may run after the call has returned, in a
/// spawned task: every argument must be owned and `'static` (`String`, not `&str`;
/// `self: Arc<Self>`, not `&self`) and the body's future `Send`. A borrowed argument is an
/// error at the argument, a non-`Send` body one at the option. That is why a function opts
/// in, even to the cache's window: a cache setting alone cannot change what the body must be.
///
/// **`fail_safe = "1h"`**: keep values this long past their TTL; when the body returns
/// `Err`, answer with the expired value instead (and serve it for a short back-off before
/// trying the body again). Only for `Result` return types: the body must be able to fail.
///
/// ```text
/// #[cached(ttl = "1m", fail_safe = "1h")]
/// async fn rates() -> Result<Rates, ApiError> { api.rates().await }
/// // by hand: match api.rates().await {
/// //     Ok(r) => { store(&key, &r); Ok(r) }              // kept for 1m + 1h
/// //     Err(e) => expired_entry.map(|old| Ok(old.value)).unwrap_or(Err(e)),
/// // }
/// ```
///
/// **`jitter = 0.1`** (a float from 0, which turns the cache's jitter off, to 0.5): each stored TTL is spread at random by
/// up to ±that fraction, so keys written together do not expire together.
///
/// ```text
/// #[cached(ttl = "1h", jitter = 0.1)]
/// // by hand: redis.set_px(&key, v, 3_600_000.0 * (1.0 + 0.1 * rand(-1.0..1.0)))
/// ```
///
/// **`lock = true`** or **`lock = false`**: take a Redis lock before loading, so one process
/// in the fleet runs the body for a missing key while the others wait for its value.
/// Within one process calls are always single-flight.
///
/// ```text
/// #[cached(ttl = "1h", lock = true)]
/// // by hand: if redis.set_nx_px(&lock_key, token, 5_000) { load, store, delete lock }
/// //          else { poll the key until the holder stored it, or load after lock_wait }
/// ```
///
/// **`timeout = "50ms"`**: bound on each cache read and write of this function; a slower
/// read is a miss, a slower write is abandoned.
///
/// ```text
/// #[cached(ttl = 60, timeout = "50ms")]
/// // by hand: tokio::time::timeout(50ms, redis.get(&key)).await.ok().flatten()
/// ```
///
/// **`max_value_bytes = 65_536`** (an integer above 0): a larger encoded value is returned
/// but not stored.
///
/// ```text
/// #[cached(ttl = 60, max_value_bytes = 65_536)]
/// // by hand: if bytes.len() <= 65_536 { redis.set_px(&key, bytes, ttl) }
/// ```
///
/// **`on_cache_error = "fail"`** or **`"open"`** (the default): with `"fail"`, a cache
/// failure (Redis down or slow, no default cache, a key argument that cannot serialize)
/// is returned as the call's `Err` instead of running the body uncached. Only for `Result`
/// return types whose error implements `From<cache_aside_runtime::Error>`.
///
/// ```text
/// impl From<cache_aside_runtime::Error> for AppError { .. }
///
/// #[cached(ttl = 60, on_cache_error = "fail")]
/// async fn balance(id: u64) -> Result<u64, AppError> { .. }
/// // by hand: let cached = redis.get(&key).await.map_err(AppError::from)?;
/// ```
///
/// # Keys
///
/// `{namespace}:{prefix}:{arguments}`: arguments joined by `:` (or the template), each in a
/// deterministic text encoding with `:`, glob characters and braces escaped, and injective:
/// two calls with different arguments never share a key. See the runtime's `key` module for
/// the exact format. Key arguments must serialize the same way for equal values in every
/// process, so a `HashSet` argument is a compile error (take a `BTreeSet`), and so is an
/// `impl Trait` key argument, whose type the key could not hold (name a type parameter).
/// The attribute sees only the written type: a `HashSet` inside a struct argument, behind a
/// type alias or as a type parameter's value gives equal sets different keys (misses, and
/// invalidations that miss), never one key to different sets.
///
/// # Companions
///
/// Next to `get_user`, with the same visibility and the same key arguments (and receiver),
/// so the key of an invalidation cannot drift from the key of a read:
///
/// - `get_user_cache_key(id) -> Result<String, Error>`: the exact key.
/// - `get_user_invalidate(id).await -> Result<bool, Error>`: delete that entry.
/// - `get_user_invalidate_all().await -> Result<u64, Error>`: delete every entry of
///   `get_user` and nothing else: the keys under its prefix whose arguments part has its
///   layout (`SCAN` + `UNLINK`), so `posts` with `key = "user:{id}:posts:{page}"` keeps its
///   entries when `get_user` with `prefix = "user"` is invalidated, and the other way round.
///
/// **`companions = false`** leaves them out. A method of a *trait impl* needs it: a trait
/// impl may only hold the trait's methods (without it, rustc reports "method
/// `name_cache_key` is not a member of trait"). Its entries are then invalidated by prefix
/// (`cache.invalidate_prefix("user.name")`, so give it a `prefix`), or keep the companions by
/// caching an inherent method that the trait method calls.
///
/// # Not accepted
///
/// Non-`async` functions, `&mut` arguments (a hit would skip the mutation), destructuring
/// patterns in arguments, `HashSet` and `impl Trait` key arguments, key templates with two
/// values between one pair of `:`, borrowed arguments with `stale`/`refresh_ahead`,
/// `fail_safe` or `on_cache_error = "fail"` without a `Result`, unknown or repeated options,
/// values out of range: each is a compile error at the token at fault. On any error the function itself is still emitted unchanged.
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(attr.into(), item.into()).into()
}
