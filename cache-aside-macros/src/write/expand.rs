//! The write function around its body.
//!
//! Input: `#[cache_evict(get_user(id))] async fn rename(db: &Db, id: u64, name: String) -> Result<(), E> { body }`.
//! Output:
//! ```text
//! async fn rename(db: &Db, id: u64, name: String) -> Result<(), E> {
//!     let entries = (get_user_cache_entry(id),);          // before the body: its arguments as given
//!     let result = async move { anchor; { body } }.await; // `return` and `?` stay the body's
//!     if (&&WriteProbe::of(&result)).success(&result).is_some() { entries.0.evict().await; }
//!     // several targets: `__private::join!(entries.0.evict(), entries.1.evict())`
//!     result
//! }
//! ```
//! `success` is `Some(&ok)` for any `Result` (by its type, whatever alias names it), `None`
//! for an `Err`, `Some(&result)` for any other type. `before = true` evicts before the body
//! instead; `always = true` after it whatever it returned. `#[cache_put(get_user(id))]`
//! ends with `if let Some(ok) = success { entries.0.put(accepts(ok), same).await; }`, the
//! value's tokens at the return type, so a value the read cannot store is a type error
//! there.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::{Ident, Index};

use super::{Kind, WriteOptions};
use crate::expand::tokens::{first_span, local, return_anchor};
use crate::model::Func;

pub fn expand(kind: Kind, func: &Func, options: &WriteOptions) -> TokenStream {
    let (attrs, vis, sig, inner_attrs) = (&func.attrs, &func.vis, &func.sig, &func.inner_attrs);
    let entries = local("__ca_entries");
    let result = local("__ca_result");
    let private_path = private(options);
    let calls = options
        .targets
        .iter()
        .map(|t| t.call.to_token_stream())
        .chain(
            options
                .tags
                .iter()
                .map(|tag| tag_target(&private_path, func, options, tag)),
        );
    // Several targets are evicted at once: a stalled Redis costs the write one `timeout`,
    // not one per target.
    let each = |op: TokenStream| -> Vec<TokenStream> {
        let ops: Vec<TokenStream> = (0..options.targets.len() + options.tags.len())
            .map(|i| {
                let i = Index::from(i);
                quote!(#entries.#i.#op)
            })
            .collect();
        vec![all_at_once(&private_path, &ops)]
    };
    let mut block = Group::new(Delimiter::Brace, func.body.clone());
    block.set_span(func.brace.join());
    let block = TokenTree::Group(block);
    // An `impl Trait` cannot be a local's type; such a body's type is its own anyway.
    let anchor = match mentions_impl(&func.ret) {
        true => TokenStream::new(),
        false => return_anchor(&func.ret),
    };
    let before = matches!(options.before, Some((true, _)));
    let (first, after) = match kind {
        Kind::Evict if before => {
            let evicts = each(quote!(evict()));
            (quote!(#(#evicts)*), TokenStream::new())
        }
        Kind::Evict => {
            let evicts = each(quote!(evict()));
            let always = matches!(options.always, Some((true, _)));
            let succeeded = if always {
                quote!(true)
            } else {
                let success = success(&private(options), &result);
                quote!(#success.is_some())
            };
            (TokenStream::new(), quote!(if #succeeded { #(#evicts)* }))
        }
        Kind::Put => (TokenStream::new(), put(func, options, &entries, &result)),
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #(#inner_attrs)*
            let #entries = (#(#calls,)*);
            #first
            // `unused_braces` would flag a one-expression body's braces (`{ id }`).
            #[allow(unused_braces)]
            let #result = async move { #anchor #block }.await;
            #after
            #result
        }
    }
}

/// The puts after the body: of its `Ok` value, or of what it returned. The value goes
/// through the entry's `accepts` first, its tokens at the return type: a write returning
/// another type than the read's is a mismatch there.
fn put(func: &Func, options: &WriteOptions, entries: &Ident, result: &Ident) -> TokenStream {
    let ret_span = first_span(&func.ret);
    let ok = Ident::new("__ca_ok", Span::mixed_site().located_at(ret_span));
    let private = private(options);
    let value = local("__ca_value");
    let (probe, same) = (local("__ca_probe"), local("__ca_same"));
    let puts = options.targets.iter().enumerate().map(|(i, target)| {
        let i = Index::from(i);
        // "arguments to this function are incorrect" points at the target.
        let at = first_span(&target.call.to_token_stream());
        let accepts = Ident::new("__ca_accepts", Span::mixed_site().located_at(at));
        let checked = quote_spanned!(ret_span=> #accepts(#ok));
        quote! {async {
            let #accepts = #entries.#i.accepts();
            let #value = #checked;
            let #probe = #entries.#i.probe();
            let #same = {
                use #private::{ByEq as _, NotEq as _};
                (&&#probe).same()
            };
            #entries.#i.put(#value, #same).await
        }}
    });
    let puts: Vec<TokenStream> = puts.collect();
    let puts = all_at_once(&private, &puts);
    let success = success(&private, result);
    quote! {
        if let ::core::option::Option::Some(#ok) = #success { #puts }
    }
}

/// Awaits the futures `ops` together (`tokio::join!`), or the one alone.
fn all_at_once(private: &TokenStream, ops: &[TokenStream]) -> TokenStream {
    match ops {
        [] => TokenStream::new(),
        [one] => quote!(#one.await;),
        ops => quote!(#private::join!(#(#ops),*);),
    }
}

/// `tag = "user:{id}"`: the tag rendered now, from the write's arguments as given, in the
/// cache `cache = ..` names (or the default one), as `#[cached(tags = ..)]` renders tags.
fn tag_target(
    private: &TokenStream,
    func: &Func,
    options: &WriteOptions,
    tag: &crate::key::Template,
) -> TokenStream {
    let cache = match &options.cache {
        Some(expr) => quote!(#private::resolve(&(#expr))),
        None => quote!(#private::default_cache()),
    };
    let writer = local("__ca_t");
    let steps = crate::expand::keys::tag_steps(func, tag, &writer);
    quote! {
        #private::tag_target(#cache,
            |#writer: &mut #private::TagWriter<'_>| -> ::core::result::Result<(), #private::Error> {
                #steps
                ::core::result::Result::Ok(())
            })
    }
}

/// `{crate}::__private`.
fn private(options: &WriteOptions) -> TokenStream {
    match &options.krate {
        Some(path) => quote!(#path::__private),
        None => quote!(::cache_aside_runtime::__private),
    }
}

/// `Some(&ok)` for a `Result`'s `Ok` (by its type, whatever alias names it), `Some(&result)`
/// for any other type, `None` for an `Err`: see the runtime's `WriteProbe`.
fn success(private: &TokenStream, result: &Ident) -> TokenStream {
    quote! {{
        use #private::{PlainSuccess as _, ResultSuccess as _};
        (&&#private::WriteProbe::of(&#result)).success(&#result)
    }}
}

/// Does the type say `impl`?
fn mentions_impl(ty: &TokenStream) -> bool {
    ty.clone().into_iter().any(|tt| match tt {
        TokenTree::Ident(ident) => ident == "impl",
        TokenTree::Group(group) => mentions_impl(&group.stream()),
        _ => false,
    })
}
