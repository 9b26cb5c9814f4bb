//! Parsing `#[cached(...)]`: one typed struct for every option.
//!
//! Every mistake is collected, not just the first, and each error points at the token at
//! fault. Values are Rust tokens (`ttl = 60`, `cache = self.cache`, `skip(db)`).

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, Ident, Lit, LitStr, Path, Token};

use crate::key::Template;

const OPTIONS: &str = "`ttl`, `none_ttl`, `prefix`, `key`, `skip`, `cache`, `crate`";

/// A duration given as whole seconds (`60`) or a string (`"90s"`, `"5m"`, `"1h30m"`, `"250ms"`).
#[derive(Clone, Copy)]
pub struct Dur {
    pub millis: u64,
}

/// The parsed attribute.
#[derive(Default)]
pub struct Args {
    pub ttl: Option<Dur>,
    /// The value, and the span of the `none_ttl` name for errors about where it applies.
    pub none_ttl: Option<(Dur, Span)>,
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
        let minus: Token![-] = input.parse()?;
        let number = input.parse::<TokenTree>()?;
        return Err(syn::Error::new_spanned(
            quote::quote!(#minus #number),
            format_args!("`{name}` must be greater than zero"),
        ));
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
    Ok(Dur { millis })
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
    fn ttl_rejects_non_literals() {
        let errors = parse_err(quote!(ttl = SOME_CONST));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("`ttl` takes a literal: whole seconds"),
            "{errors:?}"
        );
    }
}
