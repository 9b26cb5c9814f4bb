//! Small helpers over token streams that every part of the expansion uses.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::quote_spanned;
use syn::Ident;

/// A generated local, at `Span::mixed_site()` so it cannot clash with the user's names.
pub fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// The span of a type's first token: `Span::join` is unstable, and a span mixing the
/// attribute's tokens with the user's makes rustc fall back to pointing at the attribute.
pub fn first_span(tokens: &TokenStream) -> Span {
    tokens
        .clone()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

/// `tokens` with every span, inside groups too, set to `span`.
pub fn respan(tokens: TokenStream, span: Span) -> TokenStream {
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
pub fn mentions(tokens: &TokenStream, ident: &Ident) -> bool {
    tokens.clone().into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => i == *ident,
        TokenTree::Group(g) => mentions(&g.stream(), ident),
        _ => false,
    })
}

/// An unreachable `return` of the declared type `ret`, first in a body's `async` block: it
/// fixes the block's output type before the body is checked, so a body of the wrong type
/// is a plain mismatched-types error at the user's expression (tracing's
/// `fake_return_edge`). It never runs and holds nothing across an `.await`, so it costs
/// nothing and leaves the future's `Send`-ness alone.
pub fn return_anchor(ret: &TokenStream) -> TokenStream {
    let span = first_span(ret);
    let value = local("__ca_return");
    quote_spanned! {span=>
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::needless_return,
            clippy::unreachable
        )]
        if false {
            let #value: #ret = loop {};
            return #value;
        }
    }
}
