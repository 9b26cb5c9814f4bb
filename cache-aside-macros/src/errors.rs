//! Every mistake found in one expansion, collected so that all of them are reported at once.

use proc_macro2::{Span, TokenStream};

/// Collected errors, combined into one token stream at the end (serde's `Ctxt`).
#[derive(Default)]
pub struct Errors(Vec<syn::Error>);

impl Errors {
    pub fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.0.push(syn::Error::new(span, message));
    }

    pub fn push_error(&mut self, error: syn::Error) {
        self.0.push(error);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    pub fn into_messages(self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    pub fn into_compile_errors(self) -> TokenStream {
        self.0.into_iter().map(|e| e.to_compile_error()).collect()
    }
}
