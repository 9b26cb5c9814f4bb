//! Write-through: `#[cache_put]` stores a write's result as a read function's entry.
//!
//! The value is encoded as a load's would be (the read's TTL, jitter, `none_ttl`,
//! `max_value_bytes`, the exactness check) and written with a plain `SET`, which takes the
//! key from whoever holds its lease: a load that began before the put cannot store over it
//! (its conditional fill finds another token), and, the epoch counted first, no caller that
//! starts after it joins such a load. A value that cannot be stored deletes the entry
//! instead, so the old one never outlives the write.

use super::Engine;
use super::store::Entry;
use crate::backend::Budget;
use crate::error::Error;
use crate::exact::Same;
use crate::key::Key;
use crate::policy::Policy;
use crate::shape::Shape;
use crate::spec::FnSpec;

impl Engine {
    /// Stores `success` as the entry `key` of the read function `spec`, or deletes the entry
    /// when it cannot be stored (too large, not exact, an absence without `none_ttl`).
    pub(crate) async fn put<S: Shape<R>, R>(
        &self,
        key: &Key,
        spec: &'static FnSpec,
        success: &S::Success,
        same: Same<S::Value>,
    ) -> Result<(), Error> {
        let mut resolved = None;
        let Some(policy) = self.policy(spec, &mut resolved) else {
            // The read caches nothing either: nothing to write or delete.
            self.events
                .of(spec)
                .failed("ttl", key.as_str(), &Error::NoTtl);
            return Err(Error::NoTtl);
        };
        let entry = Entry {
            key,
            spec,
            policy,
            token: 0,
        };
        let encoded = self.encode_store(&entry, S::store_success(success), same);
        self.put_encoded(key, spec, policy, encoded).await
    }

    async fn put_encoded(
        &self,
        key: &Key,
        spec: &'static FnSpec,
        policy: &Policy,
        encoded: Result<Option<(bytes::Bytes, std::time::Duration)>, Error>,
    ) -> Result<(), Error> {
        // Its steps share one `timeout`, as a read's do: a stalled Redis costs a put one
        // `timeout`, not one per step.
        let budget = Budget::from_now(policy.timeout);
        // A tagged entry joins its tags' sets before it is written (see `tags`); if it
        // cannot, the old entry is deleted instead.
        let tagged = !key.has_tags()
            || self
                .tag_entry(key, spec, policy, budget.left())
                .await
                .is_ok();
        let entry = key;
        let key = key.as_str();
        let events = self.events.of(spec);
        self.invalidating();
        let result = match encoded {
            Ok(Some((bytes, ttl))) if tagged && bytes.len() as u64 <= policy.max_value_bytes => {
                let set = self.backend.set(key, &bytes, ttl, budget.left()).await;
                // A put has no lease: an invalidation of one of its tags between the first
                // tagging and the `SET` took the key out of the set, and the value may
                // predate it. Tagging again says so (the key was missing): delete it.
                match (set, entry.has_tags()) {
                    (Ok(()), true) => {
                        match self.tag_entry(entry, spec, policy, budget.left()).await {
                            Ok(false) => Ok(()),
                            Ok(true) | Err(_) => {
                                self.backend.delete(key, budget.left()).await.map(drop)
                            }
                        }
                    }
                    (set, _) => set,
                }
            }
            other => {
                if let (Ok(Some((bytes, _))), true) = (&other, tagged) {
                    events.oversized_value(key, bytes.len());
                }
                self.backend.delete(key, budget.left()).await.map(drop)
            }
        };
        match &result {
            Ok(()) => events.put(),
            Err(error) => {
                events.store_failed();
                events.failed("put", key, error);
            }
        }
        result
    }
}
