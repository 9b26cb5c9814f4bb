//! The embedded backend: a bounded in-process store (moka), for the quickstart, tests and
//! services without Redis. Entries expire at their own TTL; the store is capped in bytes.
//!
//! Leases work as on Redis (see `backend/redis/scripts.rs`): each step that changes a key
//! runs in moka's per-key compute, so that it sees and replaces a key's entry in one step,
//! as a script does on Redis. Reads take no lock.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::ops::compute::Op;

use super::{Ask, LeaseAttempt, REPLACE, Restore};
use crate::envelope::{self, Head, unix_ms};

/// What an entry costs beyond its key and value bytes: moka's bookkeeping (hash table,
/// access and write orders, expiry timer, frequency sketch), the `Stored`, the allocations'
/// headers. Measured at about 500 bytes by `tests/tests/memory.rs`, which holds resident
/// memory under unique keys within 1.25 times the cap; counted, so the cap bounds what the
/// store really holds. Tag sets are not in it: they are kept beside the store, bounded by
/// their sweeps instead (see [`TAG_SWEEP_MIN`]).
const ENTRY_OVERHEAD: usize = 512;

/// What an entry weighs against the cap: its key, its bytes and [`ENTRY_OVERHEAD`].
fn weight(key: &str, value: &Stored) -> u32 {
    u32::try_from(ENTRY_OVERHEAD + key.len() + value.bytes.len()).unwrap_or(u32::MAX)
}

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
    /// The store's cap: an entry that weighs more is not stored (moka would take it, and
    /// evict it at its next maintenance, after a read or two found it).
    max_bytes: u64,
    /// Tag sets (see [`crate::tag`]): each tag's entry keys, with when they expire (Unix ms).
    tags: std::sync::Mutex<Tags>,
}

/// The tag sets, how many members they hold, and at how many the next sweep of expired
/// and evicted members runs.
#[derive(Default)]
struct Tags {
    sets: HashMap<Box<str>, Members>,
    members: usize,
    sweep_at: usize,
    /// Members the sweeps have looked at, in all: what the sweeps cost.
    swept: u64,
}

/// One tag set's entry keys, each with when it expires (Unix ms). Most tags name one entry
/// (`user:{id}`), so a set of one holds it inline: no table of its own, about half the
/// bytes per tagged entry.
enum Members {
    One(Box<str>, u64),
    Many(HashMap<Box<str>, u64>),
}

impl Members {
    /// Adds `member` expiring at `until_ms`, or moves its expiry later; `true` if new.
    fn add(&mut self, member: &str, until_ms: u64) -> bool {
        match self {
            Members::One(key, until) if **key == *member => {
                *until = (*until).max(until_ms);
                false
            }
            Members::One(..) => {
                let Members::One(key, until) =
                    std::mem::replace(self, Members::Many(HashMap::new()))
                else {
                    unreachable!("matched One above")
                };
                *self = Members::Many(HashMap::from([(key, until), (member.into(), until_ms)]));
                true
            }
            Members::Many(map) => match map.get_mut(member) {
                Some(until) => {
                    *until = (*until).max(until_ms);
                    false
                }
                None => {
                    map.insert(member.into(), until_ms);
                    true
                }
            },
        }
    }

    /// Keeps the members `keep` accepts; `false` if none is left.
    fn retain(&mut self, mut keep: impl FnMut(&str, u64) -> bool) -> bool {
        match self {
            Members::One(key, until) => keep(key, *until),
            Members::Many(map) => {
                map.retain(|key, until| keep(key, *until));
                if map.capacity() > 4 * map.len() + 8 {
                    map.shrink_to_fit();
                }
                !map.is_empty()
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Members::One(..) => 1,
            Members::Many(map) => map.len(),
        }
    }

    fn keys(&self) -> Vec<&str> {
        match self {
            Members::One(key, _) => vec![key],
            Members::Many(map) => map.keys().map(|k| &**k).collect(),
        }
    }
}

/// The sets are swept once they hold twice the members the last sweep left, and at least
/// this many: each sweep costs what the additions since the previous one did (a tag of a
/// hundred thousand entries does not make every thousandth miss scan it), and the sets
/// hold at most about twice the store's live tagged entries. A sweep covers every set, so
/// the sets forget expired entries even of tags that are never added to again.
const TAG_SWEEP_MIN: usize = 1024;

impl MemoryBackend {
    pub(crate) fn new(max_bytes: u64) -> Self {
        let store = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, value: &Stored| weight(key, value))
            .expire_after(PerEntryTtl)
            .build();
        MemoryBackend {
            store,
            max_bytes,
            tags: std::sync::Mutex::new(Tags::default()),
        }
    }

