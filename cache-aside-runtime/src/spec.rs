//! What `#[cached]` knows about one function, as a `static` in the generated code.
//!
//! Generated code builds it with [`FnSpec::new`] and one `const` setter per option the
//! attribute gives; options left out fall back to the [`Cache`](crate::Cache)'s settings.
//! Besides the options, it keeps what the runtime learns about the function: its prefixes
//! (one per instantiation), its last load time, the policy resolved for its cache, and
//! whether another function can write its keys.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use crate::backend::BreakerFigures;
use crate::key::{Layout, prefix};
use crate::policy::{LoadTime, MissScore, Options, Policy};
use crate::stats::{Counters, Saving, Stats};

/// The static description of one cached function. Built by generated code only.
#[doc(hidden)]
pub struct FnSpec {
    name: &'static str,
    prefix: Option<&'static str>,
    pub(crate) layout: Layout,
    /// Where the function is written (file, line, column of its name), if the macro said.
    pub(crate) site: Option<(&'static str, u32, u32)>,
    pub(crate) options: Options,
    /// How long this function's body last took to load: XFetch's delta.
    pub(crate) load_time: LoadTime,
    /// How often it missed lately: whether its reads take the lease.
    pub(crate) misses: MissScore,
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
    pub(crate) policy: OnceLock<(u64, Policy)>,
    /// This function's counters in the first cache it counted in (by cache id); see
    /// [`events`](crate::events).
    pub(crate) counters: OnceLock<(u64, Arc<FnCounters>)>,
    /// `#[cached(batch)]`: its keys are those of a one-key function with its prefix, whose
    /// entries it may share when both store one type (see `keyspace`).
    pub(crate) batch: bool,
    /// `tags = [...]`: its tag templates with each placeholder's argument left out
    /// (`user:{}` for `"user:{id}"`, sorted, one per line), so that a batch and a one-key
    /// function sharing entries can be told to tag them alike (see `keyspace`).
    pub(crate) tags: Option<&'static str>,
    /// A [`Batch`](crate::batch::Batch)'s tag templates (`user:{}`, `{}` standing for the
    /// key), rendered at run time; empty for a function (the macro renders its tags).
    pub(crate) tag_templates: &'static [&'static str],
    /// The `type_name` of the value it stores, learnt at its first call (see `keyspace`).
    pub(crate) value_type: OnceLock<&'static str>,
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
            options: Options::NONE,
            load_time: LoadTime::new(),
            misses: MissScore::new(),
            first_prefix: OnceLock::new(),
            other_prefixes: RwLock::new(Vec::new()),
            warned_unstorable: AtomicBool::new(false),
            shares_keys: AtomicBool::new(false),
            policy: OnceLock::new(),
            counters: OnceLock::new(),
            batch: false,
            tags: None,
            tag_templates: &[],
            value_type: OnceLock::new(),
        }
    }

    /// `#[cached(batch)]`: a function loading many keys at once.
    pub const fn batch(mut self) -> Self {
        self.batch = true;
        self
    }

    /// `tags = [...]`: a function whose entries carry tags, by their templates with each
    /// placeholder's argument left out (`"team:{.team}\nuser:{}"`).
    pub const fn tags(mut self, templates: &'static str) -> Self {
        self.tags = Some(templates);
        self
    }

    /// A [`Batch`](crate::batch::Batch)'s tag templates (checked by its setter).
    pub(crate) const fn tag_templates(mut self, templates: &'static [&'static str]) -> Self {
        self.tag_templates = templates;
        self
    }

    /// What its tags render from a key, comparable between functions (see `keyspace`):
    /// the macro's signature, or a `Batch`'s templates sorted, one per line.
    pub(crate) fn tags_signature(&self) -> Option<String> {
        if let Some(signature) = self.tags {
            return Some(signature.to_owned());
        }
        if self.tag_templates.is_empty() {
            return None;
        }
        let mut each = self.tag_templates.to_vec();
        each.sort_unstable();
        each.dedup();
        Some(each.join("\n"))
    }

    /// Where the function is written: its wrapper and companions say the same.
    pub const fn at(mut self, file: &'static str, line: u32, column: u32) -> Self {
        self.site = Some((file, line, column));
        self
    }

    /// `ttl = ...`
    pub const fn ttl_ms(mut self, ms: u64) -> Self {
        self.options.ttl = Some(Duration::from_millis(ms));
        self
    }

    /// `none_ttl = ...`
    pub const fn none_ttl_ms(mut self, ms: u64) -> Self {
        self.options.none_ttl = Some(Duration::from_millis(ms));
        self
    }

    /// `stale = ...`: serve an expired value this long while one background refresh runs.
    pub const fn stale_ms(mut self, ms: u64) -> Self {
        self.options.stale = Some(Duration::from_millis(ms));
        self
    }

    /// Bare `stale`: serve stale for the window set by `CacheBuilder::stale`.
    pub const fn stale_from_cache(mut self) -> Self {
        self.options.stale_from_cache = true;
        self
    }

    /// Bare `refresh_ahead`: refresh at the fraction set by `CacheBuilder::refresh_ahead`.
    pub const fn refresh_ahead_from_cache(mut self) -> Self {
        self.options.refresh_ahead_from_cache = true;
        self
    }

    /// `xfetch = 1.0`: a hit refreshes early with a probability that rises as expiry nears,
    /// scaled by the body's last load time (XFetch).
    pub const fn xfetch(mut self, beta: f64) -> Self {
        self.options.xfetch = Some(beta);
        self
    }

    /// `refresh_ahead = 0.8`: a hit past this fraction of the TTL refreshes in the background.
    pub const fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.options.refresh_ahead = Some(fraction);
        self
    }

    /// `fail_safe = ...`: keep expired values this long to answer when the body fails.
    pub const fn fail_safe_ms(mut self, ms: u64) -> Self {
        self.options.fail_safe = Some(Duration::from_millis(ms));
        self
    }

    /// `jitter = 0.1`: spread each TTL by up to ±10%.
    pub const fn jitter(mut self, fraction: f64) -> Self {
        self.options.jitter = Some(fraction);
        self
    }

    /// `lock = true|false`: take a distributed lock before loading.
    pub const fn lock(mut self, on: bool) -> Self {
        self.options.lock = Some(on);
        self
    }

    /// `flight_wait = ...`: longest a miss waits for another caller's load of its key.
    pub const fn flight_wait_ms(mut self, ms: u64) -> Self {
        self.options.flight_wait = Some(Duration::from_millis(ms));
        self
    }

    /// `timeout = ...`: bound on each cache read or write of this function.
    pub const fn timeout_ms(mut self, ms: u64) -> Self {
        self.options.timeout = Some(Duration::from_millis(ms));
        self
    }

    /// `max_value_bytes = ...`: larger entries are returned but not stored.
    pub const fn max_value_bytes(mut self, bytes: u64) -> Self {
        self.options.max_value_bytes = Some(bytes);
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
    /// Worked out once per instantiation and kept (a generic function has finitely many);
    /// `made` hears of each new one, with the path the function is defined at.
    pub(crate) fn prefix(
        &'static self,
        path: &'static str,
        generics: &'static str,
        made: impl Fn(&'static str, &'static str),
    ) -> &'static str {
        let id = Identity::new(path, generics);
        if let Some((first, prefix)) = self.first_prefix.get() {
            if *first == id {
                return prefix;
            }
        } else {
            let prefix = self
                .first_prefix
                .get_or_init(|| (id, self.make_prefix(path, generics, &made)));
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
        let prefix = self.make_prefix(path, generics, &made);
        others.push((id, prefix));
        prefix
    }

    /// The prefix of the first instantiation that built a key, if one did.
    pub(crate) fn prefix_seen(&self) -> Option<&'static str> {
        self.first_prefix.get().map(|(_, prefix)| *prefix)
    }

    /// Are the two specs one function's (its wrapper and companions each have one)? By
    /// where it is written when the macro said, else by name, layout and prefix.
    pub(crate) fn same_function(&self, other: &FnSpec) -> bool {
        if std::ptr::eq(self, other) {
            return true;
        }
        match (self.site, other.site) {
            (Some(here), Some(there)) => here == there,
            _ => {
                self.name == other.name
                    && self.layout == other.layout
                    && self.prefix_seen() == other.prefix_seen()
            }
        }
    }

    /// Can another function write this one's keys? Then its calls run uncached.
    #[inline]
    pub(crate) fn shares_keys(&self) -> bool {
        self.shares_keys.load(Relaxed)
    }

    pub(crate) fn mark_shared(&self) {
        self.shares_keys.store(true, Relaxed);
    }

    /// The prefix of one instantiation, kept for the life of the process.
    fn make_prefix(
        &'static self,
        path: &'static str,
        generics: &str,
        made: &impl Fn(&'static str, &'static str),
    ) -> &'static str {
        let (prefix, owner) = prefix::render(self.name, self.prefix, path, generics);
        let prefix: &'static str = Box::leak(prefix.into_boxed_str());
        made(prefix, owner);
        prefix
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

