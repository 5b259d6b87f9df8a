//! `#[derive(Event)]`: the keys and names of derived events, and the compile errors of
//! wrong ones (trybuild snapshots in `ui/`).

mod keys;

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/derive/ui/pass/*.rs");
    cases.compile_fail("tests/derive/ui/fail/*.rs");
}
