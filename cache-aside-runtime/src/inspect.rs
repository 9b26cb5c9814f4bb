//! What a stored entry holds, for tools and tests that read or seed entries by hand
//! (`redis-cli GET` shows the same bytes). A cached function never needs this module.
//!
//! An entry is a 12-byte header and the value in the codec's format:
//!
//! ```text
//! byte 0      0xCA            magic: anything else is not ours and reads as a miss
//! byte 1      2               envelope version (1: keys before format 2, read as misses)
//! byte 2      flags           bit 0: ABSENT (a cached `None`, no payload); other bits reserved
//! byte 3      codec id        1 = JSON
//! bytes 4..12 fresh-until     u64 big-endian, Unix milliseconds, 0 = no freshness deadline
//! bytes 12..  payload         the value in the codec's format
//! ```
//!
//! An entry with a flag or codec this version does not know is a decode error, which the
//! engine treats as a miss and overwrites.
//!
//! ```
//! use cache_aside_runtime::inspect::{Codec, decode, encode};
//!
//! let bytes = encode(Codec::Json, Some(&vec![1u32, 2]), None)?;
//! assert_eq!(&bytes[12..], b"[1,2]");
//! let entry = decode::<Vec<u32>>(&bytes)?;
//! assert_eq!(entry.value, Some(vec![1, 2]));
//! # Ok::<(), cache_aside_runtime::Error>(())
//! ```

pub use crate::envelope::{Codec, Entry, HEADER_LEN, decode, encode};
