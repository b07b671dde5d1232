//! Data commands: the string family and the keyspace commands. Each command
//! is parsed into a shard request value (`shard::command`), routed by key
//! slot, and the shard's answer turned into a reply.
//!
//! Multi-key commands split their keys by shard and send one request per
//! shard, all in parallel (MGET reassembles the answers in key order).
//! Keyspace commands (KEYS, SCAN, DBSIZE, FLUSHDB, FLUSHALL) go to every
//! shard. MSET/MSETNX whose keys span shards run as one two-phase commit
//! (`cluster::txn`), whose decision record is written to etcd: all keys are
//! set, or none.
//!
//! Fan-out replies are bounded before they are built: every request tells
//! the node the router's output limit (`max_output_len`), so a node never
//! builds a bigger page or MGET answer; KEYS walks each shard page by page
//! and stops as soon as the keys gathered pass the limit; an MGET whose
//! reply cannot fit is refused before it is sent. The client then gets
//! `-ERR reply too large: ...` instead of a reply the connection would drop.
//!
//! SCAN cursors: a Redis cursor is one unsigned 64-bit number, but a position
//! inside a shard is a key. The cursor is `shard << 48 | token`, where token
//! 0 means "from the start of the shard" and any other token names the last
//! key returned, remembered in a bounded router-wide table
//! ([`ScanCursors`]). A cursor this router does not know (another router's,
//! or evicted) restarts its shard from the beginning: keys may then repeat,
//! which SCAN allows, but are never missed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::args::{parse_f64, Args};
use super::reply::Reply;
use super::session::{arg_err, cluster_err, wrong_args, Session};
use crate::clock::now_ms;
use crate::cluster::plan::{merge, Atomicity, Merge, Part, Plan};
use crate::cluster::routes::TableRoute;
use crate::cluster::txn::{self, Outcome, ShardKeys, ShardWork};
use crate::cluster::ClusterError;
use crate::meta::descriptor::TableState;
use crate::shard::command::TxnOp;
use crate::shard::command::{
    reply_too_large, ExpireCond, Expiry, OpReply, ReadOp, SetCond, ShardRequest, WriteCmd, WriteOp,
    MAX_SCAN_COUNT,
};
use crate::slot::slot;

const ERR_NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const ERR_SYNTAX: &str = "ERR syntax error";

fn write(op: WriteOp) -> ShardRequest {
    ShardRequest::Write(WriteCmd {
        now_ms: now_ms(),
        op,
    })
}

impl Session {
    /// The table this connection works in, if it is routable.
    fn current_table(&self) -> Result<Arc<TableRoute>, ClusterError> {
        self.table_named(&self.table)
    }

    /// A table by name, if it is routable.
    pub(super) fn table_named(&self, name: &str) -> Result<Arc<TableRoute>, ClusterError> {
        let view = self.shared.client.routes();
        match view.table(name) {
            Some(t) => routable(t).map(|_| t.clone()),
            None if view.unreadable.contains_key(name) => Err(ClusterError::UnreadableTable {
                name: name.to_string(),
                error: view.unreadable[name].clone(),
            }),
            None if name == "default" => Err(ClusterError::TryAgain(
                "the cluster is starting: table 'default' is not created yet".into(),
            )),
            None => Err(ClusterError::UnknownTable(name.to_string())),
        }
    }

    pub(super) fn read(&self, op: ReadOp) -> ShardRequest {
        ShardRequest::Read {
            op,
            linearizable: !self.readonly,
            now_ms: now_ms(),
        }
    }

    pub(super) async fn data(&mut self, name: &str, args: &mut Args) -> Reply {
        if name == "flushall" {
            return self.flushall(args).await;
        }
        let table = match self.current_table() {
            Ok(t) => t,
            Err(e) => return cluster_err(e),
        };
        match name {
            "dbsize" => match self.table_dbsize(&table).await {
                Ok(n) => Reply::Int(n),
                Err(r) => r,
            },
            "flushdb" => match parse_flush(args) {
                Ok(()) => match self.flush_table(&table).await {
                    Ok(()) => Reply::ok(),
                    Err(r) => r,
                },
                Err(r) => r,
            },
            "keys" => {
                let pattern = args.next_bytes().unwrap_or_default();
                let everything = &pattern[..] == b"*";
                self.keys(&table, (!everything).then_some(pattern)).await
            }
            "scan" => self.scan(&table, args).await,
            _ => match compile(name, args, &table, self.shared.config.max_value_len) {
                Ok(plan) => self.run_plan(plan).await,
                Err(r) => r,
            },
        }
    }

