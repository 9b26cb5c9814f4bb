//! Unit tests of the expansion's shape: what is emitted, not what it does (the ui and
//! integration tests run it).

use proc_macro2::TokenStream;
use quote::quote;

use super::cached;

fn expand(attr: TokenStream, item: TokenStream) -> String {
    cached(attr, item).to_string()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn a_method_and_its_companions_share_one_spec_static() {
    let method = expand(
        quote!(ttl = 60, cache = self.cache),
        quote!(
            async fn get(&self, id: u64) -> u64 {
                id
            }
        ),
    );
    assert_eq!(count(&method, "static SPEC"), 1, "{method}");
    assert_eq!(
        count(&method, "Self :: __cache_aside_spec_get ()"),
        6,
        "{method}"
    );
    let names_self = expand(
        quote!(ttl = 60),
        quote!(
            async fn make(id: u64) -> Option<Self> {
                None
            }
        ),
    );
    assert_eq!(count(&names_self, "static SPEC"), 1, "{names_self}");
    let alone = expand(
        quote!(ttl = 60, companions = false),
        quote!(
            async fn get(&self, id: u64) -> u64 {
                id
            }
        ),
    );
    assert_eq!(count(&alone, "static SPEC"), 1, "{alone}");
    assert_eq!(count(&alone, "__cache_aside_spec"), 0, "{alone}");
}

/// A function without a receiver or `Self` may be free or associated, and its siblings
/// are named differently in each: it keeps a static in each generated function.
#[test]
fn a_function_that_may_be_free_names_no_sibling() {
    let free = expand(
        quote!(ttl = 60),
        quote!(
            async fn get(id: u64) -> u64 {
                id
            }
        ),
    );
    assert_eq!(count(&free, "static SPEC"), 6, "{free}");
    assert_eq!(count(&free, "__cache_aside_spec"), 0, "{free}");
}

#[test]
fn the_spec_sibling_carries_the_functions_cfg() {
    let gated = expand(
        quote!(ttl = 60, cache = self.cache),
        quote!(
            #[cfg(feature = "x")]
            async fn get(&self, id: u64) -> u64 {
                id
            }
        ),
    );
    // The wrapper, five companions (two hidden) and the sibling.
    assert_eq!(count(&gated, "# [cfg (feature = \"x\")]"), 7, "{gated}");
}

#[test]
fn a_body_that_does_not_parse_keeps_the_wrapper_and_the_companions() {
    let out = expand(
        quote!(ttl = 60),
        quote!(async fn get(id: u64) -> u64 { id / ; }),
    );
    assert!(out.contains("get_or_load"), "{out}");
    assert!(out.contains("fn get_invalidate_all"), "{out}");
    assert!(!out.contains("compile_error"), "{out}");
}

#[test]
fn an_options_error_keeps_the_function_and_stubs_the_companions() {
    let out = expand(
        quote!(tll = 1),
        quote!(
            async fn get(id: u64) -> u64 {
                id
            }
        ),
    );
    assert_eq!(count(&out, "compile_error"), 1, "{out}");
    assert!(
        !out.contains("get_or_load") && !out.contains("static SPEC"),
        "{out}"
    );
    assert_eq!(count(&out, "unreachable"), 3, "{out}");
}

#[test]
fn another_item_is_told_where_cached_goes_and_a_broken_one_gets_syns_error() {
    let other = expand(
        quote!(ttl = 60),
        quote!(
            struct S;
        ),
    );
    assert!(other.contains("goes on an `async fn`"), "{other}");
    let broken = expand(quote!(ttl = 60), quote!(async fn get(id: ) -> u64 { id }));
    assert!(!broken.contains("goes on an `async fn`"), "{broken}");
    assert_eq!(count(&broken, "compile_error"), 1, "{broken}");
}

#[test]
fn every_option_reaches_the_spec() {
    let out = expand(
        quote!(
            ttl = 60,
            none_ttl = "30s",
            stale = "5m",
            refresh_ahead = 0.8,
            xfetch = 1.5,
            fail_safe = "1h",
            jitter = 0.1,
            lock = true,
            timeout = "50ms",
            flight_wait = 2,
            max_value_bytes = 1024,
            on_cache_error = "fail",
            companions = false
        ),
        quote!(
            async fn get(id: u64) -> Result<Option<u64>, E> {
                Ok(Some(id))
            }
        ),
    );
    for setter in [
        ". ttl_ms (60000u64)",
        ". none_ttl_ms (30000u64)",
        ". stale_ms (300000u64)",
        ". refresh_ahead (0.8)",
        ". xfetch (1.5)",
        ". fail_safe_ms (3600000u64)",
        ". jitter (0.1)",
        ". lock (true)",
        ". timeout_ms (50u64)",
        ". flight_wait_ms (2000u64)",
        ". max_value_bytes (1024u64)",
    ] {
        assert_eq!(count(&out, setter), 1, "{setter} in {out}");
    }
    let bare = expand(
        quote!(stale, refresh_ahead),
        quote!(
            async fn get() -> u64 {
                1
            }
        ),
    );
    assert!(
        bare.contains(". stale_from_cache ()") && bare.contains(". refresh_ahead_from_cache ()")
    );
}

#[test]
fn a_batch_and_a_one_key_function_name_the_same_tags_alike() {
    let one = expand(
        quote!(
            ttl = 60,
            prefix = "user",
            tags = ["user:{id}", "all", "user:{id}"]
        ),
        quote!(
            async fn get(id: u64) -> u64 {
                id
            }
        ),
    );
    let batch = expand(
        quote!(
            batch,
            ttl = 60,
            prefix = "user",
            tags = ["all", "user:{ids}"]
        ),
        quote!(
            async fn get_all(ids: &[u64]) -> std::collections::HashMap<u64, u64> {
                ids.iter().map(|&id| (id, id)).collect()
            }
        ),
    );
    let signature = r#". tags ("all\nuser:{}")"#;
    assert!(one.contains(signature), "{one}");
    assert!(batch.contains(signature), "{batch}");
    let fields = expand(
        quote!(batch, ttl = 60, tags = ["team:{ms.team}:role:{ms.role.0}"]),
        quote!(
            async fn seats(ms: &[M]) -> std::collections::HashMap<M, u64> {
                Default::default()
            }
        ),
    );
    assert!(
        fields.contains(r#". tags ("team:{.team}:role:{.role.0}")"#),
        "{fields}"
    );
}
