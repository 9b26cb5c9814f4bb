//! Which functions write under which prefix, so that two of them can never read each
//! other's entries.
//!
//! Two functions may share a prefix on purpose (`prefix = "user"` beside `key =
//! "user:{id}:posts:{page}"`): their layouts keep their keys apart. But a `prefix` given
//! to two functions, a given prefix that equals another function's derived one, or two
//! layouts that can render one text (`{}` beside `v{}.json`: `by_name("v7.json")` and
//! `by_version(7)` are both `ca:doc:v7.json`) would let one function's hit return the
//! other's value. The first time a function's instantiation builds its prefix, it is
//! recorded here; if another function already writes under that prefix with a layout that
//! can meet its own, both are marked and from then on run uncached in this process (the
//! call still returns its body's value; `stats().errors` counts it and one warning names
//! both). A process that runs only one of the two cannot see the other: fix the
//! attributes.
//!
//! A batch function (`#[cached(batch)]`) shares a one-key function's entries on purpose:
//! `get_users(&[7])` reads and writes the key of `get_user(7)`. Such a pair is kept cached
//! as long as both store the same type: each function's stored type is learnt at its first
//! call, before its first read ([`stores`]), and a pair whose types differ is marked as
//! above. A pair is checked once both types are known; until then neither has read. A
//! batch beside a function whose `tags` are not its own (compared as templates, by what
//! they render from a key: `"user:{id}"` and `"user:{ids}"` are one) is marked at once, with
//! it: one function's entries would lack a tag the other's carry, so invalidating that tag
//! would miss them, and those written before the other function first ran would be its
//! hits.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use crate::spec::FnSpec;

/// A function writing under a prefix: its spec and the path it is defined at (the wrapper
/// and each companion have a spec of their own; the name and path say they are one
/// function).
type Writers = Vec<Writer>;
type Writer = (&'static FnSpec, &'static str);

/// The writers under one prefix, and the pairs among them that share keys on purpose (a
/// batch function beside another), to check once their stored types are known.
#[derive(Default)]
struct Prefix {
    writers: Writers,
    typed: Vec<(Writer, Writer)>,
}

static BY_PREFIX: LazyLock<Mutex<HashMap<&'static str, Prefix>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Notes that `spec` stores values of type `V`, at its first call (one atomic load after);
/// `true` if another function can write its keys (then the call runs uncached).
#[inline]
pub(crate) fn stores<V: ?Sized>(spec: &'static FnSpec) -> bool {
    if spec.value_type.get().is_none() {
        learn_type(spec, std::any::type_name::<V>());
    }
    spec.shares_keys()
}

/// Checks `spec`'s pairs with its type `name`, marking them if it differs from a partner's,
/// and only then records it: a call that sees the type recorded sees the marks too.
#[cold]
#[inline(never)]
fn learn_type(spec: &'static FnSpec, name: &'static str) {
    let mut by_prefix = BY_PREFIX.lock().unwrap_or_else(|e| e.into_inner());
    for (prefix, entry) in by_prefix.iter_mut() {
        check_typed(prefix, entry, Some((spec, name)));
    }
    let _ = spec.value_type.set(name);
}

/// The stored type of the function `who` belongs to, if one of its specs learnt it (or is
/// `learning` it).
fn type_of(
    writers: &Writers,
    who: (&'static FnSpec, &'static str),
    learning: Option<(&'static FnSpec, &'static str)>,
) -> Option<&'static str> {
    writers
        .iter()
        .filter(|w| one_function(**w, who))
        .find_map(|w| match learning {
            Some((spec, name)) if std::ptr::eq(spec, w.0) => Some(name),
            _ => w.0.value_type.get().copied(),
        })
}

/// Marks the pairs sharing keys on purpose whose stored types are known and differ.
fn check_typed(
    prefix: &str,
    entry: &mut Prefix,
    learning: Option<(&'static FnSpec, &'static str)>,
) {
    let Prefix { writers, typed } = entry;
    typed.retain(|&(a, b)| {
        let (Some(ta), Some(tb)) = (type_of(writers, a, learning), type_of(writers, b, learning))
        else {
            return true;
        };
        if ta != tb {
            tracing::warn!(
                prefix,
                first = a.0.name(),
                first_type = ta,
                second = b.0.name(),
                second_type = tb,
                "cache-aside: a batch function shares its keys with a function storing another \
                 type; both run uncached until they store one type or get prefixes of their own"
            );
            for &writer in writers.iter() {
                if one_function(writer, a) || one_function(writer, b) {
                    writer.0.mark_shared();
                }
            }
        }
        false
    });
}

/// The prefix of the instantiation `path` and `generics` name (see `FnSpec::prefix`),
/// recorded here the first time it is made.
pub(crate) fn prefix_of(
    spec: &'static FnSpec,
    path: &'static str,
    generics: &'static str,
) -> &'static str {
    spec.prefix(path, generics, |prefix, owner| record(spec, owner, prefix))
}

