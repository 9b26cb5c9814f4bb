//! The `#[cached]` attribute of [cache-aside]. Depend on `cache-aside-runtime`, which
//! re-exports it and does all the work; this crate only parses, checks and emits one call.
//!
//! The attribute runs in four stages, each a module: [`options`] parses `#[cached(...)]`
//! (with [`values`] for each option's value and [`key`] for key templates), [`model`] types
//! the function without judging it, [`validate`] checks the two against each other, and
//! [`expand`] writes the wrapper and its companions, or the fallback on a mistake.
//!
//! [cache-aside]: https://docs.rs/cache-aside-runtime

mod errors;
mod expand;
mod key;
mod model;
mod options;
mod validate;
mod values;

use proc_macro::TokenStream;

#[doc = include_str!("../doc/cached.md")]
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(attr.into(), item.into()).into()
}
