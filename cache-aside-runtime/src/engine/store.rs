//! Step 4: encode what the shape says to store, check that it reads back exactly, and
//! write it with its physical TTL under the call's lease (which the write gives up).

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::lease::Held;
use super::{Call, Engine};
use crate::backend::Budget;
use crate::envelope;
use crate::error::Error;
use crate::exact::{self, Same};
use crate::flight::Outcome;
use crate::key::Key;
use crate::policy::Policy;
use crate::shape::{Shape, Store};
use crate::spec::FnSpec;

/// The entry an encoding is for: its key and function, the function's policy, and the
/// lease token it is marked with (0: none).
#[derive(Clone, Copy)]
pub(super) struct Entry<'a> {
    pub(super) key: &'a Key,
    pub(super) spec: &'static FnSpec,
    pub(super) policy: &'a Policy,
    pub(super) token: u64,
}

/// What a write did with a value that was to be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Written {
    /// Stored, or nothing was to be stored (the lease is given up), or, loaded without a
    /// lease, the lease the read saw still holds the key (see `unleased`).
    Done,
    /// Not stored: the call's lease was revoked while its body ran, or it had none and
    /// the lease its read saw is gone.
    Dropped,
}

impl Engine {
    /// Writes what [`encode`](Self::encode) made (releasing `held`). Returns the entry,
    /// written or not, so that waiters are served even when the backend is down.
    ///
    /// Takes the result of `encode` rather than `&R`, so no `&R` is held across an await:
    /// a refresh task's future is `Send` without asking `R: Sync`.
    pub(super) async fn store(
        &self,
        call: &Call<'_>,
        policy: &Policy,
        encoded: Result<Option<(Bytes, Duration)>, Error>,
        held: Option<&Held>,
    ) -> (Option<Bytes>, Result<Written, Error>) {
        match encoded {
            Ok(Some((entry, ttl))) if entry.len() as u64 <= policy.max_value_bytes => {
                let written = self.write(call, policy, Some((&entry, ttl)), held).await;
                if written.is_err() {
                    self.events.of(call.spec).store_failed();
                }
                (Some(entry), written)
            }
            Ok(Some((entry, _))) => {
                self.events
                    .of(call.spec)
                    .oversized_value(call.key.as_str(), entry.len());
                (Some(entry), self.write(call, policy, None, held).await)
            }
            Ok(None) => (None, self.write(call, policy, None, held).await),
            Err(error) => {
                self.write(call, policy, None, held).await.ok();
                (None, Err(error))
            }
        }
    }

    /// The entry to store for `loaded` and its physical TTL (jittered TTL plus the
    /// stale/fail-safe margin); `None` if the shape stores nothing, or if the value would
    /// not read back exactly (see [`exact`]).
    pub(super) fn encode<S: Shape<R>, R>(
        &self,
        call: &Call<'_>,
        policy: &Policy,
        loaded: &R,
        same: Same<S::Value>,
        held: Option<&Held>,
    ) -> Result<Option<(Bytes, Duration)>, Error> {
        // Marked with the lease that writes it (0: none).
        let token = held.map_or(0, |h| h.token);
        let entry = Entry {
            key: call.key,
            spec: call.spec,
            policy,
            token,
        };
        self.encode_store(&entry, S::store(loaded), same)
    }

