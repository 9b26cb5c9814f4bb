//! What is emitted when the attribute cannot be expanded: always the item, never nothing
//! (thiserror's `fallback.rs`, tokio's `token_stream_with_error`).
//!
//! Input: `#[cached(tll = 1)] async fn f(id: u64) -> u64 { id }`.
//! Output:
//! ```text
//! async fn f(id: u64) -> u64 { id }
//! fn f_cache_key(id: u64) -> Result<String, Error> { unreachable!(..) }   // and the other two
//! compile_error!("unknown option `tll`; ..");
//! ```
//! The function keeps its signature and the companions theirs, so the one mistake is the
//! one error: calls elsewhere in the crate still resolve.

use proc_macro2::TokenStream;
use quote::quote;

use crate::errors::Errors;

use super::Expander;

impl Expander<'_> {
    /// The original function, the companion stubs, and the errors.
    pub(super) fn fallback(&self, item: TokenStream, errors: Errors) -> TokenStream {
        let companions = self.companion_stubs();
        let errors = errors.into_compile_errors();
        quote!(#item #companions #errors)
    }
}

/// The item did not parse as a function with a body. If it is some other item (a struct, a
/// method declaration without a body), say where `#[cached]` goes; otherwise it has a syntax
/// error, and syn's own message is the one to show.
pub fn not_a_function(item: TokenStream, error: syn::Error) -> TokenStream {
    let other_item = syn::parse2::<syn::Item>(item.clone()).is_ok()
        || syn::parse2::<syn::ImplItem>(item.clone()).is_ok()
        || syn::parse2::<syn::TraitItem>(item.clone()).is_ok();
    let error = if other_item {
        syn::Error::new(error.span(), "#[cached] goes on an `async fn`")
    } else {
        error
    };
    let error = error.to_compile_error();
    quote!(#item #error)
}