    /// KEYS: every shard walked page by page, in parallel, until the keys
    /// gathered pass the output limit (then the reply is the error, and no
    /// more pages are asked for). Each page is at most an equal share of
    /// the limit, so no more than twice the limit is ever held.
    async fn keys(&self, table: &Arc<TableRoute>, pattern: Option<Bytes>) -> Reply {
        let limit = self.shared.config.max_output_len;
        let shards = table.desc.shards.len();
        let page_budget = (limit / shards.max(1)).max(64 * 1024);
        let gathered = AtomicUsize::new(0);
        let walks = (0..shards).map(|shard| {
            let (gathered, pattern) = (&gathered, pattern.clone());
            async move {
                let mut keys = Vec::new();
                let mut after = Bytes::new();
                while gathered.load(Ordering::Relaxed) < limit {
                    let req = self.read(ReadOp::Scan {
                        after,
                        count: MAX_SCAN_COUNT,
                        pattern: pattern.clone(),
                    });
                    let reply = self
                        .shared
                        .client
                        .execute_bounded(table, shard, req, page_budget)
                        .await
                        .map_err(cluster_err)?;
                    if let OpReply::Error(e) = reply {
                        return Err(Reply::Error(e));
                    }
                    let (next, page) = scan_reply(reply);
                    let size: usize = page.iter().map(|k| bulk_size(k.len())).sum();
                    gathered.fetch_add(size, Ordering::Relaxed);
                    keys.extend(page.into_iter().map(Reply::Bulk));
                    match next {
                        Some(last) => after = last,
                        None => break,
                    }
                }
                Ok(keys)
            }
        });
        let mut keys = Vec::new();
        for r in futures::future::join_all(walks).await {
            match r {
                Ok(k) => keys.extend(k),
                Err(reply) => return reply,
            }
        }
        // The keys plus the array's header.
        if gathered.load(Ordering::Relaxed).saturating_add(16) > limit {
            return Reply::error(reply_too_large("KEYS", limit));
        }
        Reply::Array(keys)
    }

