//! With `lock = true`: the keys another process is loading (it holds their leases) are
//! waited for beside the body, as a one-key miss with the lock waits for its key, rather
//! than loaded once more. They are polled together, one read per round for all of them,
//! until their values are stored or `lock_wait` is over; what the wait does not get goes
//! to step 6.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::backend::{Budget, Read};
use crate::engine::Engine;
use crate::engine::lease::Polls;
use crate::flight::{Lead, Outcome, Seen};
use crate::key::Key;
use crate::policy::Policy;
use crate::spec::FnSpec;

impl Engine {
    /// Each polled key's value once its holder stored it, or `None` if the wait ended
    /// without one: the holder's lease vanished (its body failed, or an invalidation
    /// revoked it), a read failed, or `lock_wait` (or the batch's `timeout`) ran out. Each
    /// key's flight is finished with what its wait got, so this process's callers waiting
    /// on it get the value too. Also what the polls' reads left of `left`: the batch's
    /// later reads share it.
    pub(super) async fn poll_held<V: DeserializeOwned>(
        &self,
        keys: &[Key],
        spec: &'static FnSpec,
        policy: &Policy,
        polls: Vec<(usize, Lead)>,
        mut left: Duration,
    ) -> (Vec<(usize, Option<Option<V>>)>, Duration) {
        let mut got = Vec::with_capacity(polls.len());
        let mut pending = polls;
        for _ in &pending {
            self.events.of(spec).lock_wait();
        }
        let mut pauses = Polls::new(self.settings.lock_wait);
        let mut timed_out = false;
        // The read just saw their leases: each round waits first.
        while !pending.is_empty() {
            if !pauses.pause().await {
                timed_out = true;
                break;
            }
            let names: Vec<&str> = pending.iter().map(|(i, _)| keys[*i].as_str()).collect();
            let sent = tokio::time::Instant::now();
            let read = self.backend.read_many(&names, Budget::from_now(left)).await;
            left = left.saturating_sub(sent.elapsed());
            let Ok(entries) = read else { break };
            let mut still = Vec::with_capacity(pending.len());
            for ((index, lead), entry) in pending.into_iter().zip(entries) {
                let entry = entry.map(Read::into_bytes);
                let read = entry.clone().map(Read::Bytes);
                match (self.decide::<V>(&keys[index], spec, policy, read), entry) {
                    (Ok(value), Some(entry)) => {
                        lead.storing_since(sent);
                        lead.finish(Outcome::Stored(entry));
                        got.push((index, Some(value)));
                    }
                    (Err(Seen::Leased(_)), _) => still.push((index, lead)),
                    _ => {
                        lead.finish(Outcome::NotStored);
                        got.push((index, None));
                    }
                }
            }
            pending = still;
            if left.is_zero() {
                break;
            }
        }
        for (index, lead) in pending {
            if timed_out {
                self.events.of(spec).lock_timeout(keys[index].as_str());
            }
            lead.finish(Outcome::NotStored);
            got.push((index, None));
        }
        (got, left)
    }
}
