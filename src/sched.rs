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
    // SAFETY: no arguments but the calling thread (pid 0).
    match unsafe { libc::sched_getscheduler(0) } {
        -1 => Err(io::Error::last_os_error()),
        libc::SCHED_OTHER | libc::SCHED_BATCH => set_for_thread(policy).map(|()| Applied::Set),
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

/// Put the calling thread under `policy`.
pub fn set_for_thread(policy: CpuPolicy) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler only reads the struct it is given; pid 0
    // is the calling thread.
    if unsafe { libc::sched_setscheduler(0, linux(policy), &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's policy.
pub fn current() -> io::Result<Option<CpuPolicy>> {
    // SAFETY: no arguments but the calling thread (pid 0).
    match unsafe { libc::sched_getscheduler(0) } {
        -1 => Err(io::Error::last_os_error()),
        libc::SCHED_BATCH => Ok(Some(CpuPolicy::Batch)),
        libc::SCHED_OTHER => Ok(Some(CpuPolicy::Normal)),
        _ => Ok(None),
    }
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
            set_for_thread(CpuPolicy::Batch).unwrap();
            assert_eq!(current().unwrap(), Some(CpuPolicy::Batch));
            let child = std::thread::spawn(|| current().unwrap()).join().unwrap();
            assert_eq!(child, Some(CpuPolicy::Batch));
            set_for_thread(CpuPolicy::Normal).unwrap();
            let child = std::thread::spawn(|| current().unwrap()).join().unwrap();
            assert_eq!(child, Some(CpuPolicy::Normal));
        })
        .join()
        .unwrap();
    }

    /// A policy set from outside (here SCHED_IDLE, which needs no
    /// privilege) is kept; batch and normal replace each other.
    #[test]
    fn a_policy_set_from_outside_is_kept() {
        std::thread::spawn(|| {
            assert_eq!(apply(CpuPolicy::Batch).unwrap(), Applied::Set);
            assert_eq!(current().unwrap(), Some(CpuPolicy::Batch));
            assert_eq!(apply(CpuPolicy::Normal).unwrap(), Applied::Set);
            assert_eq!(current().unwrap(), Some(CpuPolicy::Normal));
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as in set_for_thread.
            assert_eq!(
                unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) },
                0
            );
            assert_eq!(
                apply(CpuPolicy::Batch).unwrap(),
                Applied::Kept(libc::SCHED_IDLE)
            );
            assert_eq!(current().unwrap(), None, "still SCHED_IDLE");
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