    /// Run a compiled command outside MULTI.
    pub(super) async fn run_plan(&self, plan: Plan) -> Reply {
        let limit = self.shared.config.max_output_len;
        if let Merge::Gather { len, .. } = &plan.merge {
            // Even all nils (5 bytes each) would not fit: refuse unsent.
            if len.saturating_mul(5) > limit {
                return Reply::error(reply_too_large("MGET", limit));
            }
        }
        if plan.shards() > 1 {
            match plan.atomicity {
                Atomicity::AllOrNothing => return self.run_atomic(plan).await,
                Atomicity::AllIfAbsent => return self.run_set_if_absent(plan).await,
                Atomicity::None => {}
            }
        }
        let calls = plan.parts.iter().map(|part| {
            let req = match &part.op {
                TxnOp::Write(w) => write(w.clone()),
                TxnOp::Read(r) => self.read(r.clone()),
            };
            self.execute_waiting_for_locks(&plan.table, part.shard, req)
        });
        let mut replies = Vec::with_capacity(plan.parts.len());
        let mut size = 0usize;
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(r) => {
                    // Each part was bounded by the node; their sum may not be.
                    size = size.saturating_add(r.resp_size());
                    replies.push(r)
                }
                Err(e) => return cluster_err(e),
            }
        }
        // Only a read is refused here: a write's reply comes after its
        // effect, and an error would claim it did not happen.
        if size > limit && plan.is_read_only() {
            return Reply::error(reply_too_large(&plan_name(&plan), limit));
        }
        op_reply(merge(&plan.merge, replies))
    }

    /// Execute a request; a write refused because a transaction holds one of
    /// its keys is retried for a short while (it had no effect), then the
    /// client gets the `-TRYAGAIN`.
    async fn execute_waiting_for_locks(
        &self,
        table: &TableRoute,
        shard: usize,
        req: ShardRequest,
    ) -> Result<OpReply, ClusterError> {
        let deadline = Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            let reply = self
                .shared
                .client
                .execute(table, shard, req.clone())
                .await?;
            let locked = matches!(&reply, OpReply::Error(e) if e.starts_with("TRYAGAIN"));
            if !locked || Instant::now() >= deadline {
                return Ok(reply);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// MSET over several shards: one transaction, all or nothing.
    async fn run_atomic(&self, plan: Plan) -> Reply {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            let work = shard_work(std::slice::from_ref(&plan), &[]);
            let n = plan.parts.len();
            let stats = &self.shared.txn_stats;
            match txn::execute(&self.shared.client, &self.shared.meta, work, n, stats).await {
                Ok(Outcome::Committed(replies)) => return op_reply(merge(&plan.merge, replies)),
                Ok(Outcome::Conflict) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(Outcome::Conflict) => {
                    return Reply::error("TRYAGAIN keys are locked by other transactions")
                }
                Err(e) => return cluster_err(e),
            }
        }
    }

    /// MSETNX over several shards: check that no key exists, then set them
    /// all in one transaction that WATCHes every key as absent.
    async fn run_set_if_absent(&self, plan: Plan) -> Reply {
        let keys: Vec<Bytes> = plan.parts.iter().flat_map(|p| p.op.keys()).collect();
        for _ in 0..5 {
            let reads = shard_keys(&plan.table, &keys);
            let snapshot = match txn::snapshot_read(&self.shared.client, &reads).await {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => return cluster_err(e),
            };
            let now = now_ms();
            if snapshot.values().any(|v| v.live_at(now)) {
                return Reply::Int(0);
            }
            let mut set_all = plan.clone();
            for p in set_all.parts.iter_mut() {
                if let TxnOp::Write(WriteOp::MSet { nx, .. }) = &mut p.op {
                    *nx = false;
                }
            }
            let watches: Vec<WatchedKey> = keys
                .iter()
                .map(|k| WatchedKey {
                    table: plan.table.clone(),
                    key: k.clone(),
                    version: 0,
                })
                .collect();
            let work = shard_work(std::slice::from_ref(&set_all), &watches);
            let n = set_all.parts.len();
            let stats = &self.shared.txn_stats;
            match txn::execute(&self.shared.client, &self.shared.meta, work, n, stats).await {
                Ok(Outcome::Committed(_)) => return Reply::Int(1),
                Ok(Outcome::Conflict) => continue,
                Err(e) => return cluster_err(e),
            }
        }
        Reply::Int(0)
    }

    /// Run one request per listed shard, in parallel; replies in the order
    /// of `shards`. The first routing error or shard error becomes the reply.
    async fn on_shards(
        &self,
        table: &Arc<TableRoute>,
        reqs: Vec<(usize, ShardRequest)>,
    ) -> Result<Vec<OpReply>, Reply> {
        let calls = reqs.into_iter().map(|(shard, req)| {
            let client = self.shared.client.clone();
            let table = table.clone();
            async move { client.execute(&table, shard, req).await }
        });
        let mut out = Vec::new();
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(OpReply::Error(e)) => return Err(Reply::Error(e)),
                Ok(r) => out.push(r),
                Err(e) => return Err(cluster_err(e)),
            }
        }
        Ok(out)
    }

    /// The same kind of request on every shard of the table.
    async fn all_shards(
        &self,
        table: &Arc<TableRoute>,
        make: impl Fn(usize) -> ShardRequest,
    ) -> Result<Vec<OpReply>, Reply> {
        let reqs = (0..table.desc.shards.len()).map(|s| (s, make(s))).collect();
        self.on_shards(table, reqs).await
    }

    /// Keys stored in a table, for INFO keyspace: the sum of the counters
    /// the shards keep (any replica; no key is read). Approximate: expired
    /// keys not yet purged count, and a lagging replica may answer.
    pub(super) async fn table_key_count(&self, table: &Arc<TableRoute>) -> Result<i64, Reply> {
        routable(table).map_err(cluster_err)?;
        let req = ShardRequest::Read {
            op: ReadOp::KeyCount,
            linearizable: false,
            now_ms: now_ms(),
        };
        let replies = self.all_shards(table, |_| req.clone()).await?;
        Ok(replies
            .iter()
            .map(|r| match r {
                OpReply::Int(n) => *n,
                _ => 0,
            })
            .sum())
    }

    /// Live keys in a table (DBSIZE): exact, every shard counts its keys.
    pub(super) async fn table_dbsize(&self, table: &Arc<TableRoute>) -> Result<i64, Reply> {
        routable(table).map_err(cluster_err)?;
        let req = self.read(ReadOp::DbSize);
        let replies = self.all_shards(table, |_| req.clone()).await?;
        Ok(replies
            .iter()
            .map(|r| match r {
                OpReply::Int(n) => *n,
                _ => 0,
            })
            .sum())
    }

    async fn flush_table(&self, table: &Arc<TableRoute>) -> Result<(), Reply> {
        self.all_shards(table, |_| write(WriteOp::FlushGroup))
            .await
            .map(|_| ())
    }

    /// FLUSHALL: FLUSHDB on every available table.
    async fn flushall(&self, args: &mut Args) -> Reply {
        if let Err(r) = parse_flush(args) {
            return r;
        }
        let view = self.shared.client.routes();
        let mut tables: Vec<&Arc<TableRoute>> = view
            .tables
            .values()
            .filter(|t| t.desc.state == TableState::Available)
            .collect();
        tables.sort_by_key(|t| t.desc.db_index);
        let flushes = tables.into_iter().map(|t| self.flush_table(t));
        for r in futures::future::join_all(flushes).await {
            if let Err(r) = r {
                return r;
            }
        }
        Reply::ok()
    }

    /// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]
    async fn scan(&self, table: &Arc<TableRoute>, args: &mut Args) -> Reply {
        let cursor = match args.next_bytes().ok().and_then(|c| parse_cursor(&c)) {
            Some(c) => c,
            None => return Reply::error("ERR invalid cursor"),
        };
        let mut count = 10u64;
        let mut pattern = None;
        let mut only_strings = true;
        while let Some(opt) = args.peek_upper() {
            let _ = args.next_bytes();
            match opt.as_str() {
                // A hint: a shard page examines at most MAX_SCAN_COUNT keys.
                "COUNT" => match args.next_i64() {
                    Ok(n) if n < 1 => return Reply::error(ERR_SYNTAX),
                    Ok(n) => count = (n as u64).min(MAX_SCAN_COUNT),
                    Err(super::args::ArgError::NotInteger) => return Reply::error(ERR_NOT_INTEGER),
                    Err(_) => return Reply::error(ERR_SYNTAX),
                },
                "MATCH" => match args.next_bytes() {
                    Ok(p) => pattern = (&p[..] != b"*").then_some(p),
                    Err(_) => return Reply::error(ERR_SYNTAX),
                },
                "TYPE" => match args.next_bytes() {
                    Ok(t) => only_strings = t.eq_ignore_ascii_case(b"string"),
                    Err(_) => return Reply::error(ERR_SYNTAX),
                },
                _ => return Reply::error(ERR_SYNTAX),
            }
        }
        let shards = table.desc.shards.len();
        let (mut shard, token) = decode_cursor(cursor);
        let mut after = if token == 0 {
            Bytes::new()
        } else {
            SCAN_CURSORS.get(token).unwrap_or_default()
        };
        let mut keys = Vec::new();
        while shard < shards {
            let req = self.read(ReadOp::Scan {
                after: after.clone(),
                count,
                pattern: pattern.clone(),
            });
            let reply = match self.shared.client.execute(table, shard, req).await {
                Ok(r) => r,
                Err(e) => return cluster_err(e),
            };
            if let OpReply::Error(e) = reply {
                return Reply::Error(e);
            }
            let (next, page) = scan_reply(reply);
            if only_strings {
                keys.extend(page.into_iter().map(Reply::Bulk));
            }
            match next {
                Some(last) => {
                    let cursor = encode_cursor(shard, SCAN_CURSORS.put(last));
                    return scan_result(cursor, keys);
                }
                None => {
                    shard += 1;
                    after = Bytes::new();
                    // Skip over exhausted shards while nothing is found yet.
                    if !keys.is_empty() {
                        break;
                    }
                }
            }
        }
        let cursor = if shard >= shards {
            0
        } else {
            encode_cursor(shard, 0)
        };
        scan_result(cursor, keys)
    }
}

