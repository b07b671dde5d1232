//! A short randomized chaos run (issue #6): 3 nodes, 2 routers, real etcd;
//! register, bank and move workloads, and the lock and rate-limiter scripts
//! (issue 19) when the router runs EVAL, while nodes are killed, paused and
//! restarted, leaders killed, a router replaced, etcd restarted and the
//! network partitioned (nodes isolated, split, routers cut off); then every
//! checker. The seed is printed; `CHAOS_SEED=<n>`
//! repeats it, `CHAOS_SECONDS=<n>` changes the length (default 75).

use std::time::Duration;

use shoal_chaos::{self as chaos, RunConfig};

#[test]
fn short_randomized_chaos_run_passes_every_check() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::random::<u32>() as u64);
    let secs = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(75);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = RunConfig::new(env!("CARGO_BIN_EXE_shoal"), seed, Duration::from_secs(secs));
    cfg.out_dir = std::env::var_os("CHAOS_OUT")
        .map(Into::into)
        .unwrap_or_else(|| out.path().to_path_buf());
    let report = chaos::run(&cfg).expect("the chaos harness runs");
    println!("{report}");
    if !report.passed() {
        // Keep the saved history for the replay the report prints.
        let _ = out.keep();
    }
    assert!(
        report.passed(),
        "chaos run with seed {seed} found problems (rerun: CHAOS_SEED={seed} cargo test --test chaos):\n{report}"
    );
    assert!(report.ops > 100, "too few operations: {report}");
    assert!(report.faults.total() > 0, "no fault injected: {report}");
    assert!(report.keys_checked > 0 && report.final_reads_checked > 0);
    assert!(
        report.moves && report.move_snapshots_checked > 0 && report.moves_done > 0,
        "the move workload did not run: {report}"
    );
    if report.locks {
        assert!(
            report.locks_held > 0 && report.lock_releases_done > 0,
            "no lock was held and released: {report}"
        );
    }
    if report.limiter {
        assert!(
            report.limiter_admitted > 0 && report.limiter_rejected > 0,
            "the limiter admitted or rejected nothing: {report}"
        );
    }
}
