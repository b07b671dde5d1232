//! Multi-key writes whose keys span shards, each one atomic transaction
//! through the two-phase commit of `cluster::txn`:
//!
//! * **Stores** ([`Plan::store`]: SINTERSTORE, SUNIONSTORE, SDIFFSTORE,
//!   ZUNIONSTORE, ZINTERSTORE, ZDIFFSTORE, ZRANGESTORE, BITOP). The router
//!   reads the records of every input in one consistent snapshot
//!   (`txn::snapshot_read`, for their versions), then the inputs themselves
//!   (the plan's parts, linearizable reads), combines them with the plan's
//!   merge (the same code SUNION or ZUNION across shards answers with), and
//!   commits a transaction that replaces the destination with the result
//!   ([`CollWrite::Replace`], or a string record for BITOP) and WATCHes
//!   every input at its snapshot version. Any write to an input after the
//!   snapshot bumps its version and the transaction conflicts, so the
//!   result written is the one of the inputs as they were when it commits.
//!   A conflict reads everything again after a random pause, up to the
//!   request timeout, then `-TRYAGAIN`.
//! * **First filled** ([`crate::cluster::plan::Atomicity::FirstFilled`]: LMPOP, ZMPOP, and the
//!   blocking pops over keys of several shards). One snapshot gives every
//!   key's record: the first key holding a collection of the command's type
//!   is the one to pop from (a key of another type before it: WRONGTYPE, as
//!   the one-shard command answers). The pop runs on that key alone, in a
//!   transaction that WATCHes it and every key before it, so the keys
//!   before it are still empty when it commits.
//!
//! What crosses the router is bounded: the inputs are read under the
//! router's output limit, and a result over [`MAX_RESULT`] bytes is refused
//! before anything is written.

use std::time::Duration;

use bytes::Bytes;

use super::compile::{op_reply, shard_keys};
use super::errors::cluster_err;
use super::reply::Reply;
use super::session::Session;
use super::txn_retry::{watches_at, Attempt, Retry, ERR_KEPT_CHANGING};
use crate::clock::now_ms;
use crate::cluster::plan::{merge, Part, Plan, StoreKind, StoreTo};
use crate::cluster::txn;
use crate::shard::coll::{CollWrite, Content};
use crate::shard::command::{Kind, OpReply, TxnOp, WriteOp};
use crate::shard::list::LWrite;
use crate::shard::txn::version_of;
use crate::shard::value::Stored;
use crate::shard::zset::ZWrite;
use crate::slot::slot;

/// The largest result a store across shards writes (its RESP size), well
/// under what one request to a node may carry.
pub const MAX_RESULT: usize = 32 * 1024 * 1024;

impl Session {
    /// Run a plan with [`Plan::store`]: its parts read, its merge combines,
    /// the result replaces the destination.
    pub(super) async fn run_store(&self, plan: Plan) -> Reply {
        let Some(store) = plan.store.clone() else {
            return Reply::error("ERR internal: a store without its destination");
        };
        let inputs: Vec<Bytes> = plan.parts.iter().flat_map(|p| p.op.keys()).collect();
        let mut retry = Retry::new(Duration::from_millis(self.shared.config.request_timeout_ms));
        loop {
            retry.start();
            match self.store_once(&plan, &store, &inputs).await {
                Attempt::Done(reply) => return reply,
                Attempt::Again => {}
            }
            if !retry.again().await {
                return Reply::error(ERR_KEPT_CHANGING);
            }
        }
    }

    async fn store_once(&self, plan: &Plan, store: &StoreTo, inputs: &[Bytes]) -> Attempt {
        let table = &plan.table;
        // 1. The inputs' versions, in one snapshot.
        let snapshot =
            match txn::snapshot_read(&self.shared.client, &shard_keys(table, inputs)).await {
                Ok(Some(s)) => s,
                Ok(None) => return Attempt::Again,
                Err(e) => return Attempt::Done(cluster_err(e)),
            };
        let now = now_ms();
        // 2. The inputs, read after the snapshot, combined.
        let mut reads = Vec::with_capacity(plan.parts.len());
        for part in &plan.parts {
            let TxnOp::Read(op) = &part.op else {
                return Attempt::Done(Reply::error("ERR internal: a store's parts read"));
            };
            let req = self.read_with(op.clone(), false);
            reads.push(self.shared.client.execute(table, part.shard, req));
        }
        let mut replies = Vec::with_capacity(plan.parts.len());
        for r in futures::future::join_all(reads).await {
            match r {
                Ok(r) => replies.push(r),
                Err(e) => return Attempt::Done(cluster_err(e)),
            }
        }
        let result = match merge(&plan.merge, replies) {
            OpReply::Error(e) if e.starts_with("TRYAGAIN") => return Attempt::Again,
            OpReply::Error(e) => return Attempt::Done(Reply::Error(e)),
            r => r,
        };
        if result.resp_size() > MAX_RESULT {
            return Attempt::Done(Reply::error(format!(
                "ERR the result across shards is larger than {MAX_RESULT} bytes; \
                 give the keys one hash tag, e.g. {{user1}}:a and {{user1}}:b"
            )));
        }
        // 3. The destination replaced, the inputs watched.
        let (op, reply) = match destination_write(&store.dst, store.kind, result) {
            Ok(w) => w,
            Err(reply) => return Attempt::Done(reply),
        };
        let watches = watches_at(table, inputs, |k| {
            version_of(snapshot.get(&(table.desc.name.clone(), k.clone())), now)
        });
        let part = Part {
            shard: table.desc.shard_for_slot(slot(&store.dst)),
            op: TxnOp::Write(op),
        };
        self.commit(table, vec![part], &watches, |_| op_reply(reply))
            .await
    }