/// How long a write waits for a key locked by a transaction.
const LOCK_WAIT: Duration = Duration::from_millis(1000);

/// A WATCHed key: its table, and its version when WATCH ran (0: absent).
#[derive(Debug, Clone)]
pub struct WatchedKey {
    pub table: Arc<TableRoute>,
    pub key: Bytes,
    pub version: u64,
}

/// The per-shard work of a transaction made of `plans` (in order), with the
/// WATCHed keys. Operation indexes count parts across all plans.
pub fn shard_work(plans: &[Plan], watches: &[WatchedKey]) -> Vec<ShardWork> {
    let mut work: Vec<ShardWork> = Vec::new();
    let slot_of = |table: &Arc<TableRoute>, shard: usize, work: &mut Vec<ShardWork>| match work
        .iter()
        .position(|w| w.table.desc.table_id == table.desc.table_id && w.shard == shard)
    {
        Some(i) => i,
        None => {
            work.push(ShardWork {
                table: table.clone(),
                shard,
                ops: Vec::new(),
                watches: Vec::new(),
            });
            work.len() - 1
        }
    };
    let mut index = 0;
    for plan in plans {
        for part in &plan.parts {
            let i = slot_of(&plan.table, part.shard, &mut work);
            work[i].ops.push((index, part.op.clone()));
            index += 1;
        }
    }
    for w in watches {
        let shard = w.table.desc.shard_for_slot(slot(&w.key));
        let i = slot_of(&w.table, shard, &mut work);
        work[i].watches.push((w.key.clone(), w.version));
    }
    work
}

/// Keys grouped by the shard of `table` that owns them.
pub fn shard_keys(table: &Arc<TableRoute>, keys: &[Bytes]) -> Vec<ShardKeys> {
    let mut out: Vec<ShardKeys> = Vec::new();
    for k in keys {
        let shard = table.desc.shard_for_slot(slot(k));
        match out.iter_mut().find(|s| s.shard == shard) {
            Some(s) => s.keys.push(k.clone()),
            None => out.push(ShardKeys {
                table: table.clone(),
                shard,
                keys: vec![k.clone()],
            }),
        }
    }
    out
}

