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
/// the call a miss; the body runs and its value is returned.
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
/// path with `.` for `::` (`my_app.repo.get_user`; for methods the `Self` type's path, as in
/// `my_app.repo.Users.get`), so two functions never share keys by accident.
///
/// **`key = "user:{id}:posts:{page}"`**: an explicit key. The text before the first `:` is the
/// prefix; `{name}` is an argument, `{name.field}` a field of one, `{self.field}` one of the
/// receiver. Checked at compile time: a name that is not an argument is an error, and so is a
/// key argument missing from the template (it would make different calls share an entry).
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
/// # Keys
///
/// `{namespace}:{prefix}:{arguments}`: arguments joined by `:` (or the template), each in a
/// deterministic text encoding with `:`, glob characters and braces escaped. See the
/// runtime's `key` module for the exact format.
///
/// # Companions
///
/// Next to `get_user`, with the same visibility and the same key arguments (and receiver),
/// so the key of an invalidation cannot drift from the key of a read:
///
/// - `get_user_cache_key(id) -> Result<String, Error>`: the exact key.
/// - `get_user_invalidate(id).await -> Result<bool, Error>`: delete that entry.
/// - `get_user_invalidate_all().await -> Result<u64, Error>`: delete every entry of
///   `get_user`, by prefix.
///
/// # Not accepted
///
/// Non-`async` functions, `&mut` arguments (a hit would skip the mutation), destructuring
/// patterns in arguments, unknown or repeated options: each is a compile error at the token
/// at fault. On any error the function itself is still emitted unchanged.
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(attr.into(), item.into()).into()
}
