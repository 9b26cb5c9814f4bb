//! The wrapper: the user's signature around a call to the runtime, the body inside it.
//!
//! Input: `#[cached(ttl = 60)] async fn get(id: u64) -> Result<u64, E> { body }`.
//! Output:
//! ```text
//! async fn get(id: u64) -> Result<u64, E> {
//!     assert_cacheable::<Res<Plain>, Result<u64, E>>();
//!     match default_cache() { cache => {
//!         let spec = __cache_aside_spec_get();
//!         let prepared = prepare(cache, spec, ..);
//!         get_or_load::<Res<Plain>, Result<u64, E>, _, _>(prepared, spec,
//!             Foreground(async move {
//!                 if false { let ret: Result<u64, E> = loop {}; return ret; }
//!                 { body }
//!             }), share, same).await
//!     } }
//! }
//! ```

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use quote::{quote, quote_spanned};

use crate::values::OnCacheError;

use super::Expander;
use super::tokens::{first_span, local, respan, return_anchor};

impl Expander<'_> {
    pub(super) fn wrapper(&self) -> TokenStream {
        let func = self.func;
        let (attrs, vis, sig, inner_attrs) = (&func.attrs, &func.vis, &func.sig, &func.inner_attrs);
        let (checks, call) = self.call();
        let prepare = self.prepare();
        // The body as a local: `unused_braces` would flag a one-expression body's braces
        // (`{ id }`), and a lint can be allowed on a statement, not on an argument.
        let (body, body_var) = (self.body(), local("__ca_body"));
        let body = quote! {
            #[allow(unused_braces)]
            let #body_var = #body;
        };
        let run = self.with_cache(true, quote!(#prepare #body #call));
        quote! {
            #(#attrs)*
            #vis #sig {
                #(#inner_attrs)*
                #checks
                #run
            }
        }
    }

    /// The checks that open the wrapper, and the awaited call to the runtime: `get_or_load`,
    /// or with `on_cache_error = "fail"` `try_get_or_load`.
    ///
    /// rustc reports an unmet bound of the runtime function at the call and its `.await`, so
    /// every token of both is at the user's token the bound is about: the return type, or
    /// the `"fail"` that asked for `From<Error>`. An unmet `Shape` bound is reported once per
    /// span, so a return type that cannot be cached is one error, at the return type.
    fn call(&self) -> (TokenStream, TokenStream) {
        let ret = &self.func.ret;
        let prepared = local("__ca_prepared");
        let spec = local("__ca_spec");
        let body = local("__ca_body");
        let (share, same) = (self.share(), self.same());
        let ret_span = first_span(ret);
        let Some(on_error) = self
            .options
            .on_cache_error
            .as_ref()
            .filter(|on_error| on_error.value == OnCacheError::Fail)
        else {
            let path = Self::private_path(self.options, ret_span);
            let shape = self.shape(ret_span);
            let call = quote_spanned! {ret_span=>
                #path::get_or_load::<#shape, #ret, _, _>(#prepared, #spec, #body, #share, #same).await
            };
            return (TokenStream::new(), call);
        };
        // Checks of their own, so that "cannot be cached" points at the return type and a
        // missing `From<Error>` at the value.
        let (ret_path, ret_shape) = (
            Self::private_path(self.options, ret_span),
            self.shape(ret_span),
        );
        let cacheable = quote_spanned! {ret_span=>
            #ret_path::assert_cacheable::<#ret_shape, #ret>();
        };
        let span = on_error.span;
        let path = Self::private_path(self.options, span);
        let surface_ret = respan(ret.clone(), span);
        let surface = quote_spanned!(span=> #path::assert_surface::<#surface_ret>(););
        let shape = self.shape(span);
        let call = quote_spanned! {span=>
            #path::try_get_or_load::<#shape, _, _, _, _>(#prepared, #spec, #body, #share, #same).await
        };
        (quote!(#cacheable #surface), call)
    }

    /// The body as an `async move` block, `Foreground(..)` or, for `stale`/`refresh_ahead`/
    /// `xfetch`, `background(..)`: it may run after the call returns, so it must be owned and
    /// `Send`, and errors saying it is not point at the option that asked.
    fn body(&self) -> TokenStream {
        let anchor = return_anchor(&self.func.ret);
        let mut block = Group::new(Delimiter::Brace, self.func.body.clone());
        block.set_span(self.func.brace.join());
        let block = TokenTree::Group(block);
        match &self.options.background {
            Some(option) => {
                let span = option.span();
                let path = Self::private_path(self.options, span);
                quote_spanned!(span=> #path::background(async move { #anchor #block }))
            }
            None => {
                let private = &self.private;
                quote!(#private::Foreground(async move { #anchor #block }))
            }
        }
    }

    /// Unstored results (an `Err` above all) reach the waiters of a load; see `Probe`.
    fn share(&self) -> TokenStream {
        let (private, ret) = (&self.private, &self.func.ret);
        quote! {
            {
                use #private::{ByClone as _, ErrByClone as _, NotShared as _};
                (&&&#private::Probe::<#ret>::new()).sharer()
            }
        }
    }

    /// What the store-time check compares a value with its decoded copy by: the stored
    /// type's `PartialEq` if it has one; see `EqProbe`.
    fn same(&self) -> TokenStream {
        let ret = &self.func.ret;
        let span = first_span(ret);
        let shape = self.shape(span);
        let at_ret = Self::private_path(self.options, span);
        let private = &self.private;
        let probe = quote_spanned! {span=>
            (&&#at_ret::EqProbe::<<#shape as #at_ret::Shape<#ret>>::Value>::new()).same()
        };
        quote! {
            {
                use #private::{ByEq as _, NotEq as _};
                #probe
            }
        }
    }
}