/// Compile a per-key data command (everything but the keyspace commands
/// KEYS, SCAN, DBSIZE, FLUSHDB, FLUSHALL) against `table`.
pub fn compile(
    name: &str,
    args: &mut Args,
    table: &Arc<TableRoute>,
    max_value: usize,
) -> Result<Plan, Reply> {
    let key = |args: &mut Args| args.next_bytes().unwrap_or_default();
    let single = |key: &Bytes, op: TxnOp| Plan {
        table: table.clone(),
        parts: vec![Part {
            shard: table.desc.shard_for_slot(slot(key)),
            op,
        }],
        merge: Merge::Single,
        atomicity: Atomicity::None,
    };
    let w = TxnOp::Write;
    let r = TxnOp::Read;
    let plan = match name {
        "get" => {
            let key = key(args);
            single(&key, r(ReadOp::Get { key: key.clone() }))
        }
        "set" => {
            let op = parse_set(args, max_value)?;
            let key = op.keys()[0].clone();
            single(&key, w(op))
        }
        "setnx" | "getset" => {
            let key = key(args);
            let value = args.next_bytes().unwrap_or_default();
            if value.len() > max_value {
                return Err(Reply::error("ERR value is too large"));
            }
            let nx = name == "setnx";
            let op = WriteOp::Set {
                key: key.clone(),
                value,
                expiry: Expiry::Clear,
                cond: if nx {
                    SetCond::IfAbsent
                } else {
                    SetCond::Always
                },
                get: !nx,
            };
            let mut plan = single(&key, w(op));
            if nx {
                plan.merge = Merge::SetNx;
            }
            plan
        }
        "getdel" => {
            let key = key(args);
            single(&key, w(WriteOp::GetDel { key: key.clone() }))
        }
        "getex" => {
            let key = key(args);
            let expiry = parse_getex(args)?;
            let op = match expiry {
                // Plain GETEX is a read (and works under READONLY).
                Expiry::Keep => r(ReadOp::Get { key: key.clone() }),
                _ => w(WriteOp::GetEx {
                    key: key.clone(),
                    expiry,
                }),
            };
            single(&key, op)
        }
        "incr" | "decr" | "incrby" | "decrby" => {
            let key = key(args);
            let by = match name {
                "incr" => 1,
                "decr" => -1,
                _ => match args.next_i64() {
                    Err(_) => return Err(Reply::error(ERR_NOT_INTEGER)),
                    Ok(n) if name == "incrby" => n,
                    Ok(n) => match n.checked_neg() {
                        Some(n) => n,
                        None => return Err(Reply::error("ERR decrement would overflow")),
                    },
                },
            };
            single(
                &key,
                w(WriteOp::IncrBy {
                    key: key.clone(),
                    by,
                }),
            )
        }
        "incrbyfloat" => {
            let key = key(args);
            let by = args.next_bytes().unwrap_or_default();
            if parse_f64(&by).is_none() {
                return Err(Reply::error("ERR value is not a valid float"));
            }
            single(
                &key,
                w(WriteOp::IncrByFloat {
                    key: key.clone(),
                    by,
                }),
            )
        }
        "append" => {
            let key = key(args);
            let value = args.next_bytes().unwrap_or_default();
            let op = WriteOp::Append {
                key: key.clone(),
                value,
                max_len: max_value as u64,
            };
            single(&key, w(op))
        }
        "strlen" => {
            let key = key(args);
            single(&key, r(ReadOp::StrLen { key: key.clone() }))
        }
        "getrange" | "substr" => {
            let key = key(args);
            let (Ok(start), Ok(end)) = (args.next_i64(), args.next_i64()) else {
                return Err(Reply::error(ERR_NOT_INTEGER));
            };
            single(
                &key,
                r(ReadOp::GetRange {
                    key: key.clone(),
                    start,
                    end,
                }),
            )
        }
        "setrange" => {
            let key = key(args);
            let offset = match args.next_i64() {
                Ok(n) if n < 0 => return Err(Reply::error("ERR offset is out of range")),
                Ok(n) => n as u64,
                Err(_) => return Err(Reply::error(ERR_NOT_INTEGER)),
            };
            let value = args.next_bytes().unwrap_or_default();
            let op = WriteOp::SetRange {
                key: key.clone(),
                offset,
                value,
                max_len: max_value as u64,
            };
            single(&key, w(op))
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            let key = key(args);
            let (at_ms, cond) = parse_expire(name, args, now_ms() as i64)?;
            let op = WriteOp::Expire {
                key: key.clone(),
                at_ms,
                cond,
            };
            single(&key, w(op))
        }
        "ttl" | "pttl" => {
            let key = key(args);
            let op = ReadOp::Ttl {
                key: key.clone(),
                ms: name == "pttl",
            };
            single(&key, r(op))
        }
        "persist" => {
            let key = key(args);
            single(&key, w(WriteOp::Persist { key: key.clone() }))
        }
        "type" => {
            let key = key(args);
            single(&key, r(ReadOp::Type { key: key.clone() }))
        }
        "del" | "unlink" => per_shard(table, args.rest(), Merge::Sum, |keys| {
            w(WriteOp::Del { keys })
        }),
        "exists" | "touch" => per_shard(table, args.rest(), Merge::Sum, |keys| {
            r(ReadOp::Exists { keys })
        }),
        "mget" => {
            let keys = args.rest();
            let n = keys.len();
            let groups = by_shard(table, keys);
            let positions = groups
                .values()
                .map(|ks| ks.iter().map(|(i, _)| *i).collect())
                .collect();
            Plan {
                table: table.clone(),
                parts: groups
                    .into_iter()
                    .map(|(shard, ks)| Part {
                        shard,
                        op: r(ReadOp::MGet {
                            keys: ks.into_iter().map(|(_, k)| k).collect(),
                        }),
                    })
                    .collect(),
                merge: Merge::Gather { positions, len: n },
                atomicity: Atomicity::None,
            }
        }
        "mset" | "msetnx" => {
            let rest = args.rest();
            if !rest.len().is_multiple_of(2) {
                return Err(wrong_args(name));
            }
            let nx = name == "msetnx";
            let mut by: BTreeMap<usize, Vec<(Bytes, Bytes)>> = BTreeMap::new();
            let mut it = rest.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if v.len() > max_value {
                    return Err(Reply::error("ERR value is too large"));
                }
                by.entry(table.desc.shard_for_slot(slot(&k)))
                    .or_default()
                    .push((k, v));
            }
            let multi = by.len() > 1;
            Plan {
                table: table.clone(),
                parts: by
                    .into_iter()
                    .map(|(shard, pairs)| Part {
                        shard,
                        op: w(WriteOp::MSet { pairs, nx }),
                    })
                    .collect(),
                merge: if multi { Merge::AllOk } else { Merge::Single },
                atomicity: if nx {
                    Atomicity::AllIfAbsent
                } else {
                    Atomicity::AllOrNothing
                },
            }
        }
        _ => return Err(Reply::error(format!("ERR unknown command '{name}'"))),
    };
    Ok(plan)
}

