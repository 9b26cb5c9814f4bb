//! The embedded backend: a bounded in-process store (moka), for the quickstart, tests and
//! services without Redis. Entries expire at their own TTL; the store is capped in bytes.

use std::time::{Duration, Instant};

use bytes::Bytes;

/// What an entry costs beyond its key and value bytes: moka's bookkeeping (hash table,
/// access and write orders, expiry timer, frequency sketch), the `Stored`, the allocations'
/// headers. Measured at about 500 bytes by `tests/tests/memory.rs`, which holds resident
/// memory under unique keys within 1.25 times the cap; counted, so the cap bounds what the
/// process really holds.
const ENTRY_OVERHEAD: usize = 512;

#[derive(Clone)]
struct Stored {
    bytes: Bytes,
    expires_at: Instant,
}

struct PerEntryTtl;

impl moka::Expiry<String, Stored> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Stored, now: Instant) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Stored,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }
}

pub(crate) struct MemoryBackend {
    store: moka::sync::Cache<String, Stored>,
}

impl MemoryBackend {
    pub(crate) fn new(max_bytes: u64) -> Self {
        let store = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, value: &Stored| {
                u32::try_from(ENTRY_OVERHEAD + key.len() + value.bytes.len()).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        MemoryBackend { store }
    }

    fn live(&self, key: &str) -> Option<Stored> {
        // moka hides expired entries from `get` already; checking again keeps reads exact
        // to the millisecond instead of to moka's clock granularity.
        self.store
            .get(key)
            .filter(|s| s.expires_at > Instant::now())
    }

    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        self.live(key).map(|s| s.bytes)
    }

    pub(crate) fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        // A copy of exactly its length: the encoder's buffer has spare capacity, which the
        // weigher would not count (the store grew to 2.5 times its cap on unique keys).
        let stored = Stored {
            bytes: Bytes::copy_from_slice(&value),
            expires_at: Instant::now() + ttl,
        };
        self.store.insert(key.to_owned(), stored);
    }

    /// Replaces the header `old` of a live entry by `new`, keeping payload and expiry.
    pub(crate) fn retime(&self, key: &str, old: &[u8], new: &[u8]) {
        if let Some(found) = self.live(key).filter(|s| s.bytes.starts_with(old)) {
            let mut bytes = Vec::with_capacity(found.bytes.len() - old.len() + new.len());
            bytes.extend_from_slice(new);
            bytes.extend_from_slice(&found.bytes[old.len()..]);
            let stored = Stored {
                bytes: Bytes::from(bytes),
                expires_at: found.expires_at,
            };
            self.store.insert(key.to_owned(), stored);
        }
    }

    pub(crate) fn delete(&self, key: &str) -> bool {
        self.store
            .remove(key)
            .is_some_and(|s| s.expires_at > Instant::now())
    }

    pub(crate) fn delete_prefix(&self, prefix: &str, keep: &dyn Fn(&str) -> bool) -> u64 {
        let doomed: Vec<_> = self
            .store
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && keep(k))
            .map(|(k, _)| k)
            .collect();
        doomed.iter().filter(|k| self.delete(k)).count() as u64
    }

    pub(crate) fn ttl(&self, key: &str) -> Option<Duration> {
        self.live(key)
            .map(|s| s.expires_at.saturating_duration_since(Instant::now()))
    }
}
