//! A typed model of the annotated function, and every check that needs both it and the
//! arguments: which arguments form the key, what the return type's shape is.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, Ident, ItemFn, Lifetime, Pat, PathArguments, ReturnType, Type};

use crate::args::{Args, Errors};
use crate::key::Template;

/// How the return type is cached; mirrors the runtime's `Plain`, `Opt` and `Res<_>`.
pub enum Shape {
    Plain,
    Opt,
    Res(Box<Shape>),
}

impl Shape {
    fn of(output: &ReturnType) -> Shape {
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
    fn is_result(&self) -> bool {
        matches!(self, Shape::Res(_))
    }

    /// Does `None` reach the cache, so that `none_ttl` means something?
    fn has_none(&self) -> bool {
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

/// One typed argument.
pub struct Arg {
    pub ident: Ident,
    pub ty: Type,
    /// Part of the key (not skipped).
    pub in_key: bool,
}

pub struct Func {
    pub item: ItemFn,
    /// The receiver as written (`&self`), if a method.
    pub receiver: Option<TokenStream>,
    /// The receiver is taken by value (`self`, `self: Arc<Self>`): the body moves it.
    pub receiver_owned: bool,
    pub args: Vec<Arg>,
    pub shape: Shape,
    /// The return type as written, `()` when omitted.
    pub ret: TokenStream,
}

impl Func {
    /// Models `item`, reporting every problem with it into `errors`.
    pub fn check(item: ItemFn, args: &Args, errors: &mut Errors) -> Func {
        let sig = &item.sig;
        if sig.asyncness.is_none() {
            errors.push(
                sig.fn_token.span(),
                "#[cached] needs an `async fn`: the cache is read and written over the network",
            );
        }
        let mut receiver = None;
        let mut receiver_owned = false;
        let mut typed = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(r) => {
                    let borrowed = match &r.kind {
                        syn::ReceiverKind::Reference(_, _, Some(mutability)) => {
                            errors.push(mutability.span(), MUT_ARG);
                            false
                        }
                        syn::ReceiverKind::Reference(_, lifetime, None) => {
                            !lifetime.as_ref().is_some_and(is_static)
                        }
                        syn::ReceiverKind::Typed(_, ty) => borrows(ty),
                        _ => false,
                    };
                    if let (true, Some(option)) = (borrowed, &args.background) {
                        errors.push_error(syn::Error::new_spanned(r, not_owned(option, "self")));
                    }
                    receiver = Some(r.to_token_stream());
                    receiver_owned = match &r.kind {
                        syn::ReceiverKind::Reference(..) => false,
                        syn::ReceiverKind::Typed(_, ty) => !matches!(**ty, Type::Reference(_)),
                        _ => true,
                    };
                }
                FnArg::Typed(pat_type) => {
                    if let Type::Reference(reference) = &*pat_type.ty
                        && let Some(mutability) = &reference.mutability
                    {
                        errors.push(mutability.span(), MUT_ARG);
                    } else if let Some(option) = &args.background
                        && borrows(&pat_type.ty)
                    {
                        let name = pat_type.pat.to_token_stream().to_string();
                        let message = not_owned(option, &name);
                        errors.push_error(syn::Error::new_spanned(pat_type, message));
                    }
                    match &*pat_type.pat {
                        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                            typed.push(Arg {
                                ident: p.ident.clone(),
                                ty: (*pat_type.ty).clone(),
                                in_key: true,
                            })
                        }
                        other => errors.push(
                            other.span(),
                            "#[cached] needs a plain name for each argument, to put it in the key; \
                             destructure it inside the body instead",
                        ),
                    }
                }
            }
        }
        let names = {
            let mut names: Vec<String> = typed.iter().map(|a| a.ident.to_string()).collect();
            if receiver.is_some() {
                names.insert(0, "self".to_owned());
            }
            if names.is_empty() {
                format!("`{}` has no arguments", sig.ident)
            } else {
                format!("the arguments of `{}` are: {}", sig.ident, names.join(", "))
            }
        };
        let fn_name = &sig.ident;
        for (i, skipped) in args.skip.iter().enumerate() {
            if args.skip[..i].iter().any(|s| s == skipped) {
                errors.push(skipped.span(), format_args!("`{skipped}` is skipped twice"));
            } else if skipped == "self" && receiver.is_some() {
                // `self` is never part of the key; listing it is harmless.
            } else if let Some(arg) = typed.iter_mut().find(|a| a.ident == *skipped) {
                arg.in_key = false;
            } else {
                errors.push(
                    skipped.span(),
                    format_args!(
                        "`{skipped}` in `skip(...)` is not an argument of `{fn_name}`; {names}"
                    ),
                );
            }
        }
        for arg in typed.iter().filter(|a| a.in_key) {
            check_key_type(&arg.ty, errors);
        }
        if let Some((template, _)) = &args.key {
            check_template(template, &typed, receiver.is_some(), &names, errors);
        }
        let shape = Shape::of(&sig.output);
        if let Some((_, name_span)) = &args.none_ttl
            && !shape.has_none()
        {
            errors.push(
                *name_span,
                "`none_ttl` applies to functions returning `Option<T>` or `Result<Option<T>, E>`; \
                 this one never returns `None`",
            );
        }
        if let Some((_, name_span)) = &args.fail_safe
            && !shape.is_result()
        {
            errors.push(
                *name_span,
                "`fail_safe` answers with an expired value when the body fails, so it applies to \
                 functions returning `Result<T, E>`; this one cannot fail",
            );
        }
        if let Some(on_error) = &args.on_cache_error
            && on_error.fail
            && !shape.is_result()
        {
            errors.push(
                on_error.name,
                "`on_cache_error = \"fail\"` returns cache failures as `Err`, so it applies to \
                 functions returning `Result<T, E>`; this one has no `Err` to return them in",
            );
        }
        if let (Some(_), Some((_, key_span))) = (&args.prefix, &args.key) {
            errors.push(
                *key_span,
                "`key` already sets the prefix (its text before the first `:`); drop `prefix`",
            );
        }
        let ret = match &sig.output {
            ReturnType::Default => quote::quote!(()),
            ReturnType::Type(_, ty) => ty.to_token_stream(),
        };
        Func {
            item,
            receiver,
            receiver_owned,
            args: typed,
            shape,
            ret,
        }
    }

