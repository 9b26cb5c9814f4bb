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
//! The encoding is a pure function of the values: the same call gives the same key in every
//! process, run and platform. It is injective: two argument values share a key only if they
//! serialize alike, where a number is its decimal value whatever its type (`5u8` and
//! `5i64`, `0.1f32` and `0.1f64`),
//! a `char` is a one-character string, a newtype is its inner value, a unit variant is its
//! name, `Some(x)` is `x` (but `Some(None)` is not `None`), bytes are a sequence of integers
//! and a struct is the map of its serialized fields. These only meet when one argument
//! position can hold several types (an `#[serde(untagged)]` enum); `-0.0` and `0.0` are
//! distinct keys, every `NaN` one key.

use std::fmt::Write as _;

use serde::ser::{self, Serialize};

use crate::error::Error;

/// Longest `arguments` part written out in full; longer ones are hashed.
pub const MAX_ARGS_LEN: usize = 160;

/// A finished cache key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    /// The key as stored in the backend.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an owned string.
    pub fn into_string(mut self) -> String {
        std::mem::take(&mut self.0)
    }
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
pub fn is_valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
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

    /// Appends fixed template text verbatim (checked by the macro to hold no reserved
    /// character but `:`, and at most one value between two `:`).
    pub fn lit(&mut self, text: &str) {
        self.buf.push_str(text);
    }

    /// Appends one argument in the key encoding.
    pub fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(KeySerializer {
            out: &mut self.buf,
            some_depth: 0,
        })
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
        Key(self.buf)
    }
}

/// The shape of one function's arguments part, as the macro saw it: its `:`-separated
/// segments, each fixed text or one value with fixed text around it (`{}` marks the
/// value). A plain function with two key arguments has layout `{}:{}`; `key =
/// "user:{id}:posts:{page}"` has `{}:posts:{}`; no key arguments, the empty layout.
///
/// Several functions may share a prefix (`prefix = "user"` beside `key = "user:{id}:posts"`),
/// so a prefix pattern alone would delete the neighbours' entries too: `_invalidate_all`
/// deletes only the keys whose arguments part fits the function's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout(&'static str);

impl Layout {
    /// A layout as the macro writes it.
    pub const fn new(text: &'static str) -> Layout {
        Layout(text)
    }

    /// The layout as written: `{}` for each value.
    pub(crate) fn text(&self) -> &'static str {
        self.0
    }

    /// 16 hex digits naming this layout in hashed keys.
    pub(crate) fn tag(&self) -> String {
        let digest = sha1_smol::Sha1::from(self.0.as_bytes())
            .digest()
            .to_string();
        digest[..16].to_owned()
    }

    /// Does `args`, the part of a key after `{namespace}:{prefix}:`, fit this layout?
    pub(crate) fn fits(&self, args: &str) -> bool {
        if let Some(hashed) = args.strip_prefix('#') {
            return hashed.len() == 16 + 40
                && hashed.starts_with(&self.tag())
                && hashed.bytes().all(|b| b.is_ascii_hexdigit());
        }
        if self.0.is_empty() {
            return args.is_empty();
        }
        let mut segments = args.split(':');
        for shape in self.0.split(':') {
            let Some(segment) = segments.next() else {
                return false;
            };
            let fits = match shape.split_once("{}") {
                None => segment == shape,
                Some((before, after)) => {
                    segment.len() > before.len() + after.len()
                        && segment.starts_with(before)
                        && segment.ends_with(after)
                }
            };
            if !fits {
                return false;
            }
        }
        segments.next().is_none()
    }
}

/// The glob pattern that matches every key under `{namespace}:{prefix}:`.
pub(crate) fn prefix_pattern(namespace: &str, prefix: &str) -> String {
    // Namespaces and prefixes are checked by `is_valid_segment`, so nothing needs escaping;
    // the assertion keeps that true if the rule ever widens.
    debug_assert!(is_valid_segment(namespace) && is_valid_segment(prefix));
    format!("{namespace}:{prefix}:*")
}

fn is_reserved(b: u8) -> bool {
    b <= b' '
        || b == 0x7f
        || matches!(
            b,
            b'%' | b':'
                | b'*'
                | b'?'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'\\'
                | b'('
                | b')'
                | b','
                | b'='
                | b'~'
                | b'!'
                | b'#'
                | b'"'
                | b'\''
        )
}

/// Writes `%XX` for a reserved byte.
fn push_percent(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xF)] as char);
}

/// Would `s`, written bare, read as something other than a string: empty, a bool, or a
/// number (anything `f64` parses: integers, `1e5`, `inf`, `NaN`)? Such strings get a `'`.
fn needs_string_mark(s: &str) -> bool {
    match s.as_bytes().first() {
        None => true,
        // Every number and bool starts with one of these; other strings skip the parse.
        Some(b'0'..=b'9' | b'+' | b'-' | b'.' | b'i' | b'I' | b'n' | b'N' | b't' | b'f') => {
            s == "true" || s == "false" || s.parse::<f64>().is_ok()
        }
        Some(_) => false,
    }
}

/// A string value: `'` first if it could read as another kind, then the text with reserved
/// bytes as `%XX`. Non-ASCII text stays readable: UTF-8 continuation bytes are never
/// reserved.
fn push_string(out: &mut String, s: &str) {
    if needs_string_mark(s) {
        out.push('\'');
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if is_reserved(b) {
            out.push_str(&s[start..i]);
            push_percent(out, b);
            start = i + 1;
        }
    }
    out.push_str(&s[start..]);
}

struct KeySerializer<'a> {
    out: &'a mut String,
    /// How many `Some` wrap the value being written: only matters when it turns out `None`.
    some_depth: usize,
}

