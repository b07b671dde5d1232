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
//! has not read), and execution stops once the replies produced have spent
//! it. A group that writes admits requests only while the worst case of
//! their replies fits (a value read counts `max_value_len`: a write is never
//! run twice). A group of reads counts each GET or MGET value at a 64 KiB
//! share instead, and each read is sent with its share of the budget as its
//! reply limit, which the node enforces; a read whose value is bigger than
//! its share is refused by the node, and it and the reads after it run
//! again (reads: nothing changes), the first of them alone with the whole
//! budget. So a pipeline of small GETs runs 512 at a time, and one of big
//! values still never holds more than the budget.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::args::Args;
use super::commands::lookup;
use super::compile::op_reply;
use super::errors::cluster_err;
use super::reply::Reply;
use super::session::{After, Session};
use super::spec::{CommandSpec, Handler};
use crate::clock::now_ms;
use crate::cluster::plan::{merge, Plan};
use crate::cluster::ClusterError;
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
        let mut group = Group::default();
        // Bytes of the replies produced.
        let mut used = 0usize;
        loop {
            let next = pending
                .front()
                .and_then(|parts| self.single_shard_plan(parts));
            let mut stop = pending.is_empty();
            if let Some((spec, plan)) = next {
                let bounds = Bounds::of(&plan, max_value);
                if out.is_empty() || used.saturating_add(group.need_with(bounds)) <= budget {
                    let parts = pending.pop_front().expect("a pending request");
                    out.push((Reply::Nil, After::Continue));
                    group.push(out.len() - 1, spec, plan, parts, bounds);
                    continue;
                }
                stop = true;
            }
            // The group ends here: run it.
            match self
                .flush_group(&mut group, &mut out, budget.saturating_sub(used))
                .await
            {
                Flushed::Done(size) => used = used.saturating_add(size),
                Flushed::Refused { first, back } => {
                    // Reads whose value passed their share: the first of
                    // them and everything after it go back to the queue
                    // (reads: running them again changes nothing), and the
                    // first runs alone with the whole budget if it led the
                    // group; otherwise it leads the next group.
                    out.truncate(out.len() - back.len());
                    used = out
                        .iter()
                        .fold(0usize, |n, (r, _)| n.saturating_add(r.size_hint()));
                    for parts in back.into_iter().rev() {
                        pending.push_front(parts);
                    }
                    if first {
                        let parts = pending.pop_front().expect("the refused read");
                        let (reply, after) = self.handle(parts).await;
                        used = used.saturating_add(reply.size_hint());
                        out.push((reply, after));
                    }
                    if !out.is_empty() && used >= budget {
                        break;
                    }
                    continue;
                }
            }
            if stop || (!out.is_empty() && used >= budget) {
                break;
            }
            let Some(parts) = pending.pop_front() else {
                break;
            };
            let (reply, after) = self.handle(parts).await;
            used = used.saturating_add(reply.size_hint());
            out.push((reply, after));
            if after == After::Close {
                return out;
            }
        }
        out
    }

    /// The plan of a plain single-shard data command that may join a group
    /// (its row's handler is [`Handler::Data`]).
    fn single_shard_plan(&self, parts: &[Bytes]) -> Option<(&'static CommandSpec, Plan)> {
        // Subscribed RESP2 connections go through `handle`, which refuses
        // most commands.
        if self.multi.is_some() || !self.authenticated || self.subs.active() {
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
        // A call the user may not make runs alone (and is refused there,
        // with its ACL LOG entry); so does any after a change of users.
        if self.users.has_changed().unwrap_or(true)
            || self.acl_denied(spec, args.all(), &self.table).is_some()
        {
            return None;
        }
        let plan = self.compile(spec, compile, &mut args).ok()?;
        // A blocking command runs alone (it may wait).
        (plan.parts.len() == 1 && plan.block.is_none()).then_some((spec, plan))
    }

    /// Run the group, filling its replies into `out`. A group of reads
    /// only gives each read a share of `left` (its bound at
    /// [`READ_SHARE`] per value, scaled up to `left`); if a read's value
    /// passes its share, the replies from it on are not kept
    /// ([`Flushed::Refused`]).
    async fn flush_group(
        &self,
        group: &mut Group,
        out: &mut [(Reply, After)],
        left: usize,
    ) -> Flushed {
        let group = std::mem::take(group);
        if group.plans.is_empty() {
            return Flushed::Done(0);
        }
        let started = std::time::Instant::now();
        let slots: Vec<usize> = group.plans.iter().map(|(i, _)| *i).collect();
        let first_slot = slots[0];
        let refused = if group.writes || group.plans.len() == 1 {
            self.run_group(group.plans, out).await;
            None
        } else {
            let shares: Vec<usize> = group
                .share_bounds
                .iter()
                .map(|b| (*b as u128 * left as u128 / group.shares.max(1) as u128) as usize)
                .collect();
            self.run_reads(group.plans, &shares, out).await
        };
        // Each request of the group counts the group's time; those sent
        // again (refused reads) count when they run again.
        let nanos = started.elapsed().as_nanos() as u64;
        let kept = refused.map_or(slots.len(), |slot| {
            slots.iter().position(|s| *s == slot).unwrap_or(0)
        });
        for ((slot, spec), parts) in slots.iter().zip(&group.specs).zip(&group.parts).take(kept) {
            self.account(spec, parts, nanos, &out[*slot].0);
        }
        match refused {
            None => Flushed::Done(slots.into_iter().map(|i| out[i].0.size_hint()).sum()),
            Some(slot) => {
                let at = kept;
                Flushed::Refused {
                    first: slot == first_slot,
                    back: group.parts.into_iter().skip(at).collect(),
                }
            }
        }
    }

    /// Reads of one group, each on its shard with its reply share, all at
    /// once. Returns the first slot (in request order) whose value passed
    /// its share.
    async fn run_reads(
        &self,
        plans: Vec<(usize, Plan)>,
        shares: &[usize],
        out: &mut [(Reply, After)],
    ) -> Option<usize> {
        self.shared
            .commands_processed
            .fetch_add(plans.len() as u64, std::sync::atomic::Ordering::Relaxed);
        // Each read on its shard, all queued at once (one frame per node
        // when they arrive together).
        let mut reads = Vec::with_capacity(plans.len());
        let mut bad = Vec::new();
        for ((i, p), share) in plans.iter().zip(shares) {
            let part = &p.parts[0];
            match &part.op {
                TxnOp::Read(op) => reads.push((
                    &*p.table,
                    part.shard,
                    self.read_with(op.clone(), p.stale_ok),
                    (*share).max(1),
                )),
                _ => bad.push(*i),
            }
        }
        let mut replies = self.shared.client.read_many(reads).await.into_iter();
        let mut refused = None;
        for (i, p) in &plans {
            let i = *i;
            let r = if bad.contains(&i) {
                Err(Reply::error("ERR internal: a write in a read group"))
            } else {
                replies
                    .next()
                    .unwrap_or_else(|| Err(ClusterError::Internal("a read got no reply".into())))
                    .map_err(cluster_err)
            };
            out[i].0 = match r {
                Ok(OpReply::Error(e)) if e.starts_with("ERR reply too large") => {
                    refused = Some(refused.map_or(i, |f: usize| f.min(i)));
                    Reply::Error(e)
                }
                Ok(r) => op_reply(merge(&p.merge, vec![r])),
                Err(reply) => reply,
            };
        }
        refused
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

/// A read of a stored value in a group of reads counts this much at least
/// (its share of the output budget); a value bigger than its share is read
/// again alone.
const READ_SHARE: usize = 64 * 1024;

/// What a group's replies may take.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// With every value at the largest a key may hold.
    worst: usize,
    /// With every value at [`READ_SHARE`] (reads only).
    share: usize,
    writes: bool,
}

impl Bounds {
    fn of(plan: &Plan, max_value: usize) -> Bounds {
        Bounds {
            worst: reply_bound(plan, max_value),
            share: share_bound(plan, max_value),
            writes: !plan.is_read_only(),
        }
    }
}

/// Requests grouped so far: their slots in the replies, plans, requests and
/// bounds.
#[derive(Default)]
struct Group {
    plans: Vec<(usize, Plan)>,
    specs: Vec<&'static CommandSpec>,
    parts: Vec<Vec<Bytes>>,
    share_bounds: Vec<usize>,
    worst: usize,
    shares: usize,
    writes: bool,
}

impl Group {
    /// The budget the group would need with `plan` added: reads only are
    /// bounded by their shares (a value over its share is read again), a
    /// group that writes by the worst case (a write is never run twice).
    fn need_with(&self, b: Bounds) -> usize {
        if self.writes || b.writes {
            self.worst.saturating_add(b.worst)
        } else {
            self.shares.saturating_add(b.share)
        }
    }

    fn push(
        &mut self,
        slot: usize,
        spec: &'static CommandSpec,
        plan: Plan,
        parts: Vec<Bytes>,
        b: Bounds,
    ) {
        self.plans.push((slot, plan));
        self.specs.push(spec);
        self.parts.push(parts);
        self.share_bounds.push(b.share);
        self.worst = self.worst.saturating_add(b.worst);
        self.shares = self.shares.saturating_add(b.share);
        self.writes |= b.writes;
    }
}

/// How a group ran.
enum Flushed {
    /// Every reply is in place; their size.
    Done(usize),
    /// A read's value passed its share: the requests from it on (`back`)
    /// must run again; `first` when it led the group.
    Refused { first: bool, back: Vec<Vec<Bytes>> },
}

/// [`reply_bound`] with the values the node bounds by the request's own
/// limit (GET, MGET: it refuses a bigger reply) at [`READ_SHARE`].
fn share_bound(plan: &Plan, max_value: usize) -> usize {
    let share = READ_SHARE.min(max_value).max(SMALL_REPLY);
    plan.parts
        .iter()
        .map(|part| match &part.op {
            TxnOp::Read(ReadOp::Get { .. }) => share,
            TxnOp::Read(ReadOp::MGet { keys }) => share.saturating_mul(keys.len()),
            op => op_bound(op, max_value),
        })
        .fold(0, usize::saturating_add)
}

/// The most bytes `plan`'s reply can take: a stored value counts as
/// `max_value` (the largest a key may hold), anything else as small.
fn reply_bound(plan: &Plan, max_value: usize) -> usize {
    plan.parts
        .iter()
        .map(|part| op_bound(&part.op, max_value))
        .fold(0, usize::saturating_add)
}

/// [`reply_bound`] of one operation.
fn op_bound(op: &TxnOp, max_value: usize) -> usize {
    let value = max_value.max(SMALL_REPLY);
    match op {
        TxnOp::Read(
            ReadOp::Exists { .. }
            | ReadOp::StrLen { .. }
            | ReadOp::Ttl { .. }
            | ReadOp::Type { .. },
        ) => SMALL_REPLY,
        TxnOp::Read(ReadOp::MGet { keys }) => value.saturating_mul(keys.len()),
        // An integer (`:-9223372036854775808\r\n`) per subcommand.
        TxnOp::Read(ReadOp::BitField { ops, .. }) | TxnOp::Write(WriteOp::BitField { ops, .. }) => {
            SMALL_REPLY.saturating_add(ops.len().saturating_mul(23))
        }
        // GET, GETRANGE and any read added later: a value.
        TxnOp::Read(_) => value,
        TxnOp::Write(
            WriteOp::Set { get: true, .. } | WriteOp::GetDel { .. } | WriteOp::GetEx { .. },
        ) => value,
        TxnOp::Write(_) => SMALL_REPLY,
    }
}