    pub fn key_args(&self) -> impl Iterator<Item = &Arg> {
        self.args.iter().filter(|a| a.in_key)
    }
}

/// Does an argument of this type borrow something for less than `'static`? Syntactic: a
/// reference or non-`'static` lifetime anywhere in the written type. `impl Trait`, `dyn`
/// and `fn` types are left to rustc.
fn borrows(ty: &Type) -> bool {
    match ty {
        Type::Reference(r) => !r.lifetime.as_ref().is_some_and(is_static) || borrows(&r.elem),
        Type::Path(p) => {
            p.qself.as_ref().is_some_and(|q| borrows(&q.ty))
                || p.path.segments.iter().any(|seg| match &seg.arguments {
                    PathArguments::AngleBracketed(a) => a.args.iter().any(|arg| match arg {
                        GenericArgument::Lifetime(l) => !is_static(l),
                        GenericArgument::Type(t) => borrows(t),
                        _ => false,
                    }),
                    _ => false,
                })
        }
        Type::Tuple(t) => t.elems.iter().any(borrows),
        Type::Array(a) => borrows(&a.elem),
        Type::Slice(s) => borrows(&s.elem),
        Type::Paren(p) => borrows(&p.elem),
        Type::Group(g) => borrows(&g.elem),
        _ => false,
    }
}

fn is_static(lifetime: &Lifetime) -> bool {
    lifetime.ident == "static"
}

/// Why `stale`/`refresh_ahead` reject a borrowing argument.
fn not_owned(option: &Ident, arg: &str) -> String {
    let fix = if arg == "self" {
        "take `self: Arc<Self>`"
    } else {
        "take an owned type (`String`, `Vec<T>`, `Arc<T>`) and clone into it at the call site"
    };
    format!(
        "`{option}` refreshes in a background task that outlives the call, so arguments must be \
         owned and `'static`; `{arg}` borrows: {fix}"
    )
}

const MUT_ARG: &str = "#[cached] functions cannot take `&mut` arguments: a cache hit skips the body, \
                       so the mutation would silently not happen";

