//! The wrapper of a `#[cached(batch)]` function: the keys its collection argument holds, and
//! a body that the runtime may call (at most twice) with only those that missed.
//!
//! Input: `#[cached(batch, ttl = 60)] async fn get_users(db: &Db, ids: &[u64]) -> Result<HashMap<u64, User>, E> { body }`.
//! Output:
//! ```text
//! async fn get_users(db: &Db, ids: &[u64]) -> Result<HashMap<u64, User>, E> {
//!     assert_batch::<Res<Plain>, Result<HashMap<u64, User>, E>, &[u64]>();
//!     match default_cache() { cache => {
//!         let spec = __cache_aside_spec_get_users();
//!         let items = batch_items(&ids);
//!         get_many::<Res<Plain>, Result<..>, _, _, _>(cache, spec, path, generics, items,
//!             move |missing| {
//!                 let db = Clone::clone(&db);
//!                 async move {
//!                     let owned = <&[u64] as Rebind>::own(missing);
//!                     let ids: &[u64] = Rebind::rebind(&owned);
//!                     { body }
//!                 }
//!             }, same).await
//!     } }
//! }
//! ```

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use quote::{quote, quote_spanned};

use super::Expander;
use super::keys;
use super::tokens::{first_span, local, respan, return_anchor};
use crate::model::Shape;
use crate::values::OnCacheError;

