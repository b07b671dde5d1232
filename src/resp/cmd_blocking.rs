//! The blocking commands (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP,
//! BZPOPMIN, BZPOPMAX, BZMPOP) and how a connection blocks.
//!
//! Each compiles into its non-blocking form (LMPOP, LMOVE, ZMPOP with a
//! count of one...) plus a [`Block`]: the keys, their type and the timeout.
//! Inside MULTI the plan runs as it is and answers nil when nothing is
//! there, as in Redis. Outside, `Session::run_blocking` runs the pop; when
//! it finds nothing it asks the shard to wait
//! ([`ShardRequest::WaitFilled`]) until a key holds elements, then pops
//! again, until the timeout (0: forever) or CLIENT UNBLOCK. The pop is an
//! ordinary write, so an element is popped only by a Raft entry; a client
//! whose connection drops stops being served (the connection loop drops
//! the command), so it pops nothing after that.
//!
//! The keys of one blocking command may live on several shards: the pop
//! then runs as LMPOP / ZMPOP / LMOVE across shards do (one transaction),
//! and the wait is one [`ShardRequest::WaitFilled`] per shard, the first
//! to answer ending it. Waits renew every [`WAIT_CHUNK`] so a router always hears back within
//! its RPC timeout, keeping the client's place in the queue (the time it
//! started blocking travels with every wait).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::args::Args;
use super::compile::{mpop_args, shard_keys, Ctx, ERR_SYNTAX};
use super::errors::cluster_err;
use super::reply::Reply;
use super::session::Session;
use crate::clock::now_ms;
use crate::cluster::plan::{Block, Merge, Plan};
use crate::shard::coll::CollWrite;
use crate::shard::command::{Kind, OpReply, ShardRequest, TxnOp, WriteOp};
use crate::shard::list::{End, LWrite};
use crate::shard::zset::ZWrite;

/// Longest single wait a router asks of a node before asking again.
pub const WAIT_CHUNK: Duration = Duration::from_secs(2);

const ERR_TIMEOUT_FLOAT: &str = "ERR timeout is not a float or out of range";

/// Redis's timeout argument: seconds, fractions allowed; in milliseconds.
fn timeout_ms(b: &[u8]) -> Result<u64, Reply> {
    let Some(t) = crate::num::parse_f64(b).filter(|t| t.is_finite()) else {
        return Err(Reply::error(ERR_TIMEOUT_FLOAT));
    };
    if t < 0.0 {
        return Err(Reply::error("ERR timeout is negative"));
    }
    let ms = (t * 1000.0).ceil();
    if ms > (i64::MAX / 2) as f64 {
        return Err(Reply::error("ERR timeout is out of range"));
    }
    Ok(ms as u64)
}

fn blocking(
    cx: &Ctx,
    op: WriteOp,
    merge: Merge,
    keys: Vec<Bytes>,
    kind: Kind,
    timeout_ms: u64,
) -> Plan {
    let first = keys.first().cloned().unwrap_or_default();
    let mut plan = cx.single(&first, TxnOp::Write(op));
    plan.merge = merge;
    if matches!(
        &plan.parts[0].op,
        TxnOp::Write(WriteOp::Coll(
            CollWrite::L(LWrite::MPop { .. }) | CollWrite::Z(ZWrite::ZMPop { .. })
        ))
    ) {
        plan = cx.pop_first(plan, &keys);
    }
    plan.block = Some(Block {
        keys,
        kind,
        timeout_ms,
    });
    plan
}

/// `key [key ...] timeout`
fn keys_then_timeout(args: &mut Args) -> Result<(Vec<Bytes>, u64), Reply> {
    let mut rest = args.rest();
    let t = rest.pop().unwrap_or_default();
    Ok((rest, timeout_ms(&t)?))
}

