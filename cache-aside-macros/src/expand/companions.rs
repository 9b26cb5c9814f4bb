//! The companions: `{fn}_cache_key`, `{fn}_invalidate` and `{fn}_invalidate_all`, and the
//! hidden `{fn}_cache_entry` / `{fn}_cache_entries` of `#[cache_evict]` and `#[cache_put]`: siblings
//! of the wrapper with its generics, receiver and key arguments.
//!
//! Input: `#[cached(ttl = 60, cache = self.cache, skip(db))] async fn get(&self, db: &Db, id: u64) -> u64`.
//! Output:
//! ```text
//! fn get_cache_key(&self, id: u64) -> Result<String, Error> { match resolve(&(self.cache)) { cache => { spec; prepare; cache_key(prepared) } } }
//! async fn get_invalidate(&self, id: u64) -> Result<bool, Error> { .. invalidate(prepared).await }
//! async fn get_invalidate_all(&self) -> Result<u64, Error> { .. invalidate_all(cache, spec, path, generics).await }
//! ```
//! The key is built by the same [`prepare`](super::keys::prepare) as the wrapper's.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::ext::IdentExt;

use super::Expander;
use super::keys;
use super::tokens::{local, mentions};

/// The three companions' bodies, and what lints they allow.
struct Bodies {
    /// Stubs ignore their parameters; the attribute error is the one thing to report.
    allow_unused: bool,
    key: TokenStream,
    invalidate: TokenStream,
    invalidate_all: TokenStream,
    /// The hidden `{fn}_cache_entry` and `{fn}_cache_entries` that `#[cache_evict]` and
    /// `#[cache_put]` call; none in the fallback (their types would repeat its errors).
    entries: Option<(TokenStream, TokenStream)>,
}

