//! Unit tests of the options table: what parses, and what each mistake says.

use quote::quote;

use super::*;
use crate::values::parse_duration_str;

fn parse_ok(tokens: TokenStream) -> Options {
    let mut errors = Errors::default();
    let args = parse(tokens, &mut errors);
    assert!(errors.is_empty(), "{}", errors.into_compile_errors());
    args
}

fn parse_err(tokens: TokenStream) -> Vec<String> {
    let mut errors = Errors::default();
    parse(tokens, &mut errors);
    errors.into_messages()
}

#[test]
fn durations() {
    assert_eq!(parse_duration_str("90s"), Some(90_000));
    assert_eq!(parse_duration_str("5m"), Some(300_000));
    assert_eq!(parse_duration_str("1h30m"), Some(5_400_000));
    assert_eq!(parse_duration_str("250ms"), Some(250));
    assert_eq!(parse_duration_str("2d"), Some(172_800_000));
    assert_eq!(parse_duration_str("1d2h3m4s5ms"), Some(93_784_005));
    for bad in [
        "",
        "5",
        "m",
        "5x",
        "1.5h",
        "-5s",
        "99999999999999999999s",
        "5 m",
        "1m1m",
        "30m1h",
        "1s500ms1s",
    ] {
        assert_eq!(parse_duration_str(bad), None, "{bad:?}");
    }
}

