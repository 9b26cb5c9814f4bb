//! The value of each option: how it is written, what range it takes (the settings crate's,
//! the builder's own), and what the error says when it is wrong.

use std::time::Duration;

use cache_aside_settings::{LONGEST, Setting};
use proc_macro2::{Span, TokenTree};
use syn::ext::IdentExt;
use syn::parse::ParseStream;
use syn::spanned::Spanned as _;
use syn::{Expr, Ident, Lit, LitBool, LitStr, Path, Token};

use crate::errors::Errors;
use crate::key::Template;

/// An option's value, the option's name as written, and where the value is.
pub struct Spanned<T> {
    pub value: T,
    /// The option's name: errors about where an option applies point here.
    pub name: Ident,
    /// The value's first token (the name's, for a bare option): errors about the value
    /// point here.
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, name: &Ident, span: Span) -> Self {
        Spanned {
            value,
            name: name.clone(),
            span,
        }
    }
}

/// A duration given as whole seconds (`60`) or a string (`"90s"`, `"5m"`, `"1h30m"`, `"250ms"`).
#[derive(Clone, Copy)]
pub struct Dur {
    pub millis: u64,
}

/// A value given in the attribute, or bare to take the cache's own (`stale`,
/// `refresh_ahead`).
pub enum OrCache<T> {
    Given(T),
    FromCache,
}

/// `on_cache_error = "open"` (the default) or `"fail"`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OnCacheError {
    /// A cache failure makes the call a miss and the body runs.
    Open,
    /// A cache failure is returned as `Err`.
    Fail,
}

/// A fraction option: its setting (the range) and how to explain it.
pub struct Fraction {
    pub setting: Setting,
    pub help: &'static str,
}

pub const REFRESH_AHEAD: Fraction = Fraction {
    setting: cache_aside_settings::REFRESH_AHEAD,
    help: "`refresh_ahead` takes a float literal strictly between 0 and 1, the fraction of the \
           TTL after which a hit refreshes the entry in the background (`refresh_ahead = 0.8`)",
};

pub const XFETCH: Fraction = Fraction {
    setting: cache_aside_settings::XFETCH,
    help: "`xfetch` takes a float literal greater than 0 and at most 10, the XFetch beta: how \
           eagerly a hit refreshes before expiry, in units of the body's last load time \
           (`xfetch = 1.0`)",
};

pub const JITTER: Fraction = Fraction {
    setting: cache_aside_settings::JITTER,
    help: "`jitter` takes a float literal from 0 (off) to 0.5, how far each TTL may vary \
           either way (`jitter = 0.1` for ±10%)",
};

pub const LOCK_HELP: &str =
    "`lock` takes `true` (take a distributed lock before loading) or `false`";

pub const COMPANIONS_HELP: &str = "`companions` takes `true` (the default) or `false` (no \
                                   `_cache_key`, `_invalidate`, `_invalidate_all`: for methods \
                                   in a trait impl)";

pub const BATCH_HELP: &str = "`batch` takes no value (or `true` / `false`): the one key \
                                argument is a collection of keys, and the function returns a map \
                                of their values";

const ON_CACHE_ERROR_HELP: &str = "`on_cache_error` takes \"open\" (the default: a cache failure \
                                   makes the call a miss and the body runs) or \"fail\" (a cache \
                                   failure is returned as `Err`)";

fn equals(input: ParseStream) -> syn::Result<()> {
    input.parse::<Token![=]>().map(drop)
}

