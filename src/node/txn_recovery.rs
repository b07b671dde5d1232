//! Recovery of transactions whose coordinator disappeared.
//!
//! A shard leader holding a prepared transaction older than the recovery
//! timeout asks etcd for its decision record: committed → COMMIT, aborted →
//! ABORT, still pending → swap it to aborted first (so a late coordinator can
//! no longer commit it), then ABORT. No record can only mean the transaction
//! never reached its commit point, so it is aborted too. COMMIT and ABORT are
//! idempotent Raft entries, so racing a live coordinator is harmless. The
//! decision is [`resolve`], a pure function; [`run`] drives it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::meta::etcd::{Meta, TxnState};
use crate::meta::MetaError;
use crate::shard::command::ShardRequest;
use crate::shard::command::{TxnCmd, TxnEntry};
use crate::shard::host::Host;
use crate::shard::store::load_prepared;

/// What to do with a stale prepared transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Commit,
    Abort,
    /// Swap the pending record to aborted; then act on what it ends as.
    DecideAbort,
}

pub fn resolve(record: Option<TxnState>) -> Resolution {
    match record {
        Some(TxnState::Committed) => Resolution::Commit,
        Some(TxnState::Aborted) | None => Resolution::Abort,
        Some(TxnState::Pending) => Resolution::DecideAbort,
    }
}

/// Check, every `timeout / 2`, the prepared transactions of the groups this
/// node leads.
pub async fn run(meta: Meta, host: Arc<Host>, timeout: Duration) {
    loop {
        tokio::time::sleep(timeout / 2).await;
        for replica in host.replicas() {
            if !replica.driver.leads() {
                continue;
            }
            if !replica.sm.has_prepared().await {
                continue;
            }
            let gid = replica.record.group_id;
            let prepared = match host.engine.read(move |db| load_prepared(db, gid)).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(group = gid, "cannot read prepared transactions: {e}");
                    continue;
                }
            };
            let now = now_ms();
            for p in prepared {
                if now.saturating_sub(p.prepared_at_ms) < timeout.as_millis() as u64 {
                    continue;
                }
                if let Err(e) = recover_one(&meta, &host, gid, p.txn_id).await {
                    tracing::warn!(group = gid, txn = p.txn_id, "recovery failed: {e}");
                }
            }
        }
    }
}

async fn recover_one(meta: &Meta, host: &Host, gid: u64, txn_id: u64) -> Result<(), MetaError> {
    let record = meta.get_txn(txn_id).await?.map(|(r, _)| r.state);
    let commit = match resolve(record) {
        Resolution::Commit => true,
        Resolution::Abort => false,
        Resolution::DecideAbort => {
            meta.decide_txn(txn_id, TxnState::Aborted).await? == Some(TxnState::Committed)
        }
    };
    let cmd = if commit {
        TxnCmd::Commit { txn_id }
    } else {
        TxnCmd::Abort { txn_id }
    };
    let entry = TxnEntry {
        now_ms: now_ms(),
        cmd,
    };
    match host.execute(gid, ShardRequest::Txn(entry)).await {
        Ok(_) => {
            crate::shard::status::TXN_RECOVERED.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                group = gid,
                txn = txn_id,
                outcome = if commit { "committed" } else { "aborted" },
                "recovered a transaction left by its coordinator"
            );
            Ok(())
        }
        Err(e) => Err(MetaError::Etcd(format!("proposing the outcome: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        assert_eq!(resolve(Some(TxnState::Committed)), Resolution::Commit);
        assert_eq!(resolve(Some(TxnState::Aborted)), Resolution::Abort);
        assert_eq!(resolve(None), Resolution::Abort);
        assert_eq!(resolve(Some(TxnState::Pending)), Resolution::DecideAbort);
    }
}
