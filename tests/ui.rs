//! Compile-time errors of the macros, as users see them: one error per file
//! under `tests/ui/<macro>/`, listed in `tests/ui/README.md`.
//! Regenerate the expected output with `TRYBUILD=overwrite` and review it.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/stage/*.rs");
    t.compile_fail("tests/ui/pipe/*.rs");
    t.compile_fail("tests/ui/segment/*.rs");
    // Distributed pipelines: what the `nats` feature refuses, and the
    // error without it.
    #[cfg(feature = "nats")]
    t.compile_fail("tests/ui/nats/*.rs");
    #[cfg(not(feature = "nats"))]
    t.compile_fail("tests/ui/nats_off/*.rs");
    // Async stages: what the `async` feature refuses, and the error
    // without it.
    #[cfg(feature = "async")]
    t.compile_fail("tests/ui/async/*.rs");
    #[cfg(not(feature = "async"))]
    t.compile_fail("tests/ui/async_off/*.rs");
}