fn bpop(args: &mut Args, cx: &Ctx, end: End) -> Result<Plan, Reply> {
    let (keys, t) = keys_then_timeout(args)?;
    let op = WriteOp::Coll(CollWrite::L(LWrite::MPop {
        keys: keys.clone(),
        end,
        count: 1,
    }));
    Ok(blocking(cx, op, Merge::BlockPop, keys, Kind::List, t))
}

/// `BLPOP key [key ...] timeout`
pub fn blpop(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    bpop(args, cx, End::Left)
}

/// `BRPOP key [key ...] timeout`
pub fn brpop(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    bpop(args, cx, End::Right)
}

fn end_arg(args: &mut Args) -> Result<End, Reply> {
    let end = match args.peek_upper().as_deref() {
        Some("LEFT") => End::Left,
        Some("RIGHT") => End::Right,
        _ => return Err(Reply::error(ERR_SYNTAX)),
    };
    let _ = args.next_bytes();
    Ok(end)
}

fn bmove(cx: &Ctx, src: Bytes, dst: Bytes, from: End, to: End, t: u64) -> Result<Plan, Reply> {
    let across = cx.one_shard([&src, &dst]).is_none();
    let op = WriteOp::Coll(CollWrite::L(LWrite::Move {
        src: src.clone(),
        dst,
        from,
        to,
    }));
    let mut plan = blocking(cx, op, Merge::Single, vec![src], Kind::List, t);
    if across {
        // A transaction run by the router (`Session::run_transfer`).
        plan.atomicity = crate::cluster::plan::Atomicity::Transfer;
    }
    Ok(plan)
}

/// `BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout`
pub fn blmove(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let src = args.next_bytes().unwrap_or_default();
    let dst = args.next_bytes().unwrap_or_default();
    let from = end_arg(args)?;
    let to = end_arg(args)?;
    let t = timeout_ms(&args.next_bytes().unwrap_or_default())?;
    bmove(cx, src, dst, from, to, t)
}

/// `BRPOPLPUSH source destination timeout`
pub fn brpoplpush(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let src = args.next_bytes().unwrap_or_default();
    let dst = args.next_bytes().unwrap_or_default();
    let t = timeout_ms(&args.next_bytes().unwrap_or_default())?;
    bmove(cx, src, dst, End::Right, End::Left, t)
}

/// `BLMPOP timeout numkeys key [key ...] LEFT|RIGHT [COUNT count]`
pub fn blmpop(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let t = timeout_ms(&args.next_bytes().unwrap_or_default())?;
    let (keys, dir, count) = mpop_args(args, ["LEFT", "RIGHT"])?;
    let end = if dir == 0 { End::Left } else { End::Right };
    let op = WriteOp::Coll(CollWrite::L(LWrite::MPop {
        keys: keys.clone(),
        end,
        count,
    }));
    Ok(blocking(cx, op, Merge::Single, keys, Kind::List, t))
}

fn bzpop(args: &mut Args, cx: &Ctx, max: bool) -> Result<Plan, Reply> {
    let (keys, t) = keys_then_timeout(args)?;
    let op = WriteOp::Coll(CollWrite::Z(ZWrite::ZMPop {
        keys: keys.clone(),
        max,
        count: 1,
    }));
    Ok(blocking(cx, op, Merge::BlockZPop, keys, Kind::ZSet, t))
}

/// `BZPOPMIN key [key ...] timeout`
pub fn bzpopmin(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    bzpop(args, cx, false)
}

/// `BZPOPMAX key [key ...] timeout`
pub fn bzpopmax(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    bzpop(args, cx, true)
}

/// `BZMPOP timeout numkeys key [key ...] MIN|MAX [COUNT count]`
pub fn bzmpop(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let t = timeout_ms(&args.next_bytes().unwrap_or_default())?;
    let (keys, dir, count) = mpop_args(args, ["MIN", "MAX"])?;
    let op = WriteOp::Coll(CollWrite::Z(ZWrite::ZMPop {
        keys: keys.clone(),
        max: dir == 1,
        count,
    }));
    Ok(blocking(cx, op, Merge::Single, keys, Kind::ZSet, t))
}

