//! Every rule that needs both the function and the options: which arguments may form the
//! key, what the return type's shape allows, what a background refresh needs.
//!
//! Each rule reports into [`Errors`] and goes on, so one compile shows every mistake.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{GenericArgument, Ident, Lifetime, PathArguments, Type};

use crate::errors::Errors;
use crate::model::Func;
use crate::options::Options;
use crate::values::OnCacheError;

/// Checks `func` against `options`; every problem goes to `errors`.
pub fn validate(func: &Func, options: &Options, errors: &mut Errors) {
    if func.sig.asyncness.is_none() {
        errors.push(
            func.sig.fn_token.span(),
            "#[cached] needs an `async fn`: the cache is read and written over the network",
        );
    }
    check_receiver(func, options, errors);
    check_args(func, options, errors);
    let names = argument_names(func);
    check_skip(func, options, &names, errors);
    if options.is_batch() {
        check_batch(func, options, errors);
    } else {
        for arg in func.named().filter(|a| !options.skips(a.ident)) {
            check_key_type(arg.ty, errors);
        }
    }
    check_template(func, options, &names, errors);
    check_tags(func, options, &names, errors);
    check_shape(func, options, errors);
    if let (Some(_), Some(key)) = (&options.prefix, &options.key) {
        errors.push(
            key.name.span(),
            "`key` already sets the prefix (its text before the first `:`); drop `prefix`",
        );
    }
}

const MUT_ARG: &str = "#[cached] functions cannot take `&mut` arguments: a cache hit skips the body, \
                       so the mutation would silently not happen";

