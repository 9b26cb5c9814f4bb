//! What `#[cached]` knows about one function, as a `static` in the generated code.
//!
//! Generated code builds it with [`FnSpec::new`] and one `const` setter per option the
//! attribute gives; options left out fall back to the [`Cache`](crate::Cache)'s settings.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use crate::key::Layout;

/// The static description of one cached function. Built by generated code only.
#[doc(hidden)]
pub struct FnSpec {
    name: &'static str,
    prefix: Option<&'static str>,
    pub(crate) layout: Layout,
    /// Where the function is written (file, line, column of its name), if the macro said.
    pub(crate) site: Option<(&'static str, u32, u32)>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) none_ttl: Option<Duration>,
    pub(crate) stale: Option<Duration>,
    /// Bare `stale`: the window is the cache's `.stale(..)`.
    pub(crate) stale_from_cache: bool,
    pub(crate) refresh_ahead: Option<f64>,
    /// Bare `refresh_ahead`: the fraction is the cache's `.refresh_ahead(..)`.
    pub(crate) refresh_ahead_from_cache: bool,
    /// `xfetch = beta`.
    pub(crate) xfetch: Option<f64>,
    /// How long this function's body last took to load, in microseconds: XFetch's delta.
    last_load_us: AtomicU64,
    pub(crate) fail_safe: Option<Duration>,
    pub(crate) jitter: Option<f64>,
    pub(crate) lock: Option<bool>,
    pub(crate) flight_wait: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_value_bytes: Option<u64>,
    /// The prefix of the first instantiation seen, by its [`Identity`].
    first_prefix: OnceLock<(Identity, &'static str)>,
    /// Those of other instantiations of a generic function.
    other_prefixes: RwLock<Vec<(Identity, &'static str)>>,
    /// Whether a value this function returned was refused as not round-tripping (logged
    /// once per function).
    pub(crate) warned_unstorable: AtomicBool,
    /// Another function can write this one's keys (see `keyspace`): run uncached.
    shares_keys: AtomicBool,
    /// The policy resolved with the first cache this function ran with (by cache id).
    policy: OnceLock<(u64, bool, crate::policy::Policy)>,
}

impl std::fmt::Debug for FnSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FnSpec({})", self.name)
    }
}

impl FnSpec {
    pub const fn new(name: &'static str, prefix: Option<&'static str>, layout: Layout) -> Self {
        FnSpec {
            name,
            prefix,
            layout,
            site: None,
            ttl: None,
            none_ttl: None,
            stale: None,
            stale_from_cache: false,
            refresh_ahead: None,
            refresh_ahead_from_cache: false,
            xfetch: None,
            last_load_us: AtomicU64::new(0),
            fail_safe: None,
            jitter: None,
            lock: None,
            flight_wait: None,
            timeout: None,
            max_value_bytes: None,
            first_prefix: OnceLock::new(),
            other_prefixes: RwLock::new(Vec::new()),
            warned_unstorable: AtomicBool::new(false),
            shares_keys: AtomicBool::new(false),
            policy: OnceLock::new(),
        }
    }

    /// Where the function is written: its wrapper and companions say the same.
    pub const fn at(mut self, file: &'static str, line: u32, column: u32) -> Self {
        self.site = Some((file, line, column));
        self
    }

    /// `ttl = ...`
    pub const fn ttl_ms(mut self, ms: u64) -> Self {
        self.ttl = Some(Duration::from_millis(ms));
        self
    }

    /// `none_ttl = ...`
    pub const fn none_ttl_ms(mut self, ms: u64) -> Self {
        self.none_ttl = Some(Duration::from_millis(ms));
        self
    }

    /// `stale = ...`: serve an expired value this long while one background refresh runs.
    pub const fn stale_ms(mut self, ms: u64) -> Self {
        self.stale = Some(Duration::from_millis(ms));
        self
    }

    /// Bare `stale`: serve stale for the window set by `CacheBuilder::stale`.
    pub const fn stale_from_cache(mut self) -> Self {
        self.stale_from_cache = true;
        self
    }

    /// Bare `refresh_ahead`: refresh at the fraction set by `CacheBuilder::refresh_ahead`.
    pub const fn refresh_ahead_from_cache(mut self) -> Self {
        self.refresh_ahead_from_cache = true;
        self
    }

    /// `xfetch = 1.0`: a hit refreshes early with a probability that rises as expiry nears,
    /// scaled by the body's last load time (XFetch).
    pub const fn xfetch(mut self, beta: f64) -> Self {
        self.xfetch = Some(beta);
        self
    }