impl Expander<'_> {
    pub(super) fn batch_wrapper(&self) -> TokenStream {
        let func = self.func;
        let (attrs, vis, inner_attrs) = (&func.attrs, &func.vis, &func.inner_attrs);
        let sig = self.batch_sig();
        let ret = &func.ret;
        let ret_span = first_span(ret);
        let at_ret = Self::private_path(self.options, ret_span);
        let shape = self.batch_shape(ret_span);
        let Some(arg) = self.key_args().next() else {
            // Validation refuses a batch without a key argument.
            return TokenStream::new();
        };
        let (keys_ident, keys_ty) = (arg.ident, arg.ty);
        let keys_pat = func
            .args
            .iter()
            .find(|a| a.ident.as_ref() == Some(keys_ident))
            .map(|a| &a.pat);
        let ty_span = first_span(&quote!(#keys_ty));
        let at_ty = Self::private_path(self.options, ty_span);
        let check = quote_spanned! {ret_span=>
            #at_ret::assert_batch::<#shape, #ret, #keys_ty>();
        };
        let private = &self.private;
        let (cache, spec) = (local("__ca_cache"), local("__ca_spec"));
        let (items, missing, owned) = (
            local("__ca_items"),
            local("__ca_missing"),
            local("__ca_owned"),
        );
        let identity = keys::identity(&self.keys());
        let clones = self.batch_clones(keys_ident);
        let anchor = return_anchor(ret);
        // The keys' rebinding goes inside the body's own braces: a block around it would
        // make a one-expression body `{ expr }` a tail block, which `unused_braces` flags.
        let body = &func.body;
        let rebind = quote! {
            let #owned = <#keys_ty as #at_ty::Rebind<'_>>::own(#missing);
            #[allow(unused_mut)]
            let #keys_pat: #keys_ty = #at_ty::Rebind::rebind(&#owned);
            #anchor
        };
        let mut block = Group::new(Delimiter::Brace, quote!(#rebind #body));
        block.set_span(func.brace.join());
        let block = TokenTree::Group(block);
        let same = self.batch_same(ret_span, &shape);
        let tags = self.batch_tags(keys_ty);
        // `on_cache_error = "fail"`: a cache failure is the call's `Err`, which must take
        // one (`E: From<Error>`, reported at the option).
        let (get_many, surface, call_span, call_ret) = match self
            .options
            .on_cache_error
            .as_ref()
            .filter(|on_error| on_error.value == OnCacheError::Fail)
        {
            // `try_get_many` asks for `R: Surface` itself, at the option: a second check
            // (`assert_surface`) would report it twice with `cache = ..`.
            Some(on_error) => {
                let span = on_error.span;
                let surface_ret = respan(ret.clone(), span);
                (quote!(try_get_many), TokenStream::new(), span, surface_ret)
            }
            None => (quote!(get_many), TokenStream::new(), ret_span, quote!(#ret)),
        };
        // At the option with it: an `Err` without `From<Error>` is then reported once, there.
        let at_ret = Self::private_path(self.options, call_span);
        let call = quote_spanned! {call_span=>
            #at_ret::#get_many::<#shape, #call_ret, <#keys_ty as #at_ret::BatchKeys>::Item, _, _>(
                #cache, #spec, #identity, #items, #tags,
                move |#missing| {
                    #(#clones)*
                    async move #block
                },
                #same,
            ).await
        };
        let run = self.with_cache(
            true,
            quote! {
                let #items = #private::batch_items(&#keys_ident);
                #call
            },
        );
        quote! {
            #(#attrs)*
            #vis #sig {
                #(#inner_attrs)*
                #check
                #surface
                #run
            }
        }
    }

    /// `Some(renderer)` of one key's tags, or `None` without `tags`.
    fn batch_tags(&self, keys_ty: &syn::Type) -> TokenStream {
        let private = &self.private;
        let Some(tags) = &self.options.tags else {
            return quote!(::core::option::Option::None);
        };
        let (writer, item) = (local("__ca_t"), local("__ca_key"));
        let steps = tags
            .value
            .iter()
            .map(|tag| keys::batch_tag_steps(tag, &writer, &item));
        quote! {
            ::core::option::Option::Some(
                |#writer: &mut #private::TagWriter<'_>,
                 #item: &<#keys_ty as #private::BatchKeys>::Item|
                 -> ::core::result::Result<(), #private::Error> {
                    #(#steps)*
                    ::core::result::Result::Ok(())
                })
        }
    }

    /// The wrapper's signature: the function's, without `mut` on its arguments (the
    /// wrapper only borrows them; a `mut` is for the body's own bindings).
    fn batch_sig(&self) -> syn::Signature {
        let mut sig = self.func.sig.clone();
        for input in &mut sig.inputs {
            if let syn::FnArg::Typed(typed) = input
                && let syn::Pat::Ident(pat) = &mut *typed.pat
            {
                pat.mutability = None;
            }
        }
        sig
    }

    /// Every argument but the keys, cloned for each call of the body (references are
    /// copied), each at its type.
    fn batch_clones(&self, keys_ident: &syn::Ident) -> Vec<TokenStream> {
        let others = self.func.args.iter();
        let others = others.filter(|a| a.ident.as_ref() != Some(keys_ident));
        others
            .filter_map(|a| {
                let ident = a.ident.as_ref()?;
                let (pat, ty) = (&a.pat, &a.ty);
                let span = first_span(&quote!(#ty));
                Some(quote_spanned! {span=>
                    #[allow(unused_variables, unused_mut)]
                    let #pat = ::core::clone::Clone::clone(&#ident);
                })
            })
            .collect()
    }

    /// What the store-time check compares a value with its decoded copy by: the value
    /// type's `PartialEq` if it has one; see `EqProbe`.
    fn batch_same(&self, ret_span: proc_macro2::Span, shape: &TokenStream) -> TokenStream {
        let (ret, private) = (&self.func.ret, &self.private);
        let at_ret = Self::private_path(self.options, ret_span);
        let probe = quote_spanned! {ret_span=>
            (&&#at_ret::EqProbe::<
                <<#shape as #at_ret::BatchShape<#ret>>::Map as #at_ret::BatchMap>::Value
            >::new()).same()
        };
        // The block at the return type (an unmet bound on the value is reported there),
        // the `use` at the attribute (one of the two traits is always unused).
        let imports = quote!(use #private::{ByEq as _, NotEq as _};);
        quote_spanned!(ret_span=> { #imports #probe })
    }

    /// `Plain` for a map, `Res<Plain>` for a `Result` of one, every token at `span`.
    fn batch_shape(&self, span: proc_macro2::Span) -> TokenStream {
        let private = Self::private_path(self.options, span);
        match self.func.shape {
            Shape::Res(_) => quote_spanned!(span=> #private::Res<#private::Plain>),
            _ => quote_spanned!(span=> #private::Plain),
        }
    }
}