fn check_receiver(func: &Func, options: &Options, errors: &mut Errors) {
    let Some(receiver) = &func.receiver else {
        return;
    };
    let borrowed = match &receiver.kind {
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
    if let (true, Some(option), false) = (borrowed, &options.background, options.is_batch()) {
        errors.push_error(syn::Error::new_spanned(receiver, not_owned(option, "self")));
    }
}

/// `&mut`, a borrow a background refresh cannot hold, and a pattern the key cannot name.
fn check_args(func: &Func, options: &Options, errors: &mut Errors) {
    for arg in &func.args {
        if let Type::Reference(reference) = &arg.ty
            && let Some(mutability) = &reference.mutability
        {
            errors.push(mutability.span(), MUT_ARG);
        } else if let Some(option) = &options.background
            && borrows(&arg.ty)
            && !options.is_batch()
        {
            let name = arg.pat.to_token_stream().to_string();
            let message = not_owned(option, &name);
            let (pat, ty) = (&arg.pat, &arg.ty);
            errors.push_error(syn::Error::new_spanned(quote::quote!(#pat: #ty), message));
        }
        if arg.ident.is_none() {
            errors.push(
                arg.pat.span(),
                "#[cached] needs a plain name for each argument, to put it in the key; \
                 destructure it inside the body instead",
            );
        }
    }
}

/// "the arguments of `f` are: self, id", for errors naming something that is not one.
fn argument_names(func: &Func) -> String {
    let mut names: Vec<String> = func.named().map(|a| a.ident.to_string()).collect();
    if func.receiver.is_some() {
        names.insert(0, "self".to_owned());
    }
    let fn_name = &func.sig.ident;
    if names.is_empty() {
        format!("`{fn_name}` has no arguments")
    } else {
        format!("the arguments of `{fn_name}` are: {}", names.join(", "))
    }
}

fn check_skip(func: &Func, options: &Options, names: &str, errors: &mut Errors) {
    let skipped = options.skipped();
    let fn_name = &func.sig.ident;
    for (i, skip) in skipped.iter().enumerate() {
        if skipped[..i].contains(skip) {
            errors.push(skip.span(), format_args!("`{skip}` is skipped twice"));
        } else if skip == "self" && func.receiver.is_some() {
            // `self` is never part of the key; listing it is harmless.
        } else if !func.named().any(|a| a.ident == skip) {
            errors.push(
                skip.span(),
                format_args!("`{skip}` in `skip(...)` is not an argument of `{fn_name}`; {names}"),
            );
        }
    }
}

/// `none_ttl`, `fail_safe` and `on_cache_error = "fail"` each need a return type that can
/// give them something to do.
fn check_shape(func: &Func, options: &Options, errors: &mut Errors) {
    let shape = &func.shape;
    if let Some(none_ttl) = &options.none_ttl
        && !shape.has_none()
        && !options.is_batch()
    {
        errors.push(
            none_ttl.name.span(),
            "`none_ttl` applies to functions returning `Option<T>` or `Result<Option<T>, E>`; \
             this one never returns `None`",
        );
    }
    if let Some(fail_safe) = &options.fail_safe
        && !shape.is_result()
    {
        errors.push(
            fail_safe.name.span(),
            "`fail_safe` answers with an expired value when the body fails, so it applies to \
             functions returning `Result<T, E>`; this one cannot fail",
        );
    }
    if let Some(on_error) = &options.on_cache_error
        && on_error.value == OnCacheError::Fail
        && !shape.is_result()
    {
        errors.push(
            on_error.name.span(),
            "`on_cache_error = \"fail\"` returns cache failures as `Err`, so it applies to \
             functions returning `Result<T, E>`; this one has no `Err` to return them in",
        );
    }
}

/// `batch`: one key argument, a collection of keys; a map (or a `Result` of one) back; and
/// none of the options a batch does not do yet.
fn check_batch(func: &Func, options: &Options, errors: &mut Errors) {
    let unsupported = [
        options.stale.as_ref().map(|o| &o.name),
        options.refresh_ahead.as_ref().map(|o| &o.name),
        options.xfetch.as_ref().map(|o| &o.name),
        options.fail_safe.as_ref().map(|o| &o.name),
        options.key.as_ref().map(|o| &o.name),
        options
            .companions
            .as_ref()
            .filter(|o| o.value)
            .map(|o| &o.name),
    ];
    for name in unsupported.into_iter().flatten() {
        errors.push(
            name.span(),
            format_args!("`{name}` is not supported on a `batch` function (yet)"),
        );
    }
    let batch = options
        .batch
        .as_ref()
        .map_or(func.sig.fn_token.span(), |b| b.name.span());
    if let Some(receiver) = func.receiver.as_ref().filter(|_| func.receiver_owned()) {
        errors.push_error(syn::Error::new_spanned(
            receiver,
            "a `batch` function may run its body twice, so it takes `&self`, not `self` by value",
        ));
    }
    let keys: Vec<_> = func.named().filter(|a| !options.skips(a.ident)).collect();
    match keys.as_slice() {
        [] => errors.push(
            batch,
            "a `batch` function takes its keys in one argument (`ids: &[u64]`); this one has \
             no key argument",
        ),
        [arg] => match batch_item(arg.ty) {
            Some(item) => check_key_type(item, errors),
            None => errors.push_error(syn::Error::new_spanned(
                arg.ty,
                "a `batch` function's key argument is a collection of keys: `&[K]`, `Vec<K>`, \
                 `&Vec<K>`, `HashSet<K>`, `BTreeSet<K>`, `&HashSet<K>` or `&BTreeSet<K>`",
            )),
        },
        [_, second, ..] => {
            // With one collection among them, the others are what to skip.
            let collections = keys.iter().filter(|a| batch_item(a.ty).is_some()).count();
            let others: Vec<_> = match collections {
                1 => keys.iter().filter(|a| batch_item(a.ty).is_none()).collect(),
                _ => vec![second],
            };
            for other in others {
                errors.push(
                    other.ident.span(),
                    format_args!(
                        "a `batch` function has one key argument, the collection of keys; `{}` \
                         would be a second: list it in `skip(...)`",
                        other.ident
                    ),
                );
            }
        }
    }
    if matches!(func.shape, crate::model::Shape::Opt)
        || matches!(&func.shape, crate::model::Shape::Res(inner) if !matches!(**inner, crate::model::Shape::Plain))
    {
        errors.push_error(syn::Error::new_spanned(
            &func.ret,
            "a `batch` function returns a map from key to value (`HashMap<K, V>`, `BTreeMap<K, V>`) \
             or a `Result` of one; a key it leaves out is the absence an `Option` would say",
        ));
    }
}

/// The key type of a batch argument's collection, if it is one a batch takes.
pub fn batch_item(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Reference(r) => match &*r.elem {
            Type::Slice(slice) => Some(&slice.elem),
            elem => batch_item(elem),
        },
        Type::Group(g) => batch_item(&g.elem),
        Type::Paren(p) => batch_item(&p.elem),
        Type::Path(p) if p.qself.is_none() => {
            let segment = p.path.segments.last()?;
            if !matches!(
                segment.ident.to_string().as_str(),
                "Vec" | "HashSet" | "BTreeSet"
            ) {
                return None;
            }
            match &segment.arguments {
                PathArguments::AngleBracketed(args) => args.args.iter().find_map(|a| match a {
                    GenericArgument::Type(t) => Some(t),
                    _ => None,
                }),
                _ => None,
            }
        }
        _ => None,
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

/// Each tag names key arguments or `self`: an entry's tags are a function of its key, so
/// that every write of it (a load, a `#[cache_put]`) carries the same ones.
fn check_tags(func: &Func, options: &Options, names: &str, errors: &mut Errors) {
    let Some(tags) = &options.tags else {
        return;
    };
    // With a `key` template, only what it puts in the key: `{q.page}` keys on that field
    // alone, and `self` is in the key only through its `{self.field}`s.
    let in_key = |root: &str, fields: &[String]| -> bool {
        match &options.key {
            Some(key) => key.value.parts.iter().any(|part| match part {
                crate::key::Part::Arg { root: r, fields: f } => {
                    r == root && fields.len() >= f.len() && fields[..f.len()] == f[..]
                }
                crate::key::Part::Text(_) => false,
            }),
            None => root != "self",
        }
    };
    for tag in &tags.value {
        for part in &tag.parts {
            let crate::key::Part::Arg { root, fields } = part else {
                continue;
            };
            let known = (root == "self" && func.receiver.is_some())
                || func.named().any(|a| a.ident == root);
            if known && !options.skipped().iter().any(|s| s == root) && !in_key(root, fields) {
                errors.push(
                    tag.lit.span(),
                    format_args!(
                        "`{{{}}}` in the tag is not part of the key: tags are rendered from what \
                         the key holds, so that every write of an entry carries the same tags; \
                         tag by a key argument (or put `{{{}}}` in `key`)",
                        std::iter::once(root.as_str())
                            .chain(fields.iter().map(String::as_str))
                            .collect::<Vec<_>>()
                            .join("."),
                        std::iter::once(root.as_str())
                            .chain(fields.iter().map(String::as_str))
                            .collect::<Vec<_>>()
                            .join("."),
                    ),
                );
                continue;
            }
        }
        for root in tag.roots() {
            if root == "self" && func.receiver.is_some() {
                continue;
            }
            match func.named().find(|a| a.ident == root) {
                Some(arg) if options.skips(arg.ident) => errors.push(
                    tag.lit.span(),
                    format_args!(
                        "`{{{root}}}` in the tag is skipped: tags are rendered from the key's \
                         arguments (or `self`), so that every write of an entry carries the same \
                         tags; key on it, or tag by another argument"
                    ),
                ),
                Some(_) => {}
                None => errors.push(
                    tag.lit.span(),
                    format_args!("`{{{root}}}` in the tag is not an argument; {names}"),
                ),
            }
        }
    }
}

/// The template names each key argument, and nothing else.
fn check_template(func: &Func, options: &Options, names: &str, errors: &mut Errors) {
    let Some(key) = &options.key else {
        return;
    };
    let template = &key.value;
    let span = template.lit.span();
    for root in template.roots() {
        if root == "self" && func.receiver.is_some() {
            continue;
        }
        match func.named().find(|a| a.ident == root) {
            Some(arg) if options.skips(arg.ident) => errors.push(
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
    for arg in func.named().filter(|a| !options.skips(a.ident)) {
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
mod tests;