    /// The policy for `cache`, when it is the one remembered. Remembers the first it is
    /// asked with.
    pub(crate) fn remembered_policy(
        &'static self,
        cache: &crate::Cache,
        surface_errors: bool,
    ) -> Option<&'static crate::policy::Policy> {
        let id = cache.inner.id;
        let (of, surface, policy) = match self.policy.get() {
            Some(found) => found,
            None => {
                let policy =
                    crate::policy::Policy::resolve(self, &cache.inner.settings, surface_errors)?;
                self.policy.get_or_init(|| (id, surface_errors, policy))
            }
        };
        (*of == id && *surface == surface_errors).then_some(policy)
    }

    /// The body's last load time.
    pub(crate) fn last_load(&self) -> Duration {
        Duration::from_micros(self.last_load_us.load(Relaxed))
    }

    /// Notes how long a load of this function took.
    pub(crate) fn loaded_in(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_load_us.store(us, Relaxed);
    }

    /// `refresh_ahead = 0.8`: a hit past this fraction of the TTL refreshes in the background.
    pub const fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.refresh_ahead = Some(fraction);
        self
    }

    /// `fail_safe = ...`: keep expired values this long to answer when the body fails.
    pub const fn fail_safe_ms(mut self, ms: u64) -> Self {
        self.fail_safe = Some(Duration::from_millis(ms));
        self
    }

    /// `jitter = 0.1`: spread each TTL by up to ±10%.
    pub const fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = Some(fraction);
        self
    }

    /// `lock = true|false`: take a distributed lock before loading.
    pub const fn lock(mut self, on: bool) -> Self {
        self.lock = Some(on);
        self
    }

    /// `flight_wait = ...`: longest a miss waits for another caller's load of its key.
    pub const fn flight_wait_ms(mut self, ms: u64) -> Self {
        self.flight_wait = Some(Duration::from_millis(ms));
        self
    }

    /// `timeout = ...`: bound on each cache read or write of this function.
    pub const fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout = Some(Duration::from_millis(ms));
        self
    }

    /// `max_value_bytes = ...`: larger entries are returned but not stored.
    pub const fn max_value_bytes(mut self, bytes: u64) -> Self {
        self.max_value_bytes = Some(bytes);
        self
    }

    /// The function's name, for logs.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The key prefix of the instantiation that `path` and `generics` name (see
    /// [`Identity`]): the attribute's `prefix`, else the function's path; either way with
    /// the type arguments of a generic function or of a generic `Self`, so that
    /// `row_count::<Orders>` and `row_count::<Users>` never share keys.
    ///
    /// Worked out once per instantiation and kept (a generic function has finitely many).
    pub(crate) fn prefix(
        &'static self,
        path: &'static str,
        generics: &'static str,
    ) -> &'static str {
        let id = Identity::new(path, generics);
        if let Some((first, prefix)) = self.first_prefix.get() {
            if *first == id {
                return prefix;
            }
        } else {
            let prefix = self
                .first_prefix
                .get_or_init(|| (id, self.make_prefix(path, generics)));
            if prefix.0 == id {
                return prefix.1;
            }
        }
        let others = self
            .other_prefixes
            .read()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, prefix)) = others.iter().find(|(other, _)| *other == id) {
            return prefix;
        }
        drop(others);
        let mut others = self
            .other_prefixes
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, prefix)) = others.iter().find(|(other, _)| *other == id) {
            return prefix;
        }
        let prefix = self.make_prefix(path, generics);
        others.push((id, prefix));
        prefix
    }

    /// Can another function write this one's keys? Then its calls run uncached.
    #[inline]
    pub(crate) fn shares_keys(&self) -> bool {
        self.shares_keys.load(Relaxed)
    }

    pub(crate) fn mark_shared(&self) {
        self.shares_keys.store(true, Relaxed);
    }

    /// The prefix of one instantiation, recorded with the functions writing under it.
    fn make_prefix(&'static self, path: &'static str, generics: &str) -> &'static str {
        let prefix = self.render_prefix(path, generics);
        let owner = split_last_segment(strip_closures(path)).0;
        crate::keyspace::record(self, owner, prefix);
        prefix
    }

    fn render_prefix(&self, path: &str, generics: &str) -> &'static str {
        let path = strip_closures(path);
        let owner = split_last_segment(path).0;
        let own = trailing_group(generics);
        let prefix = match self.prefix {
            Some(prefix) => {
                let mut args = generic_groups(owner);
                args.push_str(own);
                let mut out = prefix.to_owned();
                escape_path(&args, &mut out);
                out
            }
            None => {
                let mut out = String::new();
                let full = if owner.is_empty() {
                    format!("{}{own}", self.name)
                } else {
                    format!("{owner}::{}{own}", self.name)
                };
                escape_path(&full, &mut out);
                out
            }
        };
        Box::leak(prefix.into_boxed_str())
    }
}

