//! Parsing `#[cached(...)]`: one typed struct for every option.
//!
//! Every mistake is collected, not just the first, and each error points at the token at
//! fault. Values are Rust tokens (`ttl = 60`, `cache = self.cache`, `skip(db)`).

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, Ident, Lit, LitBool, LitStr, Path, Token};

use crate::key::Template;

const OPTIONS: &str = "`ttl`, `none_ttl`, `stale`, `refresh_ahead`, `xfetch`, `fail_safe`, `jitter`, \
                       `lock`, `flight_wait`, `timeout`, `max_value_bytes`, `on_cache_error`, `prefix`, `key`, \
                       `skip`, `cache`, `companions`, `crate`";

/// A duration given as whole seconds (`60`) or a string (`"90s"`, `"5m"`, `"1h30m"`, `"250ms"`).
#[derive(Clone, Copy)]
pub struct Dur {
    pub millis: u64,
}

/// `on_cache_error = "fail"` or `"open"`.
pub struct OnCacheError {
    pub fail: bool,
    /// The option's name, for errors about where it applies.
    pub name: Span,
    /// The value, where a missing `From<cache_aside_runtime::Error>` is reported.
    pub value: Span,
}

/// The parsed attribute.
#[derive(Default)]
pub struct Args {
    pub ttl: Option<Dur>,
    /// The value, and the span of the `none_ttl` name for errors about where it applies.
    pub none_ttl: Option<(Dur, Span)>,
    /// `stale = "5m"`, or bare `stale` (`None` inside): the window the cache's `.stale(..)`
    /// sets.
    pub stale: Option<Option<Dur>>,
    /// `refresh_ahead = 0.8`, or bare `refresh_ahead`: the cache's `.refresh_ahead(..)`.
    pub refresh_ahead: Option<Option<f64>>,
    /// `xfetch = 1.0`: probabilistic early refresh, the XFetch beta.
    pub xfetch: Option<f64>,
    /// The first of `stale`, `refresh_ahead` and `xfetch` given: the body must be able to run as a
    /// background task, and errors saying so point at this name.
    pub background: Option<Ident>,
    /// The value, and the span of the `fail_safe` name.
    pub fail_safe: Option<(Dur, Span)>,
    pub jitter: Option<f64>,
    pub lock: Option<bool>,
    /// `companions = false`: no `{fn}_cache_key` / `_invalidate` / `_invalidate_all` (a
    /// trait impl cannot hold methods the trait does not declare).
    pub companions: Option<bool>,
    pub timeout: Option<Dur>,
    pub flight_wait: Option<Dur>,
    pub max_value_bytes: Option<u64>,
    pub on_cache_error: Option<OnCacheError>,
    pub prefix: Option<LitStr>,
    /// The template, and the span of the `key` name.
    pub key: Option<(Template, Span)>,
    pub skip: Vec<Ident>,
    pub cache: Option<Expr>,
    pub krate: Option<Path>,
}

/// Collected errors, combined into one at the end (serde's `Ctxt`).
#[derive(Default)]
pub struct Errors(Vec<syn::Error>);

