//! Small helpers over token streams that every part of the expansion uses.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
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
