//! Unit tests of the builder's checks and of calls with extreme settings.

use super::*;
use crate::backend::redact;
use crate::error::Error;

#[test]
fn redacts_passwords_in_logged_urls() {
    assert_eq!(
        redact("redis://u:pw@127.0.0.1:6379/0"),
        "redis://u:***@127.0.0.1:6379/0"
    );
    assert_eq!(redact("redis://:pw@127.0.0.1/"), "redis://:***@127.0.0.1/");
    assert_eq!(redact("redis://127.0.0.1/"), "redis://127.0.0.1/");
    assert_eq!(
        redact("redis://u:p@ss@127.0.0.1/"),
        "redis://u:***@127.0.0.1/"
    );
    // Mistyped, without `://`.
    assert_eq!(redact("u:pw@127.0.0.1:6379"), "u:***@127.0.0.1:6379");
    assert_eq!(redact("redis//:pw@127.0.0.1"), "redis//:***@127.0.0.1");
    // A socket's password is a query parameter.
    assert_eq!(
        redact("unix:///tmp/r.sock?db=1&pass=pw&PASSWORD=pw2"),
        "unix:///tmp/r.sock?db=1&pass=***&PASSWORD=***"
    );
    assert_eq!(
        redact("redis+unix:///r.sock?pass=pw"),
        "redis+unix:///r.sock?pass=***"
    );
}

/// No URL that fails to parse shows its password in the error, wherever redis-rs reads one.
#[test]
fn a_bad_url_never_shows_its_password() {
    for url in [
        "unix:///tmp/x.sock?pass=hunter2&db=x",
        "redis+unix:///tmp/x.sock?pass=hunter2&protocol=9",
        "u:hunter2@127.0.0.1:6379",
        "redis//:hunter2@127.0.0.1:6379",
        "redis://u:hunter2@127.0.0.1:99999/",
    ] {
        let Err(error) = Cache::redis(url) else {
            panic!("{url} was accepted")
        };
        let shown = format!("{error} {error:?}");
        assert!(matches!(error, Error::Config(_)), "{url}: {shown}");
        assert!(!shown.contains("hunter2"), "{url}: {shown}");
        let Err(error) = Cache::builder().redis_cluster([url]) else {
            panic!("{url} was accepted")
        };
        assert!(!format!("{error} {error:?}").contains("hunter2"), "{url}");
    }
}

/// Every setting at 0, at its bounds and at `MAX`: accepted, or an `Error::Config`
/// that names it; never a panic, here or in a call.
#[test]
fn every_setting_is_checked_against_its_range() {
    use crate::limits::{LONGEST, MAX_REFRESHES};
    let ms = Duration::from_millis;
    type Set = fn(CacheBuilder, Duration) -> CacheBuilder;
    let durations: [(&str, Set); 8] = [
        ("default_ttl", |b, d| b.default_ttl(d)),
        ("stale", |b, d| b.stale(d)),
        ("fail_safe", |b, d| b.fail_safe(d)),
        ("fail_safe_backoff", |b, d| b.fail_safe_backoff(d)),
        ("lock_ttl", |b, d| b.lock_ttl(d)),
        ("lock_wait", |b, d| b.lock_wait(d)),
        ("flight_wait", |b, d| b.flight_wait(d)),
        ("breaker cooldown", |b, d| b.breaker(5, d)),
    ];
    for (name, set) in durations {
        for (value, ok) in [
            (Duration::ZERO, false),
            (ms(1), true),
            (LONGEST, true),
            (LONGEST + ms(1), false),
            (Duration::MAX, false),
        ] {
            verdict(
                name,
                set(Cache::builder(), value),
                ok,
                &format!("{value:?}"),
            );
        }
    }
    for (value, ok) in [
        (Duration::ZERO, false),
        (ms(1), true),
        (Duration::MAX, true),
    ] {
        verdict(
            "timeout",
            Cache::builder().timeout(value),
            ok,
            &format!("{value:?}"),
        );
    }
    for (value, ok) in [
        (-0.1, false),
        (0.0, true),
        (0.5, true),
        (0.51, false),
        (f64::NAN, false),
    ] {
        verdict(
            "jitter",
            Cache::builder().jitter(value),
            ok,
            &value.to_string(),
        );
    }
    for (value, ok) in [
        (0.0, false),
        (0.01, true),
        (0.99, true),
        (1.0, false),
        (f64::INFINITY, false),
    ] {
        verdict(
            "refresh_ahead",
            Cache::builder().refresh_ahead(value),
            ok,
            &value.to_string(),
        );
    }
    for (value, ok) in [
        (0, false),
        (1, true),
        (MAX_REFRESHES, true),
        (MAX_REFRESHES + 1, false),
        (usize::MAX, false),
    ] {
        verdict(
            "max_refreshes",
            Cache::builder().max_refreshes(value),
            ok,
            &value.to_string(),
        );
    }
    for (value, ok) in [(0, false), (1, true), (u64::MAX, true)] {
        verdict(
            "max_value_bytes",
            Cache::builder().max_value_bytes(value),
            ok,
            &value.to_string(),
        );
        verdict(
            "memory_max_bytes",
            Cache::builder().memory_max_bytes(value),
            ok,
            &value.to_string(),
        );
    }
    for (value, ok) in [(0, false), (1, true), (u32::MAX, true)] {
        let builder = Cache::builder().breaker(value, Duration::from_secs(1));
        verdict("breaker failures", builder, ok, &value.to_string());
    }
    for namespace in ["a:b", "", "a b", "{x}"] {
        verdict(
            "namespace",
            Cache::builder().namespace(namespace),
            false,
            namespace,
        );
    }
    for url in [
        "not a url",
        "redis://u:hunter2@",
        "redis://:hunter2@127.0.0.1:99999/",
        "ftp://127.0.0.1/",
    ] {
        match Cache::redis(url) {
            Err(Error::Config(message)) => {
                assert!(message.starts_with("redis url"), "{url}: {message}");
                assert!(!message.contains("hunter2"), "{url}: {message}");
            }
            Err(other) => panic!("{url}: {other:?}"),
            Ok(_) => panic!("{url} was accepted"),
        }
        let seeds = [url];
        assert!(
            matches!(Cache::builder().redis_cluster(seeds), Err(Error::Config(_))),
            "{url}"
        );
        #[cfg(feature = "sentinel")]
        assert!(
            matches!(
                Cache::builder().redis_sentinel(seeds, "m"),
                Err(Error::Config(_))
            ),
            "{url}"
        );
    }
}

