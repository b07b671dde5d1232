//! Test-only failpoints: a process started with `--failpoint <name>` (or
//! `SHOAL_FAILPOINT=<name>`) aborts when it reaches the named point, so tests
//! can kill a coordinator exactly half way through an operation. Unarmed, a
//! point costs one check, and points sit on admin paths only.

use std::sync::OnceLock;

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Arm a failpoint for this process (before any point is reached).
pub fn arm(name: String) {
    let _ = ARMED.set(Some(name));
}

/// Abort the process if the failpoint `name` is armed.
pub fn hit(name: &str) {
    let armed = ARMED.get_or_init(|| std::env::var("SHOAL_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