#[test]
fn parses_every_option() {
    let args = parse_ok(quote!(
        ttl = 60,
        none_ttl = "30s",
        prefix = "user",
        skip(db, self),
        cache = self.cache,
        crate = ::my::rt
    ));
    let skip: Vec<_> = args.skipped().iter().map(ToString::to_string).collect();
    assert_eq!(args.ttl.unwrap().value.millis, 60_000);
    assert_eq!(args.none_ttl.unwrap().value.millis, 30_000);
    assert_eq!(args.prefix.as_ref().unwrap().value.value(), "user");
    assert_eq!(skip, ["db", "self"]);
    assert!(args.cache.is_some());
    let krate = args.krate.unwrap().value;
    assert_eq!(quote!(#krate).to_string(), quote!(::my::rt).to_string());
    let args = parse_ok(quote!(key = "user:{id}", ttl = "1h"));
    assert_eq!(args.key.unwrap().value.prefix, "user");
    assert_eq!(args.ttl.unwrap().value.millis, 3_600_000);
    assert!(parse_ok(quote!()).ttl.is_none());
}

#[test]
fn collects_every_mistake() {
    let errors = parse_err(quote!(
        ttl = 0,
        tll = 5,
        prefix = "a:b",
        ttl = "x",
        none_ttl = -1
    ));
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert!(errors[0].contains("greater than zero"));
    assert!(errors[1].starts_with("unknown option `tll`; expected one of: `ttl`"));
    assert!(errors[2].contains("`prefix` must be non-empty"));
    assert!(errors[3].contains("invalid duration \"x\""));
    assert!(errors[4].contains("`none_ttl` must be greater than zero"));
}

#[test]
fn duplicates_are_reported_once_each() {
    let errors = parse_err(quote!(ttl = 1, ttl = 2, skip(a), skip(b)));
    assert_eq!(
        errors,
        [
            "duplicate `ttl` option",
            "duplicate `skip` option; list every argument in one `skip(...)`"
        ]
    );
}

#[test]
fn parses_freshness_and_resilience_options() {
    let args = parse_ok(quote!(
        stale = "5m",
        refresh_ahead = 0.8,
        fail_safe = 3600,
        jitter = 0.5,
        lock = false,
        timeout = "50ms",
        max_value_bytes = 65_536,
        on_cache_error = "fail"
    ));
    assert!(matches!(
        args.stale.unwrap().value,
        OrCache::Given(Dur { millis: 300_000 })
    ));
    assert!(matches!(
        args.refresh_ahead.unwrap().value,
        OrCache::Given(0.8)
    ));
    assert_eq!(args.fail_safe.unwrap().value.millis, 3_600_000);
    assert_eq!(args.jitter.unwrap().value, 0.5);
    assert!(!args.lock.unwrap().value);
    assert_eq!(args.timeout.unwrap().value.millis, 50);
    assert_eq!(args.max_value_bytes.unwrap().value, 65_536);
    assert_eq!(args.on_cache_error.unwrap().value, OnCacheError::Fail);
    assert_eq!(args.background.unwrap(), "stale");

    let args = parse_ok(quote!(
        refresh_ahead = 0.5,
        lock = true,
        on_cache_error = "open"
    ));
    assert_eq!(args.background.unwrap(), "refresh_ahead");
    assert!(args.lock.unwrap().value);
    assert_eq!(args.on_cache_error.unwrap().value, OnCacheError::Open);
    let args = parse_ok(quote!(refresh_ahead = 0.999f64, jitter = 0.01));
    assert!(matches!(
        args.refresh_ahead.unwrap().value,
        OrCache::Given(0.999)
    ));
    assert_eq!(args.jitter.unwrap().value, 0.01);
    assert!(parse_ok(quote!(ttl = 1)).background.is_none());
}

#[test]
fn companions_can_be_turned_off() {
    assert!(!parse_ok(quote!(companions = false)).companions());
    assert!(parse_ok(quote!(ttl = 1)).companions.is_none());
    assert_one_error(&[(quote!(companions = 0), "`companions` takes `true`")]);
}

#[test]
fn xfetch_takes_a_beta_and_needs_a_background_body() {
    let args = parse_ok(quote!(ttl = 60, xfetch = 1.0));
    assert_eq!(args.xfetch.unwrap().value, 1.0);
    assert_eq!(args.background.unwrap(), "xfetch");
    let beta = "`xfetch` takes a float literal greater than 0 and at most 10";
    assert_one_error(&[
        (quote!(xfetch = 0.0), beta),
        (quote!(xfetch = 11.0), beta),
        (quote!(xfetch = 1), beta),
        (quote!(xfetch), "expected `=`"),
    ]);
}

#[test]
fn bare_stale_and_refresh_ahead_take_the_caches_setting() {
    let args = parse_ok(quote!(ttl = 60, stale, refresh_ahead, jitter = 0.1));
    assert!(matches!(args.stale.unwrap().value, OrCache::FromCache));
    assert!(matches!(
        args.refresh_ahead.unwrap().value,
        OrCache::FromCache
    ));
    assert_eq!(args.jitter.unwrap().value, 0.1);
    assert_eq!(args.background.unwrap(), "stale");
    let args = parse_ok(quote!(refresh_ahead));
    assert_eq!(args.background.unwrap(), "refresh_ahead");
}

/// Each input must give exactly one error, starting with the expected text.
fn assert_one_error(cases: &[(TokenStream, &str)]) {
    for (tokens, expected) in cases {
        let errors = parse_err(tokens.clone());
        assert_eq!(errors.len(), 1, "{tokens}: {errors:?}");
        assert!(errors[0].starts_with(expected), "{tokens}: {errors:?}");
    }
}

#[test]
fn fractions_must_be_float_literals_in_range() {
    let refresh = "`refresh_ahead` takes a float literal strictly between 0 and 1";
    let jitter = "`jitter` takes a float literal from 0 (off) to 0.5";
    assert_one_error(&[
        (quote!(refresh_ahead = 1.0), refresh),
        (quote!(refresh_ahead = 0.0), refresh),
        (quote!(refresh_ahead = 1), refresh),
        (quote!(refresh_ahead = -0.5), refresh),
        (quote!(refresh_ahead = "0.8"), refresh),
        (quote!(refresh_ahead = FRACTION), refresh),
        (quote!(jitter = 0.51), jitter),
        (quote!(jitter = -0.1), jitter),
        (quote!(jitter = 1), jitter),
    ]);
    // Zero turns a cache's jitter off for one function, as `.jitter(0.0)` does.
    assert_eq!(parse_ok(quote!(jitter = 0.0)).jitter.unwrap().value, 0.0);
}

#[test]
fn other_values_are_checked() {
    let lock = "`lock` takes `true` (take a distributed lock before loading) or `false`";
    let bytes = "`max_value_bytes` takes an integer literal, like `max_value_bytes = 65_536`";
    let on_error = "`on_cache_error` takes \"open\"";
    assert_one_error(&[
        (quote!(lock = "yes"), lock),
        (quote!(lock = 1), lock),
        (quote!(lock = on), lock),
        (
            quote!(max_value_bytes = 0),
            "`max_value_bytes` must be greater than zero",
        ),
        (
            quote!(max_value_bytes = -1),
            "`max_value_bytes` must be greater than zero",
        ),
        (quote!(max_value_bytes = "64k"), bytes),
        (quote!(max_value_bytes = 1.5), bytes),
        (quote!(max_value_bytes = 99999999999999999999999), bytes),
        (quote!(max_value_bytes = LIMIT), bytes),
        (
            quote!(on_cache_error = "ignore"),
            "unknown `on_cache_error` value \"ignore\"; `on_cache_error` takes \"open\"",
        ),
        (quote!(on_cache_error = fail), on_error),
        (quote!(on_cache_error = true), on_error),
        (quote!(stale = 0), "`stale` must be greater than zero"),
        (
            quote!(fail_safe = "0s"),
            "`fail_safe` must be greater than zero",
        ),
        (quote!(timeout = -5), "`timeout` must be greater than zero"),
        (
            quote!(timeout = "soon"),
            "invalid duration \"soon\"; `timeout` takes a literal",
        ),
        (quote!(stale = 1, stale = 2), "duplicate `stale` option"),
        (
            quote!(on_cache_error = "open", on_cache_error = "fail"),
            "duplicate `on_cache_error` option",
        ),
    ]);
}

#[test]
fn ttl_rejects_non_literals() {
    let errors = parse_err(quote!(ttl = SOME_CONST));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("`ttl` takes a literal: whole seconds"),
        "{errors:?}"
    );
}

/// The ranges are the settings crate's (`takes_*`), so only the words of the fraction
/// options' help could drift from them: each must state the bounds the table holds.
#[test]
fn fraction_help_states_the_settings_bounds() {
    use cache_aside_settings::Range;
    for option in [
        crate::values::JITTER,
        crate::values::REFRESH_AHEAD,
        crate::values::XFETCH,
    ] {
        let Range::Fraction { min, max, .. } = option.setting.range else {
            panic!("{} is not a fraction", option.setting.name);
        };
        let name = format!("`{}` takes a float literal", option.setting.name);
        assert!(option.help.starts_with(&name), "{}", option.help);
        let words: Vec<&str> = option.help.split([' ', ',']).collect();
        for bound in [min, max] {
            assert!(
                words.contains(&bound.to_string().as_str()),
                "{}: {bound}",
                option.help
            );
        }
    }
}

/// Every name in the table is an option the attribute takes, once, and the "expected one
/// of" list is the table's.
#[test]
fn the_table_lists_each_option_once() {
    let names: Vec<&str> = TABLE.iter().map(|e| e.name).collect();
    for (i, name) in names.iter().enumerate() {
        assert!(!names[..i].contains(name), "{name} twice");
        let ident = Ident::new(name, proc_macro2::Span::call_site());
        let errors = parse_err(quote!(#ident));
        assert!(
            !errors.iter().any(|e| e.starts_with("unknown option")),
            "{name}: {errors:?}"
        );
    }
    assert_eq!(
        expected(),
        "`ttl`, `none_ttl`, `stale`, `refresh_ahead`, `xfetch`, `fail_safe`, `jitter`, `lock`, \
         `flight_wait`, `timeout`, `max_value_bytes`, `on_cache_error`, `prefix`, `key`, `skip`, \
         `cache`, `companions`, `crate`, `tags`, `batch`"
    );
}

#[test]
fn durations_past_the_longest_are_refused_but_timeout() {
    let messages = parse_err(quote!(
        ttl = "366d",
        stale = "365d",
        timeout = "1000d",
        jitter = 0.0
    ));
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].starts_with("`ttl` must be at most 365 days"),
        "{messages:?}"
    );
}