/// Group key positions by shard: shard -> (index in the request, key).
fn by_shard(table: &TableRoute, keys: Vec<Bytes>) -> BTreeMap<usize, Vec<(usize, Bytes)>> {
    let mut by_shard: BTreeMap<usize, Vec<(usize, Bytes)>> = BTreeMap::new();
    for (i, k) in keys.into_iter().enumerate() {
        by_shard
            .entry(table.desc.shard_for_slot(slot(&k)))
            .or_default()
            .push((i, k));
    }
    by_shard
}

/// One part per shard holding some of `keys`.
fn per_shard(
    table: &Arc<TableRoute>,
    keys: Vec<Bytes>,
    merge: Merge,
    op: impl Fn(Vec<Bytes>) -> TxnOp,
) -> Plan {
    Plan {
        table: table.clone(),
        parts: by_shard(table, keys)
            .into_iter()
            .map(|(shard, ks)| Part {
                shard,
                op: op(ks.into_iter().map(|(_, k)| k).collect()),
            })
            .collect(),
        merge,
        atomicity: Atomicity::None,
    }
}

/// Whether a table may be served.
fn routable(t: &TableRoute) -> Result<(), ClusterError> {
    match t.desc.state {
        TableState::Available => Ok(()),
        TableState::Creating => Err(ClusterError::TryAgain(format!(
            "table '{}' is being created",
            t.desc.name
        ))),
        TableState::Deleting => Err(ClusterError::TableNotAvailable {
            name: t.desc.name.clone(),
            state: "being dropped",
        }),
    }
}

/// Bytes of a RESP bulk string of `len` bytes.
fn bulk_size(len: usize) -> usize {
    OpReply::Bulk(Bytes::new()).resp_size() + len + len.checked_ilog10().unwrap_or(0) as usize
}

/// The command a plan runs, for an error message.
fn plan_name(plan: &Plan) -> String {
    match plan.parts.first().map(|p| &p.op) {
        Some(TxnOp::Read(ReadOp::MGet { .. })) => "MGET".into(),
        _ => "the reply".into(),
    }
}

fn scan_result(cursor: u64, keys: Vec<Reply>) -> Reply {
    Reply::Array(vec![Reply::bulk(cursor.to_string()), Reply::Array(keys)])
}