    /// [`encode`](Self::encode) for what a shape said to store: also `#[cache_put]`'s.
    pub(super) fn encode_store<V: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        entry: &Entry<'_>,
        store: Store<'_, V>,
        same: Same<V>,
    ) -> Result<Option<(Bytes, Duration)>, Error> {
        let Entry {
            key,
            spec,
            policy,
            token,
        } = *entry;
        let (value, ttl) = match (store, policy.none_ttl) {
            (Store::Value(value), _) => (Some(value), policy.ttl),
            (Store::Absent, Some(none_ttl)) => (None, none_ttl),
            (Store::Absent, None) | (Store::Skip, _) => return Ok(None),
        };
        let ttl = policy.jittered(ttl);
        let fresh_until = Some(SystemTime::now() + ttl);
        let bytes = match envelope::encode_leased(self.codec, value, fresh_until, token) {
            Ok(bytes) => bytes,
            Err(error) => {
                self.events.of(spec).failed("encode", key.as_str(), &error);
                return Err(error);
            }
        };
        // An oversized value is not stored anyway (`store` counts it): no need to decode it.
        if let Some(value) = value
            && bytes.len() as u64 <= policy.max_value_bytes
            && !exact::round_trips(value, || envelope::decode_raw::<V>(&bytes).ok()?.0, same)
        {
            self.events
                .of(spec)
                .unstorable(spec.name(), &spec.warned_unstorable, key.as_str());
            return Ok(None);
        }
        Ok(Some((Bytes::from(bytes), ttl + policy.keep())))
    }

    /// Writes `entry` with its physical TTL under the lease `held`, or gives the lease up
    /// if there is nothing to write, in one round trip. Without a lease nothing is written:
    /// another load holds the key's lease, or the read failed. A lease lost meanwhile (an
    /// invalidation or a put came while the body ran) drops the value: it may predate them.
    /// Skipped when the call's read used up the timeout: Redis is hung or unreachable, and
    /// waiting for it a second time would double what the outage costs the caller.
    pub(super) async fn write(
        &self,
        call: &Call<'_>,
        policy: &Policy,
        entry: Option<(&Bytes, Duration)>,
        held: Option<&Held>,
    ) -> Result<Written, Error> {
        let key = call.key.as_str();
        let unfenced = !self.settings.fenced && entry.is_some();
        let spent = call.write_left.is_zero() && self.backend.remote();
        if spent && (held.is_some() || unfenced) {
            let error = Error::Timeout(policy.timeout);
            self.events.of(call.spec).failed("set", key, &error);
            return Err(error);
        }
        let (op, result) = match (held, entry) {
            // Leases off (tests of the race they close): stored whatever happened meanwhile.
            (_, Some((bytes, ttl))) if !self.settings.fenced => {
                let set = self.backend.set(key, bytes, ttl, call.write_left).await;
                if let Some(held) = held {
                    held.done();
                }
                ("set", set.map(|()| Written::Done))
            }
            (Some(held), Some((bytes, ttl))) => {
                match self.fill(held, bytes, ttl, call.write_left).await {
                    Ok(true) => ("fill", Ok(Written::Done)),
                    Ok(false) => {
                        self.events.of(call.spec).fill_dropped(key);
                        ("fill", Ok(Written::Dropped))
                    }
                    Err(error) => ("fill", Err(error)),
                }
            }
            (Some(held), None) => {
                let released = self.release(held, call.write_left).await;
                ("release", released.map(|()| Written::Done))
            }
            (None, Some(_)) => return Ok(self.unleased(call).await),
            (None, None) => return Ok(Written::Done),
        };
        if let Err(error) = &result {
            self.events.of(call.spec).failed(op, key, error);
        }
        result
    }

    /// What single-flight waiters get of an entry that was to be stored: `Stored` if it
    /// was, `Dropped` if not (its lease revoked, none held, or the write failed, perhaps
    /// after an invalidation revoked the lease). With leases off, whatever happened.
    pub(super) fn handed(&self, entry: Bytes, written: &Result<Written, Error>) -> Outcome {
        match written {
            Ok(Written::Done) => Outcome::Stored(entry),
            Ok(Written::Dropped) => Outcome::Dropped(entry),
            Err(_) if self.settings.fenced => Outcome::Dropped(entry),
            Err(_) => Outcome::Stored(entry),
        }
    }

    /// What a value loaded without a lease (another load holds it, or the read failed) is
    /// worth to the callers waiting for it: nothing is written, and an invalidation may
    /// have revoked the lease the call's read saw while the body ran, so the value may
    /// predate it. If that lease still holds the key, no invalidation came since the read
    /// (it would have taken the key, lease and all): `Done`, any waiter may take the value.
    /// Else `Dropped`: only the waiters that saw the same take it (see `flight`).
    async fn unleased(&self, call: &Call<'_>) -> Written {
        if call.saw == 0 || (call.write_left.is_zero() && self.backend.remote()) {
            return Written::Dropped;
        }
        let budget = Budget::from_now(call.write_left);
        match self
            .backend
            .holds(call.key.as_str(), call.saw, &self.lease_ms, budget)
            .await
        {
            Ok(true) => Written::Done,
            _ => Written::Dropped,
        }
    }
}
