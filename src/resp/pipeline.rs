//! Pipelined requests of one connection, executed together.
//!
//! A client that pipelines sends many commands before reading replies. Run
//! one after another, each costs a full Raft round trip. Here the plain data
//! commands of a pipeline that touch a single shard each are grouped by
//! shard: a group with a write becomes **one** one-phase transaction entry
//! (its operations applied in pipeline order, atomically), a group of reads
//! runs its reads concurrently, and different shards proceed in parallel.
//! Replies still come back in request order.
//!
//! Order is kept where Redis clients can see it: commands on the same shard
//! (hence on the same key) apply in pipeline order. Commands on different
//! shards may complete in any order, as with a Redis Cluster client that
//! pipelines to several nodes. Anything else (connection commands, MULTI,
//! multi-shard commands, table changes) ends the group and runs alone, in
//! order.
//!
//! Replies are bounded as they are produced: the connection passes what is
//! left of its output budget (`max_output_len` minus the replies the client
//! has not read), a group admits requests only while the worst case of
//! their replies fits it (a value read counts `max_value_len`), and
//! execution stops once the replies produced have spent it. So a pipeline of
//! big reads runs a few at a time, never 512 at once.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::args::Args;
use super::commands::lookup;
use super::compile::op_reply;
use super::errors::cluster_err;
use super::reply::Reply;
use super::session::{After, Session};
use super::spec::Handler;
use crate::clock::now_ms;
use crate::cluster::plan::{merge, Plan};
use crate::shard::command::{OpReply, ReadOp, ShardRequest, WriteCmd, WriteOp};
use crate::shard::command::{TxnCmd, TxnEntry, TxnOp};

/// Most requests executed as one group.
pub const MAX_GROUP: usize = 512;

/// What a reply that carries no stored value may take (status, integer,
/// nil, short error), for the output budget.
const SMALL_REPLY: usize = 64;

impl Session {
    /// Execute requests from the front of `pending`, in order; one reply per
    /// request taken off it. Stops when `pending` is empty, after a request
    /// that closes the connection (QUIT), or when the next request's worst
    /// case (with the group's) would not fit `budget` bytes of replies, or
    /// the replies produced already fill it. At least one request runs, so
    /// a caller that loops always progresses; its output check then decides.
    pub async fn handle_many(
        &mut self,
        pending: &mut VecDeque<Vec<Bytes>>,
        budget: usize,
    ) -> Vec<(Reply, After)> {
        let max_value = self.shared.config.max_value_len;
        let mut out: Vec<(Reply, After)> = Vec::new();
        let mut group: Vec<(usize, Plan)> = Vec::new();
        // Bytes of the replies produced, and the worst case of the group's.
        let (mut used, mut reserved) = (0usize, 0usize);
        while let Some(parts) = pending.front() {
            match self.single_shard_plan(parts) {
                Some(plan) => {
                    let bound = reply_bound(&plan, max_value);
                    if !out.is_empty()
                        && used.saturating_add(reserved).saturating_add(bound) > budget
                    {
                        break;
                    }
                    pending.pop_front();
                    reserved = reserved.saturating_add(bound);
                    out.push((Reply::Nil, After::Continue));
                    group.push((out.len() - 1, plan));
                }
                None => {
                    used += self.flush_group(&mut group, &mut out).await;
                    reserved = 0;
                    if !out.is_empty() && used >= budget {
                        break;
                    }
                    let Some(parts) = pending.pop_front() else {
                        break;
                    };
                    let (reply, after) = self.handle(parts).await;
                    used += reply.size_hint();
                    out.push((reply, after));
                    if after == After::Close {
                        return out;
                    }
                }
            }
        }
        self.flush_group(&mut group, &mut out).await;
        out
    }

    /// The plan of a plain single-shard data command that may join a group
    /// (its row's handler is [`Handler::Data`]).
    fn single_shard_plan(&self, parts: &[Bytes]) -> Option<Plan> {
        if self.multi.is_some() || !self.authenticated {
            return None;
        }
        let mut args = Args::new(parts.to_vec());
        let spec = lookup(args.name())?;
        let Handler::Data(compile) = spec.handler else {
            return None;
        };
        if !spec.arity_ok(args.len()) {
            return None;
        }
        let plan = self.compile(spec, compile, &mut args).ok()?;
        (plan.parts.len() == 1).then_some(plan)
    }

