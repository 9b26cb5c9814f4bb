//! Is a value exactly what decoding its stored form gives back? Checked before every store,
//! so that a hit never returns anything but what the body returned.
//!
//! JSON cannot hold every value serde can describe: `NaN` and `±inf` become `null`, and
//! `Some(None)` inside a value reads back as `None`; an `#[serde(untagged)]` enum may read
//! back as another variant. So the engine decodes what it is about to store and compares
//! the two values' serialized forms through [`fingerprint`]: the same serde calls with the
//! same arguments, types and names, sequences and maps compared as multisets (a `HashSet`
//! or `HashMap` iterates in another order after decoding). A value that does not come
//! back the same is returned to its caller but not stored (`stats().unstorable`).
//!
//! What serialization does not show, only `PartialEq` can: a `#[serde(skip)]` field that
//! comes back as its default, an untagged enum whose variants serialize alike reading back
//! as the first. Types that implement it are compared with `==` too ([`Same`]).
//!
//! Guarded by the bench's miss row: the check costs one decode and two cheap walks of the
//! value per store, next to two round trips.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use serde::de::DeserializeOwned;
use serde::ser::{self, Serialize};

/// How to compare a stored type's values: its `PartialEq` when it has one (the macro
/// picks it; see `__private::EqProbe`), else nothing but the serialized forms.
pub struct Same<V>(pub(crate) Option<fn(&V, &V) -> bool>);

impl<V> Clone for Same<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for Same<V> {}

impl<V> Same<V> {
    /// Serialized forms only.
    pub const NONE: Same<V> = Same(None);
}

/// Does `value` decode back (through `decode`, from its stored form) to a value that
/// serializes exactly like it, and, when the type has `PartialEq`, equals it? `PartialEq`
/// sees what serialization cannot: an untagged enum's variants of one inner type, a
/// `#[serde(skip)]` field that comes back as its default.
pub(crate) fn round_trips<V: Serialize + DeserializeOwned>(
    value: &V,
    decode: impl FnOnce() -> Option<V>,
    same: Same<V>,
) -> bool {
    let Some(back) = decode() else {
        return false;
    };
    if let Some(eq) = same.0
        && !eq(value, &back)
    {
        return false;
    }
    match (fingerprint(value), fingerprint(&back)) {
        (Some(before), Some(after)) => before == after,
        _ => false,
    }
}

/// A 64-bit digest of a value's serialized form; `None` if its `Serialize` impl fails. Two
/// different forms share one with a chance of about 2^-64: the check compares a value with
/// its own decoded copy, which nobody picks to collide.
pub(crate) fn fingerprint<T: Serialize + ?Sized>(value: &T) -> Option<u64> {
    value.serialize(Fingerprinter).ok()
}

/// Folds the parts of one value into 64 bits: a multiply-rotate step per part (cheap: this
/// runs over every value stored), `foldhash` for byte strings.
struct Digest(u64);

impl Digest {
    fn new(tag: Tag) -> Self {
        Digest(0x243F_6A88_85A3_08D3).num(tag as u64)
    }

    fn num(self, n: u64) -> Self {
        Digest(
            (self.0 ^ n)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29),
        )
    }

    fn wide(self, n: u128) -> Self {
        self.num(n as u64).num((n >> 64) as u64)
    }

    fn bytes(self, bytes: &[u8]) -> Self {
        const BYTES: FixedState = FixedState::with_seed(0x5EED);
        self.num(bytes.len() as u64).num(BYTES.hash_one(bytes))
    }

    fn finish(self) -> u64 {
        // A last avalanche, so that sums of digests (sequences, maps) mix well.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        h
    }
}

#[derive(Clone, Copy)]
enum Tag {
    Bool,
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    F32,
    F64,
    Char,
    Str,
    Bytes,
    None,
    Some,
    Unit,
    UnitStruct,
    UnitVariant,
    NewtypeStruct,
    NewtypeVariant,
    Seq,
    Tuple,
    TupleStruct,
    TupleVariant,
    Map,
    Struct,
    StructVariant,
}

/// The digest of one value, by the serde calls that describe it.
struct Fingerprinter;

/// Fails the fingerprint: the value's `Serialize` impl reported an error.
#[derive(Debug)]
struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("serialization failed")
    }
}

impl std::error::Error for Failed {}

impl ser::Error for Failed {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Failed
    }
}

macro_rules! numbers {
    ($($method:ident: $ty:ty => $tag:ident as $conv:expr),* $(,)?) => {$(
        fn $method(self, v: $ty) -> Result<u64, Failed> {
            #[allow(clippy::redundant_closure_call)]
            Ok(Digest::new(Tag::$tag).wide(($conv)(v)).finish())
        }
    )*};
}

