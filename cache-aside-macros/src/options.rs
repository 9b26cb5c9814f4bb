//! The options of `#[cached(...)]`: one table names each option and says how its value is
//! parsed; the same table drives the duplicate check and the "expected one of" list.
//!
//! Every mistake is collected, not just the first, and each error points at the token at
//! fault. Values are Rust tokens (`ttl = 60`, `cache = self.cache`, `skip(db)`).

use proc_macro2::{TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, Ident, LitStr, Path, Token};

use cache_aside_settings as settings;

use crate::errors::Errors;
use crate::key::Template;
use crate::values::{self, Dur, OnCacheError, OrCache, Spanned};

/// The parsed attribute: each field is the option of the same name, `None` when not given.
#[derive(Default)]
pub struct Options {
    pub ttl: Option<Spanned<Dur>>,
    pub none_ttl: Option<Spanned<Dur>>,
    /// `stale = "5m"`, or bare `stale`: the window the cache's `.stale(..)` sets.
    pub stale: Option<Spanned<OrCache<Dur>>>,
    /// `refresh_ahead = 0.8`, or bare `refresh_ahead`: the cache's `.refresh_ahead(..)`.
    pub refresh_ahead: Option<Spanned<OrCache<f64>>>,
    /// `xfetch = 1.0`: probabilistic early refresh, the XFetch beta.
    pub xfetch: Option<Spanned<f64>>,
    pub fail_safe: Option<Spanned<Dur>>,
    pub jitter: Option<Spanned<f64>>,
    pub lock: Option<Spanned<bool>>,
    pub flight_wait: Option<Spanned<Dur>>,
    pub timeout: Option<Spanned<Dur>>,
    pub max_value_bytes: Option<Spanned<u64>>,
    pub on_cache_error: Option<Spanned<OnCacheError>>,
    pub prefix: Option<Spanned<LitStr>>,
    pub key: Option<Spanned<Template>>,
    /// `tags = ["user:{id}", ..]`: the tags each entry carries (see the runtime's `tag`).
    pub tags: Option<Spanned<Vec<Template>>>,
    pub skip: Option<Spanned<Vec<Ident>>>,
    pub cache: Option<Spanned<Expr>>,
    /// `companions = false`: no `{fn}_cache_key` / `_invalidate` / `_invalidate_all` (a
    /// trait impl cannot hold methods the trait does not declare).
    pub companions: Option<Spanned<bool>>,
    /// `crate = ::path`: where the runtime is.
    pub krate: Option<Spanned<Path>>,
    /// `batch` (or `batch = true`): the one key argument is a collection of keys, the
    /// return type a map of their values.
    pub batch: Option<Spanned<bool>>,
    /// The first of `stale`, `refresh_ahead` and `xfetch` given: the body must be able to
    /// run as a background task, and errors saying so point at this name.
    pub background: Option<Ident>,
}

impl Options {
    /// The arguments listed in `skip(...)`.
    pub fn skipped(&self) -> &[Ident] {
        self.skip.as_ref().map_or(&[], |skip| &skip.value)
    }

    /// Is `arg` left out of the key by `skip(...)`?
    pub fn skips(&self, arg: &Ident) -> bool {
        self.skipped().contains(arg)
    }

    /// Are the companions emitted? They are unless `companions = false`, or on a batch.
    pub fn companions(&self) -> bool {
        self.companions.as_ref().is_none_or(|c| c.value) && !self.is_batch()
    }

    /// `batch`: a function loading many keys at once.
    pub fn is_batch(&self) -> bool {
        self.batch.as_ref().is_some_and(|b| b.value)
    }
}

/// Parses what follows an option's name into its field; a mistake that does not stop the
/// parse (a `prefix` the key format cannot hold) goes to the errors.
type Parse = fn(&mut Options, &Ident, ParseStream, &mut Errors) -> syn::Result<()>;

/// One row of the table.
struct Entry {
    name: &'static str,
    /// Parses what follows the name and stores it in its field.
    parse: Parse,
    /// The option lets the body run as a background refresh after the call returns.
    background: bool,
    /// Added to "duplicate `name` option" where a hint helps.
    duplicate_hint: &'static str,
}

const fn entry(name: &'static str, parse: Parse) -> Entry {
    Entry {
        name,
        parse,
        background: false,
        duplicate_hint: "",
    }
}

const fn background(entry: Entry) -> Entry {
    Entry {
        background: true,
        ..entry
    }
}