    /// Adds `member` to the tag set `set`, expiring at `until_ms` (never earlier than it
    /// already did); `true` if the set did not hold it. At each sweep (see
    /// [`TAG_SWEEP_MIN`]) every set forgets the members that expired or whose entries the
    /// store evicted.
    pub(crate) fn tag(&self, set: &str, member: &str, until_ms: u64, now_ms: u64) -> bool {
        let mut tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        if tags.members >= tags.sweep_at.max(TAG_SWEEP_MIN) {
            tags.swept += tags.members as u64;
            tags.sets.retain(|_, members| {
                members.retain(|key, until| until >= now_ms && self.store.contains_key(key))
            });
            tags.members = tags.sets.values().map(Members::len).sum();
            tags.sweep_at = 2 * tags.members;
            // A burst of tags leaves a table sized for it: give it back once it is mostly
            // empty, so the map stays about as large as the store's live tagged entries.
            if tags.sets.capacity() > 4 * tags.sets.len() + 64 {
                tags.sets.shrink_to_fit();
            }
        }
        let added = match tags.sets.get_mut(set) {
            Some(members) => members.add(member, until_ms),
            None => {
                let members = Members::One(member.into(), until_ms);
                tags.sets.insert(set.into(), members);
                true
            }
        };
        tags.members += usize::from(added);
        added
    }

    /// Removes the tag set `set` and deletes its members' entries; how many existed.
    pub(crate) fn invalidate_tag(&self, set: &str) -> u64 {
        let members = {
            let mut tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
            let members = tags.sets.remove(set);
            tags.members -= members.as_ref().map_or(0, Members::len);
            members
        };
        let Some(members) = members else { return 0 };
        members
            .keys()
            .into_iter()
            .filter(|key| self.delete(key))
            .count() as u64
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

    /// Runs `f` on the live entry of `key` (or `None`), as one step for that key.
    fn update(&self, key: &str, f: impl FnOnce(Option<&Stored>) -> Op<Stored>) {
        self.store.entry_by_ref(key).and_compute_with(|found| {
            let now = Instant::now();
            let live = found
                .as_ref()
                .map(|e| e.value())
                .filter(|s| s.expires_at > now);
            match (f(live), found.is_some() && live.is_none()) {
                // Larger than the whole store: it replaces what was there by nothing.
                (Op::Put(s), _) if u64::from(weight(key, &s)) > self.max_bytes => Op::Remove,
                // An expired entry moka still holds goes now rather than at its next sweep.
                (Op::Nop, true) => Op::Remove,
                (op, _) => op,
            }
        });
    }

    pub(crate) fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        let stored = Self::stored(&value, ttl);
        self.update(key, |_| Op::Put(stored));
    }

    fn stored(value: &[u8], ttl: Duration) -> Stored {
        // A copy of exactly its length: the encoder's buffer has spare capacity, which the
        // weigher would not count (the store grew to 2.5 times its cap on unique keys).
        Stored {
            bytes: Bytes::copy_from_slice(value),
            expires_at: Instant::now() + ttl,
        }
    }

    /// The entry of `key`; if there is none, the lease is taken (a placeholder stored) and
    /// `None` returned.
    pub(crate) fn get_or_lease(&self, key: &str, lease: &Ask) -> Option<Bytes> {
        if let Some(found) = self.get(key) {
            return Some(found);
        }
        let mut raced = None;
        self.update(key, |live| match live {
            Some(s) => {
                raced = Some(s.bytes.clone());
                Op::Nop
            }
            None => Op::Put(Self::stored(&envelope::placeholder(lease.token), lease.ttl)),
        });
        raced
    }

    /// The lease step of the `LEASE` script, in process.
    pub(crate) fn lease(
        &self,
        key: &str,
        lease: &Ask,
        point_ms: u64,
        max_bytes: u64,
    ) -> LeaseAttempt {
        let mut attempt = LeaseAttempt::Leased;
        self.update(key, |live| {
            let ours = live.and_then(|s| Some((s, envelope::head(&s.bytes)?)));
            let Some((s, head)) = ours else {
                let placeholder = envelope::placeholder(lease.token);
                return Op::Put(Self::stored(&placeholder, lease.ttl));
            };
            if head.pending {
                attempt = LeaseAttempt::Busy(head.token);
                return Op::Nop;
            }
            if head.empty || s.bytes.len() as u64 > max_bytes {
                let placeholder = envelope::placeholder(lease.token);
                return Op::Put(Self::stored(&placeholder, lease.ttl));
            }
            if point_ms != REPLACE && (head.fresh_ms == 0 || head.fresh_ms > point_ms) {
                attempt = LeaseAttempt::Value(s.bytes.clone());
                return Op::Nop;
            }
            let header = envelope::leased_header(&s.bytes, lease.token).expect("an envelope");
            let expires_at = s.expires_at.max(Instant::now() + lease.ttl);
            Op::Put(Stored {
                bytes: [&header[..], &s.bytes[header.len()..]].concat().into(),
                expires_at,
            })
        });
        attempt
    }

    /// Is `s` held by the lease `token`?
    fn holds(s: &Stored, token: u64) -> Option<Head> {
        envelope::head(&s.bytes).filter(|h| h.pending && h.token == token)
    }

    /// Does another load's lease `token` still hold `key`?
    pub(crate) fn lease_holds(&self, key: &str, token: u64) -> bool {
        self.live(key)
            .is_some_and(|s| Self::holds(&s, token).is_some())
    }

