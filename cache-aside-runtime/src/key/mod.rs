//! Stage 1 of the engine: turning a call's arguments into a Redis key.
//!
//! # Format (version 2)
//!
//! `{namespace}:{prefix}:{arguments}`
//!
//! - `namespace` comes from the [`Cache`](crate::Cache) (default `ca`), `prefix` from the
//!   attribute (default: the function's path, see [`FnSpec`](crate::__private::FnSpec)).
//! - `arguments` is the key arguments joined by `:`, or the rendered `key = "..."` template.
//!   A function with no key arguments is stored at `{namespace}:{prefix}:`.
//! - Each argument is written from its `serde::Serialize` impl:
//!
//!   | serialized as | written | examples |
//!   |---|---|---|
//!   | integer | decimal | `42`, `-7` |
//!   | float | shortest round-trip form, always with `.` or `e` | `1.5`, `42.0`, `1e-7`, `NaN`, `inf`, `-0.0` |
//!   | bool | `true` / `false` | |
//!   | string, char | as is, reserved bytes as `%XX`; prefixed with `'` when it would read as a number or bool, or is empty | `alice`, `a%3Ab`, `'42`, `'true`, `'` |
//!   | `None` | `~`; `Some(None)` is `!~`, `Some(Some(None))` `!!~` | |
//!   | `Some(x)` | `x` | |
//!   | unit, unit struct | `()` | |
//!   | sequence, tuple, tuple struct, bytes | `(a,b)`; empty: `(,)` | `(1,2,3)` |
//!   | map | `(k=v,...)` sorted by encoded key; empty: `(=)` | `(a=1,b=2)` |
//!   | struct | `(field=v,...)` in field order, skipped fields left out; empty: `(=)` | `(page=2,tag=~)` |
//!   | enum variant | unit: its name, like a string; others: `Name(inner)`, the inner value a tuple or struct for tuple and struct variants | `Active`, `Id(7)`, `Range((1,2))` |
//!
//! - Reserved bytes — ASCII space and control characters, `%`, `:`, `*`, `?`, `[`, `]`, `{`, `}`,
//!   `\`, `(`, `)`, `,`, `=`, `~`, `!`, `#`, `"`, `'` — are written `%XX`. So user input can
//!   neither join two calls onto one key, nor carry glob or cluster hash-tag characters into
//!   a key or a prefix pattern.
//! - When the arguments part is longer than [`MAX_ARGS_LEN`] bytes, it is replaced by `#`,
//!   16 hex digits naming the function's key layout (so `_invalidate_all` still tells whose
//!   entry it is), and the SHA-1 of the full text in hex; namespace and prefix stay readable.
//!
//! - An entry's key has no hash tag: on a Redis Cluster it lives in the slot of its whole
//!   text. Its lease lives in the entry's own header, so a call touches one key and one
//!   slot; a key that must share the entry's slot later will carry the entry's key as its
//!   tag (`{ca:user:42}...`), and so hash exactly like it. `{` and `}` are reserved bytes,
//!   and namespaces and prefixes cannot hold them, so an entry's key never contains a brace
//!   and user input can never form a tag of its own.
//!
//! The encoding is a pure function of the values: the same call gives the same key in every
//! process, run and platform. It is injective: two argument values share a key only if they
//! serialize alike, where a number is its decimal value whatever its type (`5u8` and
//! `5i64`, `0.1f32` and `0.1f64`),
//! a `char` is a one-character string, a newtype is its inner value, a unit variant is its
//! name, `Some(x)` is `x` (but `Some(None)` is not `None`), bytes are a sequence of integers
//! and a struct is the map of its serialized fields. These only meet when one argument
//! position can hold several types (an `#[serde(untagged)]` enum); `-0.0` and `0.0` are
//! distinct keys, every `NaN` one key.

mod encode;
mod layout;
pub(crate) mod prefix;

use serde::Serialize;

use self::encode::KeySerializer;
pub use self::encode::{Map, Seq};
pub use self::layout::Layout;
use crate::error::Error;

/// Longest `arguments` part written out in full; longer ones are hashed.
pub const MAX_ARGS_LEN: usize = 160;

/// A finished cache key, and the storage keys of the tags its entry carries (see
/// [`tag`](crate::tag); none for a function without `tags`), one per line.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(String, Option<String>);

impl Key {
    /// The key as stored in the backend.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an owned string.
    pub fn into_string(mut self) -> String {
        std::mem::take(&mut self.0)
    }

    /// Does its entry carry tags?
    #[inline]
    pub(crate) fn has_tags(&self) -> bool {
        self.1.is_some()
    }