impl ser::Serializer for Fingerprinter {
    type Ok = u64;
    type Error = Failed;
    type SerializeSeq = Unordered;
    type SerializeTuple = Ordered;
    type SerializeTupleStruct = Ordered;
    type SerializeTupleVariant = Ordered;
    type SerializeMap = Unordered;
    type SerializeStruct = Ordered;
    type SerializeStructVariant = Ordered;

    numbers!(
        serialize_bool: bool => Bool as u128::from,
        serialize_i8: i8 => I8 as |v: i8| v as u128,
        serialize_i16: i16 => I16 as |v: i16| v as u128,
        serialize_i32: i32 => I32 as |v: i32| v as u128,
        serialize_i64: i64 => I64 as |v: i64| v as u128,
        serialize_i128: i128 => I128 as |v: i128| v as u128,
        serialize_u8: u8 => U8 as u128::from,
        serialize_u16: u16 => U16 as u128::from,
        serialize_u32: u32 => U32 as u128::from,
        serialize_u64: u64 => U64 as u128::from,
        serialize_u128: u128 => U128 as |v: u128| v,
        serialize_f32: f32 => F32 as |v: f32| u128::from(v.to_bits()),
        serialize_f64: f64 => F64 as |v: f64| u128::from(v.to_bits()),
        serialize_char: char => Char as |v: char| u128::from(u32::from(v)),
    );