    /// Stores `value` if the lease `token` still holds `key`; `true` if it did.
    pub(crate) fn fill(&self, key: &str, token: u64, value: &[u8], ttl: Duration) -> bool {
        let mut stored = false;
        self.update(key, |live| match live.and_then(|s| Self::holds(s, token)) {
            Some(_) => {
                stored = true;
                Op::Put(Self::stored(value, ttl))
            }
            None => Op::Nop,
        });
        stored
    }

    /// Pushes the lease's expiry out to `lease_ttl`; `false` if `token` lost it.
    pub(crate) fn extend(&self, key: &str, token: u64, lease_ttl: Duration) -> bool {
        let mut held = false;
        self.update(key, |live| {
            match live.filter(|s| Self::holds(s, token).is_some()) {
                Some(s) => {
                    held = true;
                    let until = Instant::now() + lease_ttl;
                    if s.expires_at >= until {
                        return Op::Nop;
                    }
                    Op::Put(Stored {
                        bytes: s.bytes.clone(),
                        expires_at: until,
                    })
                }
                None => Op::Nop,
            }
        });
        held
    }

    /// Gives the lease `token` up without a new value, as the `RELEASE` script does.
    pub(crate) fn release(&self, key: &str, token: u64, restore: &Restore) {
        self.update(key, |live| {
            let Some((s, head)) = live.and_then(|s| Some((s, Self::holds(s, token)?))) else {
                return Op::Nop;
            };
            let now_ms = unix_ms(SystemTime::now());
            let expires_ms = head.fresh_ms.saturating_add(restore.keep_ms);
            if head.empty || expires_ms <= now_ms {
                return Op::Remove;
            }
            let fresh = restore
                .fresh_ms
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
            let Some(header) = envelope::released_header(&s.bytes, fresh) else {
                return Op::Nop;
            };
            Op::Put(Stored {
                bytes: [&header[..], &s.bytes[header.len()..]].concat().into(),
                expires_at: Instant::now() + Duration::from_millis(expires_ms - now_ms),
            })
        });
    }

    pub(crate) fn delete(&self, key: &str) -> bool {
        let mut existed = false;
        self.update(key, |live| {
            existed = live.is_some();
            if existed { Op::Remove } else { Op::Nop }
        });
        existed
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
            .filter(|s| !envelope::head(&s.bytes).is_some_and(|h| h.empty))
            .map(|s| s.expires_at.saturating_duration_since(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swept(backend: &MemoryBackend) -> u64 {
        backend.tags.lock().unwrap().swept
    }

    #[test]
    fn an_entry_larger_than_the_cap_is_not_stored_and_replaces_the_old_one() {
        let backend = MemoryBackend::new(64 * 1024);
        let ttl = Duration::from_secs(60);
        backend.set("ns:k", Bytes::from(vec![1; 100]), ttl);
        assert!(backend.get("ns:k").is_some());
        backend.set("ns:k", Bytes::from(vec![2; 200_000]), ttl);
        assert_eq!(backend.get("ns:k"), None, "the old value is gone too");
        assert_eq!(backend.ttl("ns:k"), None);
        let fits = 64 * 1024 - ENTRY_OVERHEAD - "ns:k".len();
        backend.set("ns:k", Bytes::from(vec![3; fits]), ttl);
        assert_eq!(
            backend.get("ns:k").map(|b| b.len()),
            Some(fits),
            "one that fits is"
        );
    }

    #[test]
    fn sweeps_cost_what_the_additions_since_the_last_one_did() {
        // One tag whose entries all stay live: no sweep can shrink it, so sweeping every
        // thousand additions would scan it 100 times over.
        let backend = MemoryBackend::new(1 << 30);
        let until = u64::MAX;
        for i in 0..100_000u32 {
            let key = format!("ns:k:{i}");
            backend.set(&key, Bytes::from_static(b"v"), Duration::from_secs(3600));
            assert!(backend.tag("ns:#tag:hot", &key, until, 0));
        }
        let swept = swept(&backend);
        assert!(
            swept <= 2 * 100_000,
            "100,000 additions to one live tag made the sweeps look at {swept} members"
        );
        assert!(swept > 0, "no sweep ran");
    }

    #[test]
    fn a_sweep_forgets_evicted_and_expired_members() {
        let backend = MemoryBackend::new(1 << 30);
        for i in 0..TAG_SWEEP_MIN as u32 {
            // Members whose entries are not in the store, or that have expired.
            backend.tag(
                &format!("ns:#tag:t{i}"),
                &format!("ns:gone:{i}"),
                u64::MAX,
                10,
            );
            backend.tag("ns:#tag:old", &format!("ns:old:{i}"), 5, 0);
        }
        backend.set(
            "ns:live",
            Bytes::from_static(b"v"),
            Duration::from_secs(3600),
        );
        backend.tag("ns:#tag:live", "ns:live", u64::MAX, 10);
        let tags = backend.tags.lock().unwrap();
        assert_eq!((tags.sets.len(), tags.members), (1, 1));
        assert!(tags.sets.contains_key("ns:#tag:live"));
    }
}