    /// The storage keys of the sets of the tags its entry carries.
    pub(crate) fn tags(&self) -> impl Iterator<Item = &str> {
        self.1
            .as_deref()
            .into_iter()
            .flat_map(|tags| tags.split('\n'))
    }

    /// The key, carrying `tags` (set keys separated by `\n`, which no key holds).
    pub(crate) fn tagged(mut self, tags: Option<String>) -> Key {
        self.1 = tags;
        self
    }
}

/// A buffer from the key pool, for text built per call (a call's tags).
pub(crate) fn pooled(capacity: usize) -> String {
    pool::take(capacity)
}

/// Key buffers go back to a small per-thread pool when their key is dropped, and the next
/// key on that thread is built in one: a key per call otherwise costs a `malloc` and a
/// `free`, a measurable share of a Redis hit's client CPU.
mod pool {
    use std::cell::RefCell;

    use crate::reuse::{self, Free};

    /// The largest capacity worth keeping.
    const MAX_CAPACITY: usize = 512;

    thread_local!(static FREE: Free<String> = const { RefCell::new(Vec::new()) });

    pub(super) fn take(capacity: usize) -> String {
        match reuse::take(&FREE) {
            Some(mut buf) => {
                buf.reserve(capacity);
                buf
            }
            None => String::with_capacity(capacity.max(64)),
        }
    }

    pub(super) fn give(mut buf: String) {
        if buf.capacity() == 0 || buf.capacity() > MAX_CAPACITY {
            return;
        }
        buf.clear();
        reuse::give(&FREE, buf);
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.0));
        if let Some(tags) = self.1.take() {
            pool::give(tags);
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Is `s` usable as a namespace or prefix: non-empty, and only `[A-Za-z0-9_.-/]`?
/// The macro checks attribute prefixes with the same rule at compile time.
pub const fn is_valid_segment(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/')) {
            return false;
        }
        i += 1;
    }
    !bytes.is_empty()
}

/// Builds one key: the namespace and prefix first, then the argument part piece by piece.
///
/// Generated code calls [`value`](Self::value) for each argument and [`lit`](Self::lit) for
/// the fixed text of a `key = "..."` template (`:` between arguments otherwise).
pub struct KeyBuilder {
    buf: String,
    args_start: usize,
}

impl KeyBuilder {
    pub(crate) fn new(namespace: &str, prefix: &str) -> Self {
        let mut buf = pool::take(namespace.len() + prefix.len() + 24);
        buf.push_str(namespace);
        buf.push(':');
        buf.push_str(prefix);
        buf.push(':');
        let args_start = buf.len();
        KeyBuilder { buf, args_start }
    }

    /// A builder over `text`, with no namespace or prefix of its own: a tag's text.
    pub(crate) fn bare(text: String) -> Self {
        let args_start = text.len();
        KeyBuilder {
            buf: text,
            args_start,
        }
    }

    /// What was written, as is (never hashed).
    pub(crate) fn into_text(self) -> String {
        self.buf
    }

    /// Appends fixed template text verbatim (checked by the macro to hold no reserved
    /// character but `:`, and at most one value between two `:`).
    pub fn lit(&mut self, text: &str) {
        self.buf.push_str(text);
    }

    /// Appends one argument in the key encoding.
    pub fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(KeySerializer::new(&mut self.buf))
    }

    /// The finished key; an arguments part over [`MAX_ARGS_LEN`] is hashed, tagged with the
    /// function's `layout` so prefix invalidation can still tell whose key it is.
    pub(crate) fn finish(mut self, layout: &Layout) -> Key {
        let args_len = self.buf.len() - self.args_start;
        if args_len > MAX_ARGS_LEN {
            let digest = sha1_smol::Sha1::from(&self.buf.as_bytes()[self.args_start..])
                .digest()
                .to_string();
            self.buf.truncate(self.args_start);
            self.buf.push('#');
            self.buf.push_str(&layout.tag());
            self.buf.push_str(&digest);
        }
        Key(self.buf, None)
    }
}

