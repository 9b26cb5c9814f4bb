//! Building a call's key: the one place that turns a call's arguments into its key.
//!
//! Input: `#[cached(key = "user:{id}:{page}")] async fn posts(db: &Db, id: u64, page: u32)`.
//! Output, wherever an entry of the function is named:
//! ```text
//! let __ca_prepared = prepare(__ca_cache, __ca_spec, type_name_of(&|| ()), "",
//!     |__ca_b: &mut KeyBuilder| -> Result<(), Error> {
//!         __ca_b.lit("");  __ca_b.value(&id)?;  __ca_b.lit(":");  __ca_b.value(&page)?;
//!         Ok(())
//!     });
//! ```
//! The wrapper and every companion call [`prepare`]; an expansion that evicts or writes an
//! entry of the function (`#[cache_evict(..)]`, `#[cache_put(..)]`) must call it too, so
//! that a read, an eviction and a write can never compute different keys.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::Ident;

use crate::key::Part;
use crate::model::{Func, Named};
use crate::options::Options;

use super::tokens::local;

/// What a function's keys are made of: its arguments, its options, where the runtime is.
pub struct KeySource<'a> {
    pub func: &'a Func,
    pub options: &'a Options,
    /// `{crate}::__private`.
    pub private: &'a TokenStream,
}

/// The arguments that form the key, in order: the named ones not in `skip(...)`.
pub fn key_args<'f>(func: &'f Func, options: &'f Options) -> impl Iterator<Item = Named<'f>> {
    func.named().filter(|a| !options.skips(a.ident))
}

/// `let __ca_prepared = prepare(cache, spec, path, generics, |b| { key steps });`, reading
/// the cache from the local `cache` and the `&'static FnSpec` from the local `spec`.
pub fn prepare(source: &KeySource, cache: &Ident, spec: &Ident) -> TokenStream {
    let private = source.private;
    let identity = identity(source);
    let builder = local("__ca_b");
    let steps = key_steps(source, &builder);
    let prepared = local("__ca_prepared");
    let Some(tags) = &source.options.tags else {
        return quote! {
            let #prepared = #private::prepare(#cache, #spec, #identity,
                |#builder: &mut #private::KeyBuilder| -> ::core::result::Result<(), #private::Error> {
                    #(#steps)*
                    ::core::result::Result::Ok(())
                });
        };
    };
    let writer = local("__ca_t");
    let tag_steps = tags
        .value
        .iter()
        .map(|tag| tag_steps(source.func, tag, &writer));
    quote! {
        let #prepared = #private::prepare_tagged(#cache, #spec, #identity,
            |#builder: &mut #private::KeyBuilder| -> ::core::result::Result<(), #private::Error> {
                #(#steps)*
                ::core::result::Result::Ok(())
            },
            |#writer: &mut #private::TagWriter<'_>| -> ::core::result::Result<(), #private::Error> {
                #(#tag_steps)*
                ::core::result::Result::Ok(())
            });
    }
}

