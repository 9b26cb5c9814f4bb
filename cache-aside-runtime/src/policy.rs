//! One function's settings, resolved against its cache's defaults, and the freshness rules
//! that follow from them.
//!
//! An entry has two deadlines. Until `fresh_until` (written in the envelope) it is served
//! as is. After it, the entry stays in the backend for `keep` more (`max(stale, fail_safe)`,
//! the physical TTL being `ttl + keep`): within `stale` it is served while a background
//! refresh replaces it; within `fail_safe` it answers calls whose body fails.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::settings::Settings;

/// What the attribute gave for one function, each `None` (or `false`) falling back to the
/// cache's settings. Built in a `static` by generated code, through `FnSpec`'s setters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub(crate) ttl: Option<Duration>,
    pub(crate) none_ttl: Option<Duration>,
    pub(crate) stale: Option<Duration>,
    /// Bare `stale`: the window is the cache's `.stale(..)`.
    pub(crate) stale_from_cache: bool,
    pub(crate) refresh_ahead: Option<f64>,
    /// Bare `refresh_ahead`: the fraction is the cache's `.refresh_ahead(..)`.
    pub(crate) refresh_ahead_from_cache: bool,
    /// `xfetch = beta`.
    pub(crate) xfetch: Option<f64>,
    pub(crate) fail_safe: Option<Duration>,
    pub(crate) jitter: Option<f64>,
    pub(crate) lock: Option<bool>,
    pub(crate) flight_wait: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_value_bytes: Option<u64>,
}

impl Options {
    pub(crate) const NONE: Options = Options {
        ttl: None,
        none_ttl: None,
        stale: None,
        stale_from_cache: false,
        refresh_ahead: None,
        refresh_ahead_from_cache: false,
        xfetch: None,
        fail_safe: None,
        jitter: None,
        lock: None,
        flight_wait: None,
        timeout: None,
        max_value_bytes: None,
    };
}

/// How long one function's body last took to load: XFetch's delta, read at each early
/// refresh decision (not when the policy is resolved, which is once).
#[derive(Debug, Default)]
pub(crate) struct LoadTime(AtomicU64);

impl LoadTime {
    pub(crate) const fn new() -> Self {
        LoadTime(AtomicU64::new(0))
    }

    /// The last load time.
    pub(crate) fn last(&self) -> Duration {
        Duration::from_micros(self.0.load(Relaxed))
    }

    /// Notes how long a load took.
    pub(crate) fn loaded_in(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.0.store(us, Relaxed);
    }
}

/// How often one function has missed lately, which decides whether its reads take the
/// key's lease in the same command (`SET .. NX GET`, which costs Redis more than a `GET`) or
/// leave it to the miss (one round trip more per miss). A miss adds [`MissScore::MISS`], a
/// hit takes one off: the score climbs when more than a third of calls miss. A hit at zero
/// writes nothing, so a function that only hits shares no written cache line between threads.
#[derive(Debug, Default)]
pub(crate) struct MissScore(AtomicU32);

impl MissScore {
    const MISS: u32 = 2;
    const CAP: u32 = 16;
    /// At or above it, reads take the lease.
    const LEASE_ON_READ: u32 = 4;

    pub(crate) const fn new() -> Self {
        MissScore(AtomicU32::new(0))
    }

    /// Should the next read take the lease?
    #[inline]
    pub(crate) fn high(&self) -> bool {
        self.0.load(Relaxed) >= Self::LEASE_ON_READ
    }

    #[inline]
    pub(crate) fn hit(&self) {
        let score = self.0.load(Relaxed);
        if score > 0 {
            self.0.store(score - 1, Relaxed);
        }
    }

    pub(crate) fn miss(&self) {
        let score = self.0.load(Relaxed);
        self.0.store((score + Self::MISS).min(Self::CAP), Relaxed);
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub(crate) ttl: Duration,
    pub(crate) none_ttl: Option<Duration>,
    pub(crate) stale: Duration,
    pub(crate) refresh_ahead: Option<f64>,
    /// XFetch's beta: refresh early with a probability that rises as expiry nears.
    pub(crate) xfetch: Option<f64>,
    /// The function's last load time, XFetch's delta.
    pub(crate) load_time: &'static LoadTime,
    pub(crate) fail_safe: Duration,
    pub(crate) fail_safe_backoff: Duration,
    pub(crate) jitter: f64,
    /// A miss that finds another process's load of its key waits for its value.
    pub(crate) lock: bool,
    /// Longest a miss waits for another caller's load of its key in this process.
    pub(crate) flight_wait: Duration,
    /// Bound on each cache operation.
    pub(crate) timeout: Duration,
    pub(crate) max_value_bytes: u64,
}

/// How a decoded entry may be used at a given moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Freshness {
    /// Serve it.
    Fresh,
    /// Serve it, and refresh it in the background (refresh-ahead).
    RefreshDue,
    /// Expired but within `stale`: serve it, and refresh it in the background.
    Stale,
    /// Expired beyond `stale`: load, but keep it as the fail-safe answer.
    Expired,
}