impl Errors {
    pub fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.0.push(syn::Error::new(span, message));
    }

    pub fn push_error(&mut self, error: syn::Error) {
        self.0.push(error);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    pub fn into_messages(self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    pub fn into_compile_errors(self) -> TokenStream {
        self.0.into_iter().map(|e| e.to_compile_error()).collect()
    }
}

/// Sets an option once; a second occurrence is a "duplicate" error at its name.
fn set_once<T>(slot: &mut Option<T>, value: T, name: &Ident, errors: &mut Errors) {
    if slot.is_some() {
        errors.push(name.span(), format_args!("duplicate `{name}` option"));
    } else {
        *slot = Some(value);
    }
}

pub fn parse(tokens: TokenStream, errors: &mut Errors) -> Args {
    let mut args = Args::default();
    let parser = |input: ParseStream| {
        while !input.is_empty() {
            if let Err(e) = parse_option(input, &mut args, errors) {
                errors.push_error(e);
                // Resynchronise at the next top-level comma so later options are still checked.
                while !input.is_empty() && !input.peek(Token![,]) {
                    input.parse::<TokenTree>()?;
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(())
    };
    if let Err(e) = parser.parse2(tokens) {
        errors.push_error(e);
    }
    args
}

fn parse_option(input: ParseStream, args: &mut Args, errors: &mut Errors) -> syn::Result<()> {
    let name = input.call(Ident::parse_any)?;
    match name.to_string().as_str() {
        "ttl" => {
            input.parse::<Token![=]>()?;
            let dur = parse_duration(input, &name)?;
            set_once(&mut args.ttl, dur, &name, errors);
        }
        "none_ttl" => {
            input.parse::<Token![=]>()?;
            let dur = parse_duration(input, &name)?;
            set_once(&mut args.none_ttl, (dur, name.span()), &name, errors);
        }
        "stale" => {
            // Bare `stale`: serve stale for the window the cache sets (`.stale(..)`).
            let dur = match input.parse::<Option<Token![=]>>()? {
                Some(_) => Some(parse_duration(input, &name)?),
                None => None,
            };
            set_once(&mut args.stale, dur, &name, errors);
            args.background.get_or_insert(name);
        }
        "refresh_ahead" => {
            let fraction = match input.parse::<Option<Token![=]>>()? {
                Some(_) => Some(parse_fraction(input, REFRESH_AHEAD)?),
                None => None,
            };
            set_once(&mut args.refresh_ahead, fraction, &name, errors);
            args.background.get_or_insert(name);
        }
        "xfetch" => {
            input.parse::<Token![=]>()?;
            let beta = parse_fraction(input, XFETCH)?;
            set_once(&mut args.xfetch, beta, &name, errors);
            args.background.get_or_insert(name);
        }
        "fail_safe" => {
            input.parse::<Token![=]>()?;
            let dur = parse_duration(input, &name)?;
            set_once(&mut args.fail_safe, (dur, name.span()), &name, errors);
        }
        "jitter" => {
            input.parse::<Token![=]>()?;
            let fraction = parse_fraction(input, JITTER)?;
            set_once(&mut args.jitter, fraction, &name, errors);
        }
        "lock" => {
            input.parse::<Token![=]>()?;
            let lit = input.parse::<LitBool>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "`lock` takes `true` (take a distributed lock before loading) or `false`",
                )
            })?;
            set_once(&mut args.lock, lit.value, &name, errors);
        }
        "companions" => {
            input.parse::<Token![=]>()?;
            let lit = input.parse::<LitBool>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "`companions` takes `true` (the default) or `false` (no `_cache_key`, \
                     `_invalidate`, `_invalidate_all`: for methods in a trait impl)",
                )
            })?;
            set_once(&mut args.companions, lit.value, &name, errors);
        }
        "timeout" => {
            input.parse::<Token![=]>()?;
            let dur = parse_duration(input, &name)?;
            set_once(&mut args.timeout, dur, &name, errors);
        }
        "flight_wait" => {
            input.parse::<Token![=]>()?;
            let dur = parse_duration(input, &name)?;
            set_once(&mut args.flight_wait, dur, &name, errors);
        }
        "max_value_bytes" => {
            input.parse::<Token![=]>()?;
            let bytes = parse_count(input, &name)?;
            set_once(&mut args.max_value_bytes, bytes, &name, errors);
        }
        "on_cache_error" => {
            input.parse::<Token![=]>()?;
            let value = parse_on_cache_error(input, &name)?;
            set_once(&mut args.on_cache_error, value, &name, errors);
        }
        "prefix" => {
            input.parse::<Token![=]>()?;
            let lit: LitStr = input.parse()?;
            if !crate::key::is_valid_segment(&lit.value()) {
                errors.push(
                    lit.span(),
                    "`prefix` must be non-empty and use only letters, digits, `_`, `.`, `-` and `/` \
                     (a `:` would let one prefix's invalidation reach another's keys)",
                );
            }
            set_once(&mut args.prefix, lit, &name, errors);
        }
        "key" => {
            input.parse::<Token![=]>()?;
            let lit: LitStr = input.parse()?;
            let template = Template::parse(&lit)?;
            set_once(&mut args.key, (template, name.span()), &name, errors);
        }
        "skip" => {
            let content;
            syn::parenthesized!(content in input);
            let names = content.parse_terminated(Ident::parse_any, Token![,])?;
            if !args.skip.is_empty() {
                errors.push(
                    name.span(),
                    "duplicate `skip` option; list every argument in one `skip(...)`",
                );
            }
            args.skip.extend(names);
        }
        "cache" => {
            input.parse::<Token![=]>()?;
            let expr: Expr = input.parse()?;
            set_once(&mut args.cache, expr, &name, errors);
        }
        "crate" => {
            input.parse::<Token![=]>()?;
            let path = input.call(Path::parse_mod_style)?;
            set_once(&mut args.krate, path, &name, errors);
        }
        _ => {
            return Err(syn::Error::new(
                name.span(),
                format_args!("unknown option `{name}`; expected one of: {OPTIONS}"),
            ));
        }
    }
    Ok(())
}