/// A shard's SCAN page: (last examined key if more remain, keys).
fn scan_reply(r: OpReply) -> (Option<Bytes>, Vec<Bytes>) {
    let OpReply::Array(mut parts) = r else {
        return (None, Vec::new());
    };
    let keys = match parts.pop() {
        Some(OpReply::Array(keys)) => keys
            .into_iter()
            .filter_map(|k| match k {
                OpReply::Bulk(b) => Some(b),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let next = match parts.pop() {
        Some(OpReply::Bulk(b)) => Some(b),
        _ => None,
    };
    (next, keys)
}

/// Bits of a SCAN cursor that hold the position token.
const TOKEN_BITS: u32 = 48;
const TOKEN_MASK: u64 = (1 << TOKEN_BITS) - 1;

/// `shard << 48 | token`.
pub fn encode_cursor(shard: usize, token: u64) -> u64 {
    ((shard as u64) << TOKEN_BITS) | (token & TOKEN_MASK)
}

/// (shard, token) of a cursor.
pub fn decode_cursor(cursor: u64) -> (usize, u64) {
    ((cursor >> TOKEN_BITS) as usize, cursor & TOKEN_MASK)
}

/// Redis's cursor parsing (`strtoull`, digits only).
fn parse_cursor(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// SCAN positions handed out by this router: token -> last key returned.
/// Bounded: the oldest are forgotten first (a forgotten cursor restarts its
/// shard).
pub struct ScanCursors {
    inner: Mutex<(HashMap<u64, Bytes>, VecDeque<u64>)>,
    capacity: usize,
}

static SCAN_CURSORS: LazyLock<ScanCursors> = LazyLock::new(|| ScanCursors::new(100_000));

impl ScanCursors {
    pub fn new(capacity: usize) -> ScanCursors {
        ScanCursors {
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity,
        }
    }

    /// A token for `key`: a non-zero 47-bit hash of it, so the same
    /// position always gets the same cursor.
    pub fn token(key: &[u8]) -> u64 {
        // FNV-1a: stable across processes.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in key {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h & (TOKEN_MASK >> 1)) + 1
    }

    pub fn put(&self, key: Bytes) -> u64 {
        let token = Self::token(&key);
        if let Ok(mut g) = self.inner.lock() {
            let (map, order) = &mut *g;
            if map.insert(token, key).is_none() {
                order.push_back(token);
            }
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        token
    }

    pub fn get(&self, token: u64) -> Option<Bytes> {
        self.inner.lock().ok()?.0.get(&token).cloned()
    }
}

/// FLUSHDB / FLUSHALL [ASYNC|SYNC]
fn parse_flush(args: &mut Args) -> Result<(), Reply> {
    match args.remaining() {
        0 => Ok(()),
        1 => match args.peek_upper().as_deref() {
            Some("ASYNC") | Some("SYNC") => Ok(()),
            _ => Err(Reply::error(ERR_SYNTAX)),
        },
        _ => Err(Reply::error(ERR_SYNTAX)),
    }
}

/// GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]: `Keep` for none.
fn parse_getex(args: &mut Args) -> Result<Expiry, Reply> {
    let options = parse_string_options(args, false)?;
    Ok(match option_deadline("getex", options.expire)? {
        Some(at) => Expiry::At(at),
        None if options.persist => Expiry::Clear,
        None => Expiry::Keep,
    })
}

/// The options of SET or GETEX (`set: false`).
#[derive(Default)]
struct StringOptions {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    persist: bool,
    /// EX/PX/EXAT/PXAT and its argument, not yet checked.
    expire: Option<(String, Bytes)>,
}

/// Read SET's or GETEX's options like Redis's
/// `parseExtendedStringArgumentsOrReply`: a flag may be repeated, options
/// that conflict (NX and XX, two different expiries, KEEPTTL or PERSIST
/// with an expiry) or an expiry without its argument are a syntax error,
/// and the same expiry option given twice counts once, the last. The
/// expiry's number is checked only after every option was read
/// ([`option_deadline`]), so a syntax error wins over a bad number.
fn parse_string_options(args: &mut Args, set: bool) -> Result<StringOptions, Reply> {
    let mut o = StringOptions::default();
    while let Some(opt) = args.peek_upper() {
        let _ = args.next_bytes();
        let other_expiry = o.expire.as_ref().is_some_and(|(given, _)| *given != opt);
        match opt.as_str() {
            "NX" if set && !o.xx => o.nx = true,
            "XX" if set && !o.nx => o.xx = true,
            "GET" if set => o.get = true,
            "KEEPTTL" if set && o.expire.is_none() => o.keepttl = true,
            "PERSIST" if !set && o.expire.is_none() => o.persist = true,
            "EX" | "PX" | "EXAT" | "PXAT"
                if !o.keepttl && !o.persist && !other_expiry && args.remaining() > 0 =>
            {
                let n = args.next_bytes().map_err(arg_err)?;
                o.expire = Some((opt, n));
            }
            _ => return Err(Reply::error(ERR_SYNTAX)),
        }
    }
    Ok(o)
}

/// The absolute deadline of the expiry option read by
/// [`parse_string_options`], if one was given, with Redis's checks.
fn option_deadline(command: &str, expire: Option<(String, Bytes)>) -> Result<Option<u64>, Reply> {
    let Some((opt, n)) = expire else {
        return Ok(None);
    };
    let n = super::args::parse_i64(&n).ok_or_else(|| Reply::error(ERR_NOT_INTEGER))?;
    deadline(command, &opt, n, now_ms() as i64).map(Some)
}

/// The absolute deadline of SET/GETEX's EX/PX/EXAT/PXAT `n` (which must be
/// positive), or Redis's "invalid expire time" error.
fn deadline(command: &str, opt: &str, n: i64, now: i64) -> Result<u64, Reply> {
    let invalid = || Reply::error(format!("ERR invalid expire time in '{command}' command"));
    if n <= 0 {
        return Err(invalid());
    }
    let at = match opt {
        "EX" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
        "PX" => n.checked_add(now),
        "EXAT" => n.checked_mul(1000),
        _ => Some(n),
    };
    at.map(|t| t as u64).ok_or_else(invalid)
}

/// EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT key time [NX|XX|GT|LT]: the absolute
/// deadline in ms (possibly in the past: the key is then deleted) and the
/// condition, with Redis's checks in Redis's order.
pub fn parse_expire(name: &str, args: &mut Args, now: i64) -> Result<(i64, ExpireCond), Reply> {
    let time = args.next_bytes().unwrap_or_default();
    let mut cond = ExpireCond::default();
    while args.remaining() > 0 {
        let opt = args.next_bytes().unwrap_or_default();
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" => cond.nx = true,
            b"XX" => cond.xx = true,
            b"GT" => cond.gt = true,
            b"LT" => cond.lt = true,
            _ => {
                return Err(Reply::error(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(&opt)
                )))
            }
        }
    }
    if cond.nx && (cond.xx || cond.gt || cond.lt) {
        return Err(Reply::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if cond.gt && cond.lt {
        return Err(Reply::error(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let mut when = super::args::parse_i64(&time).ok_or_else(|| Reply::error(ERR_NOT_INTEGER))?;
    let invalid = || Reply::error(format!("ERR invalid expire time in '{name}' command"));
    if name == "expire" || name == "expireat" {
        when = when.checked_mul(1000).ok_or_else(invalid)?;
    }
    if name == "expire" || name == "pexpire" {
        when = when.checked_add(now).ok_or_else(invalid)?;
    }
    Ok((when, cond))
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
fn parse_set(args: &mut Args, max_value: usize) -> Result<WriteOp, Reply> {
    let key = args.next_bytes().map_err(arg_err)?;
    let value = args.next_bytes().map_err(arg_err)?;
    if value.len() > max_value {
        return Err(Reply::error("ERR value is too large"));
    }
    let options = parse_string_options(args, true)?;
    let expiry = match option_deadline("set", options.expire)? {
        Some(at) => Expiry::At(at),
        None if options.keepttl => Expiry::Keep,
        None => Expiry::Clear,
    };
    let cond = if options.nx {
        SetCond::IfAbsent
    } else if options.xx {
        SetCond::IfPresent
    } else {
        SetCond::Always
    };
    Ok(WriteOp::Set {
        key,
        value,
        expiry,
        cond,
        get: options.get,
    })
}

pub(super) fn op_reply(r: OpReply) -> Reply {
    match r {
        OpReply::Ok => Reply::ok(),
        OpReply::Nil => Reply::Nil,
        OpReply::Int(n) => Reply::Int(n),
        OpReply::Bulk(b) => Reply::Bulk(b),
        OpReply::Status(s) => Reply::Status(s),
        OpReply::Array(items) => Reply::Array(items.into_iter().map(op_reply).collect()),
        OpReply::Error(e) => Reply::Error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_options() {
        let parse = |s: &str| {
            let parts: Vec<Bytes> = s
                .split(' ')
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect();
            parse_set(
                &mut {
                    let mut a = Args::new(parts);
                    let _ = &mut a;
                    a
                },
                100,
            )
        };
        assert!(matches!(
            parse("set k v NX"),
            Ok(WriteOp::Set {
                cond: SetCond::IfAbsent,
                ..
            })
        ));
        assert!(parse("set k v NX XX").is_err());
        assert!(parse("set k v EX 10 PX 5").is_err());
        assert!(parse("set k v EX 0").is_err());
        assert!(parse("set k v EX notanumber").is_err());
        assert!(matches!(
            parse("set k v KEEPTTL GET"),
            Ok(WriteOp::Set {
                expiry: Expiry::Keep,
                get: true,
                ..
            })
        ));
        assert!(parse(&format!("set k {}", "x".repeat(101))).is_err());
    }

    fn args(s: &str) -> Args {
        Args::new(
            s.split(' ')
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
        )
    }

    #[test]
    fn scan_cursor_encoding() {
        for (shard, token) in [(0, 0), (0, 1), (7, 12345), (16383, TOKEN_MASK)] {
            let c = encode_cursor(shard, token);
            assert_eq!(decode_cursor(c), (shard, token));
        }
        assert_eq!(encode_cursor(0, 0), 0, "shard 0 from the start is cursor 0");
        assert_eq!(encode_cursor(1, 0), 1 << 48);
        let t = ScanCursors::token(b"user:1");
        assert!(t != 0 && t <= TOKEN_MASK);
        assert_eq!(t, ScanCursors::token(b"user:1"));
        let reg = ScanCursors::new(2);
        let t1 = reg.put(Bytes::from("a"));
        let t2 = reg.put(Bytes::from("b"));
        assert_eq!(reg.get(t1), Some(Bytes::from("a")));
        reg.put(Bytes::from("c"));
        assert_eq!(reg.get(t1), None, "oldest forgotten");
        assert_eq!(reg.get(t2), Some(Bytes::from("b")));
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"-1"), None);
        assert_eq!(parse_cursor(b"1x"), None);
    }

    #[test]
    fn expire_options() {
        let p = |s: &str| {
            let mut a = args(s);
            a.next_bytes().unwrap();
            let name = a.name().to_string();
            parse_expire(&name, &mut a, 1_000)
        };
        assert_eq!(p("expire k 10").unwrap(), (11_000, ExpireCond::default()));
        assert_eq!(p("pexpire k 10").unwrap().0, 1_010);
        assert_eq!(p("expireat k 10").unwrap().0, 10_000);
        assert_eq!(p("pexpireat k -10").unwrap().0, -10);
        let e = |s: &str| match p(s) {
            Err(Reply::Error(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            e("expire k 10 NX XX"),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            e("expire k 10 gt lt"),
            "ERR GT and LT options at the same time are not compatible"
        );
        assert_eq!(e("expire k 10 foo"), "ERR Unsupported option foo");
        assert_eq!(
            e("expire k x"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            e("expire k 9223372036854775807"),
            "ERR invalid expire time in 'expire' command"
        );
        assert_eq!(
            e("pexpire k 9223372036854775807"),
            "ERR invalid expire time in 'pexpire' command"
        );
        assert!(p("expire k 10 xx gt").is_ok());
    }
}

#[cfg(test)]
mod compile_tests;
