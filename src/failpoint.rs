//! Test-only failpoints: a process started with `--failpoint <name>` (or
//! `SHOAL_FAILPOINT=<name>`) aborts when it reaches the named point ([`hit`]),
//! so tests can kill a coordinator exactly half way through an operation, or
//! misbehaves while [`armed`] (e.g. corrupts the snapshots it sends).
//! Unarmed, a point costs one check of a static.

use std::sync::OnceLock;

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Arm a failpoint for this process (before any point is reached).
pub fn arm(name: String) {
    let _ = ARMED.set(Some(name));
}

/// Abort the process if the failpoint `name` is armed.
pub fn hit(name: &str) {
    if armed(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// Whether the point `name` is armed (for points that misbehave rather
/// than abort).
pub fn armed(name: &str) -> bool {
    ARMED
        .get_or_init(|| std::env::var("SHOAL_FAILPOINT").ok())
        .as_deref()
        == Some(name)
}
