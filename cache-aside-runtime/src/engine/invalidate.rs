//! Removing entries and asking about them: one key, every key of a prefix, or every key of
//! one function's layout under its prefix; and a key's time to live. Only keys of the
//! engine's namespace.

use std::time::Duration;

use super::Engine;
use crate::error::Error;
use crate::key::{Layout, is_valid_segment};

impl Engine {
    /// Deletes one key; `true` if it existed.
    pub(crate) async fn invalidate(&self, key: &str) -> Result<bool, Error> {
        self.own_key(key)?;
        self.invalidating();
        self.backend.delete(key, self.settings.timeout).await
    }

    /// Deletes every key of one prefix in this namespace.
    pub(crate) async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, Error> {
        if !is_valid_segment(prefix) {
            return Err(Error::Config(format!(
                "prefix {prefix:?} must be non-empty and use only A-Z a-z 0-9 _ . - /"
            )));
        }
        self.delete_prefix(prefix, None).await
    }

    /// The keys of `prefix` that fit one function's layout: its `_invalidate_all`.
    pub(crate) async fn invalidate_layout(
        &self,
        prefix: &str,
        layout: &Layout,
    ) -> Result<u64, Error> {
        self.delete_prefix(prefix, Some(layout)).await
    }

    async fn delete_prefix(&self, prefix: &str, layout: Option<&Layout>) -> Result<u64, Error> {
        self.invalidating();
        // Not under one timeout: each SCAN/UNLINK step is bounded on its own, and a large
        // prefix legitimately takes many steps.
        self.backend
            .delete_prefix(&self.namespace, prefix, layout, self.settings.timeout)
            .await
    }

    /// Time until `key` expires; `None` if it is not cached.
    pub(crate) async fn ttl_of(&self, key: &str) -> Result<Option<Duration>, Error> {
        self.own_key(key)?;
        self.backend.ttl(key, self.settings.timeout).await
    }

    /// Counted before the deletion is sent: a caller whose read comes after it joins no
    /// load that began before (see [`flight`](crate::flight)). Callers take the count
    /// before their reads: a load whose read came before the deletion, its count taken
    /// after, would otherwise pass for one that began after the invalidation.
    pub(super) fn invalidating(&self) {
        self.invalidations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub(super) fn epoch(&self) -> u64 {
        self.invalidations.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn own_key(&self, key: &str) -> Result<(), Error> {
        match key.strip_prefix(self.namespace.as_str()) {
            Some(rest) if rest.starts_with(':') => Ok(()),
            _ => Err(Error::OutsideNamespace {
                key: key.to_owned(),
                namespace: self.namespace.clone(),
            }),
        }
    }
}
