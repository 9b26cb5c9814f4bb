//! The annotated function as a typed model, built without judging it: whether it may be
//! cached is [`validate`](crate::validate)'s question.
//!
//! The body stays tokens (tracing's `MaybeItemFn`, tokio's `ItemFn`): it is never parsed, so a
//! syntax error in it is rustc's own to report, and the wrapper and the companions are still
//! emitted around it.

use proc_macro2::TokenStream;
use proc_macro2::extra::DelimSpan;
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::{
    Attribute, FnArg, GenericArgument, Ident, Pat, PathArguments, ReturnType, Signature, Type,
    Visibility,
};

/// How the return type is cached; mirrors the runtime's `Plain`, `Opt` and `Res<_>`.
pub enum Shape {
    Plain,
    Opt,
    Res(Box<Shape>),
}

impl Shape {
    pub fn of(output: &ReturnType) -> Shape {
        let ReturnType::Type(_, ty) = output else {
            return Shape::Plain;
        };
        match last_segment(ty) {
            Some(("Option", _)) => Shape::Opt,
            Some(("Result", Some(first))) => Shape::Res(Box::new(match last_segment(first) {
                Some(("Option", _)) => Shape::Opt,
                _ => Shape::Plain,
            })),
            _ => Shape::Plain,
        }
    }

    /// Can the body fail, so that `fail_safe` and `on_cache_error = "fail"` mean something?
    pub fn is_result(&self) -> bool {
        matches!(self, Shape::Res(_))
    }

    /// Does `None` reach the cache, so that `none_ttl` means something?
    pub fn has_none(&self) -> bool {
        match self {
            Shape::Plain => false,
            Shape::Opt => true,
            Shape::Res(inner) => inner.has_none(),
        }
    }
}

/// `std::option::Option<T>` → `("Option", Some(T))`: the last path segment's name and first
/// type argument. Written types only: an alias is `Plain`.
fn last_segment(ty: &Type) -> Option<(&'static str, Option<&Type>)> {
    let path = match ty {
        Type::Path(path) => path,
        // `$ty` from a `macro_rules!` arrives wrapped in an invisible group.
        Type::Group(group) => return last_segment(&group.elem),
        Type::Paren(paren) => return last_segment(&paren.elem),
        _ => return None,
    };
    let segment = path.path.segments.last()?;
    let name = match segment.ident.to_string().as_str() {
        "Option" => "Option",
        "Result" => "Result",
        _ => return None,
    };
    let first = match &segment.arguments {
        PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        }),
        _ => None,
    };
    Some((name, first))
}

/// One argument after the receiver.
pub struct Arg {
    pub pat: Pat,
    /// The name, when the pattern is a plain one (`id`, `mut id`): only a named argument
    /// can be written into the key.
    pub ident: Option<Ident>,
    pub ty: Type,
}

/// An argument with a plain name.
pub struct Named<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
}

/// The function: its signature typed, its body as tokens.
pub struct Func {
    /// Outer attributes, `#[cached]` itself excluded (rustc removed it).
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    /// `#![...]` at the top of the body.
    pub inner_attrs: Vec<Attribute>,
    /// The braces of the body as written, so the body keeps its place in errors.
    pub brace: DelimSpan,
    /// The body's statements, unparsed.
    pub body: TokenStream,
    /// The receiver (`&self`, `self: Arc<Self>`), if a method.
    pub receiver: Option<syn::Receiver>,
    pub args: Vec<Arg>,
    pub shape: Shape,
    /// The return type as written, `()` when omitted.
    pub ret: TokenStream,
}

