//! Keyspace commands that need the cluster beyond one plan: RENAME,
//! RENAMENX and COPY whose keys are on different shards, and RANDOMKEY.
//!
//! **A move across shards** ([`crate::cluster::plan::Atomicity::Move`]) is one atomic transaction
//! through the two-phase commit of `cluster::txn`: the router reads the
//! source and the destination in one consistent snapshot
//! (`txn::snapshot_read`), decides the reply as the one-shard
//! [`WriteOp::Move`] would ([`move_outcome`]), and, when something is to be
//! written, commits a transaction that WATCHes both keys at the versions it
//! read (the destination only when its absence is the condition: RENAMENX,
//! COPY without REPLACE), writes the source's whole record (value and
//! expiry) to the destination ([`WriteOp::PutRecord`]; a collection's
//! elements, read after the snapshot, with
//! [`CollWrite::Replace`]) and, for RENAME, deletes the source. A key that moved in between, or a lock held by
//! another transaction, makes the transaction conflict; it is then read and
//! tried again after a random pause (up to what an attempt took, doubling
//! each time up to 200 ms, so movers of the same keys fall out of step), for
//! up to the request timeout (`request_timeout_ms`), then the client gets
//! `-TRYAGAIN`.
//!
//! **RANDOMKEY** visits the shards in a random order and, in each, reads a
//! SCAN page starting at a random position of the shard's key space
//! (wrapping to the start when nothing follows it), then picks one of the
//! page's live keys at random. Every key can come back; the choice is not
//! uniform (keys after a gap in the key space are more likely), as Redis's
//! own is not quite either.

use std::time::Duration;

use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::Rng;

use super::args::Args;
use super::compile::{op_reply, shard_keys};
use super::errors::cluster_err;
use super::reply::Reply;
use super::scan::scan_reply;
use super::session::Session;
use super::txn_retry::{watches_at, Attempt, Retry, ERR_KEPT_CHANGING};
use crate::clock::now_ms;
use crate::cluster::plan::{Part, Plan};
use crate::cluster::txn;
use crate::shard::apply::move_outcome;
use crate::shard::coll::{CollRead, CollWrite, Content, HashPart};
use crate::shard::command::{Kind, MoveMode, OpReply, ReadOp, TxnOp, WriteOp};
use crate::shard::list::LRead;
use crate::shard::txn::version_of;
use crate::shard::zset::{ZBy, ZRange, ZRead};

/// Keys a RANDOMKEY page examines.
const RANDOM_PAGE: u64 = 32;

/// Pages RANDOMKEY reads in one shard before trying the next (a shard
/// full of expired keys not yet purged).
const RANDOM_PAGES_PER_SHARD: usize = 64;

