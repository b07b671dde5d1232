//! Helpers shared by the crate's unit tests (compiled only for tests).

/// proptest settings: `cases` cases (or `PROPTEST_CASES` for a deeper run),
/// no regression files (a failure prints the shrunk input, which becomes a
/// named regression test).
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