impl Parse for Func {
    fn parse(input: ParseStream) -> syn::Result<Func> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse()?;
        let content;
        let brace = syn::braced!(content in input);
        let inner_attrs = content.call(Attribute::parse_inner)?;
        let body: TokenStream = content.parse()?;
        let mut receiver = None;
        let mut args = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(r) => receiver = Some(r.clone()),
                FnArg::Typed(typed) => args.push(Arg {
                    ident: plain_name(&typed.pat),
                    pat: (*typed.pat).clone(),
                    ty: (*typed.ty).clone(),
                }),
            }
        }
        let shape = Shape::of(&sig.output);
        let ret = match &sig.output {
            ReturnType::Default => quote::quote!(()),
            ReturnType::Type(_, ty) => ty.to_token_stream(),
        };
        Ok(Func {
            attrs,
            vis,
            sig,
            inner_attrs,
            brace: brace.span,
            body,
            receiver,
            args,
            shape,
            ret,
        })
    }
}

fn plain_name(pat: &Pat) -> Option<Ident> {
    match pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => Some(p.ident.clone()),
        _ => None,
    }
}

impl Func {
    /// The arguments with plain names, in order.
    pub fn named(&self) -> impl Iterator<Item = Named<'_>> {
        self.args.iter().filter_map(|a| {
            let ident = a.ident.as_ref()?;
            Some(Named { ident, ty: &a.ty })
        })
    }

    /// The receiver is taken by value (`self`, `self: Arc<Self>`): the body moves it.
    pub fn receiver_owned(&self) -> bool {
        self.receiver.as_ref().is_some_and(|r| match &r.kind {
            syn::ReceiverKind::Reference(..) => false,
            syn::ReceiverKind::Typed(_, ty) => !matches!(**ty, Type::Reference(_)),
            _ => true,
        })
    }

    /// Is the function certainly an associated one of an `impl` or a trait, so that its
    /// siblings are reached through `Self::`? Known from a receiver or a `Self` in the
    /// signature; an associated function with neither looks exactly like a free one, and
    /// this says `false`.
    pub fn is_associated(&self) -> bool {
        self.receiver.is_some() || mentions_self(self.sig.to_token_stream())
    }
}

fn mentions_self(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tt| match tt {
        proc_macro2::TokenTree::Ident(ident) => ident == "Self",
        proc_macro2::TokenTree::Group(group) => mentions_self(group.stream()),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn shape_of(ret: TokenStream) -> String {
        let func: Func = syn::parse2(quote!(async fn f() -> #ret {})).unwrap();
        fn show(s: &Shape) -> String {
            match s {
                Shape::Plain => "Plain".into(),
                Shape::Opt => "Opt".into(),
                Shape::Res(inner) => format!("Res<{}>", show(inner)),
            }
        }
        show(&func.shape)
    }

    #[test]
    fn classifies_return_types() {
        assert_eq!(shape_of(quote!(u64)), "Plain");
        assert_eq!(shape_of(quote!(Option<User>)), "Opt");
        assert_eq!(shape_of(quote!(std::option::Option<User>)), "Opt");
        assert_eq!(shape_of(quote!(Result<User, E>)), "Res<Plain>");
        assert_eq!(shape_of(quote!(anyhow::Result<Option<User>>)), "Res<Opt>");
        assert_eq!(shape_of(quote!(Vec<Option<u8>>)), "Plain");
        assert_eq!(shape_of(quote!(Option<Option<u8>>)), "Opt");
    }

    #[test]
    fn keeps_a_body_that_does_not_parse_as_tokens() {
        let func: Func = syn::parse2(quote!(
            #[inline]
            pub async fn f(&self, (a, b): (u8, u8), id: u64) -> u64 { #![allow(unused)] let x = ; }
        ))
        .unwrap();
        assert_eq!(func.body.to_string(), quote!(let x = ;).to_string());
        assert_eq!(func.inner_attrs.len(), 1);
        assert_eq!(func.attrs.len(), 1);
        let names: Vec<String> = func.named().map(|a| a.ident.to_string()).collect();
        assert_eq!((func.args.len(), names), (2, vec!["id".to_owned()]));
        assert!(func.is_associated() && !func.receiver_owned());
    }
}
