//! Compile-time behaviour of `#[cached]`: what it accepts (`ui/pass`) and the diagnostics
//! for what it rejects (`ui/fail`, with `.stderr` goldens made by the pinned toolchain).
//!
//! Regenerate the goldens with `TRYBUILD=overwrite cargo test -p cache-aside-tests --test ui`
//! and review every change.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