impl Policy {
    /// The function's options, else the cache's; `None` if neither gives a TTL.
    pub(crate) fn resolve(
        options: &Options,
        load_time: &'static LoadTime,
        settings: &Settings,
    ) -> Option<Policy> {
        let ttl = options.ttl.or(settings.default_ttl)?;
        let lock = options.lock.unwrap_or(settings.lock);
        let timeout = options.timeout.unwrap_or(settings.timeout);
        Some(Policy {
            ttl,
            none_ttl: options.none_ttl,
            stale: options
                .stale
                .or(settings.stale.filter(|_| options.stale_from_cache))
                .unwrap_or_default(),
            refresh_ahead: options.refresh_ahead.or(settings
                .refresh_ahead
                .filter(|_| options.refresh_ahead_from_cache)),
            xfetch: options.xfetch,
            load_time,
            fail_safe: options.fail_safe.or(settings.fail_safe).unwrap_or_default(),
            fail_safe_backoff: settings.fail_safe_backoff,
            jitter: options.jitter.unwrap_or(settings.jitter),
            lock,
            flight_wait: options.flight_wait.unwrap_or(settings.flight_wait),
            timeout,
            max_value_bytes: options.max_value_bytes.unwrap_or(settings.max_value_bytes),
        })
    }

    /// How long an entry outlives its freshness.
    pub(crate) fn keep(&self) -> Duration {
        self.stale.max(self.fail_safe)
    }

    /// Whether `fresh_until` matters at all. Without `stale`, `fail_safe` or
    /// `refresh_ahead`, the backend's expiry alone decides, and a writer's clock being
    /// ahead or behind ours changes nothing.
    #[inline]
    pub(crate) fn tracks_freshness(&self) -> bool {
        !self.stale.is_zero()
            || !self.fail_safe.is_zero()
            || self.refresh_ahead.is_some()
            || self.xfetch.is_some()
    }

    /// `base` spread by up to `±jitter`.
    pub(crate) fn jittered(&self, base: Duration) -> Duration {
        if self.jitter <= 0.0 {
            return base;
        }
        let spread = 1.0 + self.jitter * (2.0 * fastrand::f64() - 1.0);
        base.mul_f64(spread).max(Duration::from_millis(1))
    }

    /// How long past `now` an entry must stay fresh to need no refresh: `now` for stale
    /// entries, the refresh-ahead point for nearly expired ones.
    pub(crate) fn refresh_point(&self, now: SystemTime) -> SystemTime {
        match self.refresh_ahead {
            Some(at) => now + self.ttl.mul_f64((1.0 - at).clamp(0.0, 1.0)),
            None => now,
        }
    }

    /// Reads the clock only for functions that track freshness: the hit path of the
    /// others stays free of it (and of the call: this check is inlined, the rest is not).
    /// `fresh_ms`: the envelope's fresh-until time in Unix milliseconds, 0 for none.
    #[inline]
    pub(crate) fn classify(&self, fresh_ms: u64) -> Freshness {
        if fresh_ms == 0 || !self.tracks_freshness() {
            return Freshness::Fresh;
        }
        self.classify_tracked(fresh_ms)
    }

    #[inline(never)]
    fn classify_tracked(&self, fresh_ms: u64) -> Freshness {
        let fresh_until = UNIX_EPOCH + Duration::from_millis(fresh_ms);
        let now = SystemTime::now();
        let freshness = self.classify_at(fresh_until, now);
        match self.xfetch {
            // The load time is read now, not when the policy was resolved: a function's
            // policy is resolved once and remembered. The draw is Exp(1): -ln(u), u in (0, 1].
            Some(_) => self.xfetch_at(freshness, fresh_until, now, self.load_time.last(), || {
                -(1.0 - fastrand::f64()).ln()
            }),
            None => freshness,
        }
    }

    /// XFetch (Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic Cache Stampede
    /// Prevention", VLDB 2015): a fresh entry is refreshed when `now + delta * beta * draw`
    /// reaches its expiry, `delta` being how long the body takes to load and `draw` an
    /// Exp(1) sample. Hits far from expiry almost never refresh; as expiry nears each hit
    /// becomes likelier to, so one caller in the fleet usually refreshes first, and slightly
    /// ahead of expiry, instead of all of them at one deterministic point.
    fn xfetch_at(
        &self,
        freshness: Freshness,
        fresh_until: SystemTime,
        now: SystemTime,
        last_load: Duration,
        draw: impl FnOnce() -> f64,
    ) -> Freshness {
        let (Freshness::Fresh, Some(beta)) = (freshness, self.xfetch) else {
            return freshness;
        };
        if last_load.is_zero() {
            return freshness; // never loaded here yet: nothing to scale by
        }
        let early = last_load.mul_f64((beta * draw()).min(1e6));
        if now + early >= fresh_until {
            Freshness::RefreshDue
        } else {
            freshness
        }
    }