impl<'a> KeySerializer<'a> {
    fn plain(self) -> &'a mut String {
        self.out
    }
}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error::Key(msg.to_string())
    }
}

// Integers are most keys' arguments: `itoa` writes them without `core::fmt`, about a tenth
// of the instructions of `write!` (a measurable share of a Redis hit's client CPU).
macro_rules! display_ints {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method(self, v: $ty) -> Result<(), Error> {
            self.plain().push_str(itoa::Buffer::new().format(v));
            Ok(())
        }
    )*};
}

impl<'a> ser::Serializer for KeySerializer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Map<'a>;
    type SerializeStruct = Seq<'a>;
    type SerializeStructVariant = Seq<'a>;

    display_ints!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128);

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.plain().push_str(if v { "true" } else { "false" });
        Ok(())
    }

    // `Debug` for floats is the shortest form that reads back as the same value, and always
    // holds a `.` or an `e` (`42.0`, `1e16`) or is `NaN`/`inf`/`-inf`: never an integer's
    // form. None of it is reserved.
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        let _ = write!(self.plain(), "{v:?}");
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        let _ = write!(self.plain(), "{v:?}");
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        push_string(self.plain(), v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        push_string(self.plain(), v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        let mut seq = Seq::open(self.plain(), None, Kind::Seq);
        for b in v {
            ser::SerializeSeq::serialize_element(&mut seq, b)?;
        }
        seq.close()
    }

    fn serialize_none(self) -> Result<(), Error> {
        for _ in 0..self.some_depth {
            self.out.push('!');
        }
        self.out.push('~');
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(KeySerializer {
            out: self.out,
            some_depth: self.some_depth + 1,
        })
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.plain().push_str("()");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        push_string(self.plain(), variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        let out = self.plain();
        push_string(out, variant);
        out.push('(');
        value.serialize(KeySerializer {
            out: &mut *out,
            some_depth: 0,
        })?;
        out.push(')');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a>, Error> {
        Ok(Seq::open(self.plain(), None, Kind::Seq))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Seq<'a>, Error> {
        Ok(Seq::open(self.plain(), None, Kind::Seq))
    }

    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Seq<'a>, Error> {
        Ok(Seq::open(self.plain(), None, Kind::Seq))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Seq<'a>, Error> {
        Ok(Seq::open(self.plain(), Some(variant), Kind::Seq))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Map<'a>, Error> {
        Ok(Map {
            out: self.plain(),
            entries: Vec::new(),
            pending_key: None,
        })
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Seq<'a>, Error> {
        Ok(Seq::open(self.plain(), None, Kind::Struct))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Seq<'a>, Error> {
        Ok(Seq::open(self.plain(), Some(variant), Kind::Struct))
    }
}

/// What a [`Seq`] holds: positional elements, or named fields.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Seq,
    Struct,
}

/// Sequences, tuples and structs: `(a,b,c)` or `(name=a,other=b)`, inside `Variant(...)`
/// for enum variants. Empty ones are `(,)` and `(=)`, so neither reads as `()`.
pub struct Seq<'a> {
    out: &'a mut String,
    kind: Kind,
    variant: bool,
    first: bool,
}

impl<'a> Seq<'a> {
    fn open(out: &'a mut String, variant: Option<&str>, kind: Kind) -> Self {
        if let Some(variant) = variant {
            push_string(out, variant);
            out.push('(');
        }
        out.push('(');
        Seq {
            out,
            kind,
            variant: variant.is_some(),
            first: true,
        }
    }

    fn element<T: Serialize + ?Sized>(
        &mut self,
        name: Option<&str>,
        value: &T,
    ) -> Result<(), Error> {
        if !std::mem::replace(&mut self.first, false) {
            self.out.push(',');
        }
        if let Some(name) = name {
            push_string(self.out, name);
            self.out.push('=');
        }
        value.serialize(KeySerializer {
            out: &mut *self.out,
            some_depth: 0,
        })
    }

    fn close(self) -> Result<(), Error> {
        if self.first {
            self.out.push(match self.kind {
                Kind::Seq => ',',
                Kind::Struct => '=',
            });
        }
        self.out.push(')');
        if self.variant {
            self.out.push(')');
        }
        Ok(())
    }
}

macro_rules! seq_impls {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Seq<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.element(None, value)
            }
            fn end(self) -> Result<(), Error> {
                self.close()
            }
        }
    )*};
}
seq_impls!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

// Fields are written with their names, so a field left out by `skip_serializing_if` cannot
// make the next field's value take its place.
macro_rules! struct_impls {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Seq<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Error> {
                self.element(Some(key), value)
            }
            fn end(self) -> Result<(), Error> {
                self.close()
            }
        }
    )*};
}
struct_impls!(SerializeStruct, SerializeStructVariant);

/// Maps: entries encoded one by one, then sorted, so iteration order cannot change the key.
pub struct Map<'a> {
    out: &'a mut String,
    entries: Vec<(String, String)>,
    pending_key: Option<String>,
}

fn encode_alone<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    let mut s = String::new();
    value.serialize(KeySerializer {
        out: &mut s,
        some_depth: 0,
    })?;
    Ok(s)
}

impl ser::SerializeMap for Map<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.pending_key = Some(encode_alone(key)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .pending_key
            .take()
            .ok_or_else(|| Error::Key("map value without a key".into()))?;
        self.entries.push((key, encode_alone(value)?));
        Ok(())
    }

    fn end(mut self) -> Result<(), Error> {
        // By encoded key alone: comparing whole `k=v` entries would put `k10=..` before
        // `k1=..`.
        self.entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.out.push('(');
        if self.entries.is_empty() {
            self.out.push('=');
        }
        for (i, (key, value)) in self.entries.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(key);
            self.out.push('=');
            self.out.push_str(value);
        }
        self.out.push(')');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::Serialize;

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
