//! The CPU scheduling policy of a node's or router's threads.
//!
//! A node hands each request between a few threads (its async workers, its
//! log writer, the peers' and the router's processes) that each run for a
//! few microseconds and then wait. Under Linux's default policy
//! (`SCHED_OTHER`) a thread that wakes may preempt the one running, so on a
//! machine whose cores are busy a worker is often switched out in the
//! middle of a batch by the thread it just woke, and switched back later:
//! two context switches for nothing, and a smaller batch. `SCHED_BATCH`
//! tells the kernel these threads are throughput work: a waking thread
//! waits for the running one to block or use up its slice, instead of
//! preempting it. Priorities and nice values are unchanged, and no
//! privilege is needed. Measured in docs/PERFORMANCE.md ("Fast path, step:
//! SCHED_BATCH").
//!
//! The policy is set on the main thread before the async runtime and
//! RocksDB start their threads: threads inherit it from the thread that
//! creates them, so every thread of the process runs under it.
//! `cpu_policy = "normal"` (or `--cpu-policy normal`) keeps the default.
//! A process started under another policy (an operator's `chrt`: real-time,
//! idle) keeps it.

use std::io;
use std::sync::OnceLock;

pub use crate::config::CpuPolicy;

/// Linux's constant for `policy`.
fn linux(policy: CpuPolicy) -> libc::c_int {
    match policy {
        CpuPolicy::Batch => libc::SCHED_BATCH,
        CpuPolicy::Normal => libc::SCHED_OTHER,
    }
}

/// `policy` as the log says it.
fn describe(policy: CpuPolicy) -> &'static str {
    match policy {
        CpuPolicy::Batch => "batch (SCHED_BATCH)",
        CpuPolicy::Normal => "normal (SCHED_OTHER)",
    }
}

/// What [`set_for_process`] did, for [`log_outcome`] once logging runs.
static OUTCOME: OnceLock<(CpuPolicy, io::Result<Applied>)> = OnceLock::new();

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The thread now runs under the policy asked for.
    Set,
    /// The thread ran under another policy than `SCHED_OTHER` or
    /// `SCHED_BATCH` (an operator's `chrt`: real-time, idle...), left as
    /// it was (Linux's number for it).
    Kept(libc::c_int),
}

/// Put the calling thread under `policy`, unless it runs under a policy
/// shoal does not choose between (see [`Applied::Kept`]).
pub fn apply(policy: CpuPolicy) -> io::Result<Applied> {
    match thread_policy()? {
        libc::SCHED_OTHER | libc::SCHED_BATCH => {
            set_thread_policy(linux(policy)).map(|()| Applied::Set)
        }
        other => Ok(Applied::Kept(other)),
    }
}

/// [`apply`] `policy` to the calling thread; threads it creates afterwards
/// inherit it. Call first thing in `main`, before any other thread starts.
/// A failure (a sandbox that forbids `sched_setscheduler`) leaves the
/// policy as it was and is logged by [`log_outcome`]; it never stops the
/// process.
pub fn set_for_process(policy: CpuPolicy) {
    let _ = OUTCOME.set((policy, apply(policy)));
}

/// The calling thread's policy (Linux's number).
fn thread_policy() -> io::Result<libc::c_int> {
    // SAFETY: no arguments but the calling thread (pid 0).
    match unsafe { libc::sched_getscheduler(0) } {
        -1 => Err(io::Error::last_os_error()),
        policy => Ok(policy),
    }
}

/// Put the calling thread under `policy` (Linux's number, priority 0).
fn set_thread_policy(policy: libc::c_int) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler only reads the struct it is given; pid 0
    // is the calling thread.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Log what [`set_for_process`] did (after logging is set up).
pub fn log_outcome() {
    match OUTCOME.get() {
        Some((policy, Ok(Applied::Set))) => {
            tracing::info!("CPU scheduling policy: {}", describe(*policy))
        }
        Some((policy, Ok(Applied::Kept(other)))) => tracing::info!(
            "CPU scheduling policy {other} (set from outside) kept; cpu_policy {} not applied",
            describe(*policy)
        ),
        Some((policy, Err(e))) => tracing::warn!(
            "cannot set the CPU scheduling policy {}: {e}; the threads keep the default",
            describe(*policy)
        ),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread put under a policy has it, and the threads it starts
    /// afterwards inherit it (which is how a whole process gets it).
    #[test]
    fn threads_started_after_the_policy_inherit_it() {
        std::thread::spawn(|| {
            let child = || {
                std::thread::spawn(|| thread_policy().unwrap())
                    .join()
                    .unwrap()
            };
            assert_eq!(apply(CpuPolicy::Batch).unwrap(), Applied::Set);
            assert_eq!(thread_policy().unwrap(), libc::SCHED_BATCH);
            assert_eq!(child(), libc::SCHED_BATCH);
            assert_eq!(apply(CpuPolicy::Normal).unwrap(), Applied::Set);
            assert_eq!(thread_policy().unwrap(), libc::SCHED_OTHER);
            assert_eq!(child(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    /// A policy set from outside (here SCHED_IDLE, which needs no
    /// privilege) is kept.
    #[test]
    fn a_policy_set_from_outside_is_kept() {
        std::thread::spawn(|| {
            set_thread_policy(libc::SCHED_IDLE).unwrap();
            assert_eq!(
                apply(CpuPolicy::Batch).unwrap(),
                Applied::Kept(libc::SCHED_IDLE)
            );
            assert_eq!(thread_policy().unwrap(), libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn config_names_are_lowercase() {
        use serde::Deserialize;
        #[derive(Deserialize)]
        struct C {
            cpu_policy: CpuPolicy,
        }
        let c: C = toml::from_str("cpu_policy = \"normal\"").unwrap();
        assert_eq!(c.cpu_policy, CpuPolicy::Normal);
        let c: C = toml::from_str("cpu_policy = \"batch\"").unwrap();
        assert_eq!(c.cpu_policy, CpuPolicy::Batch);
        assert!(toml::from_str::<C>("cpu_policy = \"fifo\"").is_err());
    }
}
