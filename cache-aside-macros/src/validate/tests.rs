//! Unit tests of the rules: each mistake reported once, in the order it is written.

use proc_macro2::TokenStream;
use quote::quote;

use super::*;

fn check(attr: TokenStream, item: TokenStream) -> Vec<String> {
    let mut errors = Errors::default();
    let options = crate::options::parse(attr, &mut errors);
    let func: Func = syn::parse2(item).unwrap();
    validate(&func, &options, &mut errors);
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