    /// Run an LMPOP / ZMPOP plan marked `Atomicity::FirstFilled`: its one
    /// part is the pop over every key.
    pub(super) async fn run_first_filled(&self, plan: Plan) -> Reply {
        let Some(part) = plan.parts.first() else {
            return Reply::error("ERR internal: a pop without its operation");
        };
        let (keys, kind) = match &part.op {
            TxnOp::Write(WriteOp::Coll(CollWrite::L(LWrite::MPop { keys, .. }))) => {
                (keys.clone(), Kind::List)
            }
            TxnOp::Write(WriteOp::Coll(CollWrite::Z(ZWrite::ZMPop { keys, .. }))) => {
                (keys.clone(), Kind::ZSet)
            }
            _ => return Reply::error("ERR internal: not a pop over keys"),
        };
        let mut retry = Retry::new(Duration::from_millis(self.shared.config.request_timeout_ms));
        loop {
            retry.start();
            match self.pop_first_once(&plan, &keys, kind).await {
                Attempt::Done(reply) => return reply,
                Attempt::Again => {}
            }
            if !retry.again().await {
                return Reply::error(ERR_KEPT_CHANGING);
            }
        }
    }

    async fn pop_first_once(&self, plan: &Plan, keys: &[Bytes], kind: Kind) -> Attempt {
        let table = &plan.table;
        let snapshot = match txn::snapshot_read(&self.shared.client, &shard_keys(table, keys)).await
        {
            Ok(Some(s)) => s,
            Ok(None) => return Attempt::Again,
            Err(e) => return Attempt::Done(cluster_err(e)),
        };
        let now = now_ms();
        let record = |k: &Bytes| snapshot.get(&(table.desc.name.clone(), k.clone()));
        let first = match first_filled(keys, kind, |k| record(k).filter(|v| v.live_at(now))) {
            Ok(Some(i)) => i,
            // Nothing to pop: the answer as of the snapshot.
            Ok(None) => return Attempt::Done(op_reply(OpReply::NilArray)),
            Err(reply) => return Attempt::Done(op_reply(reply)),
        };
        let key = keys[first].clone();
        let op = match &plan.parts[0].op {
            TxnOp::Write(WriteOp::Coll(CollWrite::L(LWrite::MPop { end, count, .. }))) => {
                CollWrite::L(LWrite::MPop {
                    keys: vec![key.clone()],
                    end: *end,
                    count: *count,
                })
            }
            TxnOp::Write(WriteOp::Coll(CollWrite::Z(ZWrite::ZMPop { max, count, .. }))) => {
                CollWrite::Z(ZWrite::ZMPop {
                    keys: vec![key.clone()],
                    max: *max,
                    count: *count,
                })
            }
            _ => return Attempt::Done(Reply::error("ERR internal: not a pop over keys")),
        };
        let watches = watches_at(table, &keys[..=first], |k| version_of(record(k), now));
        let part = Part {
            shard: table.desc.shard_for_slot(slot(&key)),
            op: TxnOp::Write(WriteOp::Coll(op)),
        };
        let merge_how = plan.merge.clone();
        self.commit(table, vec![part], &watches, move |replies| {
            op_reply(merge(&merge_how, replies))
        })
        .await
    }
}

/// The index of the first key whose live record holds a collection of
/// `kind`; a key of another type met before it is WRONGTYPE (as LMPOP and
/// ZMPOP answer on one shard). Pure.
pub fn first_filled<'a>(
    keys: &[Bytes],
    kind: Kind,
    live: impl Fn(&Bytes) -> Option<&'a Stored>,
) -> Result<Option<usize>, OpReply> {
    for (i, k) in keys.iter().enumerate() {
        if let Some(v) = live(k) {
            match v.coll_of(kind) {
                Ok(c) if c.len > 0 => return Ok(Some(i)),
                Ok(_) => {}
                Err(w) => return Err(w.reply()),
            }
        }
    }
    Ok(None)
}

