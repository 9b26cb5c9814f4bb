//! The `#[cached]` attribute of [cache-aside]. Depend on `cache-aside-runtime`, which
//! re-exports it and does all the work; this crate only parses, checks and emits one call.
//!
//! [cache-aside]: https://docs.rs/cache-aside-runtime

// The attribute runs in four stages, a module each: `options` parses `#[cached(...)]`
// (`values` for each option's value, `key` for key templates), `model` types the function
// without judging it, `validate` checks the two against each other, and `expand` writes the
// wrapper, its companions and their spec, or the fallback when the attribute has a mistake.
mod errors;
mod expand;
mod key;
mod model;
mod options;
mod validate;
mod values;
mod write;

use proc_macro::TokenStream;

#[doc = include_str!("../doc/cached.md")]
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(attr.into(), item.into()).into()
}

#[doc = include_str!("../doc/cache_evict.md")]
#[proc_macro_attribute]
pub fn cache_evict(attr: TokenStream, item: TokenStream) -> TokenStream {
    write::write(write::Kind::Evict, attr.into(), item.into()).into()
}

#[doc = include_str!("../doc/cache_put.md")]
#[proc_macro_attribute]
pub fn cache_put(attr: TokenStream, item: TokenStream) -> TokenStream {
    write::write(write::Kind::Put, attr.into(), item.into()).into()
}
