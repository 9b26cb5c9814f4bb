//! The envelope: values to bytes and back, inside a small versioned header. The one owner
//! of the stored layout: the Rust code here and the Lua scripts of the Redis backend
//! (`backend/redis/scripts.rs`, built from the constants below) read the same offsets.
//!
//! # Stored layout
//!
//! ```text
//! byte 0       0xCA           magic: anything else is not ours and reads as a miss
//! byte 1       3              envelope version (older versions read as misses)
//! byte 2       flags          bit 0 ABSENT: a cached `None`, no payload
//!                             bit 1 PENDING: a load holding the lease `token` is under way
//!                             bit 2 EMPTY: no value at all (a lease's placeholder)
//!                             other bits reserved
//! byte 3       codec id       1 = JSON (0 in a placeholder)
//! bytes 4..12  fresh-until    u64 big-endian, Unix milliseconds, 0 = no freshness deadline
//! bytes 12..20 token          u64: the lease of the load that wrote it, or holds it now
//! bytes 20..   payload        the value in the codec's format
//! ```
//!
//! The token is what makes invalidation race-free (see `engine::lease`): a load takes a
//! lease before its body runs, which marks the key PENDING with its token (a placeholder
//! if the key was empty, the kept value's header otherwise), and it stores only if the key
//! still carries that token. An invalidation deletes the key, and with it the lease.
//!
//! The header is where later stages put their state: the fresh-until time is what
//! stale-while-revalidate compares against, and reserved flag bits and codec ids leave room
//! for compression, encryption and other codecs. An entry with a flag or codec this version
//! does not know is a decode error, which the engine treats as a miss and overwrites.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, de::DeserializeOwned};

use crate::error::Error;

/// Byte 0 of every entry.
pub(crate) const MAGIC: u8 = 0xCA;
/// Bumped with every change of the key or value format, so that an entry written by an
/// older format reads as a miss and is replaced, never as a wrong value: version 2 came
/// with key format 2 (see [`key`](crate::key)), under which some old keys name other calls;
/// version 3 with the lease token.
pub(crate) const VERSION: u8 = 3;
/// Where the flags are.
pub(crate) const FLAGS_AT: usize = 2;
const FLAG_ABSENT: u8 = 0b0000_0001;
/// A load holding the lease in the token field is under way.
pub(crate) const FLAG_PENDING: u8 = 0b0000_0010;
/// No value: a lease's placeholder.
pub(crate) const FLAG_EMPTY: u8 = 0b0000_0100;
const KNOWN_FLAGS: u8 = FLAG_ABSENT | FLAG_PENDING | FLAG_EMPTY;
/// Where the fresh-until time starts, and its length (a big-endian `u64`).
pub(crate) const FRESH_AT: usize = 4;
pub(crate) const FRESH_LEN: usize = 8;
/// Where the lease token starts, and its length (a `u64`).
pub(crate) const TOKEN_AT: usize = FRESH_AT + FRESH_LEN;
pub(crate) const TOKEN_LEN: usize = 8;
/// Bytes before the payload.
pub const HEADER_LEN: usize = TOKEN_AT + TOKEN_LEN;

/// How a value is turned into bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// `serde_json`: readable in `redis-cli`, the default.
    #[default]
    Json,
}

impl Codec {
    fn id(self) -> u8 {
        match self {
            Codec::Json => 1,
        }
    }

    fn from_id(id: u8) -> Option<Codec> {
        match id {
            1 => Some(Codec::Json),
            _ => None,
        }
    }

    fn write<T: Serialize + ?Sized>(self, value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            Codec::Json => serde_json::to_writer(out, value).map_err(|e| Error::Encode(e.into())),
        }
    }

    fn read<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, Error> {
        match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| Error::Decode(e.into())),
        }
    }
}

/// What a decoded entry holds.
#[derive(Debug, PartialEq)]
pub struct Entry<V> {
    /// The value, or `None` for a cached absence.
    pub value: Option<V>,
    /// Until when the value counts as fresh, if the writer set a deadline.
    pub fresh_until: Option<SystemTime>,
}

/// Writes an envelope holding `value` (or an absence marker).
pub fn encode<V: Serialize + ?Sized>(
    codec: Codec,
    value: Option<&V>,
    fresh_until: Option<SystemTime>,
) -> Result<Vec<u8>, Error> {
    encode_leased(codec, value, fresh_until, 0)
}

/// [`encode`], marked as written by the load holding the lease `token`.
pub(crate) fn encode_leased<V: Serialize + ?Sized>(
    codec: Codec,
    value: Option<&V>,
    fresh_until: Option<SystemTime>,
    token: u64,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(HEADER_LEN + 64);
    let flags = if value.is_none() { FLAG_ABSENT } else { 0 };
    out.extend_from_slice(&[MAGIC, VERSION, flags, codec.id()]);
    out.extend_from_slice(&fresh_until.map_or(0, unix_ms).to_be_bytes());
    out.extend_from_slice(&token.to_be_bytes());
    if let Some(value) = value {
        codec.write(value, &mut out)?;
    }
    Ok(out)
}