/// `= 60` or `= "90s"`, in `setting`'s range.
pub fn duration(input: ParseStream, name: &Ident, setting: &Setting) -> syn::Result<Spanned<Dur>> {
    equals(input)?;
    let help = format!(
        "`{name}` takes a literal: whole seconds (`{name} = 60`) or a duration string (`{name} = \"90s\"`, \"5m\", \"1h30m\", \"250ms\"; each unit once, largest first)"
    );
    if input.peek(Token![-]) {
        return Err(negative(
            input,
            format_args!("`{name}` must be greater than zero"),
        )?);
    }
    let lit: Lit = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), &help))?;
    let millis = match &lit {
        Lit::Int(int) => int
            .base10_parse::<u64>()
            .ok()
            .and_then(|secs| secs.checked_mul(1000))
            .ok_or_else(|| syn::Error::new(int.span(), &help))?,
        Lit::Str(s) => parse_duration_str(&s.value()).ok_or_else(|| {
            let message = format!("invalid duration {:?}; {help}", s.value());
            syn::Error::new(s.span(), message)
        })?,
        other => return Err(syn::Error::new(other.span(), help)),
    };
    if millis == 0 {
        let message = format!("`{name}` must be greater than zero");
        return Err(syn::Error::new(lit.span(), message));
    }
    if !setting.takes_duration(Duration::from_millis(millis)) {
        let days = LONGEST.as_secs() / (24 * 60 * 60);
        let message = format!(
            "`{name}` must be at most {days} days, the longest lifetime or wait any setting takes"
        );
        return Err(syn::Error::new(lit.span(), message));
    }
    Ok(Spanned::new(Dur { millis }, name, lit.span()))
}

/// `stale = "5m"`, or bare `stale`: the window the cache sets (`.stale(..)`).
pub fn window(
    input: ParseStream,
    name: &Ident,
    setting: &Setting,
) -> syn::Result<Spanned<OrCache<Dur>>> {
    if !input.peek(Token![=]) {
        return Ok(Spanned::new(OrCache::FromCache, name, name.span()));
    }
    let dur = duration(input, name, setting)?;
    Ok(Spanned::new(OrCache::Given(dur.value), name, dur.span))
}

/// `refresh_ahead = 0.8`, or bare `refresh_ahead`: the cache's `.refresh_ahead(..)`.
pub fn refresh_point(input: ParseStream, name: &Ident) -> syn::Result<Spanned<OrCache<f64>>> {
    if !input.peek(Token![=]) {
        return Ok(Spanned::new(OrCache::FromCache, name, name.span()));
    }
    let at = fraction(input, name, &REFRESH_AHEAD)?;
    Ok(Spanned::new(OrCache::Given(at.value), name, at.span))
}

/// `= 0.5`: a float literal in the option's range, every mistake reported at the value.
pub fn fraction(input: ParseStream, name: &Ident, option: &Fraction) -> syn::Result<Spanned<f64>> {
    equals(input)?;
    if input.peek(Token![-]) {
        return Err(negative(input, option.help)?);
    }
    let lit: Lit = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), option.help))?;
    let value = match &lit {
        Lit::Float(float) => float.base10_parse::<f64>().ok(),
        _ => None,
    };
    match value {
        Some(v) if option.setting.takes_fraction(v) => Ok(Spanned::new(v, name, lit.span())),
        _ => Err(syn::Error::new(lit.span(), option.help)),
    }
}

/// `= 65_536`: an integer literal in `setting`'s range (`1 << 20` is not a literal).
pub fn count(input: ParseStream, name: &Ident, setting: &Setting) -> syn::Result<Spanned<u64>> {
    equals(input)?;
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
        Ok(n) if setting.takes_count(n) => Ok(Spanned::new(n, name, int.span())),
        Ok(0) => Err(syn::Error::new(int.span(), positive)),
        _ => Err(syn::Error::new(int.span(), help)),
    }
}

/// `= true` or `= false`.
pub fn flag(input: ParseStream, name: &Ident, help: &str) -> syn::Result<Spanned<bool>> {
    equals(input)?;
    let lit = input
        .parse::<LitBool>()
        .map_err(|e| syn::Error::new(e.span(), help))?;
    Ok(Spanned::new(lit.value, name, lit.span))
}

/// Bare `name` (true), or `name = true|false`.
pub fn bare_flag(input: ParseStream, name: &Ident, help: &str) -> syn::Result<Spanned<bool>> {
    if input.is_empty() || input.peek(syn::Token![,]) {
        return Ok(Spanned::new(true, name, name.span()));
    }
    flag(input, name, help)
}

