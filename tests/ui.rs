//! Every diagnostic of the attribute, pinned with its exact text and span.

#[test]
fn diagnostics() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