/// Which instantiation of a function a call is: the `type_name` of a closure in the
/// generated code (the function's full path with its module, enclosing functions, `Self`
/// type and the type arguments of a generic `Self`) and of a helper function generic over
/// the function's own type and const parameters (empty when it has none). Both are
/// `&'static str`s fixed per instantiation, so their addresses identify it; equal
/// addresses mean equal text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    path: (usize, usize),
    generics: (usize, usize),
}

impl Identity {
    fn new(path: &'static str, generics: &'static str) -> Self {
        Identity {
            path: (path.as_ptr() as usize, path.len()),
            generics: (generics.as_ptr() as usize, generics.len()),
        }
    }
}

/// `app::f::{{closure}}::{{closure}}` → `app::f`.
fn strip_closures(mut path: &str) -> &str {
    while let Some(rest) = path.strip_suffix("::{{closure}}") {
        path = rest;
    }
    path
}

/// Walks `path`, calling `at` with each byte index and the depth of `<...>` generic
/// argument lists around it (an `->` arrow is not a bracket).
fn depths(path: &str, mut at: impl FnMut(usize, u8, usize) -> bool) {
    let bytes = path.as_bytes();
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'<' => depth += 1,
            b'>' if i > 0 && bytes[i - 1] == b'-' => {}
            b'>' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if !at(i, b, depth) {
            return;
        }
    }
}

/// `app::Repo<T>::get<U>` → (`app::Repo<T>`, `get<U>`): split at the last `::` outside
/// angle brackets.
fn split_last_segment(path: &str) -> (&str, &str) {
    let mut split = None;
    depths(path, |i, b, depth| {
        if b == b':' && depth == 0 && path.as_bytes().get(i + 1) == Some(&b':') {
            split = Some(i);
        }
        true
    });
    match split {
        Some(i) => (&path[..i], &path[i + 2..]),
        None => ("", path),
    }
}

/// The `<...>` list that ends `path`, if it ends in one: `app::f::helper<u8, 3>` → `<u8, 3>`.
fn trailing_group(path: &str) -> &str {
    if !path.ends_with('>') {
        return "";
    }
    let mut start = None;
    let mut open_at_depth_one = None;
    depths(path, |i, b, depth| {
        if b == b'<' && depth == 1 {
            open_at_depth_one = Some(i);
        }
        if b == b'>' && depth == 0 && i + 1 == path.len() {
            start = open_at_depth_one;
        }
        true
    });
    start.map_or("", |i| &path[i..])
}

/// Every generic argument list of `path` that follows a name, concatenated:
/// `<app::Repo<u8> as app::Load<i8>>::get` → `<u8><i8>`. A qualified path's own `<...>`
/// is not one of them; the lists inside it are.
fn generic_groups(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::new();
    let mut group: Option<(usize, usize)> = None;
    depths(path, |i, b, depth| {
        match (group, b) {
            (None, b'<') => {
                let after_name = i > 0
                    && (bytes[i - 1].is_ascii_alphanumeric()
                        || bytes[i - 1] == b'_'
                        || bytes[i - 1] >= 0x80);
                if after_name {
                    group = Some((i, depth - 1));
                }
            }
            (Some((start, outer)), b'>') if depth == outer => {
                out.push_str(&path[start..=i]);
                group = None;
            }
            _ => {}
        }
        true
    });
    out
}