/// The glob pattern that matches every key under `{namespace}:{prefix}:`.
pub(crate) fn prefix_pattern(namespace: &str, prefix: &str) -> String {
    // Namespaces and prefixes are checked by `is_valid_segment`, so nothing needs escaping;
    // the assertion keeps that true if the rule ever widens.
    debug_assert!(is_valid_segment(namespace) && is_valid_segment(prefix));
    format!("{namespace}:{prefix}:*")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::Serialize;

    use super::encode::encode_alone;
    use super::*;

    fn enc<T: Serialize + ?Sized>(v: &T) -> String {
        encode_alone(v).unwrap()
    }

    const LAYOUT: Layout = Layout::new("{}:{}");

    fn key(args: &[&dyn Fn(&mut KeyBuilder)]) -> String {
        let mut b = KeyBuilder::new("ns", "user");
        for (i, arg) in args.iter().enumerate() {
            if i > 0 {
                b.lit(":");
            }
            arg(&mut b);
        }
        b.finish(&LAYOUT).into_string()
    }

    #[test]
    fn pins_the_documented_format() {
        assert_eq!(key(&[&|b| b.value(&42u64).unwrap()]), "ns:user:42");
        assert_eq!(
            key(&[&|b| b.value(&7i32).unwrap(), &|b| b.value("bob").unwrap()]),
            "ns:user:7:bob"
        );
        assert_eq!(key(&[]), "ns:user:");
    }

    #[test]
    fn pins_scalar_encodings() {
        assert_eq!(enc(&-3i8), "-3");
        assert_eq!(enc(&u128::MAX), "340282366920938463463374607431768211455");
        assert_eq!(enc(&true), "true");
        assert_eq!(enc(&1.5f64), "1.5");
        assert_eq!(enc(&42.0f64), "42.0");
        assert_eq!(enc(&1e16f64), "1e16");
        assert_eq!(enc(&0.1f32), "0.1");
        assert_eq!(enc(&-0.0f64), "-0.0");
        assert_eq!(enc(&f64::NAN), "NaN");
        assert_eq!(enc(&f64::NEG_INFINITY), "-inf");
        assert_eq!(enc(&'x'), "x");
        assert_eq!(enc(&()), "()");
        assert_eq!(enc("héllo"), "héllo");
        assert_eq!(enc("alice"), "alice");
    }

    #[test]
    fn strings_that_read_as_other_kinds_are_marked() {
        for (s, written) in [
            ("42", "'42"),
            ("-7", "'-7"),
            ("1.5", "'1.5"),
            ("1e5", "'1e5"),
            ("inf", "'inf"),
            ("NaN", "'NaN"),
            ("infinity", "'infinity"),
            ("true", "'true"),
            ("false", "'false"),
            ("", "'"),
            ("'", "%27"),
            ("42abc", "42abc"),
            ("truth", "truth"),
            ("-", "-"),
        ] {
            assert_eq!(enc(s), written, "{s:?}");
        }
        assert_ne!(enc(&42u64), enc("42"));
        assert_ne!(enc(&true), enc("true"));
        assert_ne!(enc(&f64::INFINITY), enc("inf"));
    }

    #[test]
    fn escapes_separators_globs_and_hash_tags() {
        assert_eq!(enc("a:b"), "a%3Ab");
        assert_eq!(enc("*?[x]"), "%2A%3F%5Bx%5D");
        assert_eq!(enc("{tag}"), "%7Btag%7D");
        assert_eq!(enc("50%"), "50%25");
        assert_eq!(enc("a b\n"), "a%20b%0A");
    }

    #[test]
    fn colons_in_input_cannot_join_two_calls() {
        let one = key(&[&|b| b.value("a:b").unwrap(), &|b| b.value("c").unwrap()]);
        let two = key(&[&|b| b.value("a").unwrap(), &|b| b.value("b:c").unwrap()]);
        assert_ne!(one, two);
    }

    #[test]
    fn options_and_nesting_stay_distinct() {
        assert_eq!(enc(&None::<u32>), "~");
        assert_eq!(enc(&Some(5u32)), "5");
        let nested = [
            enc(&None::<Option<u32>>),
            enc(&Some(None::<u32>)),
            enc(&Some(Some(0u32))),
        ];
        assert_eq!(nested, ["~", "!~", "0"]);
        assert_ne!(enc(&Some("~")), enc(&None::<&str>));
    }

    #[test]
    fn unit_empty_collections_and_none_are_distinct() {
        let empty_map: BTreeMap<u8, u8> = BTreeMap::new();
        let forms = [
            enc(&()),
            enc(&Vec::<u8>::new()),
            enc(&empty_map),
            enc(&None::<u8>),
            enc(""),
        ];
        assert_eq!(forms, ["()", "(,)", "(=)", "~", "'"]);
        let json = [
            serde_json::json!(null),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!(42),
            serde_json::json!("42"),
            serde_json::json!(true),
            serde_json::json!("true"),
            serde_json::json!([1]),
            serde_json::json!(["1"]),
            serde_json::json!(1.0),
        ];
        let keys: std::collections::HashSet<String> = json.iter().map(enc).collect();
        assert_eq!(keys.len(), json.len(), "{keys:?}");
    }

    #[test]
    fn sequences_structs_and_enums() {
        assert_eq!(enc(&vec![1, 2, 3]), "(1,2,3)");
        assert_ne!(enc(&Vec::<String>::new()), enc(&vec![String::new()]));
        assert_ne!(enc(&vec!["a,b"]), enc(&vec!["a", "b"]));
        #[derive(Serialize)]
        struct Page {
            n: u32,
            tag: Option<String>,
        }
        assert_eq!(enc(&Page { n: 2, tag: None }), "(n=2,tag=~)");
        #[derive(Serialize)]
        enum Filter {
            All,
            Id(u64),
            Range(u32, u32),
            Named { name: String },
        }
        assert_eq!(enc(&Filter::All), "All");
        assert_eq!(enc(&Filter::Id(7)), "Id(7)");
        assert_eq!(enc(&Filter::Range(1, 2)), "Range((1,2))");
        assert_eq!(enc(&Filter::Named { name: "x".into() }), "Named((name=x))");
    }

    #[test]
    fn skipped_fields_cannot_shift_the_others() {
        #[derive(Serialize)]
        struct Range {
            #[serde(skip_serializing_if = "Option::is_none")]
            min: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            max: Option<u32>,
        }
        let low = enc(&Range {
            min: Some(100),
            max: None,
        });
        let high = enc(&Range {
            min: None,
            max: Some(100),
        });
        assert_eq!((low.as_str(), high.as_str()), ("(min=100)", "(max=100)"));
        assert_eq!(
            enc(&Range {
                min: None,
                max: None
            }),
            "(=)"
        );
    }

    #[test]
    fn untagged_variants_of_other_kinds_stay_apart() {
        #[derive(Serialize)]
        #[serde(untagged)]
        enum UserRef {
            Id(u64),
            Login(String),
        }
        assert_eq!(enc(&UserRef::Id(42)), "42");
        assert_eq!(enc(&UserRef::Login("42".into())), "'42");
        assert_eq!(enc(&UserRef::Login("alice".into())), "alice");
    }

    #[test]
    fn maps_are_sorted_whatever_the_iteration_order() {
        let mut h = HashMap::new();
        let mut b = BTreeMap::new();
        for i in 0..50u32 {
            h.insert(format!("k{i}"), i);
            b.insert(format!("k{i}"), i);
        }
        let from_hash = enc(&h);
        assert_eq!(from_hash, enc(&b));
        assert!(from_hash.starts_with("(k0=0,k1=1,k10=10,"), "{from_hash}");
    }

    #[test]
    fn long_arguments_are_hashed_stably_keeping_the_prefix_and_layout() {
        let long = "x".repeat(500);
        let a = key(&[&|b| b.value(long.as_str()).unwrap()]);
        assert!(a.starts_with("ns:user:#"), "{a}");
        assert_eq!(a.len(), "ns:user:#".len() + 16 + 40);
        // Pinned so the format cannot drift between releases: the layout's tag, then the
        // SHA-1 of 500 'x'.
        assert_eq!(
            a,
            format!(
                "ns:user:#{}dc31b173a0a99f4123f43c4c18e291f1101d5b0c",
                LAYOUT.tag()
            )
        );
        assert_eq!(LAYOUT.tag(), "392482de86473944");
        assert!(LAYOUT.fits(&a["ns:user:".len()..]));
        assert!(!Layout::new("{}").fits(&a["ns:user:".len()..]));
        let b = key(&[&|b| b.value(&format!("{long}y")).unwrap()]);
        assert_ne!(a, b);
        let short = key(&[&|b| b.value(&"x".repeat(MAX_ARGS_LEN)).unwrap()]);
        assert!(!short.contains('#'));
    }

    #[test]
    fn layouts_tell_neighbours_sharing_a_prefix_apart() {
        let get_user = Layout::new("{}");
        let posts = Layout::new("{}:posts:{}");
        let none = Layout::new("");
        let dotted = Layout::new("v{}.json");
        for (layout, args, fits) in [
            (get_user, "42", true),
            (get_user, "42:posts:1", false),
            (get_user, "", false),
            (posts, "42:posts:1", true),
            (posts, "42", false),
            (posts, "42:drafts:1", false),
            (posts, "42:posts:1:x", false),
            (none, "", true),
            (none, "42", false),
            (dotted, "v7.json", true),
            (dotted, "v.json", false),
            (dotted, "7.json", false),
        ] {
            assert_eq!(layout.fits(args), fits, "{layout:?} {args:?}");
        }
    }

    #[test]
    fn segments_are_checked() {
        assert!(is_valid_segment("user.v2/list-all_x"));
        for bad in ["", "a:b", "a*", "a b", "{x}"] {
            assert!(!is_valid_segment(bad), "{bad:?}");
        }
        assert_eq!(prefix_pattern("ns", "user"), "ns:user:*");
    }
}