impl Expander<'_> {
    /// The companions, or nothing with `companions = false`.
    pub(super) fn companions(&self) -> TokenStream {
        if !self.options.companions() {
            return TokenStream::new();
        }
        let private = &self.private;
        let prepare = self.prepare();
        let prepared = local("__ca_prepared");
        let (cache, spec) = (local("__ca_cache"), local("__ca_spec"));
        let identity = keys::identity(&self.keys());
        let key = self.with_cache(false, quote!(#prepare #private::cache_key(#prepared)));
        let invalidate = self.with_cache(
            false,
            quote!(#prepare #private::invalidate(#prepared).await),
        );
        let invalidate_all = quote!(#private::invalidate_all(#cache, #spec, #identity).await);
        let invalidate_all = self.with_cache(false, invalidate_all);
        let (shape, ret) = (self.shape(proc_macro2::Span::call_site()), &self.func.ret);
        let entry = quote!(#prepare #private::entry::<#shape, #ret>(#prepared, #spec));
        let entry = self.with_cache(false, entry);
        let entries = quote!(#private::entries(#cache, #spec, #identity));
        let entries = self.with_cache(false, entries);
        self.companion_items(&Bodies {
            allow_unused: false,
            key: quote!({ #key }),
            invalidate: quote!({ #invalidate }),
            invalidate_all: quote!({ #invalidate_all }),
            entries: Some((quote!({ #entry }), quote!({ #entries }))),
        })
    }

    /// Companions with the right signatures and bodies that never run, for the fallback:
    /// one mistake in the attribute must not turn every call site into "cannot find
    /// function".
    pub(super) fn companion_stubs(&self) -> TokenStream {
        if !self.options.companions() {
            return TokenStream::new();
        }
        let body = quote!({ ::core::unreachable!("#[cached] reported a compile error") });
        self.companion_items(&Bodies {
            allow_unused: true,
            key: body.clone(),
            invalidate: body.clone(),
            invalidate_all: body,
            entries: None,
        })
    }

    fn companion_items(&self, bodies: &Bodies) -> TokenStream {
        let sig = &self.func.sig;
        let vis = &self.func.vis;
        let private = &self.private;
        let name = sig.ident.unraw();
        let span = sig.ident.span();
        let key_fn = format_ident!("{}_cache_key", name, span = span);
        let invalidate_fn = format_ident!("{}_invalidate", name, span = span);
        let invalidate_all_fn = format_ident!("{}_invalidate_all", name, span = span);
        let cfgs = self.cfgs();
        let allow_unused = bodies
            .allow_unused
            .then(|| quote!(#[allow(unused_variables)]));
        let cfgs = quote!(#(#cfgs)* #allow_unused #[allow(dead_code)]);
        let generics = &sig.generics;
        let where_clause = &generics.where_clause;
        let receiver = self.func.receiver.as_ref().map(|r| quote!(#r,));
        let (params, cache_params) = self.companion_params();
        let result = quote!(::core::result::Result);
        let error = quote!(#private::Error);
        let Bodies {
            key,
            invalidate,
            invalidate_all,
            entries,
            ..
        } = bodies;
        let (key_doc, invalidate_doc, invalidate_all_doc) = docs(&name);
        let entries = entries.as_ref().map(|(entry, entries)| {
            let entry_fn = format_ident!("{}_cache_entry", name, span = span);
            let entries_fn = format_ident!("{}_cache_entries", name, span = span);
            let (shape, ret) = (self.shape(proc_macro2::Span::call_site()), &self.func.ret);
            let receiver = self.borrowed_receiver();
            quote! {
                #cfgs
                #[doc(hidden)]
                #vis fn #entry_fn #generics (#receiver #(#params),*) -> #private::Entry<#shape, #ret> #where_clause
                #entry

                #cfgs
                #[doc(hidden)]
                #vis fn #entries_fn #generics (#receiver #(#cache_params),*) -> #private::Entries #where_clause
                #entries
            }
        });
        quote! {
            #entries

            #cfgs
            #[doc = #key_doc]
            #vis fn #key_fn #generics (#receiver #(#params),*) -> #result<::std::string::String, #error> #where_clause
            #key

            #cfgs
            #[doc = #invalidate_doc]
            #vis async fn #invalidate_fn #generics (#receiver #(#params),*) -> #result<bool, #error> #where_clause
            #invalidate

            #cfgs
            #[doc = #invalidate_all_doc]
            #vis async fn #invalidate_all_fn #generics (#receiver #(#cache_params),*) -> #result<u64, #error> #where_clause
            #invalidate_all
        }
    }

    /// The receiver of the hidden entry companions: borrowed, since a write names its entries
    /// before its body runs, and the body may still need `self` (`self: Arc<Self>` becomes
    /// `self: &Arc<Self>`, `self` becomes `&self`; a method call autorefs either way).
    fn borrowed_receiver(&self) -> Option<TokenStream> {
        let receiver = self.func.receiver.as_ref()?;
        let this = &receiver.self_token;
        Some(match &receiver.kind {
            syn::ReceiverKind::Reference(..) => quote!(#receiver,),
            syn::ReceiverKind::Typed(_, ty) if matches!(**ty, syn::Type::Reference(_)) => {
                quote!(#receiver,)
            }
            syn::ReceiverKind::Typed(_, ty) => quote!(#this: &#ty,),
            _ => quote!(&#this,),
        })
    }

    /// `(key arguments and skipped ones the cache expression reads, skipped ones it reads)`,
    /// as `name: Type`: the parameters of the keyed companions and of `_invalidate_all`.
    fn companion_params(&self) -> (Vec<TokenStream>, Vec<TokenStream>) {
        let cache = self.options.cache.as_ref().map(|c| &c.value);
        let cache_tokens = quote!(#cache);
        let mut params = Vec::new();
        let mut cache_params = Vec::new();
        for arg in self.func.named() {
            let (ident, ty) = (arg.ident, arg.ty);
            let in_key = !self.options.skips(ident);
            let read_by_cache = mentions(&cache_tokens, ident);
            if in_key || read_by_cache {
                params.push(quote!(#ident: #ty));
            }
            if !in_key && read_by_cache {
                cache_params.push(quote!(#ident: #ty));
            }
        }
        (params, cache_params)
    }
}

fn docs(name: &syn::Ident) -> (String, String, String) {
    (
        format!(
            "The cache key `{name}` reads and writes for these arguments. Generated by `#[cached]`."
        ),
        format!(
            "Deletes the entry `{name}` cached for these arguments; `Ok(true)` if there was one. \
             Generated by `#[cached]`."
        ),
        format!(
            "Deletes every entry `{name}` cached, for all arguments (one prefix, `SCAN` + `UNLINK`); \
             returns how many. Generated by `#[cached]`."
        ),
    )
}
