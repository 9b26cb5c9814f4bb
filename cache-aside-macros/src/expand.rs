//! Generating the wrapper and its companions.
//!
//! Input:
//! ```text
//! #[cached(ttl = 60, prefix = "user")]
//! pub async fn get_user(id: u64) -> Result<User, DbError> { body }
//! ```
//! Output:
//! ```text
//! pub async fn get_user(id: u64) -> Result<User, DbError> {
//!     static SPEC: FnSpec = FnSpec::new("get_user", Some("user"), Layout::new("{}")).ttl_ms(60000);
//!     let prepared = prepare(default_cache(), &SPEC, type_name_of(&|| ()), "", |b| { b.value(&id)?; Ok(()) });
//!     get_or_load::<Res<Plain>, Result<User, DbError>, _, _>(prepared, &SPEC, Foreground(async move { body })).await
//! }
//! pub fn get_user_cache_key(id: u64) -> Result<String, Error> { /* same prepare */ }
//! pub async fn get_user_invalidate(id: u64) -> Result<bool, Error> { /* same prepare */ }
//! pub async fn get_user_invalidate_all() -> Result<u64, Error> { /* prefix of SPEC */ }
//! ```
//! With `stale`, `refresh_ahead` or `xfetch` the body is `background(async move { body })` instead of
//! `Foreground(..)`; with `on_cache_error = "fail"` the call is `try_get_or_load`, after an
//! `assert_surface::<Result<User, DbError>>()` check.
//!
//! Every generated name goes through `{crate}::__private`; generated locals use
//! `Span::mixed_site()` so they cannot clash with the user's names.

