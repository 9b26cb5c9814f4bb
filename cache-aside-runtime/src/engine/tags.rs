//! Tags (see [`crate::tag`]): a tagged load records its key in its tags' sets after taking
//! its lease and before its body runs, so that an invalidation of a tag either finds the
//! key (and revokes the lease) or comes before the body reads anything; invalidating a tag
//! deletes every entry its set holds.

use std::time::{Duration, SystemTime};

use super::Engine;
use super::lease::Held;
use crate::envelope::unix_ms;
use crate::error::Error;
use crate::key::Key;
use crate::policy::Policy;
use crate::spec::FnSpec;
use crate::tag::{Tag, set_key};

/// How much later than its entry's latest expiry a member's score is.
const SLACK: Duration = Duration::from_secs(1);

/// Whether a load may store, as far as its tags go.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Tagged {
    /// No tags, or a load that stores nothing anyway: nothing to do.
    Untagged,
    /// Tagged before the body, and it may store: tagged again with its store.
    Yes,
    /// Tagging failed: it stores nothing.
    No,
}

impl Engine {
    /// Before a load's body: a tagged key joins its tags' sets, whether or not this call
    /// holds its lease (a waiter holding it may store this load's entry). If it cannot, the
    /// load stores nothing: its lease is given up, and the error returned beside
    /// [`Tagged::No`].
    pub(super) async fn tag_load(
        &self,
        key: &Key,
        spec: &'static FnSpec,
        policy: &Policy,
        held: &mut Option<Held>,
        left: Duration,
    ) -> (Tagged, Option<Error>) {
        if !key.has_tags() {
            return (Tagged::Untagged, None);
        }
        match self.tag_entry(key, spec, policy, left).await {
            Ok(_) if held.is_some() || !self.settings.fenced => (Tagged::Yes, None),
            Ok(_) => (Tagged::Untagged, None),
            Err(error) => {
                if let Some(held) = held.take() {
                    self.release(&held, left).await.ok();
                }
                (Tagged::No, Some(error))
            }
        }
    }

    /// Records `key` in the sets of the tags it carries, scored by the latest an entry
    /// written from now can expire. An error if that failed: the entry must then not be
    /// stored, or an invalidation of its tags could miss it. `Ok(true)` if some set did not
    /// hold the key already (an invalidation may have taken it since it was last added).
    pub(super) async fn tag_entry(
        &self,
        key: &Key,
        spec: &'static FnSpec,
        policy: &Policy,
        timeout: Duration,
    ) -> Result<bool, Error> {
        if !key.has_tags() {
            return Ok(false);
        }
        let tags: Vec<&str> = key.tags().collect();
        let now = SystemTime::now();
        let longest = policy.ttl.max(policy.none_ttl.unwrap_or_default());
        // A second of slack: the entry's TTL starts when its write runs, a moment after.
        let until = now + longest.mul_f64(1.0 + policy.jitter) + policy.keep() + SLACK;
        let (until, now) = (unix_ms(until), unix_ms(now));
        let tagged = self
            .backend
            .tag(&tags, key.as_str(), until, now, timeout)
            .await;
        if let Err(error) = &tagged {
            let events = self.events.of(spec);
            events.store_failed();
            events.failed("tag", key.as_str(), error);
        }
        tagged
    }

    /// Deletes every entry carrying `tag`, leases included; how many there were.
    pub(crate) async fn invalidate_tag(&self, tag: &Tag) -> Result<u64, Error> {
        self.invalidate_tag_set(&set_key(&self.namespace, tag.as_str()))
            .await
    }

    /// [`invalidate_tag`](Self::invalidate_tag) by the storage key of the tag's set.
    pub(crate) async fn invalidate_tag_set(&self, set: &str) -> Result<u64, Error> {
        self.invalidating();
        self.backend
            .invalidate_tag(set, self.settings.timeout)
            .await
    }
}