fn parse_duration(input: ParseStream, name: &Ident) -> syn::Result<Dur> {
    let help = format!(
        "`{name}` takes a literal: whole seconds (`{name} = 60`) or a duration string (`{name} = \"90s\"`, \"5m\", \"1h30m\", \"250ms\")"
    );
    if input.peek(Token![-]) {
        return Err(negative(
            input,
            format_args!("`{name}` must be greater than zero"),
        )?);
    }
    let lit: Lit = match input.parse() {
        Ok(lit) => lit,
        Err(e) => return Err(syn::Error::new(e.span(), help)),
    };
    let millis = match &lit {
        Lit::Int(int) => int
            .base10_parse::<u64>()
            .ok()
            .and_then(|secs| secs.checked_mul(1000))
            .ok_or_else(|| syn::Error::new(int.span(), &help))?,
        Lit::Str(s) => parse_duration_str(&s.value()).ok_or_else(|| {
            syn::Error::new(
                s.span(),
                format_args!("invalid duration {:?}; {help}", s.value()),
            )
        })?,
        other => return Err(syn::Error::new(other.span(), help)),
    };
    if millis == 0 {
        return Err(syn::Error::new(
            lit.span(),
            format_args!("`{name}` must be greater than zero"),
        ));
    }
    // `timeout` may be as long as it likes: the runtime caps a deadline, it computes no
    // expiry from it.
    if millis > LONGEST_MS && name != "timeout" {
        return Err(syn::Error::new(
            lit.span(),
            format_args!(
                "`{name}` must be at most 365 days, the longest lifetime or wait any setting takes"
            ),
        ));
    }
    Ok(Dur { millis })
}