/// One function's counters in one cache: the cache's set, and what only a function has.
#[derive(Default)]
pub(crate) struct FnCounters {
    pub(crate) counters: Counters,
    /// The recent load time and what the hits saved so far (see [`Saving`]).
    pub(crate) saving: Saving,
    /// Call times by outcome, for the `metrics` feature's histogram.
    #[cfg(feature = "metrics")]
    pub(crate) calls: crate::metrics::CallTimes,
}

impl std::ops::Deref for FnCounters {
    type Target = Counters;

    #[inline]
    fn deref(&self) -> &Counters {
        &self.counters
    }
}

impl FnCounters {
    /// A snapshot, the hits credited with the function's recent load time.
    pub(crate) fn snapshot(&self, breaker: BreakerFigures) -> Stats {
        let mut stats = self.counters.snapshot(breaker);
        stats.time_saved_us = self.saving.credit(stats.hits);
        stats
    }

    /// What the function's hits saved so far.
    pub(crate) fn saved(&self) -> u64 {
        self.saving.credit(self.counters.hits.load())
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
        spec.prefix(path, generics, |_, _| {})
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
        assert_eq!(SPEC.options.ttl, Some(Duration::from_secs(60)));
        assert_eq!(SPEC.options.none_ttl, None);
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
    fn setters_are_usable_in_statics() {
        static SPEC: FnSpec = FnSpec::new("f", None, Layout::new(""))
            .stale_ms(1_000)
            .refresh_ahead(0.8)
            .fail_safe_ms(2_000)
            .jitter(0.1)
            .lock(true)
            .timeout_ms(50)
            .max_value_bytes(1 << 20);
        assert_eq!(SPEC.options.stale, Some(Duration::from_secs(1)));
        assert_eq!(SPEC.options.refresh_ahead, Some(0.8));
        assert_eq!(SPEC.options.lock, Some(true));
        assert_eq!(SPEC.options.max_value_bytes, Some(1 << 20));
    }
}