/// Writes a Rust path into the prefix alphabet `[A-Za-z0-9_.-/]`, injectively: `::` as
/// `.`, letters, digits and `_` as themselves, every other byte as `-XX`. Rust names hold
/// no `.` or `-`, so distinct paths stay distinct: `app::repo::get_user` → `app.repo.get_user`,
/// `Repo<u8>` → `Repo-3Cu8-3E`.
fn escape_path(path: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b':' && bytes.get(i + 1) == Some(&b':') {
            out.push('.');
            i += 2;
            continue;
        }
        if b.is_ascii_alphanumeric() || b == b'_' {
            out.push(b as char);
        } else {
            out.push('-');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix_of(
        spec: &'static FnSpec,
        path: &'static str,
        generics: &'static str,
    ) -> &'static str {
        spec.prefix(path, generics)
    }

    #[test]
    fn derives_prefixes_from_paths() {
        static F: FnSpec = FnSpec::new("get_user", None, Layout::new("{}"));
        assert_eq!(
            prefix_of(&F, "app::repo::get_user::{{closure}}::{{closure}}", ""),
            "app.repo.get_user"
        );
        static M: FnSpec = FnSpec::new("get", None, Layout::new("{}"));
        assert_eq!(
            prefix_of(
                &M,
                "app::Repo<alloc::string::String>::get<u8>::{{closure}}",
                ""
            ),
            "app.Repo-3Calloc.string.String-3E.get"
        );
        assert_eq!(
            prefix_of(
                &M,
                "app::Repo<u8>::get::{{closure}}",
                "app::Repo<u8>::get::helper<i8, 3>"
            ),
            "app.Repo-3Cu8-3E.get-3Ci8-2C-203-3E"
        );
        static T: FnSpec = FnSpec::new("get", None, Layout::new(""));
        assert_eq!(
            prefix_of(&T, "<app::Users as app::Load>::get::{{closure}}", ""),
            "-3Capp.Users-20as-20app.Load-3E.get"
        );
        static U: FnSpec = FnSpec::new("größe", None, Layout::new(""));
        assert_eq!(
            prefix_of(&U, "app::größe::{{closure}}", ""),
            "app.gr-C3-B6-C3-9Fe"
        );
    }

    #[test]
    fn explicit_prefixes_keep_type_arguments_only() {
        static SPEC: FnSpec = FnSpec::new("f", Some("user"), Layout::new("{}")).ttl_ms(60_000);
        assert_eq!(prefix_of(&SPEC, "app::f::{{closure}}", ""), "user");
        assert_eq!(SPEC.ttl, Some(Duration::from_secs(60)));
        assert_eq!(SPEC.none_ttl, None);
        assert_eq!(
            prefix_of(
                &SPEC,
                "<app::Repo<u8> as app::Load<i8>>::f::{{closure}}",
                "x::h<fn(u8) -> u8>"
            ),
            "user-3Cu8-3E-3Ci8-3E-3Cfn-28u8-29-20-2D-3E-20u8-3E"
        );
        // The first instantiation is remembered; others are worked out once each.
        assert_eq!(prefix_of(&SPEC, "app::f::{{closure}}", ""), "user");
        let a = prefix_of(&SPEC, "app::f::{{closure}}", "h<u8>");
        let b = prefix_of(&SPEC, "app::f::{{closure}}", "h<u16>");
        assert_eq!((a, b), ("user-3Cu8-3E", "user-3Cu16-3E"));
        assert!(std::ptr::eq(
            a,
            prefix_of(&SPEC, "app::f::{{closure}}", "h<u8>")
        ));
    }

    #[test]
    fn distinct_paths_give_distinct_prefixes() {
        let paths = [
            "a::b_c",
            "a::b::c",
            "a_b::c",
            "a::b-c",
            "a::b.c",
            "a::b::c<u8>",
            "a::b::c<u8, u8>",
            "a::b::c<(u8, u8)>",
            "a::r#try",
            "a::try",
            "a::b<c>::d",
            "a::b::c<d>",
        ];
        let mut seen = std::collections::HashSet::new();
        for path in paths {
            let mut out = String::new();
            escape_path(path, &mut out);
            assert!(crate::key::is_valid_segment(&out), "{out}");
            assert!(seen.insert(out.clone()), "{path} -> {out} twice");
        }
    }

    #[test]
    fn setters_are_usable_in_statics() {
        static SPEC: FnSpec = FnSpec::new("f", None, Layout::new(""))
            .stale_ms(1_000)
            .refresh_ahead(0.8)
            .fail_safe_ms(2_000)
            .jitter(0.1)
            .lock(true)
            .timeout_ms(50)
            .max_value_bytes(1 << 20);
        assert_eq!(SPEC.stale, Some(Duration::from_secs(1)));
        assert_eq!(SPEC.refresh_ahead, Some(0.8));
        assert_eq!(SPEC.lock, Some(true));
        assert_eq!(SPEC.max_value_bytes, Some(1 << 20));
    }
}