/// An error spanning `-` and the literal after it, for options that take positive values.
fn negative(input: ParseStream, message: impl std::fmt::Display) -> syn::Result<syn::Error> {
    let minus: Token![-] = input.parse()?;
    let number = input.parse::<TokenTree>()?;
    Ok(syn::Error::new_spanned(
        quote::quote!(#minus #number),
        message,
    ))
}

/// The longest duration option but `timeout`: `cache_aside_runtime::limits::LONGEST`, the
/// builder's bound (a test checks they agree).
const LONGEST_MS: u64 = 365 * 24 * 60 * 60 * 1000;

/// The accepted range of a fraction option, and how to say it. The bounds are the
/// builder's (`cache_aside_runtime::limits`), where it has the setting.
struct Range {
    min_inclusive: bool,
    max: f64,
    max_inclusive: bool,
    help: &'static str,
}

const REFRESH_AHEAD: Range = Range {
    min_inclusive: false,
    max: 1.0,
    max_inclusive: false,
    help: "`refresh_ahead` takes a float literal strictly between 0 and 1, the fraction of the \
           TTL after which a hit refreshes the entry in the background (`refresh_ahead = 0.8`)",
};

const XFETCH: Range = Range {
    min_inclusive: false,
    max: 10.0,
    max_inclusive: true,
    help: "`xfetch` takes a float literal greater than 0 and at most 10, the XFetch beta: how \
           eagerly a hit refreshes before expiry, in units of the body's last load time \
           (`xfetch = 1.0`)",
};

const JITTER: Range = Range {
    min_inclusive: true,
    max: 0.5,
    max_inclusive: true,
    help: "`jitter` takes a float literal from 0 (off) to 0.5, how far each TTL may vary \
           either way (`jitter = 0.1` for ±10%)",
};

/// A float literal in `range`, every mistake reported at the value.
fn parse_fraction(input: ParseStream, range: Range) -> syn::Result<f64> {
    if input.peek(Token![-]) {
        return Err(negative(input, range.help)?);
    }
    let lit: Lit = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), range.help))?;
    let value = match &lit {
        Lit::Float(float) => float.base10_parse::<f64>().ok(),
        _ => None,
    };
    let in_range = |v: f64| {
        (if range.min_inclusive {
            v >= 0.0
        } else {
            v > 0.0
        }) && if range.max_inclusive {
            v <= range.max
        } else {
            v < range.max
        }
    };
    match value {
        Some(v) if in_range(v) => Ok(v),
        _ => Err(syn::Error::new(lit.span(), range.help)),
    }
}

/// An integer literal greater than zero (`65536`, `65_536`, `1 << 20` is not a literal).
fn parse_count(input: ParseStream, name: &Ident) -> syn::Result<u64> {
    let positive = format!("`{name}` must be greater than zero");
    if input.peek(Token![-]) {
        return Err(negative(input, positive)?);
    }
    let help = format!("`{name}` takes an integer literal, like `{name} = 65_536`");
    let lit: Lit = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), &help))?;
    let Lit::Int(int) = &lit else {
        return Err(syn::Error::new(lit.span(), help));
    };
    match int.base10_parse::<u64>() {
        Ok(0) => Err(syn::Error::new(int.span(), positive)),
        Ok(n) => Ok(n),
        Err(_) => Err(syn::Error::new(int.span(), help)),
    }
}

fn parse_on_cache_error(input: ParseStream, name: &Ident) -> syn::Result<OnCacheError> {
    let help = "`on_cache_error` takes \"open\" (the default: a cache failure makes the call a \
                miss and the body runs) or \"fail\" (a cache failure is returned as `Err`)";
    let lit: Lit = input.parse().map_err(|e| syn::Error::new(e.span(), help))?;
    let fail = match &lit {
        Lit::Str(s) if s.value() == "fail" => true,
        Lit::Str(s) if s.value() == "open" => false,
        Lit::Str(s) => {
            return Err(syn::Error::new(
                s.span(),
                format_args!("unknown `on_cache_error` value {:?}; {help}", s.value()),
            ));
        }
        other => return Err(syn::Error::new(other.span(), help)),
    };
    Ok(OnCacheError {
        fail,
        name: name.span(),
        value: lit.span(),
    })
}

