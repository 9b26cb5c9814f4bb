//! The distributed lock: one loader per key across every process sharing a Redis.
//!
//! A process that misses (and leads its own single-flight) runs one script: return the
//! value if it is fresh, else `SET {<key>}!lock token NX PX lock_ttl` (the entry's key in
//! braces: a cluster hash tag that puts the lock in the entry's slot, see `key::lock_key`). If another process
//! holds the lock, it polls the same script with a growing pause until the value appears,
//! it takes the lock itself (the holder died and the lock expired), or `lock_wait` runs
//! out and it loads without the lock. The holder extends the lock every third of its TTL
//! while the body runs, so a slow load keeps it, and stores the value and deletes the lock
//! in one script, only if its random token still holds it.
//!
//! No entry key contains `{` (it is escaped in arguments, refused in namespaces, prefixes
//! and templates), so a lock key cannot be another entry's key.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::{Call, Engine};
use crate::backend::LockAttempt;
use crate::envelope::unix_ms;
use crate::error::Error;
use crate::key::Key;
use crate::policy::{Lock, Policy};
use crate::spec::FnSpec;

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// A lock this process may hold: its key and random token, and, once taken, the engine to
/// release it through if the holder never does.
pub(crate) struct Held {
    pub(crate) key: String,
    pub(crate) token: String,
    /// Set when the lock is taken: a holder dropped mid-load (its call cancelled, its
    /// body panicked) releases it from a spawned task rather than leaving the fleet to
    /// wait `lock_ttl`.
    owner: Option<Arc<Engine>>,
    released: AtomicBool,
}

pub(crate) enum Acquired {
    Held(Held),
    /// Another process stored a fresh value meanwhile.
    Value(Bytes),
    /// `lock_wait` ran out: load without the lock.
    GaveUp,
}

impl Held {
    /// The lock of `key`, with a fresh random token (not taken yet).
    pub(crate) fn new(key: &Key) -> Held {
        Held {
            key: crate::key::lock_key(key.as_str()),
            token: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            owner: None,
            released: AtomicBool::new(false),
        }
    }

    /// The lock is taken: from now on, dropping this releases it.
    pub(crate) fn taken(mut self, engine: &Arc<Engine>) -> Held {
        self.owner = Some(Arc::clone(engine));
        self
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(owner) = self.owner.take() else {
            return;
        };
        if self.released.load(Relaxed) {
            return;
        }
        // Best effort, and never blocking the drop: without a runtime to run it on, the
        // lock expires after `lock_ttl` as if this process had died.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (key, token) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            let timeout = owner.settings.timeout;
            if let Err(error) = owner.backend.release(&key, &token, None, timeout).await {
                owner.events.failed("release", &key, &error);
            }
        });
    }
}

impl Engine {
    /// Takes the lock of the call's key, or finds the value another process stored. Each
    /// attempt is a Redis command, bounded by what is left of the call's `timeout`
    /// (`write_left`, which this reduces by the time the attempts take): a call spends at
    /// most one `timeout` on Redis, the lock included. The pauses between attempts are
    /// `lock_wait`'s.
    pub(super) async fn acquire(
        self: &Arc<Self>,
        call: &mut Call<'_>,
        policy: &Policy,
        lock: Lock,
    ) -> Result<Acquired, Error> {
        let key = call.key;
        let held = Held::new(key);
        let deadline = Instant::now() + lock.wait;
        let mut pause = FIRST_PAUSE;
        let mut waited = false;
        loop {
            if call.write_left.is_zero() {
                return Err(Error::Timeout(policy.timeout));
            }
            let now_ms = unix_ms(SystemTime::now());
            let sent = Instant::now();
            let attempt = self
                .backend
                .get_or_lock(
                    key.as_str(),
                    (&held.key, &held.token),
                    lock.ttl,
                    now_ms,
                    policy.max_value_bytes,
                    call.write_left,
                )
                .await;
            call.spent_since(sent);
            match attempt? {
                LockAttempt::Value(bytes) => return Ok(Acquired::Value(bytes)),
                LockAttempt::Locked => return Ok(Acquired::Held(held.taken(self))),
                LockAttempt::Busy => {}
            }
            if !waited {
                waited = true;
                self.events.lock_wait();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.events.lock_timeout(key.as_str());
                return Ok(Acquired::GaveUp);
            }
            // Randomised so that a fleet of waiters does not poll in lock-step.
            let jittered = pause.mul_f64(0.5 + fastrand::f64());
            tokio::time::sleep(jittered.min(left)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Runs a body: as is, or, when this call holds the lock, while extending it; notes how
    /// long it took for XFetch.
    pub(super) async fn run_body<F: Future>(
        &self,
        held: Option<&Held>,
        spec: &'static FnSpec,
        policy: &Policy,
        load: F,
    ) -> F::Output {
        // XFetch scales its early refreshes by the load time; other functions skip the clock.
        let started = policy.xfetch.map(|_| Instant::now());
        let loaded = match (held, policy.lock) {
            (Some(held), Some(lock)) => self.hold(held, policy, lock, load).await,
            _ => load.await,
        };
        if let Some(started) = started {
            spec.load_time.loaded_in(started.elapsed());
        }
        loaded
    }

    /// Runs `load` while extending `held` every third of the lock TTL.
    async fn hold<F: Future>(
        &self,
        held: &Held,
        policy: &Policy,
        lock: Lock,
        load: F,
    ) -> F::Output {
        let period = lock.ttl / 3;
        let keep_alive = async {
            let mut lost = false;
            #[allow(clippy::infinite_loop)]
            loop {
                tokio::time::sleep(period).await;
                let extended = self
                    .backend
                    .extend_lock(&held.key, &held.token, lock.ttl, policy.timeout)
                    .await;
                match extended {
                    Ok(true) => {}
                    Ok(false) if !lost => {
                        lost = true;
                        self.events.lock_lost(&held.key);
                    }
                    Ok(false) => {}
                    Err(error) => self.events.failed("lock", &held.key, &error),
                }
            }
        };
        tokio::select! {
            out = load => out,
            () = keep_alive => unreachable!("the keep-alive loop never ends"),
        }
    }

    /// Stores `entry` (if any) and releases `held`, in one round trip.
    pub(super) async fn release(
        &self,
        held: &Held,
        entry: Option<(&str, &Bytes, Duration)>,
        timeout: Duration,
    ) -> Result<(), Error> {
        // Tried once, answered or not: a drop must not send it again.
        held.released.store(true, Relaxed);
        self.backend
            .release(&held.key, &held.token, entry, timeout)
            .await
    }
}