/// Every option, in the order the "expected one of" list gives them.
const TABLE: [Entry; 20] = [
    entry("ttl", |o, name, input, _| {
        o.ttl = Some(values::duration(input, name, &settings::TTL)?);
        Ok(())
    }),
    entry("none_ttl", |o, name, input, _| {
        o.none_ttl = Some(values::duration(input, name, &settings::NONE_TTL)?);
        Ok(())
    }),
    background(entry("stale", |o, name, input, _| {
        o.stale = Some(values::window(input, name, &settings::STALE)?);
        Ok(())
    })),
    background(entry("refresh_ahead", |o, name, input, _| {
        o.refresh_ahead = Some(values::refresh_point(input, name)?);
        Ok(())
    })),
    background(entry("xfetch", |o, name, input, _| {
        o.xfetch = Some(values::fraction(input, name, &values::XFETCH)?);
        Ok(())
    })),
    entry("fail_safe", |o, name, input, _| {
        o.fail_safe = Some(values::duration(input, name, &settings::FAIL_SAFE)?);
        Ok(())
    }),
    entry("jitter", |o, name, input, _| {
        o.jitter = Some(values::fraction(input, name, &values::JITTER)?);
        Ok(())
    }),
    entry("lock", |o, name, input, _| {
        o.lock = Some(values::flag(input, name, values::LOCK_HELP)?);
        Ok(())
    }),
    entry("flight_wait", |o, name, input, _| {
        o.flight_wait = Some(values::duration(input, name, &settings::FLIGHT_WAIT)?);
        Ok(())
    }),
    entry("timeout", |o, name, input, _| {
        o.timeout = Some(values::duration(input, name, &settings::TIMEOUT)?);
        Ok(())
    }),
    entry("max_value_bytes", |o, name, input, _| {
        o.max_value_bytes = Some(values::count(input, name, &settings::MAX_VALUE_BYTES)?);
        Ok(())
    }),
    entry("on_cache_error", |o, name, input, _| {
        o.on_cache_error = Some(values::on_cache_error(input, name)?);
        Ok(())
    }),
    entry("prefix", |o, name, input, errors| {
        o.prefix = Some(values::prefix(input, name, errors)?);
        Ok(())
    }),
    entry("key", |o, name, input, _| {
        o.key = Some(values::key(input, name)?);
        Ok(())
    }),
    Entry {
        duplicate_hint: "; list every argument in one `skip(...)`",
        ..entry("skip", |o, name, input, _| {
            o.skip = Some(values::skip(input, name)?);
            Ok(())
        })
    },
    entry("cache", |o, name, input, _| {
        o.cache = Some(values::cache(input, name)?);
        Ok(())
    }),
    entry("companions", |o, name, input, _| {
        o.companions = Some(values::flag(input, name, values::COMPANIONS_HELP)?);
        Ok(())
    }),
    entry("crate", |o, name, input, _| {
        o.krate = Some(values::krate(input, name)?);
        Ok(())
    }),
    entry("tags", |o, name, input, _| {
        o.tags = Some(values::tags(input, name)?);
        Ok(())
    }),
    entry("batch", |o, name, input, _| {
        o.batch = Some(values::bare_flag(input, name, values::BATCH_HELP)?);
        Ok(())
    }),
];

/// `` `ttl`, `none_ttl`, ... ``: every option's name, for "unknown option".
fn expected() -> String {
    let names: Vec<String> = TABLE.iter().map(|e| format!("`{}`", e.name)).collect();
    names.join(", ")
}

/// Parses the attribute's tokens; every mistake goes to `errors`, and what parsed is kept.
pub fn parse(tokens: TokenStream, errors: &mut Errors) -> Options {
    let mut options = Options::default();
    let mut seen: Vec<&'static str> = Vec::new();
    let parser = |input: ParseStream| {
        while !input.is_empty() {
            if let Err(e) = parse_option(input, &mut options, &mut seen, errors) {
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
    options
}

/// One `name = value` (or bare `name`, or `name(...)`), looked up in [`TABLE`].
///
/// A second occurrence of a name is parsed too, so a mistake in its value is reported, and
/// then refused as a duplicate (serde's `Attr::set`): the first value stays.
fn parse_option(
    input: ParseStream,
    options: &mut Options,
    seen: &mut Vec<&'static str>,
    errors: &mut Errors,
) -> syn::Result<()> {
    let name = input.call(Ident::parse_any)?;
    let Some(entry) = TABLE.iter().find(|e| name == e.name) else {
        let expected = expected();
        return Err(syn::Error::new(
            name.span(),
            format_args!("unknown option `{name}`; expected one of: {expected}"),
        ));
    };
    if seen.contains(&entry.name) {
        (entry.parse)(&mut Options::default(), &name, input, errors)?;
        let hint = entry.duplicate_hint;
        errors.push(name.span(), format_args!("duplicate `{name}` option{hint}"));
        return Ok(());
    }
    (entry.parse)(options, &name, input, errors)?;
    seen.push(entry.name);
    if entry.background {
        options.background.get_or_insert(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