/// Key argument types whose values alone cannot name the call: a hash set serializes in a
/// per-process random order, and an `impl Trait` argument's type is not part of the key.
fn check_key_type(ty: &Type, errors: &mut Errors) {
    fn walk(tokens: TokenStream, errors: &mut Errors) -> bool {
        for token in tokens {
            match token {
                proc_macro2::TokenTree::Ident(ident) if ident.to_string().ends_with("HashSet") => {
                    errors.push(
                        ident.span(),
                        format_args!(
                            "`{ident}` iterates in an order that differs between processes, so equal \
                             sets would get different keys; take a `BTreeSet` (or a sorted `Vec`), \
                             or `skip(...)` the argument"
                        ),
                    );
                    return true;
                }
                proc_macro2::TokenTree::Ident(ident) if ident == "impl" => {
                    errors.push(
                        ident.span(),
                        "an `impl Trait` key argument leaves its type out of the key, so values of two \
                         types that serialize alike would share an entry; name a type parameter \
                         (`fn f<T: Serialize>(x: T)`) or `skip(...)` the argument",
                    );
                    return true;
                }
                proc_macro2::TokenTree::Group(group) if walk(group.stream(), errors) => {
                    return true;
                }
                _ => {}
            }
        }
        false
    }
    walk(ty.to_token_stream(), errors);
}

