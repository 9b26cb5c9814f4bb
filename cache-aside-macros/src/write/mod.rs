//! `#[cache_evict(..)]` and `#[cache_put(..)]`: the write side. The same stages as
//! `#[cached]`: options (targets and flags) → model (the function, body as tokens, the
//! shared [`Func`]) → validate → expand.
//!
//! A target is written as the call of the read function that reads the entry,
//! `get_user(id)` or `self.get_user(id)`, and becomes a call of the read's hidden
//! `{fn}_cache_entry` companion with the same arguments (`f(..)`: `{fn}_cache_entries()`,
//! every entry). The companion builds the key with the read's own key code, so a read, an
//! eviction and a put can never compute different keys, and rustc checks the arguments
//! against the read's at the user's tokens.

mod expand;

use proc_macro2::{Span, TokenStream};
use quote::format_ident;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, Ident, Path, Token};

use crate::errors::Errors;
use crate::model::Func;
use crate::values;

/// Which attribute.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Evict,
    Put,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Evict => "cache_evict",
            Kind::Put => "cache_put",
        }
    }

    /// The options after the targets, for "unknown option".
    fn options(self) -> &'static [&'static str] {
        match self {
            Kind::Evict => &["before", "always", "tag", "cache", "crate"],
            Kind::Put => &["crate"],
        }
    }
}

/// One entry, or every entry, of a read function.
pub struct Target {
    /// The call of the read's companion, the user's tokens with its name changed.
    pub call: Expr,
}

/// The parsed attribute.
pub struct WriteOptions {
    pub targets: Vec<Target>,
    /// `before = true`: evict before the body runs instead of after.
    pub before: Option<(bool, Span)>,
    /// `always = true`: evict after the body whatever it returns, `Err` included.
    pub always: Option<(bool, Span)>,
    /// `crate = ::path`: where the runtime is, as `#[cached]`'s.
    pub krate: Option<Path>,
    /// `tag = "user:{id}"` (any number): every entry carrying the tag, over the write's own
    /// arguments.
    pub tags: Vec<crate::key::Template>,
    /// `cache = EXPR`: the cache the tags are invalidated in (default: the default cache).
    pub cache: Option<Expr>,
}

