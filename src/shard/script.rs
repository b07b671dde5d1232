//! Scripts on a shard's leader (EVAL, FCALL): the request
//! ([`super::command::ScriptCall`]),
//! the runner the node is given ([`ScriptRunner`]: the Lua VM and the
//! command table live above this layer), and the view a running script
//! reads and writes through ([`ScriptRun`]).
//!
//! A script runs against the group's state as the leader has applied it,
//! plus its own writes, kept apart in an overlay. Every key it touches is
//! recorded with the version it had. The host then proposes the writes as
//! one one-phase transaction that WATCHes those versions: the entry applies
//! only onto the state the script saw, else nothing is applied and the
//! script runs again. Replicas apply the writes (effects replication, as in
//! Redis 7) and never run the script, so its randomness and clock do not
//! reach the state machine. A read-only script checks its versions again
//! after it ran instead.
//!
//! What is not covered: reads of the whole group (KEYS, SCAN, DBSIZE) are
//! not versioned, so a script that scans sees a scan, not a snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;

use super::apply::{admit, apply_op, apply_read};
use super::command::{Limits, OpReply, ScriptCall, TxnOp, Watch, WriteCmd, WriteOp};
use super::elements::{Layer, Range, ReadView};
use super::txn::version_of;
use super::value::{Corrupt, Stored};

/// What runs scripts on the node: given the call and the view, answers the
/// script's reply. `kill` is set by SCRIPT KILL (or a stopping node): the
/// script must stop soon after.
pub trait ScriptRunner: Send + Sync + 'static {
    fn run(&self, call: &ScriptCall, exec: &mut dyn ScriptExec, kill: &Arc<AtomicBool>) -> OpReply;
}

/// The operations a running script may ask of its shard.
pub trait ScriptExec {
    /// Run one operation over the state as the script sees it. A write is
    /// checked against the node's limits first; a refusal is its reply.
    fn op(&mut self, op: TxnOp) -> OpReply;
}

/// Most bytes of writes one script may make: they become one Raft entry.
pub const MAX_SCRIPT_WRITE_BYTES: usize = 64 * 1024 * 1024;

/// Most operations one script may run.
pub const MAX_SCRIPT_OPS: usize = 10_000_000;

/// A view that records the version of every key read through it (the
/// first read of each key), as the script's WATCH set.
pub struct Recording<'a> {
    base: &'a mut dyn ReadView,
    now_ms: u64,
    pub versions: BTreeMap<Bytes, u64>,
}

impl<'a> Recording<'a> {
    pub fn new(base: &'a mut dyn ReadView, now_ms: u64) -> Recording<'a> {
        Recording {
            base,
            now_ms,
            versions: BTreeMap::new(),
        }
    }

    /// The recorded versions, as a transaction's watches.
    pub fn watches(&self) -> Vec<Watch> {
        self.versions.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

impl ReadView for Recording<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Stored>, Corrupt> {
        let v = self.base.get(key)?;
        if !self.versions.contains_key(key) {
            self.versions.insert(
                Bytes::copy_from_slice(key),
                version_of(v.as_ref(), self.now_ms),
            );
        }
        Ok(v)
    }

    fn sub_get(&mut self, key: &[u8], gen: u64, elem: &[u8]) -> Result<Option<Bytes>, Corrupt> {
        self.base.sub_get(key, gen, elem)
    }

    fn sub_range(&mut self, q: &Range<'_>) -> Result<Vec<(Bytes, Bytes)>, Corrupt> {
        self.base.sub_range(q)
    }
}

/// One run of a script: its reads and writes over a [`Recording`] view.
pub struct ScriptRun<'a> {
    layer: Layer<'a>,
    now_ms: u64,
    limits: Limits,
    max_reply: usize,
    /// The writes run, in order: the transaction to propose.
    pub writes: Vec<WriteOp>,
    bytes: usize,
    ops: usize,
}

/// The log index the dry run stamps its writes with (versions and
/// generations it creates live only in the run's overlay).
const DRY_RUN_INDEX: u64 = 1 << 62;

impl<'a> ScriptRun<'a> {
    pub fn new(
        view: &'a mut Recording<'_>,
        now_ms: u64,
        limits: Limits,
        max_reply: usize,
    ) -> ScriptRun<'a> {
        ScriptRun {
            layer: Layer::new(view),
            now_ms,
            limits,
            max_reply,
            writes: Vec::new(),
            bytes: 0,
            ops: 0,
        }
    }
}

