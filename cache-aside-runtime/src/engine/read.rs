//! Steps 1 and 2, the hot path: read the key, decide what the entry is worth. Shared later
//! by single and batch reads. A hit ends here; everything else goes to [`miss`](super::miss)
//! out of line.

use std::sync::Arc;

use super::{Call, Cold, Detach, Engine, ErrorMode, Found, ValueOps, decode_entry};
use crate::backend::Budget;
use crate::error::Error;
use crate::key::Key;
use crate::policy::{Freshness, Policy};
use crate::shape::Shape;
use crate::spec::FnSpec;

impl Engine {
    /// Get or load one key: the whole pattern for one call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn get_or_load<S, R, F>(
        self: &Arc<Self>,
        key: &Key,
        spec: &'static FnSpec,
        policy: &Policy,
        mode: ErrorMode,
        load: F,
        detach: Option<Detach<F, S::Value>>,
        ops: ValueOps<R, S::Value>,
    ) -> Result<R, Error>
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        // 1. read
        // One clock read: the read's deadline, and what is left of it for the write.
        let budget = Budget::from_now(policy.timeout);
        let entry = match self.backend.read(key.as_str(), budget).await {
            Ok(entry) => entry,
            Err(error) => {
                self.read_failed(key, policy, &error);
                if mode == ErrorMode::Surface {
                    return Err(error);
                }
                None
            }
        };
        // 2. decide
        let mut kept = None;
        let entry = entry.filter(|e| self.fits(key, e.as_slice(), policy));
        if let Some(entry) = entry {
            match decode_entry::<S, R>(entry.as_slice()) {
                Ok((value, fresh_ms)) => {
                    let freshness = policy.classify(fresh_ms);
                    match (freshness, detach) {
                        (Freshness::Fresh, _) | (Freshness::RefreshDue, None) => {
                            self.events.hit();
                            return Ok(value);
                        }
                        (Freshness::RefreshDue | Freshness::Stale, Some(detach)) => {
                            self.events.hit();
                            if freshness == Freshness::Stale {
                                self.events.served_stale();
                            }
                            detach(self, key, spec, *policy, load, entry.into_bytes(), ops.same);
                            return Ok(value);
                        }
                        (Freshness::Stale | Freshness::Expired, _) => {
                            let entry = entry.into_bytes();
                            kept = Some(Found { value, entry });
                        }
                    }
                }
                Err(error) => self.events.corrupt(key.as_str(), &error),
            }
        }
        self.events.miss();
        let call = Call {
            key,
            spec,
            mode,
            write_left: budget.left(),
        };
        // 3-5 out of line: the hit path's future and code stay small (see [`Cold`]).
        let policy = *policy;
        Cold::build(|| self.miss::<S, R, F>(call, policy, load, kept, ops, budget.started)).await
    }

    /// Is an entry as read within `max_value_bytes`? One that is not was written by someone
    /// else (this library stores nothing larger): a miss, which the load overwrites.
    #[inline]
    fn fits(&self, key: &Key, entry: &[u8], policy: &Policy) -> bool {
        if entry.len() as u64 <= policy.max_value_bytes {
            return true;
        }
        self.events.oversized_entry(key.as_str());
        false
    }

    /// A read that failed: reported, and after a timeout, a size check.
    #[cold]
    fn read_failed(self: &Arc<Self>, key: &Key, policy: &Policy, error: &Error) {
        if error.is_timeout() {
            self.check_size(key, policy);
        }
        self.events.failed("get", key.as_str(), error);
    }

    /// After a read that timed out: if the entry is larger than this function stores, the
    /// read was slow because of it, and it would make every read of its key time out (and
    /// the write after it be skipped), so it is deleted. In a spawned task, with its own
    /// timeout: the call does not wait for it. A deletion also closes the breaker, whose
    /// failures were that entry's doing.
    fn check_size(self: &Arc<Self>, key: &Key, policy: &Policy) {
        let (true, Ok(runtime)) = (
            self.backend.reads_can_stall(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let (engine, key, max) = (
            Arc::clone(self),
            key.as_str().to_owned(),
            policy.max_value_bytes,
        );
        // Its own bound, not the call's: it may have to connect first, and a Redis copying
        // out a reply of hundreds of MB answers slowly for a while.
        let timeout = self.settings.timeout.max(std::time::Duration::from_secs(5));
        runtime.spawn(async move {
            match engine.backend.drop_if_larger(&key, max, timeout).await {
                Some(Ok(Some(len))) => engine.events.huge_entry_deleted(&key, len),
                Some(Err(error)) => engine.events.failed("size check", &key, &error),
                Some(Ok(None)) | None => {}
            }
        });
    }
}
