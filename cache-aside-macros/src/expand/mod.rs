//! The last stage: the wrapper, its companions and the spec they share, or, when the
//! attribute has mistakes, the [fallback].
//!
//! Input:
//! ```text
//! #[cached(ttl = 60, prefix = "user")]
//! pub async fn get_user(id: u64) -> Result<User, DbError> { body }
//! ```
//! Output:
//! ```text
//! pub async fn get_user(id: u64) -> Result<User, DbError> {
//!     let spec = __cache_aside_spec_get_user();
//!     let prepared = prepare(default_cache(), spec, type_name_of(&|| ()), "", |b| { b.value(&id)?; Ok(()) });
//!     get_or_load::<Res<Plain>, Result<User, DbError>, _, _>(prepared, spec, Foreground(async move { body }), ..).await
//! }
//! fn __cache_aside_spec_get_user() -> &'static FnSpec { static SPEC: FnSpec = ..; &SPEC }
//! pub fn get_user_cache_key(id: u64) -> Result<String, Error> { /* same prepare */ }
//! pub async fn get_user_invalidate(id: u64) -> Result<bool, Error> { /* same prepare */ }
//! pub async fn get_user_invalidate_all() -> Result<u64, Error> { /* prefix of the spec */ }
//! ```
//! With `stale`, `refresh_ahead` or `xfetch` the body is `background(async move { body })` instead of
//! `Foreground(..)`; with `on_cache_error = "fail"` the call is `try_get_or_load`, after an
//! `assert_surface::<Result<User, DbError>>()` check.
//!
//! Every generated name goes through `{crate}::__private`; generated locals use
//! `Span::mixed_site()` so they cannot clash with the user's names.

mod batch;
mod companions;
mod fallback;
pub(crate) mod keys;
mod spec;
pub(crate) mod tokens;
mod wrapper;

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::{Attribute, Ident};

use crate::errors::Errors;
use crate::model::{Func, Named, Shape};
use crate::options::{self, Options};
use crate::validate::validate;

use keys::KeySource;
use tokens::{first_span, local, mentions};

/// `#[cached]`: options → model → validate → expand (or fallback).
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let options = options::parse(attr, &mut errors);
    let func: Func = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(error) => return fallback::not_a_function(item, error),
    };
    validate(&func, &options, &mut errors);
    let expander = Expander::new(&func, &options);
    if errors.is_empty() {
        expander.expand()
    } else {
        expander.fallback(item, errors)
    }
}

/// Writes the code for one checked function.
struct Expander<'a> {
    func: &'a Func,
    options: &'a Options,
    /// `{crate}::__private`, at the call site.
    private: TokenStream,
}

impl<'a> Expander<'a> {
    fn new(func: &'a Func, options: &'a Options) -> Self {
        let private = Self::private_path(options, Span::call_site());
        Expander {
            func,
            options,
            private,
        }
    }

    /// The wrapper, the companions and the spec's sibling.
    fn expand(&self) -> TokenStream {
        let wrapper = if self.options.is_batch() {
            self.batch_wrapper()
        } else {
            self.wrapper()
        };
        let companions = self.companions();
        let spec = self.spec_item();
        quote!(#wrapper #companions #spec)
    }

    /// `::cache_aside_runtime::__private` (or `{crate}::__private`), its own tokens at `span`,
    /// so that errors in a check built from it point at the user's token, not the attribute.
    fn private_path(options: &Options, span: Span) -> TokenStream {
        match &options.krate {
            Some(path) => {
                let path = &path.value;
                quote_spanned!(span=> #path::__private)
            }
            None => quote_spanned!(span=> ::cache_aside_runtime::__private),
        }
    }

    fn keys(&self) -> KeySource<'_> {
        KeySource {
            func: self.func,
            options: self.options,
            private: &self.private,
        }
    }

    fn key_args(&self) -> impl Iterator<Item = Named<'_>> {
        keys::key_args(self.func, self.options)
    }

    /// The function's `#[cfg]`s, which every generated sibling carries too.
    fn cfgs(&self) -> impl Iterator<Item = &Attribute> {
        self.func.attrs.iter().filter(|a| a.path().is_ident("cfg"))
    }

    /// `resolve(&(EXPR))` spanned at the expression, or the default cache. In the wrapper
    /// (`moved`), an expression reading something the body moves (`self.cache` with
    /// `self: Arc<Self>`, an owned `cache` argument) resolves a clone instead: a `Cache` is
    /// one `Arc`.
    fn cache(&self, moved: bool) -> TokenStream {
        let Some(cache) = &self.options.cache else {
            let private = &self.private;
            return quote!(#private::default_cache());
        };
        let expr = &cache.value;
        let tokens = quote!(#expr);
        let span = first_span(&tokens);
        let private = Self::private_path(self.options, span);
        let reads_moved = moved
            && ((self.func.receiver_owned() && mentions(&tokens, &Ident::new("self", span)))
                || self.func.named().any(|a| {
                    !matches!(a.ty, syn::Type::Reference(_)) && mentions(&tokens, a.ident)
                }));
        if reads_moved {
            quote_spanned!(span=> #private::resolve(&#private::owned(&(#expr))))
        } else {
            quote_spanned!(span=> #private::resolve(&(#expr)))
        }
    }

    /// `match resolve(..) { cache => { spec; body } }`: a match, so that a temporary in the
    /// cache expression (`CACHE.get().unwrap()`, a clone) lives as long as `body`, which
    /// names the cache `__ca_cache` and the spec `__ca_spec`.
    fn with_cache(&self, moved: bool, body: TokenStream) -> TokenStream {
        let cache = self.cache(moved);
        let var = local("__ca_cache");
        let spec = local("__ca_spec");
        let private = &self.private;
        let spec_ref = self.spec_ref();
        quote!(match #cache {
            #var => {
                let #spec: &'static #private::FnSpec = #spec_ref;
                #body
            }
        })
    }

    /// `let __ca_prepared = prepare(..)`: the key of this call, from [`keys::prepare`].
    fn prepare(&self) -> TokenStream {
        keys::prepare(&self.keys(), &local("__ca_cache"), &local("__ca_spec"))
    }

    /// `Plain`, `Opt`, `Res<..>` for the return type, every token at `span`.
    fn shape(&self, span: Span) -> TokenStream {
        fn tokens(shape: &Shape, private: &TokenStream, span: Span) -> TokenStream {
            match shape {
                Shape::Plain => quote_spanned!(span=> #private::Plain),
                Shape::Opt => quote_spanned!(span=> #private::Opt),
                Shape::Res(inner) => {
                    let inner = tokens(inner, private, span);
                    quote_spanned!(span=> #private::Res<#inner>)
                }
            }
        }
        tokens(
            &self.func.shape,
            &Self::private_path(self.options, span),
            span,
        )
    }
}

#[cfg(test)]
mod tests;