/// `= "open"` or `= "fail"`.
pub fn on_cache_error(input: ParseStream, name: &Ident) -> syn::Result<Spanned<OnCacheError>> {
    equals(input)?;
    let help = ON_CACHE_ERROR_HELP;
    let lit: Lit = input.parse().map_err(|e| syn::Error::new(e.span(), help))?;
    let mode = match &lit {
        Lit::Str(s) if s.value() == "fail" => OnCacheError::Fail,
        Lit::Str(s) if s.value() == "open" => OnCacheError::Open,
        Lit::Str(s) => {
            let message = format!("unknown `on_cache_error` value {:?}; {help}", s.value());
            return Err(syn::Error::new(s.span(), message));
        }
        other => return Err(syn::Error::new(other.span(), help)),
    };
    Ok(Spanned::new(mode, name, lit.span()))
}

/// `= "user"`; a prefix the key format cannot hold is reported but kept, so the rest of
/// the attribute is still checked against it.
pub fn prefix(
    input: ParseStream,
    name: &Ident,
    errors: &mut Errors,
) -> syn::Result<Spanned<LitStr>> {
    equals(input)?;
    let lit: LitStr = input.parse()?;
    if !crate::key::is_valid_segment(&lit.value()) {
        errors.push(
            lit.span(),
            "`prefix` must be non-empty and use only letters, digits, `_`, `.`, `-` and `/` \
             (a `:` would let one prefix's invalidation reach another's keys)",
        );
    }
    let span = lit.span();
    Ok(Spanned::new(lit, name, span))
}

/// `= "user:{id}"`: a key template.
pub fn key(input: ParseStream, name: &Ident) -> syn::Result<Spanned<Template>> {
    equals(input)?;
    let lit: LitStr = input.parse()?;
    let template = Template::parse(&lit)?;
    Ok(Spanned::new(template, name, lit.span()))
}

/// `= ["user:{id}", "catalog"]`: tag templates. A tag is a name, then `:`-separated
/// segments, each fixed text or one placeholder filling it whole.
pub fn tags(input: ParseStream, name: &Ident) -> syn::Result<Spanned<Vec<Template>>> {
    equals(input)?;
    let content;
    let brackets = syn::bracketed!(content in input);
    let lits = content.parse_terminated(|i: ParseStream| i.parse::<LitStr>(), Token![,])?;
    let mut tags = Vec::new();
    for lit in &lits {
        tags.push(Template::parse_tag(lit)?);
    }
    if tags.is_empty() {
        return Err(syn::Error::new(
            brackets.span.open(),
            "`tags` lists at least one tag, like `tags = [\"user:{id}\"]`",
        ));
    }
    Ok(Spanned::new(tags, name, brackets.span.open()))
}

/// `(db, self)`: the arguments left out of the key.
pub fn skip(input: ParseStream, name: &Ident) -> syn::Result<Spanned<Vec<Ident>>> {
    let content;
    let parens = syn::parenthesized!(content in input);
    let names = content.parse_terminated(Ident::parse_any, Token![,])?;
    Ok(Spanned::new(
        names.into_iter().collect(),
        name,
        parens.span.open(),
    ))
}

/// `= self.cache`: any expression naming a cache.
pub fn cache(input: ParseStream, name: &Ident) -> syn::Result<Spanned<Expr>> {
    equals(input)?;
    let expr: Expr = input.parse()?;
    let span = expr.span();
    Ok(Spanned::new(expr, name, span))
}

/// `= ::my::rt`: the path of the runtime crate, for a renamed dependency.
pub fn krate(input: ParseStream, name: &Ident) -> syn::Result<Spanned<Path>> {
    equals(input)?;
    let path = input.call(Path::parse_mod_style)?;
    let span = path.span();
    Ok(Spanned::new(path, name, span))
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

/// `"90s"`, `"5m"`, `"1h30m"`, `"250ms"`, `"1d"` → milliseconds. `None` on anything else,
/// and on units repeated or out of order (`"1m1m"`, `"30m1h"`: likely typos).
pub fn parse_duration_str(text: &str) -> Option<u64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut larger = u64::MAX;
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
        if unit_ms >= larger {
            return None;
        }
        larger = unit_ms;
        rest = &rest[unit_len..];
        total = total.checked_add(number.checked_mul(unit_ms)?)?;
    }
    Some(total)
}
