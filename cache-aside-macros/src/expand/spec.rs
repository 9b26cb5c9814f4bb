//! The function's `FnSpec`: its name, prefix, key layout and options, in one static.
//!
//! Input:
//! ```text
//! impl Users {
//!     #[cached(ttl = 60, cache = self.cache)]
//!     pub async fn get(&self, id: u64) -> User { .. }
//! }
//! ```
//! Output, beside the wrapper and the companions, which all call it:
//! ```text
//! #[doc(hidden)]
//! fn __cache_aside_spec_get() -> &'static FnSpec {
//!     static SPEC: FnSpec = FnSpec::new("get", None, Layout::new("{}"))
//!         .at(file!(), line!(), column!()).ttl_ms(60000);
//!     &SPEC
//! }
//! ```
//! The runtime keeps per-function state in the static (the prefix it derived, whether the
//! function's keys meet another's), so the wrapper and its companions should share one.
//! Where no sibling can be named (see [`SpecHome`]), each generated function holds the
//! static in a block of its own instead: `{ static SPEC: FnSpec = ..; &SPEC }`.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;

use crate::key::Part;
use crate::values::Spanned;
use crate::values::{Dur, OrCache};

use super::Expander;

/// Where the function's `static SPEC` is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SpecHome {
    /// In one sibling, `Self::__cache_aside_spec_<name>()`, that the wrapper and the
    /// companions call.
    Sibling,
    /// In each generated function: the wrapper alone with `companions = false`, else the
    /// wrapper and each companion.
    EachFunction,
}

impl Expander<'_> {
    /// A sibling needs the companions (a trait impl holds nothing the trait does not
    /// declare) and a way to name it. In an `impl` a sibling is reached only through
    /// `Self::`, in a module or block only by its bare name, and a function without a
    /// receiver or a `Self` in its signature looks the same in both: guessing "free" would
    /// stop every such associated function from compiling, so those keep a static in each
    /// generated function, as before.
    fn spec_home(&self) -> SpecHome {
        if self.options.companions() && self.func.is_associated() {
            SpecHome::Sibling
        } else {
            SpecHome::EachFunction
        }
    }

    fn spec_fn(&self) -> syn::Ident {
        let name = self.func.sig.ident.unraw();
        format_ident!("__cache_aside_spec_{}", name)
    }

    /// An expression of type `&'static FnSpec`: a call to the sibling, or the static in a
    /// block of its own, so the body cannot see it.
    pub(super) fn spec_ref(&self) -> TokenStream {
        match self.spec_home() {
            SpecHome::Sibling => {
                let spec_fn = self.spec_fn();
                quote!(Self::#spec_fn())
            }
            SpecHome::EachFunction => {
                let static_spec = self.spec_static();
                quote!({ #static_spec &SPEC })
            }
        }
    }

    /// The sibling holding the static, if it has one.
    pub(super) fn spec_item(&self) -> TokenStream {
        if self.spec_home() != SpecHome::Sibling {
            return TokenStream::new();
        }
        let private = &self.private;
        let spec_fn = self.spec_fn();
        let cfgs = self.cfgs();
        let static_spec = self.spec_static();
        quote! {
            #(#cfgs)*
            #[doc(hidden)]
            #[allow(dead_code, non_snake_case)]
            fn #spec_fn() -> &'static #private::FnSpec {
                #static_spec
                &SPEC
            }
        }
    }

    /// `static SPEC: FnSpec = FnSpec::new(..).ttl_ms(..)...;`
    fn spec_static(&self) -> TokenStream {
        let private = &self.private;
        let name = self.func.sig.ident.unraw().to_string();
        let some = |text: &str| quote!(::core::option::Option::Some(#text));
        let prefix = match (&self.options.prefix, &self.options.key) {
            (Some(prefix), _) => some(&prefix.value.value()),
            (None, Some(key)) => some(&key.value.prefix),
            (None, None) => quote!(::core::option::Option::None),
        };
        let layout = self.layout();
        // Where the function is written: how the runtime tells one function from another of
        // the same name and path (two blocks of one function), whose keys would meet.
        let span = self.func.sig.ident.span();
        let site = quote_spanned!(span=> .at(::core::file!(), ::core::line!(), ::core::column!()));
        let setters = self.setters();
        quote! {
            static SPEC: #private::FnSpec =
                #private::FnSpec::new(#name, #prefix, #private::Layout::new(#layout))
                    #site #(#setters)*;
        }
    }

    /// One const setter per option given.
    fn setters(&self) -> Vec<TokenStream> {
        let o = self.options;
        let ms = |setter: &str, d: &Option<Spanned<Dur>>| {
            d.as_ref().map(|d| {
                let (setter, ms) = (format_ident!("{setter}_ms"), d.value.millis);
                quote!(.#setter(#ms))
            })
        };
        let float = |setter: &str, v: &Option<Spanned<f64>>| {
            v.as_ref().map(|v| {
                let (setter, v) = (format_ident!("{setter}"), Literal::f64_unsuffixed(v.value));
                quote!(.#setter(#v))
            })
        };
        let stale = o.stale.as_ref().map(|stale| match &stale.value {
            OrCache::Given(d) => {
                let ms = d.millis;
                quote!(.stale_ms(#ms))
            }
            OrCache::FromCache => quote!(.stale_from_cache()),
        });
        let refresh_ahead = o.refresh_ahead.as_ref().map(|at| match at.value {
            OrCache::Given(f) => {
                let f = Literal::f64_unsuffixed(f);
                quote!(.refresh_ahead(#f))
            }
            OrCache::FromCache => quote!(.refresh_ahead_from_cache()),
        });
        let lock = o
            .lock
            .as_ref()
            .map(|l| l.value)
            .map(|on| quote!(.lock(#on)));
        let max_value_bytes = o.max_value_bytes.as_ref().map(|n| n.value);
        let max_value_bytes = max_value_bytes.map(|n| quote!(.max_value_bytes(#n)));
        let batch = o.is_batch().then(|| quote!(.batch()));
        let tagged = o.tags.as_ref().map(|tags| {
            let signature = super::keys::tags_signature(&tags.value);
            quote!(.tags(#signature))
        });
        [
            batch,
            tagged,
            ms("ttl", &o.ttl),
            ms("none_ttl", &o.none_ttl),
            stale,
            refresh_ahead,
            float("xfetch", &o.xfetch),
            ms("fail_safe", &o.fail_safe),
            float("jitter", &o.jitter),
            lock,
            ms("timeout", &o.timeout),
            ms("flight_wait", &o.flight_wait),
            max_value_bytes,
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The key layout the runtime's `Layout` describes: the template after its prefix with
    /// each placeholder as `{}`, or one `{}` per key argument joined by `:`.
    fn layout(&self) -> String {
        match &self.options.key {
            Some(key) => key
                .value
                .parts
                .iter()
                .map(|part| match part {
                    Part::Text(text) => text.as_str(),
                    Part::Arg { .. } => "{}",
                })
                .collect(),
            None => vec!["{}"; self.key_args().count()].join(":"),
        }
    }
}