fn check_template(
    template: &Template,
    args: &[Arg],
    has_self: bool,
    names: &str,
    errors: &mut Errors,
) {
    let span = template.lit.span();
    for root in template.roots() {
        if root == "self" && has_self {
            continue;
        }
        match args.iter().find(|a| a.ident == root) {
            Some(arg) if !arg.in_key => errors.push(
                span,
                format_args!("`{{{root}}}` is used in the key template but skipped; remove it from one of them"),
            ),
            Some(_) => {}
            None => errors.push(
                span,
                format_args!("`{{{root}}}` in the key template is not an argument; {names}"),
            ),
        }
    }
    for arg in args.iter().filter(|a| a.in_key) {
        if !template.roots().any(|root| arg.ident == root) {
            errors.push(
                arg.ident.span(),
                format_args!(
                    "argument `{}` is not in the key template, so calls differing only in it would share \
                     one entry; add `{{{}}}` to `key` or list it in `skip(...)`",
                    arg.ident, arg.ident
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn shape_of(ret: TokenStream) -> String {
        let item: ItemFn = syn::parse2(quote!(async fn f() -> #ret {})).unwrap();
        fn show(s: &Shape) -> String {
            match s {
                Shape::Plain => "Plain".into(),
                Shape::Opt => "Opt".into(),
                Shape::Res(inner) => format!("Res<{}>", show(inner)),
            }
        }
        show(&Shape::of(&item.sig.output))
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

    fn check(attr: TokenStream, item: TokenStream) -> Vec<String> {
        let mut errors = Errors::default();
        let args = crate::args::parse(attr, &mut errors);
        Func::check(syn::parse2(item).unwrap(), &args, &mut errors);
        errors.into_messages()
    }

    #[test]
    fn accepts_a_well_formed_function() {
        let errors = check(
            quote!(ttl = 5, key = "u:{id}:{user.name}", skip(db), none_ttl = 1),
            quote!(
                async fn f(&self, db: &Db, id: u64, user: &User) -> Result<Option<u8>, E> {}
            ),
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn reports_signature_problems() {
        let errors = check(
            quote!(skip(nope, id, id), none_ttl = 5),
            quote!(
                fn f(&mut self, id: u64, v: &mut Vec<u8>, (a, b): (u8, u8)) -> u8 {}
            ),
        );
        let expected = [
            "#[cached] needs an `async fn`",
            "cannot take `&mut` arguments",
            "cannot take `&mut` arguments",
            "needs a plain name",
            "`nope` in `skip(...)` is not an argument of `f`; the arguments of `f` are: self, id, v",
            "`id` is skipped twice",
            "`none_ttl` applies to functions returning `Option<T>`",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, needle) in errors.iter().zip(expected) {
            assert!(error.contains(needle), "{error:?} lacks {needle:?}");
        }
    }

    #[test]
    fn failure_options_need_a_result() {
        let attr = quote!(fail_safe = "1h", on_cache_error = "fail");
        for ret in [quote!(u8), quote!(Option<u8>)] {
            let errors = check(attr.clone(), quote!(async fn f() -> #ret {}));
            assert_eq!(errors.len(), 2, "{errors:#?}");
            assert!(errors[0].starts_with("`fail_safe` answers with an expired value"));
            assert!(errors[1].starts_with("`on_cache_error = \"fail\"` returns cache failures"));
        }
        for ret in [quote!(Result<u8, E>), quote!(io::Result<Option<u8>>)] {
            let errors = check(attr.clone(), quote!(async fn f() -> #ret {}));
            assert!(errors.is_empty(), "{errors:?}");
        }
        let errors = check(
            quote!(on_cache_error = "open"),
            quote!(
                async fn f() -> u8 {}
            ),
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn background_refresh_needs_owned_arguments() {
        let errors = check(
            quote!(refresh_ahead = 0.5, stale = 5, skip(h)),
            quote!(
                async fn f<'a>(
                    &self,
                    a: &str,
                    b: &'a [u8],
                    c: Option<&u8>,
                    d: Cow<'a, str>,
                    e: (u8, &'static str),
                    f: &'static str,
                    g: Vec<&'static str>,
                    h: impl Fn(&str) -> u8,
                    i: String,
                ) -> u8 {
                }
            ),
        );
        let borrowing: Vec<&str> = errors
            .iter()
            .map(|e| {
                assert!(
                    e.starts_with("`refresh_ahead` refreshes in a background task"),
                    "{e}"
                );
                e.split('`').nth(5).unwrap()
            })
            .collect();
        assert_eq!(borrowing, ["self", "a", "b", "c", "d"]);
        assert!(errors[0].ends_with("take `self: Arc<Self>`"));
        // Owned receivers pass; without `stale`/`refresh_ahead` borrowing is fine.
        for receiver in [quote!(self: Arc<Self>), quote!(self), quote!(&'static self)] {
            let errors = check(quote!(stale = 5), quote!(async fn f(#receiver) -> u8 {}));
            assert!(errors.is_empty(), "{errors:?}");
        }
        let errors = check(
            quote!(),
            quote!(
                async fn f(&self, a: &str) -> u8 {}
            ),
        );
        assert!(errors.is_empty(), "{errors:?}");
        // `&mut` is reported once, as `&mut`.
        let errors = check(
            quote!(stale = 5),
            quote!(
                async fn f(a: &mut u8) -> u8 {}
            ),
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("cannot take `&mut` arguments"));
    }

    #[test]
    fn key_arguments_must_name_the_call_by_value() {
        let errors = check(
            quote!(skip(ok)),
            quote!(
                async fn f(
                    a: HashSet<u8>,
                    b: Vec<std::collections::HashSet<u8>>,
                    c: FxHashSet<u8>,
                    d: impl Serialize,
                    e: Option<impl Serialize>,
                    ok: impl Db,
                    g: BTreeSet<u8>,
                ) -> u8 {
                }
            ),
        );
        let expected = [
            "`HashSet` iterates",
            "`HashSet` iterates",
            "`FxHashSet` iterates",
            "an `impl Trait` key argument",
            "an `impl Trait` key argument",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, needle) in errors.iter().zip(expected) {
            assert!(error.starts_with(needle), "{error:?} lacks {needle:?}");
        }
    }

    #[test]
    fn template_must_cover_the_key_arguments_exactly() {
        let errors = check(
            quote!(key = "u:{id}:{nope}:{db}", skip(db)),
            quote!(
                async fn f(db: &Db, id: u64, page: u32) -> u8 {}
            ),
        );
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].contains("`{nope}` in the key template is not an argument"));
        assert!(errors[1].contains("`{db}` is used in the key template but skipped"));
        assert!(errors[2].contains("argument `page` is not in the key template"));
        let errors = check(
            quote!(key = "u:{id}", prefix = "p"),
            quote!(
                async fn f(id: u64) -> u8 {}
            ),
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("`key` already sets the prefix"));
    }
}
