//! The key encoding of one value: a `serde::Serializer` writing the text the format
//! table in [`key`](super) describes.

use std::fmt::Write as _;

use serde::ser::{self, Serialize};

use crate::error::Error;

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

pub(super) struct KeySerializer<'a> {
    out: &'a mut String,
    /// How many `Some` wrap the value being written: only matters when it turns out `None`.
    some_depth: usize,
}

impl<'a> KeySerializer<'a> {
    /// A serializer appending to `out`.
    pub(super) fn new(out: &'a mut String) -> Self {
        KeySerializer { out, some_depth: 0 }
    }

    fn plain(self) -> &'a mut String {
        self.out
    }
}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error::Key(msg.to_string().into())
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

pub(super) fn encode_alone<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
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