/// Records that `spec`, defined at `owner`, writes under `prefix`; marks every spec of it
/// and of each other function whose keys could meet its own.
pub(crate) fn record(spec: &'static FnSpec, owner: &'static str, prefix: &'static str) {
    let mut by_prefix = BY_PREFIX.lock().unwrap_or_else(|e| e.into_inner());
    let entry = by_prefix.entry(prefix).or_default();
    if entry
        .writers
        .iter()
        .any(|(other, _)| std::ptr::eq(*other, spec))
    {
        return;
    }
    let me = (spec, owner);
    entry.writers.push(me);
    let mut meeting = Vec::new();
    let mut typed = Vec::new();
    let mut unlike = Vec::new();
    for &other in entry.writers.iter() {
        if one_function(other, me) {
            if other.0.shares_keys() {
                spec.mark_shared();
            }
        } else if spec.layout.meets(&other.0.layout)
            && !meeting.iter().any(|m| one_function(*m, other))
            && !typed.iter().any(|m| one_function(*m, other))
            && !unlike
                .iter()
                .any(|&(a, b)| one_function(a, other) || one_function(b, other))
        {
            // A batch beside a function of the same layout: by design, if one type, and if
            // both tag their entries alike.
            if (spec.batch || other.0.batch) && spec.layout == other.0.layout {
                if spec.tags_signature() == other.0.tags_signature() {
                    typed.push(other);
                } else {
                    unlike.push((other, me));
                }
            } else {
                meeting.push(other);
            }
        }
    }
    entry
        .typed
        .extend(typed.into_iter().map(|other| (other, me)));
    check_typed(prefix, entry, None);
    let writers = &entry.writers;
    for &(first, second) in &unlike {
        tracing::warn!(
            prefix,
            first = first.0.name(),
            first_tags = first.0.tags_signature().unwrap_or_default(),
            second = second.0.name(),
            second_tags = second.0.tags_signature().unwrap_or_default(),
            "cache-aside: a batch function shares its keys with a function that tags them \
             otherwise (invalidating a tag would miss the entries one of them wrote); both \
             run uncached until they have the same `tags` or the batch a prefix of its own"
        );
        // Both: either may have written entries before the other ran, and a hit on one of
        // them would outlive the invalidation of a tag it lacks.
        for &writer in writers.iter() {
            if one_function(writer, first) || one_function(writer, second) {
                writer.0.mark_shared();
            }
        }
    }
    for &(other, _) in &meeting {
        tracing::warn!(
            prefix,
            first = other.name(),
            first_layout = other.layout.text(),
            second = spec.name(),
            second_layout = spec.layout.text(),
            "cache-aside: two functions can write the same keys under one prefix; both run \
             uncached until one gets its own `prefix` (or a layout the other cannot render)"
        );
    }
    if !meeting.is_empty() {
        for &writer in writers.iter() {
            if one_function(writer, me) || meeting.iter().any(|m| one_function(*m, writer)) {
                writer.0.mark_shared();
            }
        }
    }
}

/// Are these two specs one function's (its wrapper and a companion each have their own)?
/// By where it is written when the macro said; else by name, path and layout.
fn one_function(a: (&'static FnSpec, &str), b: (&'static FnSpec, &str)) -> bool {
    if std::ptr::eq(a.0, b.0) {
        return true;
    }
    match (a.0.site, b.0.site) {
        (Some(here), Some(there)) => here == there,
        // Two `Batch` statics of `get_many`: no site, one name and path; one only if one.
        (None, None) if a.0.batch || b.0.batch => false,
        _ => a.1 == b.1 && a.0.name() == b.0.name() && a.0.layout == b.0.layout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Layout;

    #[test]
    fn functions_whose_keys_meet_are_marked_both() {
        static BY_NAME: FnSpec = FnSpec::new("by_name", Some("t-doc"), Layout::new("{}"));
        static BY_VERSION: FnSpec =
            FnSpec::new("by_version", Some("t-doc"), Layout::new("v{}.json"));
        static POSTS: FnSpec = FnSpec::new("posts", Some("t-doc"), Layout::new("{}:posts:{}"));
        // A companion's spec of its own: the same function.
        static BY_NAME_KEY: FnSpec = FnSpec::new("by_name", Some("t-doc"), Layout::new("{}"));
        record(&POSTS, "app", "t-doc");
        record(&BY_NAME, "app", "t-doc");
        assert!(!BY_NAME.shares_keys() && !POSTS.shares_keys());
        record(&BY_NAME, "app", "t-doc");
        record(&BY_NAME_KEY, "app", "t-doc");
        assert!(!BY_NAME.shares_keys(), "a function meets itself");
        record(&BY_VERSION, "app", "t-doc");
        assert!(BY_NAME.shares_keys() && BY_VERSION.shares_keys());
        assert!(BY_NAME_KEY.shares_keys(), "the companion's spec too");
        assert!(!POSTS.shares_keys());
        // The same name and layout at another path: another function.
        static ELSEWHERE: FnSpec = FnSpec::new("posts", Some("t-doc"), Layout::new("{}:posts:{}"));
        record(&ELSEWHERE, "app::other", "t-doc");
        assert!(POSTS.shares_keys() && ELSEWHERE.shares_keys());
    }

    #[test]
    fn a_batch_shares_keys_with_a_function_only_if_both_tag_alike() {
        const ONE: Layout = Layout::new("{}");
        static USER: FnSpec = FnSpec::new("user", Some("t-tags"), ONE).tags("user:{}");
        static USERS: FnSpec = FnSpec::new("users", Some("t-tags"), ONE)
            .batch()
            .tags("user:{}");
        record(&USER, "app", "t-tags");
        record(&USERS, "app", "t-tags");
        assert!(!USER.shares_keys() && !USERS.shares_keys(), "tagged alike");
        static TEAMS: FnSpec = FnSpec::new("teams", Some("t-tags"), ONE)
            .batch()
            .tags("team:{.team}");
        record(&TEAMS, "app", "t-tags");
        assert!(
            TEAMS.shares_keys() && USER.shares_keys(),
            "tagged otherwise"
        );
        static PLAIN: FnSpec = FnSpec::new("plain", Some("t-tags2"), ONE);
        static PLAINS: FnSpec = FnSpec::new("plains", Some("t-tags2"), ONE).batch();
        record(&PLAINS, "app", "t-tags2");
        record(&PLAIN, "app", "t-tags2");
        assert!(
            !PLAIN.shares_keys() && !PLAINS.shares_keys(),
            "neither tagged"
        );
    }
}