    /// Run the group, filling its replies into `out`; returns their size.
    async fn flush_group(
        &self,
        group: &mut Vec<(usize, Plan)>,
        out: &mut [(Reply, After)],
    ) -> usize {
        if group.is_empty() {
            return 0;
        }
        let slots: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
        self.run_group(std::mem::take(group), out).await;
        slots.into_iter().map(|i| out[i].0.size_hint()).sum()
    }

    async fn run_group(&self, plans: Vec<(usize, Plan)>, out: &mut [(Reply, After)]) {
        self.shared
            .commands_processed
            .fetch_add(plans.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if plans.len() == 1 {
            let (i, plan) = plans.into_iter().next().expect("one plan");
            out[i].0 = self.run_plan(plan).await;
            return;
        }
        let table = plans[0].1.table.clone();
        let mut by_shard: BTreeMap<usize, Vec<(usize, Plan)>> = BTreeMap::new();
        for (i, plan) in plans {
            by_shard
                .entry(plan.parts[0].shard)
                .or_default()
                .push((i, plan));
        }
        let runs = by_shard.into_iter().map(|(shard, plans)| {
            let table = table.clone();
            async move {
                let replies = self.run_shard_group(&table, shard, &plans).await;
                plans
                    .into_iter()
                    .zip(replies)
                    .map(|((i, _), r)| (i, r))
                    .collect::<Vec<_>>()
            }
        });
        for results in futures::future::join_all(runs).await {
            for (i, reply) in results {
                out[i].0 = reply;
            }
        }
    }

    /// One shard's share of a pipeline: one entry when anything writes.
    async fn run_shard_group(
        &self,
        table: &crate::cluster::routes::TableRoute,
        shard: usize,
        plans: &[(usize, Plan)],
    ) -> Vec<Reply> {
        if plans.len() == 1 {
            return vec![self.run_plan(plans[0].1.clone()).await];
        }
        let ops: Vec<TxnOp> = plans.iter().map(|(_, p)| p.parts[0].op.clone()).collect();
        if ops.iter().any(|op| matches!(op, TxnOp::Write(_))) {
            let entry = ShardRequest::Txn(TxnEntry {
                now_ms: now_ms(),
                cmd: TxnCmd::OnePhase {
                    ops,
                    watches: Vec::new(),
                },
            });
            match self.shared.client.execute(table, shard, entry).await {
                Ok(OpReply::Array(replies)) if replies.len() == plans.len() => {
                    return plans
                        .iter()
                        .zip(replies)
                        .map(|((_, p), r)| op_reply(merge(&p.merge, vec![r])))
                        .collect();
                }
                Err(e) => return plans.iter().map(|_| cluster_err(e.clone())).collect(),
                // A key is locked by a transaction: run them one by one,
                // each waiting for its lock like any single command.
                Ok(_) => {}
            }
            let mut out = Vec::with_capacity(plans.len());
            for (_, p) in plans {
                out.push(self.run_plan(p.clone()).await);
            }
            return out;
        }
        // Reads only: concurrently.
        futures::future::join_all(plans.iter().map(|(_, p)| {
            let req = match &p.parts[0].op {
                TxnOp::Write(w) => ShardRequest::Write(WriteCmd {
                    now_ms: now_ms(),
                    op: w.clone(),
                }),
                TxnOp::Read(r) => self.read_with(r.clone(), p.stale_ok),
            };
            async move {
                match self.shared.client.execute(table, shard, req).await {
                    Ok(r) => op_reply(merge(&p.merge, vec![r])),
                    Err(e) => cluster_err(e),
                }
            }
        }))
        .await
    }
}

/// The most bytes `plan`'s reply can take: a stored value counts as
/// `max_value` (the largest a key may hold), anything else as small.
fn reply_bound(plan: &Plan, max_value: usize) -> usize {
    let value = max_value.max(SMALL_REPLY);
    plan.parts
        .iter()
        .map(|part| match &part.op {
            TxnOp::Read(
                ReadOp::Exists { .. }
                | ReadOp::StrLen { .. }
                | ReadOp::Ttl { .. }
                | ReadOp::Type { .. },
            ) => SMALL_REPLY,
            TxnOp::Read(ReadOp::MGet { keys }) => value.saturating_mul(keys.len()),
            // GET, GETRANGE and any read added later: a value.
            TxnOp::Read(_) => value,
            TxnOp::Write(
                WriteOp::Set { get: true, .. } | WriteOp::GetDel { .. } | WriteOp::GetEx { .. },
            ) => value,
            TxnOp::Write(_) => SMALL_REPLY,
        })
        .fold(0, usize::saturating_add)
}