/// `t` as Unix milliseconds, the unit of the header's fresh-until field.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// The placeholder a lease leaves in an empty key: a header, PENDING and EMPTY, with the
/// lease's token and no value.
pub(crate) fn placeholder(token: u64) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..4].copy_from_slice(&[MAGIC, VERSION, FLAG_PENDING | FLAG_EMPTY, 0]);
    header[TOKEN_AT..].copy_from_slice(&token.to_be_bytes());
    header
}

/// What the header of a well-formed envelope of this version says about its key's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// The fresh-until time, Unix milliseconds (0: none).
    pub(crate) fresh_ms: u64,
    /// The lease that wrote the entry, or that holds the key now if `pending`.
    pub(crate) token: u64,
    /// A load holding `token` is under way.
    pub(crate) pending: bool,
    /// There is no value (a placeholder).
    pub(crate) empty: bool,
    /// A cached absence (`none_ttl`).
    pub(crate) absent: bool,
}

/// The header of `bytes`, if it is an envelope of this version.
#[inline]
pub(crate) fn head(bytes: &[u8]) -> Option<Head> {
    let header = bytes.first_chunk::<HEADER_LEN>()?;
    if header[0] != MAGIC || header[1] != VERSION {
        return None;
    }
    let flags = header[FLAGS_AT];
    Some(Head {
        fresh_ms: fresh_ms_of(header),
        token: u64::from_be_bytes(*header[TOKEN_AT..].first_chunk::<TOKEN_LEN>()?),
        pending: flags & FLAG_PENDING != 0,
        empty: flags & FLAG_EMPTY != 0,
        absent: flags & FLAG_ABSENT != 0,
    })
}

/// The header of a well-formed entry with the lease `token` marked PENDING: the kept value
/// stays readable while a load replaces it.
pub(crate) fn leased_header(entry: &[u8], token: u64) -> Option<[u8; HEADER_LEN]> {
    let mut header = *entry.first_chunk::<HEADER_LEN>()?;
    header[FLAGS_AT] |= FLAG_PENDING;
    header[TOKEN_AT..].copy_from_slice(&token.to_be_bytes());
    Some(header)
}

/// The header of a leased entry once its lease is released without a new value: PENDING
/// cleared, and the fresh-until time replaced by `fresh_until` if given (fail-safe's
/// back-off marks an expired value fresh for a short while without re-encoding it).
pub(crate) fn released_header(
    entry: &[u8],
    fresh_until: Option<SystemTime>,
) -> Option<[u8; HEADER_LEN]> {
    let mut header = *entry.first_chunk::<HEADER_LEN>()?;
    header[FLAGS_AT] &= !FLAG_PENDING;
    if let Some(at) = fresh_until {
        header[FRESH_AT..TOKEN_AT].copy_from_slice(&unix_ms(at).to_be_bytes());
    }
    Some(header)
}