    fn classify_at(&self, fresh_until: SystemTime, now: SystemTime) -> Freshness {
        match fresh_until.duration_since(now) {
            Ok(_) if fresh_until < self.refresh_point(now) => Freshness::RefreshDue,
            Ok(_) => Freshness::Fresh,
            Err(past) if past.duration() < self.stale => Freshness::Stale,
            Err(_) => Freshness::Expired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads take the lease once a third of calls or more miss, and go back to `GET`s when
    /// the function hits again; a hit at zero leaves the score alone.
    #[test]
    fn the_miss_score_follows_the_miss_rate() {
        let score = MissScore::new();
        score.hit();
        assert!(!score.high());
        score.miss();
        assert!(!score.high(), "one miss is not a trend");
        score.miss();
        assert!(score.high());
        for _ in 0..20 {
            score.miss();
        }
        for _ in 0..12 {
            score.hit();
        }
        assert!(score.high(), "capped at 16: 12 hits leave 4");
        score.hit();
        assert!(!score.high());
        // One miss in two: +2, -1 per pair; it climbs.
        let score = MissScore::new();
        for _ in 0..4 {
            score.miss();
            score.hit();
        }
        assert!(score.high());
        // One miss in four: +2, -3; it stays low.
        let score = MissScore::new();
        for _ in 0..20 {
            score.miss();
            (0..3).for_each(|_| score.hit());
        }
        assert!(!score.high());
    }

    fn policy() -> Policy {
        static LOAD_TIME: LoadTime = LoadTime::new();
        let options = Options {
            ttl: Some(Duration::from_secs(10)),
            ..Options::NONE
        };
        let settings = crate::Cache::builder().settings_for_tests();
        Policy::resolve(&options, &LOAD_TIME, &settings).unwrap()
    }

    #[test]
    fn without_freshness_options_the_backend_expiry_decides() {
        let p = policy();
        let now = SystemTime::now();
        let long_ago = now - Duration::from_secs(3600);
        let long_ago_ms = crate::envelope::unix_ms(long_ago);
        assert_eq!(p.classify(long_ago_ms), Freshness::Fresh);
        assert_eq!(p.keep(), Duration::ZERO);
    }

    #[test]
    fn classifies_by_age() {
        let p = Policy {
            stale: Duration::from_secs(5),
            fail_safe: Duration::from_secs(60),
            refresh_ahead: Some(0.8),
            ..policy()
        };
        let now = SystemTime::now();
        let s = Duration::from_secs;
        assert_eq!(p.classify_at(now + s(5), now), Freshness::Fresh);
        assert_eq!(p.classify_at(now + s(1), now), Freshness::RefreshDue);
        assert_eq!(p.classify_at(now - s(1), now), Freshness::Stale);
        assert_eq!(p.classify_at(now - s(10), now), Freshness::Expired);
        assert_eq!(p.classify(0), Freshness::Fresh);
        assert_eq!(p.keep(), s(60));
    }

    #[test]
    fn xfetch_refreshes_with_the_papers_probability() {
        let p = Policy {
            xfetch: Some(1.0),
            ..policy()
        };
        let load = Duration::from_millis(100);
        p.load_time.loaded_in(load);
        let now = SystemTime::now();
        let at = |left_ms: u64, draw: f64| {
            p.xfetch_at(
                Freshness::Fresh,
                now + Duration::from_millis(left_ms),
                now,
                load,
                || draw,
            )
        };
        // Due exactly when delta * beta * draw reaches the time left.
        assert_eq!(at(100, 0.99), Freshness::Fresh);
        assert_eq!(at(100, 1.01), Freshness::RefreshDue);
        assert_eq!(at(1000, 9.0), Freshness::Fresh);
        // With real draws, P(due) = exp(-left / (delta * beta)): e^-1 at left = delta.
        let due = (0..20_000)
            .filter(|_| {
                p.classify(crate::envelope::unix_ms(now + Duration::from_millis(100)))
                    == Freshness::RefreshDue
            })
            .count() as f64
            / 20_000.0;
        assert!((0.32..0.42).contains(&due), "{due}");
        // Stale and due entries are left as they are; without a load time, never early.
        assert_eq!(
            p.xfetch_at(Freshness::Stale, now, now, load, || 100.0),
            Freshness::Stale
        );
        assert_eq!(
            p.xfetch_at(Freshness::Fresh, now, now, Duration::ZERO, || 100.0),
            Freshness::Fresh
        );
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let p = Policy {
            jitter: 0.1,
            ..policy()
        };
        let base = Duration::from_secs(100);
        let spread: Vec<_> = (0..1000).map(|_| p.jittered(base)).collect();
        assert!(spread.iter().all(|d| (s(90)..=s(110)).contains(d)));
        assert!(spread.iter().any(|d| *d < s(99)) && spread.iter().any(|d| *d > s(101)));
        fn s(n: u64) -> Duration {
            Duration::from_secs(n)
        }
    }
}