impl ScriptExec for ScriptRun<'_> {
    fn op(&mut self, op: TxnOp) -> OpReply {
        self.ops += 1;
        if self.ops > MAX_SCRIPT_OPS {
            return OpReply::Error(format!(
                "ERR a script may run at most {MAX_SCRIPT_OPS} commands"
            ));
        }
        match op {
            TxnOp::Read(r) => apply_read(&r, self.now_ms, self.max_reply, &mut self.layer)
                .unwrap_or_else(|c| c.reply()),
            TxnOp::Write(mut w) => {
                if let Err(refused) = admit(&mut w, &self.limits) {
                    return refused;
                }
                let size = w.value_len() + 16;
                if self.bytes.saturating_add(size) > MAX_SCRIPT_WRITE_BYTES {
                    return OpReply::Error(format!(
                        "ERR a script's writes may total at most {MAX_SCRIPT_WRITE_BYTES} bytes (one Raft entry)"
                    ));
                }
                // Record the version of every key the write touches, read
                // or not (a blind SET must still find the key unchanged).
                for k in w.keys() {
                    if self.layer.ov.key(k).is_none() {
                        if let Err(c) = self.layer.base.get(k) {
                            return c.reply();
                        }
                    }
                }
                let cmd = WriteCmd {
                    now_ms: self.now_ms,
                    op: w,
                };
                let reply = apply_op(&cmd, DRY_RUN_INDEX, &mut self.layer);
                // A refused write changed nothing: nothing to replay.
                if !matches!(reply, OpReply::Error(_)) {
                    self.bytes += size;
                    self.writes.push(cmd.op);
                }
                reply
            }
        }
    }
}

/// How long a script runs before other scripts on its group are answered
/// `-BUSY` (Redis's `busy-reply-threshold` default).
pub const BUSY_AFTER: std::time::Duration = std::time::Duration::from_millis(5000);

pub const ERR_BUSY: &str =
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";

/// The node's script runner and the scripts running now (for SCRIPT KILL
/// and `-BUSY`).
#[derive(Default)]
pub struct Scripts {
    runner: std::sync::OnceLock<Arc<dyn ScriptRunner>>,
    running: std::sync::Mutex<std::collections::HashMap<u64, Running>>,
    next: std::sync::atomic::AtomicU64,
}

struct Running {
    gid: u64,
    started: std::time::Instant,
    kill: Arc<AtomicBool>,
}

/// A running script's entry; removed when dropped.
pub struct RunGuard<'a> {
    scripts: &'a Scripts,
    id: u64,
    pub kill: Arc<AtomicBool>,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.scripts.running.lock() {
            r.remove(&self.id);
        }
    }
}

impl Scripts {
    /// Give the node its runner (once; later calls are ignored).
    pub fn set_runner(&self, runner: Arc<dyn ScriptRunner>) {
        let _ = self.runner.set(runner);
    }

    pub fn runner(&self) -> Option<Arc<dyn ScriptRunner>> {
        self.runner.get().cloned()
    }

    /// Note a script starting on `gid`; `Err(-BUSY)` while another has run
    /// there for longer than [`BUSY_AFTER`].
    pub fn start(&self, gid: u64) -> Result<RunGuard<'_>, OpReply> {
        use std::sync::atomic::Ordering;
        let mut running = self
            .running
            .lock()
            .map_err(|_| OpReply::Error("ERR script registry poisoned".into()))?;
        if running
            .values()
            .any(|r| r.gid == gid && r.started.elapsed() > BUSY_AFTER)
        {
            return Err(OpReply::Error(ERR_BUSY.into()));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let kill = Arc::new(AtomicBool::new(false));
        running.insert(
            id,
            Running {
                gid,
                started: std::time::Instant::now(),
                kill: kill.clone(),
            },
        );
        Ok(RunGuard {
            scripts: self,
            id,
            kill,
        })
    }

    /// Stop the scripts running on `gid`: how many were told to.
    pub fn kill(&self, gid: u64) -> usize {
        let Ok(running) = self.running.lock() else {
            return 0;
        };
        running
            .values()
            .filter(|r| r.gid == gid)
            .map(|r| r.kill.store(true, std::sync::atomic::Ordering::SeqCst))
            .count()
    }
}