    fn serialize_str(self, v: &str) -> Result<u64, Failed> {
        Ok(Digest::new(Tag::Str).bytes(v.as_bytes()).finish())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<u64, Failed> {
        Ok(Digest::new(Tag::Bytes).bytes(v).finish())
    }

    fn serialize_none(self) -> Result<u64, Failed> {
        Ok(Digest::new(Tag::None).finish())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<u64, Failed> {
        Ok(Digest::new(Tag::Some).num(value.serialize(self)?).finish())
    }

    fn serialize_unit(self) -> Result<u64, Failed> {
        Ok(Digest::new(Tag::Unit).finish())
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<u64, Failed> {
        Ok(Digest::new(Tag::UnitStruct).bytes(name.as_bytes()).finish())
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<u64, Failed> {
        Ok(variant_digest(Tag::UnitVariant, name, index, variant).finish())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<u64, Failed> {
        let inner = value.serialize(self)?;
        Ok(Digest::new(Tag::NewtypeStruct)
            .bytes(name.as_bytes())
            .num(inner)
            .finish())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<u64, Failed> {
        let inner = value.serialize(self)?;
        Ok(variant_digest(Tag::NewtypeVariant, name, index, variant)
            .num(inner)
            .finish())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Unordered, Failed> {
        Ok(Unordered::new(Tag::Seq))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Ordered, Failed> {
        Ok(Ordered(Digest::new(Tag::Tuple)))
    }

    fn serialize_tuple_struct(self, name: &'static str, _len: usize) -> Result<Ordered, Failed> {
        Ok(Ordered(
            Digest::new(Tag::TupleStruct).bytes(name.as_bytes()),
        ))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Ordered, Failed> {
        Ok(Ordered(variant_digest(
            Tag::TupleVariant,
            name,
            index,
            variant,
        )))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Unordered, Failed> {
        Ok(Unordered::new(Tag::Map))
    }

    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Ordered, Failed> {
        Ok(Ordered(Digest::new(Tag::Struct).bytes(name.as_bytes())))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Ordered, Failed> {
        Ok(Ordered(variant_digest(
            Tag::StructVariant,
            name,
            index,
            variant,
        )))
    }
}

fn variant_digest(tag: Tag, name: &str, index: u32, variant: &str) -> Digest {
    Digest::new(tag)
        .bytes(name.as_bytes())
        .num(u64::from(index))
        .bytes(variant.as_bytes())
}

/// Tuples and structs: elements in order.
struct Ordered(Digest);

impl Ordered {
    fn push<T: Serialize + ?Sized>(&mut self, name: Option<&str>, value: &T) -> Result<(), Failed> {
        let inner = value.serialize(Fingerprinter)?;
        let digest = std::mem::replace(&mut self.0, Digest::new(Tag::Unit));
        let digest = match name {
            Some(name) => digest.bytes(name.as_bytes()),
            None => digest,
        };
        self.0 = digest.num(inner);
        Ok(())
    }
}

macro_rules! ordered {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Ordered {
            type Ok = u64;
            type Error = Failed;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Failed> {
                self.push(None, value)
            }
            fn end(self) -> Result<u64, Failed> {
                Ok(self.0.finish())
            }
        }
    )*};
}
ordered!(
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Ordered {
            type Ok = u64;
            type Error = Failed;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Failed> {
                self.push(Some(key), value)
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), Failed> {
                self.push(Some(key), &Skipped)
            }
            fn end(self) -> Result<u64, Failed> {
                Ok(self.0.finish())
            }
        }
    )*};
}
fields!(SerializeStruct, SerializeStructVariant);

/// What a field skipped by `skip_serializing_if` adds to its struct's digest.
struct Skipped;

impl Serialize for Skipped {
    fn serialize<S: ser::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit_struct("\0skipped")
    }
}

/// Sequences and maps: a sum of element digests, so iteration order does not count.
struct Unordered {
    tag: Tag,
    len: u64,
    sum: u64,
    key: Option<u64>,
}

impl Unordered {
    fn new(tag: Tag) -> Self {
        Unordered {
            tag,
            len: 0,
            sum: 0,
            key: None,
        }
    }

    fn add(&mut self, digest: u64) {
        self.len += 1;
        self.sum = self.sum.wrapping_add(digest);
    }

    fn finish(self) -> u64 {
        Digest::new(self.tag).num(self.len).num(self.sum).finish()
    }
}

impl ser::SerializeSeq for Unordered {
    type Ok = u64;
    type Error = Failed;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Failed> {
        let digest = value.serialize(Fingerprinter)?;
        self.add(digest);
        Ok(())
    }
    fn end(self) -> Result<u64, Failed> {
        Ok(self.finish())
    }
}

impl ser::SerializeMap for Unordered {
    type Ok = u64;
    type Error = Failed;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Failed> {
        self.key = Some(key.serialize(Fingerprinter)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Failed> {
        let key = self.key.take().ok_or(Failed)?;
        let value = value.serialize(Fingerprinter)?;
        // Key and value bound together, so entries cannot swap values.
        self.add(Digest::new(Tag::Tuple).num(key).num(value).finish());
        Ok(())
    }
    fn end(self) -> Result<u64, Failed> {
        Ok(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};

    use serde::{Deserialize, Serialize};

    use super::*;

    fn json_round_trips<V: Serialize + DeserializeOwned>(value: &V) -> bool {
        let json = serde_json::to_vec(value).unwrap();
        round_trips(value, || serde_json::from_slice(&json).ok(), Same::NONE)
    }

    #[test]
    fn plain_values_round_trip() {
        assert!(json_round_trips(&42u64));
        assert!(json_round_trips(&"héllo".to_owned()));
        assert!(json_round_trips(&vec![Some(1.5f64), None]));
        assert!(json_round_trips(&Some(Some(3u8))));
        assert!(json_round_trips(&(
            0.1f64,
            -0.0f64,
            f64::MAX,
            f64::MIN_POSITIVE
        )));
        let set: HashSet<u32> = (0..200).collect();
        assert!(json_round_trips(&set));
        let map: HashMap<String, u32> = (0..200).map(|i| (i.to_string(), i)).collect();
        assert!(json_round_trips(&map));
    }

    #[test]
    fn values_json_cannot_hold_are_caught() {
        #[derive(Serialize, Deserialize)]
        struct Stats {
            mean: Option<f64>,
        }
        #[derive(Serialize, Deserialize)]
        struct Patch {
            name: Option<Option<String>>,
        }
        #[derive(Serialize, Deserialize)]
        #[serde(untagged)]
        enum Num {
            Small(u8),
            Big(u16),
        }
        assert!(!json_round_trips(&Stats {
            mean: Some(f64::NAN)
        }));
        assert!(!json_round_trips(&Some(vec![Some(f64::INFINITY)])));
        assert!(!json_round_trips(&Patch { name: Some(None) }));
        assert!(!json_round_trips(&Some(())));
        assert!(!json_round_trips(&Num::Big(5)));
        assert!(json_round_trips(&Num::Big(500)));
        assert!(!json_round_trips(&f64::NAN));
    }

    #[test]
    fn order_counts_where_it_is_part_of_the_value() {
        assert_ne!(fingerprint(&(1, 2)), fingerprint(&(2, 1)));
        assert_ne!(fingerprint(&[1u8, 2]), fingerprint(&[2u8, 1]));
        let a: BTreeMap<u8, u8> = [(1, 2), (3, 4)].into();
        let b: BTreeMap<u8, u8> = [(1, 4), (3, 2)].into();
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&vec![1u8, 1, 2]), fingerprint(&vec![1u8, 2, 2]));
        assert_ne!(fingerprint(&1u8), fingerprint(&1u16));
        assert_ne!(fingerprint("a"), fingerprint(&'a'));
    }
}
