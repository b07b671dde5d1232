//! SMOVE, LMOVE and RPOPLPUSH between keys on different shards
//! ([`crate::cluster::plan::Atomicity::Transfer`]): one atomic transaction through the two-phase
//! commit of `cluster::txn`.
//!
//! 1. Read the records of both keys in one consistent snapshot
//!    (`txn::snapshot_read`): their versions, and their types (WRONGTYPE as
//!    the one-shard command would answer it, nothing changed).
//! 2. Read what moves with a linearizable read after that snapshot: for
//!    SMOVE whether the member is in the source, for LMOVE the element at
//!    the end it pops. Nothing to move: that is the answer (SMOVE 0, LMOVE
//!    nil).
//! 3. Commit a transaction that WATCHes both keys at the versions of step 1
//!    and removes the element from the source (SREM, LPOP/RPOP) and adds it
//!    to the destination (SADD, LPUSH/RPUSH). Any change to either key since
//!    step 1 bumps its version, so what step 2 read is still true when the
//!    transaction commits, and the element popped is the one pushed. On a
//!    conflict everything is read again after a random pause, for up to the
//!    request timeout, then `-TRYAGAIN`.
//!
//! The element is in exactly one of the two keys at every moment a reader
//! can see (`tests/collections.rs` moves members back and forth between
//! shards while a reader counts them in MULTI snapshots).

use std::time::Duration;

use bytes::Bytes;

use super::compile::{op_reply, shard_keys};
use super::errors::cluster_err;
use super::reply::Reply;
use super::session::Session;
use super::txn_retry::{watches_at, Attempt, Retry, ERR_KEPT_CHANGING};
use crate::clock::now_ms;
use crate::cluster::plan::{Part, Plan};
use crate::cluster::txn;
use crate::shard::coll::{CollRead, CollWrite};
use crate::shard::command::{Kind, OpReply, ReadOp, ShardRequest, TxnOp, WriteOp};
use crate::shard::list::{End, LRead, LWrite};
use crate::shard::txn::version_of;
use crate::shard::value::{Stored, WrongType};
use crate::slot::slot;

/// What a transfer moves.
enum What {
    Member(Bytes),
    ListEnd { from: End, to: End },
}

impl Session {
    /// Run an SMOVE / LMOVE / RPOPLPUSH plan marked [`crate::cluster::plan::Atomicity::Transfer`].
    pub(super) async fn run_transfer(&self, plan: Plan) -> Reply {
        let Some(part) = plan.parts.first() else {
            return Reply::error("ERR internal: a transfer without its operation");
        };
        let (src, dst, what, kind) = match &part.op {
            TxnOp::Write(WriteOp::Coll(CollWrite::SMove { src, dst, member })) => (
                src.clone(),
                dst.clone(),
                What::Member(member.clone()),
                Kind::Set,
            ),
            TxnOp::Write(WriteOp::Coll(CollWrite::L(LWrite::Move { src, dst, from, to }))) => (
                src.clone(),
                dst.clone(),
                What::ListEnd {
                    from: *from,
                    to: *to,
                },
                Kind::List,
            ),
            _ => return Reply::error("ERR internal: not a transfer"),
        };
        let table = plan.table.clone();
        let name = table.desc.name.clone();
        let shard_of = |k: &Bytes| table.desc.shard_for_slot(slot(k));
        let mut retry = Retry::new(Duration::from_millis(self.shared.config.request_timeout_ms));
        loop {
            retry.start();
            // 1. Both records, in one snapshot.
            let reads = shard_keys(&table, &[src.clone(), dst.clone()]);
            let snapshot = match txn::snapshot_read(&self.shared.client, &reads).await {
                Ok(s) => s,
                Err(e) => return cluster_err(e),
            };
            if let Some(snapshot) = snapshot {
                let now = now_ms();
                let record = |k: &Bytes| snapshot.get(&(name.clone(), k.clone()));
                let live = |k: &Bytes| record(k).filter(|v| v.live_at(now));
                let of_kind = |v: Option<&Stored>| match v {
                    Some(v) => v.coll_of(kind).map(|_| true),
                    None => Ok(false),
                };
                let src_there = match of_kind(live(&src)) {
                    Ok(t) => t,
                    Err(WrongType) => return op_reply(WrongType.reply()),
                };
                if let Err(WrongType) = of_kind(live(&dst)) {
                    return op_reply(WrongType.reply());
                }
                let nothing = match what {
                    What::Member(_) => OpReply::Int(0),
                    What::ListEnd { .. } => OpReply::Nil,
                };
                if !src_there {
                    return op_reply(nothing);
                }
                // 2. What moves, read after the snapshot.
                let probe = match &what {
                    What::Member(m) => CollRead::SIsMember {
                        key: src.clone(),
                        member: m.clone(),
                    },
                    What::ListEnd { from, .. } => CollRead::L(LRead::LIndex {
                        key: src.clone(),
                        index: if *from == End::Left { 0 } else { -1 },
                    }),
                };
                let req = ShardRequest::Read {
                    op: ReadOp::Coll(probe),
                    linearizable: true,
                    now_ms: now_ms(),
                };
                let found = match self
                    .shared
                    .client
                    .execute(&table, shard_of(&src), req)
                    .await
                {
                    Ok(OpReply::Error(e)) => return Reply::Error(e),
                    Ok(r) => r,
                    Err(e) => return cluster_err(e),
                };
                let (element, reply) = match (&what, found) {
                    (What::Member(m), OpReply::Int(1)) => (m.clone(), OpReply::Int(1)),
                    (What::ListEnd { .. }, OpReply::Bulk(v)) => (v.clone(), OpReply::Bulk(v)),
                    // Gone since the snapshot: the answer as of now.
                    _ => return op_reply(nothing),
                };
                // 3. Remove and add, watching both keys.
                let (take, give) = match &what {
                    What::Member(_) => (
                        CollWrite::SRem {
                            key: src.clone(),
                            members: vec![element.clone()],
                        },
                        CollWrite::SAdd {
                            key: dst.clone(),
                            members: vec![element],
                        },
                    ),
                    What::ListEnd { from, to } => (
                        CollWrite::L(LWrite::Pop {
                            key: src.clone(),
                            end: *from,
                            count: None,
                        }),
                        CollWrite::L(LWrite::Push {
                            key: dst.clone(),
                            end: *to,
                            values: vec![element],
                            only_if_exists: false,
                        }),
                    ),
                };
                let parts = vec![
                    Part {
                        shard: shard_of(&src),
                        op: TxnOp::Write(WriteOp::Coll(take)),
                    },
                    Part {
                        shard: shard_of(&dst),
                        op: TxnOp::Write(WriteOp::Coll(give)),
                    },
                ];
                let keys = [src.clone(), dst.clone()];
                let watches = watches_at(&table, &keys, |k| version_of(record(k), now));
                match self
                    .commit(&table, parts, &watches, |_| op_reply(reply))
                    .await
                {
                    Attempt::Done(reply) => return reply,
                    Attempt::Again => {}
                }
            }
            if !retry.again().await {
                return Reply::error(ERR_KEPT_CHANGING);
            }
        }
    }
}