/// The statements writing one tag into the `TagWriter` `writer`: its name, then each
/// segment. `#[cached(tags = ..)]` and `#[cache_evict(tag = ..)]` both render tags so.
pub(crate) fn tag_steps(func: &Func, tag: &crate::key::Template, writer: &Ident) -> TokenStream {
    let name = &tag.prefix;
    let parts = tag.parts.iter().map(|part| match part {
        Part::Text(text) => {
            let segments = text.split(':').filter(|s| !s.is_empty());
            quote!(#(#writer.text(#segments);)*)
        }
        Part::Arg { .. } => {
            let value = placeholder(func, part, tag.lit.span());
            quote!(#writer.value(&#value)?;)
        }
    });
    quote!(#writer.begin(#name); #(#parts)*)
}

/// The statements writing one tag of a batch function: each placeholder names the key
/// collection and stands for the one key `item` (validation allows no other root).
pub(crate) fn batch_tag_steps(
    tag: &crate::key::Template,
    writer: &Ident,
    item: &Ident,
) -> TokenStream {
    let name = &tag.prefix;
    let parts = tag.parts.iter().map(|part| match part {
        Part::Text(text) => {
            let segments = text.split(':').filter(|s| !s.is_empty());
            quote!(#(#writer.text(#segments);)*)
        }
        Part::Arg { fields, .. } => {
            let fields = field_access(fields, tag.lit.span());
            quote!(#writer.value(&#item #fields)?;)
        }
    });
    quote!(#writer.begin(#name); #(#parts)*)
}

/// What a function's tags render from a key, for the runtime to compare a batch's with a
/// one-key function's: each template with its placeholders' argument left out
/// (`"user:{id}"` → `user:{}`, `"team:{q.team}"` → `team:{.team}`), sorted, one per line.
pub(crate) fn tags_signature(tags: &[crate::key::Template]) -> String {
    let mut each: Vec<String> = tags
        .iter()
        .map(|tag| {
            let mut text = tag.prefix.clone();
            for part in &tag.parts {
                match part {
                    Part::Text(fixed) => {
                        for segment in fixed.split(':').filter(|s| !s.is_empty()) {
                            text.push(':');
                            text.push_str(segment);
                        }
                    }
                    Part::Arg { fields, .. } => {
                        text.push_str(":{");
                        for field in fields {
                            text.push('.');
                            text.push_str(field);
                        }
                        text.push('}');
                    }
                }
            }
            text
        })
        .collect();
    each.sort();
    each.dedup();
    each.join("\n")
}

/// The expression of a template's placeholder: the argument (or `self`) and its fields,
/// each field at `span` (the template's), where a field the type lacks is reported.
pub(crate) fn placeholder(func: &Func, part: &Part, span: Span) -> TokenStream {
    let Part::Arg { root, fields } = part else {
        return TokenStream::new();
    };
    let root = match func.named().find(|a| a.ident == root) {
        Some(arg) => {
            let ident = arg.ident;
            quote!(#ident)
        }
        None => quote!(self),
    };
    let fields = field_access(fields, span);
    quote!(#root #fields)
}

/// `.field.0.other`: a placeholder's fields as field accesses, at `span`.
fn field_access(fields: &[String], span: Span) -> TokenStream {
    let fields = fields.iter().map(|f| match f.parse::<u32>() {
        Ok(index) => {
            let index = syn::Index { index, span };
            quote_spanned!(span=> .#index)
        }
        Err(_) => {
            let field = Ident::new(f, span);
            quote_spanned!(span=> .#field)
        }
    });
    quote!(#(#fields)*)
}

/// `path, generics`: which instantiation of the function runs (see the runtime's
/// `prepare`). `path` is the `type_name` of a closure here, which names the module,
/// enclosing functions and `Self` with its type arguments; `generics` that of a helper
/// generic over the function's own type and const parameters, `""` without any.
pub fn identity(source: &KeySource) -> TokenStream {
    let private = source.private;
    let params: Vec<_> = source
        .func
        .sig
        .generics
        .params
        .iter()
        .filter_map(|param| match param {
            syn::GenericParam::Type(t) => {
                let ident = &t.ident;
                Some((quote!(#ident: ?::core::marker::Sized), quote!(#ident)))
            }
            syn::GenericParam::Const(c) => {
                let (ident, ty) = (&c.ident, &c.ty);
                Some((quote!(const #ident: #ty), quote!(#ident)))
            }
            _ => None,
        })
        .collect();
    let generics = if params.is_empty() {
        quote!("")
    } else {
        let helper = local("__ca_generics");
        let decls = params.iter().map(|(decl, _)| decl);
        let uses: Vec<_> = params.iter().map(|(_, used)| used).collect();
        quote!({
            fn #helper<#(#decls),*>() -> &'static str {
                #private::type_name_of(&#helper::<#(#uses),*>)
            }
            #helper::<#(#uses),*>()
        })
    };
    quote!(#private::type_name_of(&|| ()), #generics)
}

/// The statements writing the argument part of the key.
fn key_steps(source: &KeySource, b: &Ident) -> Vec<TokenStream> {
    let Some(key) = &source.options.key else {
        return key_args(source.func, source.options)
            .enumerate()
            .map(|(i, arg)| {
                let ident = arg.ident;
                let sep = (i > 0).then(|| quote!(#b.lit(":");));
                quote!(#sep #b.value(&#ident)?;)
            })
            .collect();
    };
    key.value
        .parts
        .iter()
        .map(|part| match part {
            Part::Text(text) => quote!(#b.lit(#text);),
            part @ Part::Arg { .. } => {
                let value = placeholder(source.func, part, key.value.lit.span());
                quote!(#b.value(&#value)?;)
            }
        })
        .collect()
}