/// Key positions of `BLMPOP timeout numkeys key...` (and BZMPOP).
pub fn keys_after_timeout_numkeys(argv: &[Bytes]) -> Vec<usize> {
    let n = argv
        .get(2)
        .and_then(|b| crate::num::parse_i64(b))
        .filter(|n| *n > 0)
        .unwrap_or(0) as usize;
    (3..(3 + n).min(argv.len())).collect()
}

impl Session {
    /// Run a blocking command's plan until it finds something, its timeout
    /// passes, or CLIENT UNBLOCK.
    pub(super) async fn run_blocking(&self, mut plan: Plan) -> Reply {
        let Some(block) = plan.block.take() else {
            return self.run_plan(plan).await;
        };
        let since = now_ms();
        let deadline = (block.timeout_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(block.timeout_ms));
        let unblock = self
            .shared
            .clients
            .unblock_handle(self.id)
            .unwrap_or_default();
        let table = plan.table.clone();
        // The keys by shard: a wait on each, the first answer wins.
        let groups = shard_keys(&table, &block.keys);
        // This command's number on the nodes, to cancel its waits.
        let client = rand::random::<u64>() | 1;
        loop {
            let reply = self.run_plan(plan.clone()).await;
            if !matches!(reply, Reply::Nil | Reply::NilArray) {
                return reply;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => WAIT_CHUNK,
            };
            // Redis answers a timeout with a null array, whatever the
            // command (BLMOVE's nil too).
            if left.is_zero() {
                return Reply::NilArray;
            }
            let waits = groups.iter().map(|g| {
                let req = ShardRequest::WaitFilledFor {
                    client,
                    keys: g.keys.clone(),
                    kind: block.kind,
                    since_ms: since,
                    wait_ms: left.min(WAIT_CHUNK).as_millis() as u64,
                    now_ms: now_ms(),
                };
                Box::pin(self.shared.client.execute(&table, g.shard, req))
            });
            let first = futures::future::select_all(waits);
            // Dropped with its waits still registered (the connection
            // closed), or when another shard answered: cancel them.
            let mut cancel = CancelWaits {
                client: self.shared.client.clone(),
                table: table.clone(),
                shards: groups.iter().map(|g| g.shard).collect(),
                id: client,
                armed: true,
            };
            unblock.blocked.store(true, Ordering::SeqCst);
            let waited = tokio::select! {
                (r, _, _) = first => Some(r),
                _ = unblock.notify.notified() => None,
            };
            unblock.blocked.store(false, Ordering::SeqCst);
            // One shard that answered: its wait has ended, nothing to cancel.
            cancel.armed = waited.is_none() || groups.len() > 1;
            drop(cancel);
            match waited {
                None if unblock.error.swap(false, Ordering::SeqCst) => {
                    return Reply::error("UNBLOCKED client unblocked via CLIENT UNBLOCK");
                }
                None => return Reply::NilArray,
                Some(Ok(OpReply::Error(e))) => return Reply::Error(e),
                Some(Ok(_)) => {}
                Some(Err(e)) => return cluster_err(e),
            }
        }
    }
}

/// The waits of one blocked command on `shards`, cancelled
/// ([`ShardRequest::CancelWaits`]) when this is dropped armed, so no node
/// spends a wake-up on a command that stopped waiting.
struct CancelWaits {
    client: std::sync::Arc<crate::cluster::client::ShardClient>,
    table: std::sync::Arc<crate::cluster::routes::TableRoute>,
    shards: Vec<usize>,
    id: u64,
    armed: bool,
}

impl Drop for CancelWaits {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, table) = (self.client.clone(), self.table.clone());
        let (shards, id) = (std::mem::take(&mut self.shards), self.id);
        runtime.spawn(async move {
            for shard in shards {
                let req = ShardRequest::CancelWaits { client: id };
                // A node that does not answer ends the wait by its chunk.
                let _ = client.execute(&table, shard, req).await;
            }
        });
    }
}