/// The fresh-until time of an envelope, read from its header alone; `None` if the bytes
/// are not an envelope or carry no deadline.
pub(crate) fn fresh_until(bytes: &[u8]) -> Option<SystemTime> {
    let ms = head(bytes)?.fresh_ms;
    (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

/// The fresh-until field of a header, in Unix milliseconds.
#[inline]
fn fresh_ms_of(header: &[u8; HEADER_LEN]) -> u64 {
    let field = header[FRESH_AT..TOKEN_AT]
        .first_chunk::<FRESH_LEN>()
        .expect("8 bytes");
    u64::from_be_bytes(*field)
}

/// Reads an envelope; any deviation from the layout is [`Error::Decode`].
pub fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<Entry<V>, Error> {
    let (value, fresh_ms) = decode_raw(bytes)?;
    let fresh_until = (fresh_ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(fresh_ms));
    Ok(Entry { value, fresh_until })
}

/// [`decode`] for the hit path: the value, and the fresh-until time as the Unix
/// milliseconds it is stored as (0: none), left for the caller to convert only if it tracks
/// freshness.
pub(crate) fn decode_raw<V: DeserializeOwned>(bytes: &[u8]) -> Result<(Option<V>, u64), Error> {
    let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(malformed(bytes));
    };
    let &[magic, version, flags, codec, ..] = header;
    let codec = match Codec::from_id(codec) {
        Some(codec) if magic == MAGIC && version == VERSION && flags & !KNOWN_FLAGS == 0 => codec,
        _ => return Err(malformed(bytes)),
    };
    let fresh_ms = fresh_ms_of(header);
    if flags & FLAG_EMPTY != 0 {
        return Err(Error::Decode("a lease's placeholder: no value yet".into()));
    }
    if flags & FLAG_ABSENT != 0 {
        if !payload.is_empty() {
            return Err(Error::Decode("absent entry with a payload".into()));
        }
        return Ok((None, fresh_ms));
    }
    Ok((Some(codec.read(payload)?), fresh_ms))
}

/// What is wrong with an envelope whose header does not parse: worded on the error path only.
#[cold]
fn malformed(bytes: &[u8]) -> Error {
    let why = match bytes.first_chunk::<4>() {
        Some(_) if bytes.len() < HEADER_LEN => "shorter than the envelope header".to_owned(),
        None => "shorter than the envelope header".to_owned(),
        Some(&[magic, ..]) if magic != MAGIC => "not a cache-aside envelope".to_owned(),
        Some(&[_, 2, ..]) => "envelope version 2, written before lease tokens".to_owned(),
        Some(&[_, version, ..]) if version != VERSION => format!("envelope version {version}"),
        Some(&[_, _, flags, _]) if flags & FLAG_EMPTY != 0 => {
            "a lease's placeholder: no value yet".to_owned()
        }
        Some(&[_, _, flags, _]) if flags & !KNOWN_FLAGS != 0 => {
            format!("unknown flags {flags:#04x}")
        }
        Some(&[.., codec]) => format!("unknown codec id {codec}"),
    };
    Error::Decode(why.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<V: Serialize + DeserializeOwned>(v: &V) -> V {
        decode::<V>(&encode(Codec::Json, Some(v), None).unwrap())
            .unwrap()
            .value
            .unwrap()
    }

    #[test]
    fn edge_values_round_trip() {
        assert_eq!(roundtrip(&String::new()), "");
        assert_eq!(roundtrip(&0u8), 0);
        assert!(!roundtrip(&false));
        assert_eq!(roundtrip(&Vec::<u8>::new()), Vec::<u8>::new());
        roundtrip(&());
        assert_eq!(roundtrip(&Some(Some(0u8))), Some(Some(0)));
        // JSON writes `Some(None)` and `None` alike (`null`); the engine keeps them apart at
        // the top level with the ABSENT flag (`Opt` shape), not in the payload.
        assert_eq!(roundtrip(&Some(None::<u8>)), None);
    }

    #[test]
    fn absence_and_deadline_round_trip() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let bytes = encode::<u8>(Codec::Json, None, Some(at)).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN);
        let entry = decode::<u8>(&bytes).unwrap();
        assert_eq!(
            entry,
            Entry {
                value: None,
                fresh_until: Some(at)
            }
        );
    }

    #[test]
    fn fresh_until_can_be_rewritten_in_place() {
        let at = UNIX_EPOCH + Duration::from_millis(1_000);
        let later = UNIX_EPOCH + Duration::from_millis(9_000);
        let mut bytes = encode(Codec::Json, Some(&"v"), Some(at)).unwrap();
        let header = released_header(&leased_header(&bytes, 5).unwrap(), Some(later)).unwrap();
        bytes[..HEADER_LEN].copy_from_slice(&header);
        let head = head(&bytes).unwrap();
        assert!(!head.pending && head.token == 5, "{head:?}");
        let moved = decode::<String>(&bytes).unwrap();
        assert_eq!(moved.fresh_until, Some(later));
        assert_eq!(moved.value.as_deref(), Some("v"));
    }

    #[test]
    fn pins_the_header_layout() {
        let bytes = encode(Codec::Json, Some(&7u8), None).unwrap();
        assert_eq!(
            bytes,
            [
                0xCA, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'7'
            ]
        );
        let leased = encode_leased(Codec::Json, Some(&7u8), None, 0x0102).unwrap();
        assert_eq!(&leased[12..20], &[0, 0, 0, 0, 0, 0, 1, 2]);
        let placeholder = placeholder(0x0A0B);
        assert_eq!(
            placeholder,
            [
                0xCA, 3, 0b110, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0A, 0x0B
            ]
        );
        let head = head(&placeholder).unwrap();
        assert!(head.pending && head.empty && head.token == 0x0A0B);
        assert!(decode::<u8>(&placeholder).unwrap_err().is_decode());
    }

    #[test]
    fn garbage_is_a_decode_error_never_a_panic() {
        let good = encode(Codec::Json, Some(&vec![1u32, 2, 3]), None).unwrap();
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            b"{\"plain\":\"json, long enough\"}".to_vec(),
            good[..HEADER_LEN - 1].to_vec(),
            good[..good.len() - 1].to_vec(),
        ];
        for (i, byte) in [(1, 9u8), (2, 0x80), (3, 77)] {
            let mut bad = good.clone();
            bad[i] = byte;
            cases.push(bad);
        }
        let mut absent_with_payload = encode::<u8>(Codec::Json, None, None).unwrap();
        absent_with_payload.push(b'1');
        cases.push(absent_with_payload);
        let said = [
            "shorter than the envelope header",
            "not a cache-aside envelope",
            "shorter than the envelope header",
            "EOF while parsing",
            "envelope version 9",
            "unknown flags 0x80",
            "unknown codec id 77",
            "absent entry with a payload",
        ];
        for (case, said) in cases.iter().zip(said) {
            let err = decode::<Vec<u32>>(case).unwrap_err();
            assert!(err.is_decode(), "{case:?}: {err}");
            // The cause is the error's `source()`; the chain says it all.
            let chain = crate::error::Chain(&err).to_string();
            assert!(chain.contains(said), "{case:?}: {chain}");
        }
        // Well-formed JSON of another schema is a decode error too.
        assert!(decode::<String>(&good).unwrap_err().is_decode());
    }
}
