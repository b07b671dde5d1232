//! The router as transaction manager (DESIGN section 6).
//!
//! [`execute`] runs a write transaction given as per-shard work:
//! * one shard: a single one-phase Raft entry (WATCH check, lock check, the
//!   operations in order);
//! * several shards: two-phase commit. The decision record `txns/<id>` is
//!   written in etcd as `pending`; every participant PREPAREs (checks
//!   versions and locks, locks the keys, stages the operations, votes); the
//!   compare-and-swap of the record to `committed` (all voted yes) or
//!   `aborted` is the commit point; then COMMIT/ABORT on every participant,
//!   and the record is deleted. A coordinator dying anywhere leaves the rest
//!   to the participants' recovery (`node::txn_recovery`).
//!
//! [`snapshot_read`] serves read-only transactions without locks, by the
//! DynamoDB TransactGet scheme: read every key with its version, give up if a
//! key is locked, read the versions again and accept only if nothing changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::client::ShardClient;
use super::routes::TableRoute;
use super::ClusterError;
use crate::clock::now_ms;
use crate::meta::etcd::{Meta, Participant, TxnRecord, TxnState};
use crate::shard::command::{OpReply, ShardRequest};
use crate::shard::command::{TxnCmd, TxnEntry, TxnOp, Watch};
use crate::shard::value::Stored;

/// The part of a transaction on one shard: operations tagged with their
/// position in the transaction, and the WATCHed keys this shard owns.
#[derive(Debug, Clone)]
pub struct ShardWork {
    pub table: Arc<TableRoute>,
    pub shard: usize,
    pub ops: Vec<(usize, TxnOp)>,
    pub watches: Vec<Watch>,
}

impl ShardWork {
    fn gid(&self) -> u64 {
        self.table.desc.shards[self.shard].group_id
    }
}

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied; one reply per operation, in transaction order.
    Committed(Vec<OpReply>),
    /// A WATCHed key changed or a key was locked: nothing applied.
    Conflict,
}

/// Counters for INFO and the metrics.
#[derive(Default)]
pub struct TxnStats {
    pub committed: AtomicU64,
    pub aborted: AtomicU64,
    pub conflicts: AtomicU64,
    pub one_phase: AtomicU64,
    /// By path (one-phase, 2PC) and outcome (committed, conflict, failed).
    by_path: [[AtomicU64; 3]; 2],
}

/// The paths a transaction takes, as the metrics name them.
pub const TXN_PATHS: [&str; 2] = ["one_phase", "two_phase"];
/// The outcomes, as the metrics name them.
pub const TXN_OUTCOMES: [&str; 3] = ["committed", "conflict", "failed"];