fn verdict(name: &str, builder: CacheBuilder, ok: bool, value: &str) {
    match builder.memory() {
        Ok(_) => assert!(ok, "{name} = {value} was accepted"),
        Err(Error::Config(message)) => {
            assert!(!ok, "{name} = {value}: {message}");
            assert!(message.starts_with(name), "{name} = {value}: {message}");
        }
        Err(other) => panic!("{name} = {value}: {other}"),
    }
}

/// The longest settings the builder takes serve calls without overflowing a deadline or
/// an expiry anywhere.
#[tokio::test]
async fn calls_with_the_longest_settings_do_not_overflow() {
    use crate::limits::LONGEST;
    let cache = Cache::builder()
        .default_ttl(LONGEST)
        .stale(LONGEST)
        .fail_safe(LONGEST)
        .fail_safe_backoff(LONGEST)
        .lock_ttl(LONGEST)
        .lock_wait(LONGEST)
        .flight_wait(LONGEST)
        .refresh_ahead(0.99)
        .jitter(0.5)
        .timeout(Duration::MAX)
        .memory()
        .unwrap();
    static SPEC: crate::spec::FnSpec =
        crate::spec::FnSpec::new("f", Some("long"), crate::key::Layout::new("")).stale_from_cache();
    for _ in 0..3 {
        let prepared = crate::__private::prepare(Ok(&cache), &SPEC, "m::f", "", |_| Ok(()));
        let body = crate::__private::Foreground(async { 7u32 });
        let value = crate::__private::get_or_load::<crate::shape::Plain, u32, _, _>(
            prepared,
            &SPEC,
            body,
            None,
            crate::exact::Same::NONE,
        )
        .await;
        assert_eq!(value, 7);
    }
    assert_eq!(cache.stats().hits, 2);
}

/// Without the `tls` feature a `rediss://` URL is refused up front, naming the feature
/// (`.ci/run` runs the runtime's unit tests alone, without the features the test crate
/// turns on).
#[cfg(not(feature = "tls"))]
#[test]
fn rediss_without_the_tls_feature_is_a_config_error() {
    match Cache::builder().redis("rediss://127.0.0.1:6380/") {
        Err(Error::Config(message)) => assert!(message.contains("`tls` feature"), "{message}"),
        other => panic!("{other:?}"),
    }
}

/// A TLS URL is one whatever the case of its scheme, `valkeys://` too, as redis-rs reads
/// them: Sentinel refuses each (it has no TLS in this release), and TLS files go with each.
#[test]
fn tls_schemes_are_known_in_any_case() {
    #[cfg(feature = "sentinel")]
    for url in [
        "rediss://127.0.0.1:1",
        "REDISS://127.0.0.1:1",
        "Rediss://127.0.0.1:1",
        "valkeys://127.0.0.1:1",
    ] {
        let refused = Cache::builder().redis_sentinel([url], "m");
        assert!(matches!(refused, Err(Error::Config(_))), "{url}");
    }
    #[cfg(feature = "tls")]
    for url in ["REDISS://127.0.0.1:1/", "valkeys://127.0.0.1:1/"] {
        let pem = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
        let built = Cache::builder().tls_root_ca(pem).redis(url);
        assert!(
            !matches!(&built, Err(Error::Config(m)) if m.contains("need rediss")),
            "{url}"
        );
    }
}
