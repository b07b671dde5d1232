//! redis-py against a real cluster (three nodes, three shards, three
//! replicas, two routers): Debian's `python3-redis` (4.3.4, RESP2, installed
//! by `scripts/setup`) runs the scripts in `tests/redis_compat/py/`, one per
//! type or use (strings, hashes, lists, sets, sorted sets, bitmaps, expiry,
//! pipelines with MULTI/EXEC and WATCH, the scan iterators, a leaderboard,
//! a job queue with producers on one router and BRPOP workers on the
//! other, and scripts: register_script, redis-py's Lock and functions
//! across the two routers). Each script checks its own replies and exits non-zero with a
//! message on the first mismatch; this test runs them all and reports every
//! failing script with its stderr.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{cluster, extra_router};

/// Scripts that take the router's address.
const SCRIPTS: &[&str] = &[
    "strings",
    "hashes",
    "lists",
    "sets",
    "sorted_sets",
    "bitmaps",
    "expiry",
    "pipelines",
    "scans",
    "leaderboard",
];

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/redis_compat/py")
}

/// A Python 3 that imports `redis`: the system one first (Debian installs
/// python3-redis for /usr/bin/python3; a pyenv or venv python3 earlier on
/// PATH does not see it), then `python3` on PATH. Fails, never skips, when
/// there is none.
fn python_with_redis() -> String {
    let mut tried = Vec::new();
    for python in ["/usr/bin/python3", "python3"] {
        let out = Command::new(python)
            .args(["-c", "import redis; print(redis.__version__)"])
            .env_remove("LD_LIBRARY_PATH")
            .output();
        match out {
            Ok(o) if o.status.success() => {
                eprintln!(
                    "{python}: redis-py {}",
                    String::from_utf8_lossy(&o.stdout).trim()
                );
                return python.to_string();
            }
            Ok(o) => tried.push(format!(
                "{python}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => tried.push(format!("{python}: {e}")),
        }
    }
    panic!(
        "no python3 with the redis package (Debian: python3-redis); \
         run scripts/setup.\n{}",
        tried.join("\n")
    );
}

/// Run one script with `args`; `Err` holds its exit status and output.
fn run_script(python: &str, name: &str, args: &[&str]) -> Result<(), String> {
    let t = Instant::now();
    let out = Command::new(python)
        .arg(scripts_dir().join(format!("{name}.py")))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .map_err(|e| format!("{name}.py: cannot run {python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{name}.py: {} in {:?}", out.status, t.elapsed());
    if out.status.success() && stdout.trim() == "ok" {
        return Ok(());
    }
    Err(format!(
        "{name}.py {args:?}: {}\n--- stdout\n{stdout}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn redis_py() {
    let started = Instant::now();
    let python = python_with_redis();
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 3, 3, 3);
    let a = cl.router_addr();
    let (b, _router_b) = extra_router(&cl, &dir.path().join("router-b"), "", &[]);
    eprintln!("cluster and two routers up after {:?}", started.elapsed());

    let mut failed = Vec::new();
    for name in SCRIPTS {
        if let Err(e) = run_script(&python, name, &[&a]) {
            failed.push(e);
        }
    }
    // Producers on router A, workers blocked on router B; scripts and
    // functions across both.
    for name in ["job_queue", "scripts"] {
        if let Err(e) = run_script(&python, name, &[&a, &b]) {
            failed.push(e);
        }
    }
    assert!(
        failed.is_empty(),
        "{} redis-py script(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    eprintln!("done after {:?}", started.elapsed());
}
