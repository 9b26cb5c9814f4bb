//! What a stored entry holds, for tools and tests that read or seed entries by hand
//! (`redis-cli GET` shows the same bytes). A cached function never needs this module.
//!
//! An entry is a 20-byte header and the value in the codec's format:
//!
//! ```text
//! byte 0       0xCA           magic: anything else is not ours and reads as a miss
//! byte 1       3              envelope version (older versions read as misses)
//! byte 2       flags          bit 0 ABSENT: a cached `None`, no payload
//!                             bit 1 PENDING: a load holding the lease `token` is under way
//!                             bit 2 EMPTY: no value at all (a lease's placeholder)
//! byte 3       codec id       1 = JSON (0 in a placeholder)
//! bytes 4..12  fresh-until    u64 big-endian, Unix milliseconds, 0 = no freshness deadline
//! bytes 12..20 token          u64: the lease of the load that wrote it, or holds it now
//! bytes 20..   payload        the value in the codec's format
//! ```
//!
//! [`encode`] writes token 0; [`decode`] reads a PENDING entry's value like any other, and a
//! placeholder as a decode error (there is no value).
//!
//! An entry with a flag or codec this version does not know is a decode error, which the
//! engine treats as a miss and overwrites.
//!
//! ```
//! use cache_aside_runtime::inspect::{Codec, decode, encode};
//!
//! let bytes = encode(Codec::Json, Some(&vec![1u32, 2]), None)?;
//! assert_eq!(&bytes[20..], b"[1,2]");
//! let entry = decode::<Vec<u32>>(&bytes)?;
//! assert_eq!(entry.value, Some(vec![1, 2]));
//! # Ok::<(), cache_aside_runtime::Error>(())
//! ```

pub use crate::envelope::{Codec, Entry, HEADER_LEN, decode, encode};