/// The attribute's entry point: `kind` on `item`.
pub fn write(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let options = parse(kind, attr, &mut errors);
    let func: Func = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(error) => {
            let error = error.to_compile_error();
            return quote::quote!(#item #error);
        }
    };
    validate(kind, &func, &options, &mut errors);
    if !errors.is_empty() {
        let errors = errors.into_compile_errors();
        return quote::quote!(#item #errors);
    }
    expand::expand(kind, &func, &options)
}

fn parse(kind: Kind, tokens: TokenStream, errors: &mut Errors) -> WriteOptions {
    let mut options = WriteOptions {
        targets: Vec::new(),
        before: None,
        always: None,
        krate: None,
        tags: Vec::new(),
        cache: None,
    };
    let mut written = 0;
    let parser = |input: ParseStream| {
        while !input.is_empty() {
            if input.peek(Ident::peek_any) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
                // A `tag = ..` is a target, even one whose template has a mistake.
                if input
                    .fork()
                    .call(Ident::parse_any)
                    .is_ok_and(|i| i == "tag")
                {
                    written += 1;
                }
                if let Err(e) = option(kind, input, &mut options) {
                    errors.push_error(e);
                    while !input.is_empty() && !input.peek(Token![,]) {
                        input.parse::<proc_macro2::TokenTree>()?;
                    }
                }
            } else {
                let expr: Expr = input.parse()?;
                written += 1;
                match target(kind, expr) {
                    Ok(target) => options.targets.push(target),
                    Err(e) => errors.push_error(e),
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
    } else if written == 0 {
        let example = match kind {
            Kind::Evict => "`#[cache_evict(get_user(id))]`",
            Kind::Put => "`#[cache_put(get_user(id))]`",
        };
        errors.push(
            Span::call_site(),
            format_args!(
                "#[{}] needs the entry it writes, as a call of the `#[cached]` function that \
                 reads it: {example}",
                kind.name()
            ),
        );
    }
    options
}

/// `name = value` after or between the targets.
fn option(kind: Kind, input: ParseStream, options: &mut WriteOptions) -> syn::Result<()> {
    let name = input.call(Ident::parse_any)?;
    let known = kind.options().iter().any(|o| name == o);
    if !known {
        let expected: Vec<String> = kind.options().iter().map(|o| format!("`{o}`")).collect();
        return Err(syn::Error::new(
            name.span(),
            format_args!(
                "unknown option `{name}` of #[{}]; expected one of: {}",
                kind.name(),
                expected.join(", ")
            ),
        ));
    }
    let duplicate = || syn::Error::new(name.span(), format_args!("duplicate `{name}` option"));
    if name == "tag" {
        input.parse::<Token![=]>()?;
        let lit: syn::LitStr = input.parse()?;
        options.tags.push(crate::key::Template::parse_tag(&lit)?);
        return Ok(());
    }
    if name == "cache" {
        let cache = values::cache(input, &name)?;
        if options.cache.replace(cache.value).is_some() {
            return Err(duplicate());
        }
        return Ok(());
    }
    if name == "crate" {
        let path = values::krate(input, &name)?;
        if options.krate.replace(path.value).is_some() {
            return Err(duplicate());
        }
        return Ok(());
    }
    let help = match name.to_string().as_str() {
        "before" => {
            "`before` takes `true` or `false`: `before = true` evicts before the body runs \
             (and not after)"
        }
        _ => {
            "`always` takes `true` or `false`: `always = true` evicts after the body whatever it returns, `Err` included"
        }
    };
    let flag = values::flag(input, &name, help)?;
    let slot = if name == "before" {
        &mut options.before
    } else {
        &mut options.always
    };
    if slot.replace((flag.value, flag.span)).is_some() {
        return Err(duplicate());
    }
    Ok(())
}

/// `get_user(id)` → `get_user_cache_entry(id)`; `self.get_user(..)` →
/// `self.get_user_cache_entries()`.
fn target(kind: Kind, mut expr: Expr) -> syn::Result<Target> {
    let not_a_call = |span: Span| {
        syn::Error::new(
            span,
            format_args!(
                "#[{}] names an entry as a call of the `#[cached]` function that reads it: \
                 `get_user(id)`, `self.get_user(id)`{}",
                kind.name(),
                match kind {
                    Kind::Evict => ", or `get_user(..)` for all its entries",
                    Kind::Put => "",
                }
            ),
        )
    };
    let span = expr.span();
    let (ident, args) = match &mut expr {
        Expr::Call(call) => match &mut *call.func {
            Expr::Path(path) if path.qself.is_none() => {
                let segment = path
                    .path
                    .segments
                    .last_mut()
                    .ok_or_else(|| not_a_call(span))?;
                (&mut segment.ident, &mut call.args)
            }
            _ => return Err(not_a_call(span)),
        },
        Expr::MethodCall(call) => (&mut call.method, &mut call.args),
        _ => return Err(not_a_call(span)),
    };
    let is_all = |e: &Expr| matches!(e, Expr::Range(r) if r.start.is_none() && r.end.is_none() && matches!(r.limits, syn::RangeLimits::HalfOpen(_)));
    let all = args.iter().any(is_all);
    if all {
        if kind == Kind::Put {
            let at = args.iter().find(|e| is_all(e)).map_or(span, |e| e.span());
            return Err(syn::Error::new(
                at,
                "#[cache_put] writes one entry: give the read function's arguments, not `..`",
            ));
        }
        if !args.last().is_some_and(is_all) || args.iter().filter(|e| is_all(e)).count() > 1 {
            return Err(syn::Error::new(
                args.span(),
                "`..` stands for every entry of the function and comes last: `f(..)`, or \
                 `f(cache, ..)` when the function's `cache` expression reads an argument",
            ));
        }
        args.pop();
    }
    let name = ident.unraw();
    let suffix = if all { "cache_entries" } else { "cache_entry" };
    *ident = format_ident!("{}_{}", name, suffix, span = ident.span());
    Ok(Target { call: expr })
}

fn validate(kind: Kind, func: &Func, options: &WriteOptions, errors: &mut Errors) {
    if func.sig.asyncness.is_none() {
        errors.push(
            func.sig.fn_token.span,
            format_args!(
                "#[{}] needs an `async fn`: the cache is written over the network",
                kind.name()
            ),
        );
    }
    for tag in &options.tags {
        for root in tag.roots() {
            let known = (root == "self" && func.receiver.is_some())
                || func.named().any(|a| a.ident == root);
            if !known {
                errors.push(
                    tag.lit.span(),
                    format_args!(
                        "`{{{root}}}` in the tag is not an argument of `{}`",
                        func.sig.ident
                    ),
                );
            }
        }
    }
    if let (Some(cache), true) = (&options.cache, options.tags.is_empty()) {
        errors.push_error(syn::Error::new_spanned(
            cache,
            "`cache` names where `tag = ..` targets are invalidated; the read functions' \
             entries use their own cache",
        ));
    }
    if let (Some((true, before)), Some((true, _))) = (options.before, options.always) {
        errors.push(
            before,
            "`before = true` evicts before the body runs, whatever it then returns: `always` \
             adds nothing to it",
        );
    }
}