impl Session {
    /// RENAME / RENAMENX / COPY of `plan` (two parts: the source's shard,
    /// then the destination's) across shards.
    pub(super) async fn run_move(&self, plan: Plan, mode: MoveMode) -> Reply {
        let (Some(src), Some(dst)) = (plan.parts.first(), plan.parts.get(1)) else {
            return Reply::error("ERR internal: a move without its two keys");
        };
        let (Some(src_key), Some(dst_key)) = (src.op.keys().pop(), dst.op.keys().pop()) else {
            return Reply::error("ERR internal: a move without its two keys");
        };
        let (from, to) = (src.shard, dst.shard);
        let table = plan.table.clone();
        let name = table.desc.name.clone();
        let mut retry = Retry::new(Duration::from_millis(self.shared.config.request_timeout_ms));
        loop {
            retry.start();
            let reads = shard_keys(&table, &[src_key.clone(), dst_key.clone()]);
            let snapshot = match txn::snapshot_read(&self.shared.client, &reads).await {
                Ok(Some(s)) => Some(s),
                Ok(None) => None,
                Err(e) => return cluster_err(e),
            };
            if let Some(snapshot) = snapshot {
                let now = now_ms();
                let read = |k: &Bytes| snapshot.get(&(name.clone(), k.clone()));
                let live = |k: &Bytes| read(k).filter(|v| v.live_at(now));
                let Some(record) = live(&src_key).cloned() else {
                    return op_reply(match mode {
                        MoveMode::Copy { .. } => OpReply::Int(0),
                        _ => OpReply::Error(crate::shard::command::ERR_NO_SUCH_KEY.into()),
                    });
                };
                let (reply, remove) = match move_outcome(mode, false, live(&dst_key).is_some()) {
                    Ok(outcome) => outcome,
                    Err(reply) => return op_reply(reply),
                };
                let put = match record.coll {
                    // A collection: its elements, read after the snapshot
                    // (the watch on the source makes them the snapshot's).
                    Some(c) => {
                        let req = self.read_with(content_read(&src_key, c.kind), false);
                        let content = match self.shared.client.execute(&table, from, req).await {
                            Ok(OpReply::Error(e)) => return Reply::Error(e),
                            Ok(r) => content_of(c.kind, r),
                            Err(e) => return cluster_err(e),
                        };
                        // Changed type since the snapshot: read again.
                        let Some(content) = content else {
                            if !retry.again().await {
                                return Reply::error(ERR_KEPT_CHANGING);
                            }
                            continue;
                        };
                        WriteOp::Coll(CollWrite::Replace {
                            key: dst_key.clone(),
                            content,
                            expire_at_ms: record.expire_at_ms,
                        })
                    }
                    None => WriteOp::PutRecord {
                        key: dst_key.clone(),
                        record,
                    },
                };
                let mut parts = vec![Part {
                    shard: to,
                    op: TxnOp::Write(put),
                }];
                if remove {
                    parts.push(Part {
                        shard: from,
                        op: TxnOp::Write(WriteOp::Del {
                            keys: vec![src_key.clone()],
                        }),
                    });
                }
                // The source's value is what is written; the destination
                // matters only when its absence is the condition.
                let dst_matters =
                    matches!(mode, MoveMode::RenameNx | MoveMode::Copy { replace: false });
                let watched = if dst_matters {
                    vec![src_key.clone(), dst_key.clone()]
                } else {
                    vec![src_key.clone()]
                };
                let watches = watches_at(&table, &watched, |k| version_of(read(k), now));
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

    /// RANDOMKEY: a random live key of the table, or nil when it has none.
    pub(super) async fn randomkey(&mut self, _args: &mut Args) -> Reply {
        let table = match self.table_or_reply() {
            Ok(t) => t,
            Err(r) => return r,
        };
        let mut order: Vec<usize> = (0..table.desc.shards.len()).collect();
        order.shuffle(&mut rand::thread_rng());
        for shard in order {
            let start: Vec<u8> = {
                let mut rng = rand::thread_rng();
                let len = rng.gen_range(1..=8);
                (0..len).map(|_| rng.gen_range(0x20u8..0x7f)).collect()
            };
            // From the random position to the end, then from the start.
            let mut after = Bytes::from(start);
            let mut wrapped = false;
            for _ in 0..RANDOM_PAGES_PER_SHARD {
                let req = self.read(ReadOp::Scan {
                    after: after.clone(),
                    count: RANDOM_PAGE,
                    pattern: None,
                });
                let reply = match self.shared.client.execute(&table, shard, req).await {
                    Ok(OpReply::Error(e)) => return Reply::Error(e),
                    Ok(r) => r,
                    Err(e) => return cluster_err(e),
                };
                let (next, page) = scan_reply(reply);
                if let Some(key) = page.choose(&mut rand::thread_rng()) {
                    return Reply::Bulk(key.clone());
                }
                match next {
                    Some(last) => after = last,
                    None if wrapped => break,
                    None => {
                        wrapped = true;
                        after = Bytes::new();
                    }
                }
            }
        }
        Reply::Nil
    }
}

/// The read that answers a whole collection of `kind` under `key`: every
/// field with its value, member (with its score), or element from the head.
pub fn content_read(key: &Bytes, kind: Kind) -> ReadOp {
    let key = key.clone();
    ReadOp::Coll(match kind {
        Kind::Hash => CollRead::HGetAll {
            key,
            part: HashPart::All,
        },
        Kind::Set => CollRead::SMembers { key },
        Kind::ZSet => CollRead::Z(ZRead::ZRange {
            key,
            range: ZRange {
                by: ZBy::Rank { start: 0, stop: -1 },
                rev: false,
                limit: None,
            },
            with_scores: true,
        }),
        Kind::List => CollRead::L(LRead::LRange {
            key,
            start: 0,
            stop: -1,
        }),
    })
}

/// The collection [`content_read`] answered, or `None` for another reply.
pub fn content_of(kind: Kind, reply: OpReply) -> Option<Content> {
    let bulk = |r: OpReply| match r {
        OpReply::Bulk(b) => Some(b),
        _ => None,
    };
    Some(match (kind, reply) {
        (Kind::Hash, OpReply::Map(pairs)) => Content::Hash(
            pairs
                .into_iter()
                .map(|(f, v)| Some((bulk(f)?, bulk(v)?)))
                .collect::<Option<_>>()?,
        ),
        (Kind::Set, OpReply::Set(items)) => {
            Content::Set(items.into_iter().map(bulk).collect::<Option<_>>()?)
        }
        (Kind::ZSet, OpReply::Pairs(pairs)) => Content::ZSet(
            pairs
                .into_iter()
                .map(|(m, s)| match (m, s) {
                    (OpReply::Bulk(m), OpReply::Double(s)) => Some((m, s)),
                    _ => None,
                })
                .collect::<Option<_>>()?,
        ),
        (Kind::List, OpReply::Array(items)) => {
            Content::List(items.into_iter().map(bulk).collect::<Option<_>>()?)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_collections_read_back_as_content() {
        let bulk = |s: &'static str| OpReply::Bulk(Bytes::from_static(s.as_bytes()));
        assert_eq!(
            content_of(
                Kind::ZSet,
                OpReply::Pairs(vec![(bulk("m"), OpReply::Double(1.5))])
            ),
            Some(Content::ZSet(vec![(Bytes::from_static(b"m"), 1.5)]))
        );
        assert_eq!(
            content_of(Kind::Hash, OpReply::Map(vec![(bulk("f"), bulk("v"))])),
            Some(Content::Hash(vec![(
                Bytes::from_static(b"f"),
                Bytes::from_static(b"v")
            )]))
        );
        assert_eq!(
            content_of(Kind::List, OpReply::Array(vec![bulk("a")])),
            Some(Content::List(vec![Bytes::from_static(b"a")]))
        );
        // Another shape (the key changed type): none.
        assert_eq!(content_of(Kind::Set, OpReply::Array(vec![])), None);
    }
}
