//! The `#[cached]` attribute of [cache-aside]. Depend on `cache-aside-runtime`, which
//! re-exports it and does all the work; this crate only parses, checks and emits one call.
//!
//! [cache-aside]: https://docs.rs/cache-aside-runtime

mod args;
mod expand;
mod func;
mod key;

use proc_macro::TokenStream;

#[doc = include_str!("../doc/cached.md")]
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(attr.into(), item.into()).into()
}