/// The write that replaces `dst` with a merged result, and the command's
/// reply once it committed. Pure.
pub fn destination_write(
    dst: &Bytes,
    kind: StoreKind,
    result: OpReply,
) -> Result<(WriteOp, OpReply), Reply> {
    let unexpected = || Reply::error("ERR internal: an unexpected result to store");
    let content = match (kind, result) {
        (StoreKind::Set, OpReply::Set(items) | OpReply::Array(items)) => Content::Set(
            items
                .into_iter()
                .filter_map(|i| match i {
                    OpReply::Bulk(b) => Some(b),
                    _ => None,
                })
                .collect(),
        ),
        (StoreKind::ZSet, OpReply::Pairs(pairs)) => Content::ZSet(
            pairs
                .into_iter()
                .filter_map(|p| match p {
                    (OpReply::Bulk(m), OpReply::Double(s)) => Some((m, s)),
                    _ => None,
                })
                .collect(),
        ),
        (StoreKind::String, OpReply::Bulk(value)) => {
            let n = value.len() as i64;
            if value.is_empty() {
                return Ok((
                    WriteOp::Del {
                        keys: vec![dst.clone()],
                    },
                    OpReply::Int(0),
                ));
            }
            let record = Stored {
                version: 0,
                expire_at_ms: 0,
                data: value,
                coll: None,
            };
            return Ok((
                WriteOp::PutRecord {
                    key: dst.clone(),
                    record,
                },
                OpReply::Int(n),
            ));
        }
        (StoreKind::String, OpReply::Nil) => {
            return Ok((
                WriteOp::Del {
                    keys: vec![dst.clone()],
                },
                OpReply::Int(0),
            ))
        }
        _ => return Err(unexpected()),
    };
    let n = content.len() as i64;
    Ok((
        WriteOp::Coll(CollWrite::Replace {
            key: dst.clone(),
            content,
            expire_at_ms: 0,
        }),
        OpReply::Int(n),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::value::Coll;

    fn coll(kind: Kind, len: u64) -> Stored {
        Stored {
            version: 1,
            expire_at_ms: 0,
            data: Bytes::new(),
            coll: Some(Coll {
                kind,
                gen: 1,
                len,
                left: 0,
            }),
        }
    }

    #[test]
    fn the_first_filled_key_is_the_first_with_elements_and_wrongtype_stops() {
        let keys: Vec<Bytes> = ["a", "b", "c"].map(Bytes::from).to_vec();
        let list = coll(Kind::List, 2);
        let string = Stored {
            coll: None,
            ..coll(Kind::List, 0)
        };
        let only_b = |k: &Bytes| (k.as_ref() == b"b").then_some(&list);
        let only_c = |k: &Bytes| (k.as_ref() == b"c").then_some(&list);
        assert_eq!(first_filled(&keys, Kind::List, only_b), Ok(Some(1)));
        assert_eq!(first_filled(&keys, Kind::List, |_| None), Ok(None));
        // A list where a sorted set is wanted: WRONGTYPE.
        assert!(matches!(
            first_filled(&keys, Kind::ZSet, only_c),
            Err(OpReply::Error(e)) if e.starts_with("WRONGTYPE")
        ));
        // A string before the first list: WRONGTYPE; after it: not looked at.
        let string_then_list = |k: &Bytes| match k.as_ref() {
            b"a" => Some(&string),
            b"b" => Some(&list),
            _ => None,
        };
        assert!(first_filled(&keys, Kind::List, string_then_list).is_err());
        let list_then_string = |k: &Bytes| match k.as_ref() {
            b"a" => Some(&list),
            b"b" => Some(&string),
            _ => None,
        };
        assert_eq!(
            first_filled(&keys, Kind::List, list_then_string),
            Ok(Some(0))
        );
    }

    #[test]
    fn results_become_the_destination_write() {
        let dst = Bytes::from_static(b"d");
        let bulk = |s: &'static str| OpReply::Bulk(Bytes::from_static(s.as_bytes()));
        let (op, reply) = destination_write(
            &dst,
            StoreKind::Set,
            OpReply::Set(vec![bulk("x"), bulk("y")]),
        )
        .unwrap();
        assert_eq!(reply, OpReply::Int(2));
        assert!(matches!(
            op,
            WriteOp::Coll(CollWrite::Replace { content: Content::Set(m), .. }) if m.len() == 2
        ));
        // An empty result deletes the destination.
        let (op, reply) = destination_write(&dst, StoreKind::ZSet, OpReply::Pairs(vec![])).unwrap();
        assert_eq!(reply, OpReply::Int(0));
        assert!(matches!(
            op,
            WriteOp::Coll(CollWrite::Replace { content, .. }) if content.is_empty()
        ));
        let (op, reply) = destination_write(&dst, StoreKind::String, bulk("")).unwrap();
        assert_eq!(reply, OpReply::Int(0));
        assert!(matches!(op, WriteOp::Del { .. }));
        let (op, reply) = destination_write(&dst, StoreKind::String, bulk("abc")).unwrap();
        assert_eq!(reply, OpReply::Int(3));
        assert!(matches!(op, WriteOp::PutRecord { record, .. } if record.data == "abc"));
        assert!(destination_write(&dst, StoreKind::Set, OpReply::Int(1)).is_err());
    }
}