impl TxnStats {
    fn note(&self, two_phase: bool, outcome: usize) {
        self.by_path[two_phase as usize][outcome].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of transactions along `TXN_PATHS[path]` that ended in
    /// `TXN_OUTCOMES[outcome]`.
    pub fn by_path(&self, path: usize, outcome: usize) -> u64 {
        self.by_path[path][outcome].load(Ordering::Relaxed)
    }
}

const COMMITTED: usize = 0;
const CONFLICT: usize = 1;
const FAILED: usize = 2;

fn entry(cmd: TxnCmd) -> ShardRequest {
    ShardRequest::Txn(TxnEntry {
        now_ms: now_ms(),
        cmd,
    })
}

/// Run a write transaction of `n_ops` operations spread over `work`.
pub async fn execute(
    client: &ShardClient,
    meta: &Meta,
    work: Vec<ShardWork>,
    n_ops: usize,
    stats: &TxnStats,
) -> Result<Outcome, ClusterError> {
    let mut replies = vec![OpReply::Nil; n_ops];
    if work.len() == 1 {
        let w = &work[0];
        let cmd = TxnCmd::OnePhase {
            ops: w.ops.iter().map(|(_, op)| op.clone()).collect(),
            watches: w.watches.clone(),
        };
        let reply = client.execute(&w.table, w.shard, entry(cmd)).await;
        let reply = reply.inspect_err(|_| stats.note(false, FAILED))?;
        stats.one_phase.fetch_add(1, Ordering::Relaxed);
        return match reply {
            OpReply::Array(rs) => {
                place(&mut replies, &w.ops, rs)?;
                stats.committed.fetch_add(1, Ordering::Relaxed);
                stats.note(false, COMMITTED);
                Ok(Outcome::Committed(replies))
            }
            // Refused before proposing, or a corrupt record: nothing ran.
            OpReply::Error(e) => {
                stats.note(false, FAILED);
                Err(ClusterError::Refused(e))
            }
            _ => {
                stats.conflicts.fetch_add(1, Ordering::Relaxed);
                stats.note(false, CONFLICT);
                Ok(Outcome::Conflict)
            }
        };
    }

    // a. The decision record, pending.
    let mut keys: Vec<String> = work
        .iter()
        .flat_map(|w| w.ops.iter().flat_map(|(_, op)| op.keys()))
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .collect();
    keys.sort();
    keys.dedup();
    let participants = work
        .iter()
        .map(|w| Participant {
            table: w.table.desc.name.clone(),
            group_id: w.gid(),
        })
        .collect();
    let mut record = TxnRecord {
        txn_id: 0,
        state: TxnState::Pending,
        participants,
        keys,
        created_at: now_ms(),
    };
    loop {
        record.txn_id = rand::random::<u64>().max(1);
        if meta.create_txn(&record).await? {
            break;
        }
    }
    let txn_id = record.txn_id;

    // b. PREPARE everywhere, in parallel.
    let prepares = work.iter().map(|w| {
        let cmd = TxnCmd::Prepare {
            txn_id,
            ops: w.ops.iter().map(|(_, op)| op.clone()).collect(),
            watches: w.watches.clone(),
        };
        client.execute(&w.table, w.shard, entry(cmd))
    });
    let votes = futures::future::join_all(prepares).await;
    let mut failure = None;
    let mut all_yes = true;
    for v in &votes {
        match v {
            Ok(OpReply::Int(1)) => {}
            Ok(OpReply::Error(e)) => {
                all_yes = false;
                failure.get_or_insert_with(|| ClusterError::Refused(e.clone()));
            }
            Ok(_) => all_yes = false,
            Err(e) => {
                all_yes = false;
                failure.get_or_insert_with(|| e.clone());
            }
        }
    }
    crate::failpoint::hit("txn-after-prepare");

    // c. The commit point.
    let wanted = if all_yes {
        TxnState::Committed
    } else {
        TxnState::Aborted
    };
    let decided = meta
        .decide_txn(txn_id, wanted)
        .await?
        .unwrap_or(TxnState::Aborted);
    crate::failpoint::hit("txn-after-commit-point");

    // d. COMMIT or ABORT everywhere; the first one alone, so a test can stop
    // the coordinator half way through.
    let finish = |w: ShardWork| async move {
        let cmd = if decided == TxnState::Committed {
            TxnCmd::Commit { txn_id }
        } else {
            TxnCmd::Abort { txn_id }
        };
        client.execute(&w.table, w.shard, entry(cmd)).await
    };
    let first = finish(work[0].clone()).await;
    crate::failpoint::hit("txn-mid-commit");
    let rest = futures::future::join_all(work[1..].iter().cloned().map(finish)).await;
    let results: Vec<_> = std::iter::once(first).chain(rest).collect();
    let all_done = results.iter().all(|r| r.is_ok());
    if all_done {
        // Best effort: recovery never needs a record whose participants
        // have all finished.
        let _ = meta.delete_txn(txn_id).await;
    }

    if decided != TxnState::Committed {
        stats.aborted.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = failure {
            stats.note(true, FAILED);
            return Err(e);
        }
        stats.conflicts.fetch_add(1, Ordering::Relaxed);
        stats.note(true, CONFLICT);
        return Ok(Outcome::Conflict);
    }
    stats.committed.fetch_add(1, Ordering::Relaxed);
    stats.note(true, COMMITTED);
    for (w, r) in work.iter().zip(results) {
        match r {
            Ok(OpReply::Array(rs)) => place(&mut replies, &w.ops, rs)?,
            // This shard could not run its part (a corrupt prepared record):
            // say so rather than "replies lost".
            Ok(OpReply::Error(e)) => return Err(ClusterError::Refused(e)),
            // Committed, but this shard's replies are not to be had (it was
            // committed by recovery meanwhile, or is unreachable now).
            Ok(_) | Err(_) => {
                return Err(ClusterError::TryAgain(format!(
                    "transaction {txn_id} is committed, but the replies of shard {} of table {} were lost; read the keys again",
                    w.shard, w.table.desc.name
                )))
            }
        }
    }
    Ok(Outcome::Committed(replies))
}

fn place(
    replies: &mut [OpReply],
    ops: &[(usize, TxnOp)],
    got: Vec<OpReply>,
) -> Result<(), ClusterError> {
    if got.len() != ops.len() {
        return Err(ClusterError::Internal(format!(
            "shard answered {} replies for {} operations",
            got.len(),
            ops.len()
        )));
    }
    for ((i, _), r) in ops.iter().zip(got) {
        replies[*i] = r;
    }
    Ok(())
}

/// Keys to read on one shard of one table.
#[derive(Debug, Clone)]
pub struct ShardKeys {
    pub table: Arc<TableRoute>,
    pub shard: usize,
    pub keys: Vec<Bytes>,
}

/// A consistent snapshot of the values of keys over any shards and tables:
/// `(table name, key) -> stored value`. `None` when the keys kept changing
/// (or stayed locked) for every attempt: the caller reports a conflict.
pub async fn snapshot_read(
    client: &ShardClient,
    reads: &[ShardKeys],
) -> Result<Option<HashMap<(String, Bytes), Stored>>, ClusterError> {
    let mut backoff = Duration::from_millis(5);
    for _ in 0..20 {
        let first = read_versions(client, reads).await?;
        if first.iter().any(|(_, _, locked)| *locked) {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
            continue;
        }
        let second = read_versions(client, reads).await?;
        let same = first
            .iter()
            .zip(&second)
            .all(|(a, b)| version(&a.1) == version(&b.1) && !b.2);
        if same {
            return Ok(Some(
                first
                    .into_iter()
                    .filter_map(|(k, v, _)| v.map(|v| (k, v)))
                    .collect(),
            ));
        }
    }
    Ok(None)
}

fn version(v: &Option<Stored>) -> u64 {
    v.as_ref().map_or(0, |v| v.version)
}

type Versioned = ((String, Bytes), Option<Stored>, bool);

async fn read_versions(
    client: &ShardClient,
    reads: &[ShardKeys],
) -> Result<Vec<Versioned>, ClusterError> {
    let calls = reads.iter().map(|r| {
        let req = ShardRequest::ReadVersions {
            keys: r.keys.clone(),
            now_ms: now_ms(),
        };
        client.execute(&r.table, r.shard, req)
    });
    let mut out = Vec::new();
    for (r, reply) in reads.iter().zip(futures::future::join_all(calls).await) {
        let OpReply::Array(rows) = reply? else {
            return Err(ClusterError::Internal("bad ReadVersions reply".into()));
        };
        for (key, row) in r.keys.iter().zip(rows) {
            let OpReply::Array(fields) = row else {
                return Err(ClusterError::Internal("bad ReadVersions row".into()));
            };
            let value = match fields.first() {
                // The node checked it; unreadable here is a bug, not "absent".
                Some(OpReply::Bulk(raw)) => Some(Stored::decode(raw).map_err(|e| {
                    ClusterError::Internal(format!("a shard sent an unreadable value: {e}"))
                })?),
                _ => None,
            };
            let locked = matches!(fields.get(1), Some(OpReply::Int(1)));
            out.push(((r.table.desc.name.clone(), key.clone()), value, locked));
        }
    }
    Ok(out)
}