/// `"90s"`, `"5m"`, `"1h30m"`, `"250ms"`, `"1d"` → milliseconds. `None` on anything else.
pub fn parse_duration_str(text: &str) -> Option<u64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.as_bytes().first()? {
                b's' => (1_000, 1),
                b'm' => (60_000, 1),
                b'h' => (3_600_000, 1),
                b'd' => (86_400_000, 1),
                _ => return None,
            }
        };
        rest = &rest[unit_len..];
        total = total.checked_add(number.checked_mul(unit_ms)?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn parse_ok(tokens: TokenStream) -> Args {
        let mut errors = Errors::default();
        let args = parse(tokens, &mut errors);
        assert!(errors.is_empty(), "{}", errors.into_compile_errors());
        args
    }

    fn parse_err(tokens: TokenStream) -> Vec<String> {
        let mut errors = Errors::default();
        parse(tokens, &mut errors);
        errors.0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_str("90s"), Some(90_000));
        assert_eq!(parse_duration_str("5m"), Some(300_000));
        assert_eq!(parse_duration_str("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_str("250ms"), Some(250));
        assert_eq!(parse_duration_str("2d"), Some(172_800_000));
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "1.5h",
            "-5s",
            "99999999999999999999s",
            "5 m",
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
        assert_eq!(args.ttl.unwrap().millis, 60_000);
        assert_eq!(args.none_ttl.unwrap().0.millis, 30_000);
        assert_eq!(args.prefix.unwrap().value(), "user");
        let skip: Vec<_> = args.skip.iter().map(ToString::to_string).collect();
        assert_eq!(skip, ["db", "self"]);
        assert!(args.cache.is_some());
        let krate = args.krate.unwrap();
        assert_eq!(quote!(#krate).to_string(), quote!(::my::rt).to_string());
        let args = parse_ok(quote!(key = "user:{id}", ttl = "1h"));
        assert_eq!(args.key.unwrap().0.prefix, "user");
        assert_eq!(args.ttl.unwrap().millis, 3_600_000);
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
        assert_eq!(args.stale.unwrap().unwrap().millis, 300_000);
        assert_eq!(args.refresh_ahead, Some(Some(0.8)));
        assert_eq!(args.fail_safe.unwrap().0.millis, 3_600_000);
        assert_eq!(args.jitter, Some(0.5));
        assert_eq!(args.lock, Some(false));
        assert_eq!(args.timeout.unwrap().millis, 50);
        assert_eq!(args.max_value_bytes, Some(65_536));
        assert!(args.on_cache_error.unwrap().fail);
        assert_eq!(args.background.unwrap(), "stale");

        let args = parse_ok(quote!(
            refresh_ahead = 0.5,
            lock = true,
            on_cache_error = "open"
        ));
        assert_eq!(args.background.unwrap(), "refresh_ahead");
        assert_eq!(args.lock, Some(true));
        assert!(!args.on_cache_error.unwrap().fail);
        let args = parse_ok(quote!(refresh_ahead = 0.999f64, jitter = 0.01));
        assert_eq!(args.refresh_ahead, Some(Some(0.999)));
        assert_eq!(args.jitter, Some(0.01));
        assert!(parse_ok(quote!(ttl = 1)).background.is_none());
    }

    #[test]
    fn companions_can_be_turned_off() {
        assert_eq!(parse_ok(quote!(companions = false)).companions, Some(false));
        assert_eq!(parse_ok(quote!(ttl = 1)).companions, None);
        assert_one_error(&[(quote!(companions = 0), "`companions` takes `true`")]);
    }

    #[test]
    fn xfetch_takes_a_beta_and_needs_a_background_body() {
        let args = parse_ok(quote!(ttl = 60, xfetch = 1.0));
        assert_eq!(args.xfetch, Some(1.0));
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
        assert!(matches!(args.stale, Some(None)));
        assert_eq!(args.refresh_ahead, Some(None));
        assert_eq!(args.jitter, Some(0.1));
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
        assert_eq!(parse_ok(quote!(jitter = 0.0)).jitter, Some(0.0));
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

    #[test]
    fn bounds_are_the_builders() {
        use cache_aside_runtime::limits;
        assert_eq!(u128::from(LONGEST_MS), limits::LONGEST.as_millis());
        assert_eq!(JITTER.max, limits::MAX_JITTER);
        const { assert!(JITTER.min_inclusive && JITTER.max_inclusive) };
        const { assert!(!REFRESH_AHEAD.min_inclusive && !REFRESH_AHEAD.max_inclusive) };
        assert_eq!(REFRESH_AHEAD.max, 1.0);
    }

    #[test]
    fn durations_past_the_longest_are_refused_but_timeout() {
        let mut errors = Errors::default();
        parse(
            quote::quote!(
                ttl = "366d",
                stale = "365d",
                timeout = "1000d",
                jitter = 0.0
            ),
            &mut errors,
        );
        let messages = errors.into_messages();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].starts_with("`ttl` must be at most 365 days"),
            "{messages:?}"
        );
    }
}