use proc_macro2::{Group, Literal, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{Ident, ItemFn};

use crate::args::{self, Args, Dur, Errors};
use crate::func::{Func, Shape};
use crate::key::Part;

pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = args::parse(attr, &mut errors);
    let item: ItemFn = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(e) => {
            let error = syn::Error::new(e.span(), "#[cached] goes on an `async fn`");
            let error = error.to_compile_error();
            return quote!(#item #error);
        }
    };
    let func = Func::check(item, &args, &mut errors);
    let generator = Gen::new(&func, &args);
    if errors.is_empty() {
        let wrapper = generator.wrapper();
        let companions = generator.companions_unless_off(false);
        quote!(#wrapper #companions)
    } else {
        // The original function and companion stubs, unchanged in signature: one mistake
        // in the attribute must not turn every call site into "cannot find function".
        let original = &func.item;
        let companions = generator.companions_unless_off(true);
        let errors = errors.into_compile_errors();
        quote!(#original #companions #errors)
    }
}

struct Gen<'a> {
    func: &'a Func,
    args: &'a Args,
    private: TokenStream,
}

/// The span of a type's first token: `Span::join` is unstable, and a span mixing the
/// attribute's tokens with the user's makes rustc fall back to pointing at the attribute.
fn first_span(tokens: &TokenStream) -> Span {
    tokens
        .clone()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

impl<'a> Gen<'a> {
    fn new(func: &'a Func, args: &'a Args) -> Self {
        let private = Self::private_path(args, Span::call_site());
        Gen {
            func,
            args,
            private,
        }
    }

    /// `::cache_aside_runtime::__private` (or `{crate}::__private`), its own tokens at `span`,
    /// so that errors in a check built from it point at the user's token, not the attribute.
    fn private_path(args: &Args, span: Span) -> TokenStream {
        match &args.krate {
            Some(path) => quote_spanned!(span=> #path::__private),
            None => quote_spanned!(span=> ::cache_aside_runtime::__private),
        }
    }

    /// `resolve(&(EXPR))` spanned at the expression, or the default cache. In the wrapper
    /// (`moved`), an expression reading something the body moves (`self.cache` with
    /// `self: Arc<Self>`, an owned `cache` argument) resolves a clone instead: a `Cache` is
    /// one `Arc`.
    fn cache(&self, moved: bool) -> TokenStream {
        let Some(expr) = &self.args.cache else {
            let private = &self.private;
            return quote!(#private::default_cache());
        };
        let span = first_span(&quote!(#expr));
        let private = Self::private_path(self.args, span);
        let tokens = quote!(#expr);
        let reads_moved = moved
            && ((self.func.receiver_owned && mentions(&tokens, &Ident::new("self", span)))
                || self.func.args.iter().any(|a| {
                    !matches!(a.ty, syn::Type::Reference(_)) && mentions(&tokens, &a.ident)
                }));
        if reads_moved {
            quote_spanned!(span=> #private::resolve(&#private::owned(&(#expr))))
        } else {
            quote_spanned!(span=> #private::resolve(&(#expr)))
        }
    }

    /// `match resolve(..) { cache => body }`: a match, so that a temporary in the cache
    /// expression (`CACHE.get().unwrap()`, a clone) lives as long as `body`, which names the
    /// cache `__ca_cache`.
    fn with_cache(&self, moved: bool, body: TokenStream) -> TokenStream {
        let cache = self.cache(moved);
        let var = local("__ca_cache");
        quote!(match #cache { #var => #body })
    }

    /// `let spec: &'static FnSpec = { static SPEC: FnSpec = ...; &SPEC };`: the function's
    /// static description. The static sits in its own block so the body cannot see it.
    fn spec(&self) -> TokenStream {
        let private = &self.private;
        let name = self.func.item.sig.ident.unraw().to_string();
        let prefix = match (&self.args.prefix, &self.args.key) {
            (Some(prefix), _) => quote!(::core::option::Option::Some(#prefix)),
            (None, Some((template, _))) => {
                let prefix = &template.prefix;
                quote!(::core::option::Option::Some(#prefix))
            }
            (None, None) => quote!(::core::option::Option::None),
        };
        let ttl = self.args.ttl.map(|d| {
            let ms = d.millis;
            quote!(.ttl_ms(#ms))
        });
        let none_ttl = self.args.none_ttl.map(|(d, _)| {
            let ms = d.millis;
            quote!(.none_ttl_ms(#ms))
        });
        let a = self.args;
        let ms = |d: Dur| d.millis;
        let float = Literal::f64_unsuffixed;
        let stale = a.stale.map(|stale| match stale.map(ms) {
            Some(ms) => quote!(.stale_ms(#ms)),
            None => quote!(.stale_from_cache()),
        });
        let refresh_ahead = a.refresh_ahead.map(|at| match at.map(float) {
            Some(f) => quote!(.refresh_ahead(#f)),
            None => quote!(.refresh_ahead_from_cache()),
        });
        let xfetch = a.xfetch.map(float).map(|f| quote!(.xfetch(#f)));
        let fail_safe = a.fail_safe.map(|(d, _)| d.millis);
        let fail_safe = fail_safe.map(|ms| quote!(.fail_safe_ms(#ms)));
        let jitter = a.jitter.map(float).map(|f| quote!(.jitter(#f)));
        let lock = a.lock.map(|on| quote!(.lock(#on)));
        let timeout = a.timeout.map(ms).map(|ms| quote!(.timeout_ms(#ms)));
        let flight_wait = a.flight_wait.map(ms).map(|ms| quote!(.flight_wait_ms(#ms)));
        let max_value_bytes = a.max_value_bytes.map(|n| quote!(.max_value_bytes(#n)));
        let layout = self.layout();
        let spec = local("__ca_spec");
        // Where the function is written, the same for its wrapper's spec and its companions':
        // how the runtime tells one function from another of the same name and path (two
        // blocks of one function), whose keys would meet.
        let span = self.func.item.sig.ident.span();
        let site = quote_spanned!(span=> .at(::core::file!(), ::core::line!(), ::core::column!()));
        quote! {
            let #spec: &'static #private::FnSpec = {
                static SPEC: #private::FnSpec =
                    #private::FnSpec::new(#name, #prefix, #private::Layout::new(#layout))
                        #site
                        #ttl #none_ttl #stale #refresh_ahead #xfetch #fail_safe #jitter #lock #timeout
                        #flight_wait #max_value_bytes;
                &SPEC
            };
        }
    }

    /// The key layout the runtime's `Layout` describes: the template after its prefix with
    /// each placeholder as `{}`, or one `{}` per key argument joined by `:`.
    fn layout(&self) -> String {
        match &self.args.key {
            Some((template, _)) => template
                .parts
                .iter()
                .map(|part| match part {
                    Part::Text(text) => text.as_str(),
                    Part::Arg { .. } => "{}",
                })
                .collect(),
            None => vec!["{}"; self.func.key_args().count()].join(":"),
        }
    }

    /// `path, generics`: which instantiation of the function runs (see the runtime's
    /// `prepare`). `path` is the `type_name` of a closure here, which names the module,
    /// enclosing functions and `Self` with its type arguments; `generics` that of a helper
    /// generic over the function's own type and const parameters, `""` without any.
    fn identity(&self) -> TokenStream {
        let private = &self.private;
        let params: Vec<_> = self
            .func
            .item
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

    /// `let prepared = prepare(cache, &SPEC, path, generics, |b| { key steps });`, inside
    /// [`with_cache`](Self::with_cache).
    fn prepare(&self) -> TokenStream {
        let private = &self.private;
        let cache = local("__ca_cache");
        let identity = self.identity();
        let builder = local("__ca_b");
        let steps = self.key_steps(&builder);
        let prepared = local("__ca_prepared");
        let spec_var = local("__ca_spec");
        quote! {
            let #prepared = #private::prepare(#cache, #spec_var, #identity,
                |#builder: &mut #private::KeyBuilder| -> ::core::result::Result<(), #private::Error> {
                    #(#steps)*
                    ::core::result::Result::Ok(())
                });
        }
    }

    /// The statements writing the argument part of the key.
    fn key_steps(&self, b: &Ident) -> Vec<TokenStream> {
        let Some((template, _)) = &self.args.key else {
            return self
                .func
                .key_args()
                .enumerate()
                .map(|(i, arg)| {
                    let ident = &arg.ident;
                    let sep = (i > 0).then(|| quote!(#b.lit(":");));
                    quote!(#sep #b.value(&#ident)?;)
                })
                .collect();
        };
        template
            .parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => quote!(#b.lit(#text);),
                Part::Arg { root, fields } => {
                    let root = match self.func.args.iter().find(|a| a.ident == root) {
                        Some(arg) => {
                            let ident = &arg.ident;
                            quote!(#ident)
                        }
                        None => quote!(self),
                    };
                    let fields = fields.iter().map(|f| match f.parse::<u32>() {
                        Ok(index) => {
                            let index = syn::Index::from(index as usize);
                            quote!(.#index)
                        }
                        Err(_) => {
                            let field = Ident::new(f, Span::call_site());
                            quote!(.#field)
                        }
                    });
                    quote!(#b.value(&#root #(#fields)*)?;)
                }
            })
            .collect()
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
        tokens(&self.func.shape, &Self::private_path(self.args, span), span)
    }

    fn wrapper(&self) -> TokenStream {
        let ItemFn {
            attrs,
            vis,
            sig,
            block,
            ..
        } = &self.func.item;
        let private = &self.private;
        let spec = self.spec();
        let prepare = self.prepare();
        let ret = &self.func.ret;
        let shape = self.shape(Span::call_site());
        // A check of its own, every token at the return type, so "cannot be cached" points
        // there.
        let ret_span = first_span(ret);
        let check_path = Self::private_path(self.args, ret_span);
        let check_shape = self.shape(ret_span);
        let check = quote_spanned! {ret_span=>
            #check_path::assert_cacheable::<#check_shape, #ret>();
        };
        let prepared = local("__ca_prepared");
        let spec_var = local("__ca_spec");
        // `stale`/`refresh_ahead` may run the body after the call returns: `background` asks
        // for an owned, `Send` future, and its errors point at the option that asked.
        let body = match &self.args.background {
            Some(option) => {
                let span = option.span();
                let path = Self::private_path(self.args, span);
                quote_spanned!(span=> #path::background(async move #block))
            }
            None => quote!(#private::Foreground(async move #block)),
        };
        // Unstored results (an `Err` above all) reach the waiters of a load; see `Probe`.
        let share = quote! {
            {
                use #private::{ByClone as _, ErrByClone as _, NotShared as _};
                (&&&#private::Probe::<#ret>::new()).sharer()
            }
        };
        // What the store-time check compares a value with its decoded copy by: the stored
        // type's `PartialEq` if it has one; see `EqProbe`.
        let same = quote! {
            {
                use #private::{ByEq as _, NotEq as _};
                (&&#private::EqProbe::<<#shape as #private::Shape<#ret>>::Value>::new()).same()
            }
        };
        let (surface, call) = match &self.args.on_cache_error {
            Some(on_error) if on_error.fail => {
                // Every token at the value, so a missing `From<Error>` is reported there.
                let span = on_error.value;
                let path = Self::private_path(self.args, span);
                let ret = respan(ret.clone(), span);
                let surface = quote_spanned!(span=> #path::assert_surface::<#ret>(););
                let shape = self.shape(span);
                let call = quote_spanned! {span=>
                    #path::try_get_or_load::<#shape, _, _, _, _>(#prepared, #spec_var, #body, #share, #same)
                };
                (surface, call)
            }
            _ => {
                let call = quote!(#private::get_or_load::<#shape, #ret, _, _>(#prepared, #spec_var, #body, #share, #same));
                (TokenStream::new(), call)
            }
        };
        let run = self.with_cache(true, quote!({ #prepare #call.await }));
        quote! {
            #(#attrs)*
            #vis #sig {
                #check
                #surface
                #spec
                #run
            }
        }
    }

    /// The companions, or nothing with `companions = false`.
    fn companions_unless_off(&self, stub: bool) -> TokenStream {
        match self.args.companions {
            Some(false) => TokenStream::new(),
            _ => self.companions(stub),
        }
    }

    fn companions(&self, stub: bool) -> TokenStream {
        let ItemFn {
            attrs, vis, sig, ..
        } = &self.func.item;
        let private = &self.private;
        let name = sig.ident.unraw();
        let span = sig.ident.span();
        let key_fn = format_ident!("{}_cache_key", name, span = span);
        let invalidate_fn = format_ident!("{}_invalidate", name, span = span);
        let invalidate_all_fn = format_ident!("{}_invalidate_all", name, span = span);
        let cfgs = attrs.iter().filter(|a| a.path().is_ident("cfg"));
        // Stubs ignore their parameters; the attribute error is the one thing to report.
        let allow_unused = stub.then(|| quote!(#[allow(unused_variables)]));
        let cfgs = quote!(#(#cfgs)* #allow_unused);
        let generics = &sig.generics;
        let where_clause = &generics.where_clause;
        let receiver = self.func.receiver.as_ref().map(|r| quote!(#r,));
        // Skipped arguments that `cache = ...` reads must come along.
        let cache_tokens = self
            .args
            .cache
            .as_ref()
            .map(|e| quote!(#e))
            .unwrap_or_default();
        let params = self
            .func
            .args
            .iter()
            .filter(|a| a.in_key || mentions(&cache_tokens, &a.ident));
        let params: Vec<_> = params
            .map(|a| {
                let (ident, ty) = (&a.ident, &a.ty);
                quote!(#ident: #ty)
            })
            .collect();
        let cache_params = self
            .func
            .args
            .iter()
            .filter(|a| !a.in_key && mentions(&cache_tokens, &a.ident));
        let cache_params: Vec<_> = cache_params
            .map(|a| {
                let (ident, ty) = (&a.ident, &a.ty);
                quote!(#ident: #ty)
            })
            .collect();
        let result = quote!(::core::result::Result);
        let error = quote!(#private::Error);
        let (key_body, invalidate_body, invalidate_all_body) = if stub {
            let body = quote!({ ::core::unreachable!("#[cached] reported a compile error") });
            (body.clone(), body.clone(), body)
        } else {
            let spec = self.spec();
            let prepare = self.prepare();
            let prepared = local("__ca_prepared");
            let cache = local("__ca_cache");
            let identity = self.identity();
            let spec_var = local("__ca_spec");
            let key = self.with_cache(false, quote!({ #prepare #private::cache_key(#prepared) }));
            let invalidate = self.with_cache(
                false,
                quote!({ #prepare #private::invalidate(#prepared).await }),
            );
            let invalidate_all = self.with_cache(
                false,
                quote!(#private::invalidate_all(#cache, #spec_var, #identity).await),
            );
            (
                quote!({ #spec #key }),
                quote!({ #spec #invalidate }),
                quote!({ #spec #invalidate_all }),
            )
        };
        let key_doc = format!(
            "The cache key `{name}` reads and writes for these arguments. Generated by `#[cached]`."
        );
        let invalidate_doc = format!(
            "Deletes the entry `{name}` cached for these arguments; `Ok(true)` if there was one. \
             Generated by `#[cached]`."
        );
        let invalidate_all_doc = format!(
            "Deletes every entry `{name}` cached, for all arguments (one prefix, `SCAN` + `UNLINK`); \
             returns how many. Generated by `#[cached]`."
        );
        quote! {
            #cfgs
            #[doc = #key_doc]
            #[allow(dead_code)]
            #vis fn #key_fn #generics (#receiver #(#params),*) -> #result<::std::string::String, #error> #where_clause
            #key_body

            #cfgs
            #[doc = #invalidate_doc]
            #[allow(dead_code)]
            #vis async fn #invalidate_fn #generics (#receiver #(#params),*) -> #result<bool, #error> #where_clause
            #invalidate_body

            #cfgs
            #[doc = #invalidate_all_doc]
            #[allow(dead_code)]
            #vis async fn #invalidate_all_fn #generics (#receiver #(#cache_params),*) -> #result<u64, #error> #where_clause
            #invalidate_all_body
        }
    }
}

/// `tokens` with every span, inside groups too, set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(g) = &tt {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

/// Does `ident` occur anywhere in `tokens`?
fn mentions(tokens: &TokenStream, ident: &Ident) -> bool {
    tokens.clone().into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => i == *ident,
        TokenTree::Group(g) => mentions(&g.stream(), ident),
        _ => false,
    })
}
