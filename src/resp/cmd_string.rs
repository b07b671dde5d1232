//! Data commands: the string family and the keyspace commands. Each command
//! is parsed into a shard request value (`shard::command`), routed by key
//! slot, and the shard's answer turned into a reply.
//!
//! Execution of the data commands: a compiled [`Plan`] is sent to its shards
//! (in parallel), multi-shard atomic ones run as a 2PC transaction, keyspace
//! commands fan out to every shard, and the shards' answers become a reply.
//! Parsing and planning are in [`super::compile`]; SCAN cursors in
//! [`super::scan`].
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
//! ([`super::scan::ScanCursors`]). A cursor this router does not know (another router's,
//! or evicted) restarts its shard from the beginning: keys may then repeat,
//! which SCAN allows, but are never missed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::args::Args;
use super::errors::cluster_err;
use super::reply::Reply;
use super::session::Session;
use crate::clock::now_ms;
use crate::cluster::plan::{merge, Atomicity, Merge, Plan};
use crate::cluster::routes::TableRoute;
use crate::cluster::txn::{self, Outcome};
use crate::cluster::ClusterError;
use crate::meta::descriptor::TableState;
use crate::shard::command::TxnOp;
use crate::shard::command::{
    reply_too_large, OpReply, ReadOp, ShardRequest, WriteOp, MAX_SCAN_COUNT,
};

use super::compile::*;
use super::scan::*;

const ERR_NOT_INTEGER: &str = "ERR value is not an integer or out of range";

impl Session {
    /// The table this connection works in, if it is routable.
    pub(super) fn current_table(&self) -> Result<Arc<TableRoute>, ClusterError> {
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

    /// A read for the command running: from any replica when its row is
    /// `READONLY` and the connection said READONLY (set by the dispatcher),
    /// linearizable otherwise.
    pub(super) fn read(&self, op: ReadOp) -> ShardRequest {
        self.read_with(op, self.stale_ok)
    }

    pub(super) fn read_with(&self, op: ReadOp, stale_ok: bool) -> ShardRequest {
        ShardRequest::Read {
            op,
            linearizable: !stale_ok,
            now_ms: now_ms(),
        }
    }

    /// The connection's table, or the error reply.
    pub(super) fn table_or_reply(&self) -> Result<Arc<TableRoute>, Reply> {
        self.current_table().map_err(cluster_err)
    }

    /// DBSIZE
    pub(super) async fn dbsize(&mut self, _args: &mut Args) -> Reply {
        let table = match self.table_or_reply() {
            Ok(t) => t,
            Err(r) => return r,
        };
        match self.table_dbsize(&table).await {
            Ok(n) => Reply::Int(n),
            Err(r) => r,
        }
    }

    /// FLUSHDB [ASYNC|SYNC]
    pub(super) async fn flushdb(&mut self, args: &mut Args) -> Reply {
        let table = match self.table_or_reply() {
            Ok(t) => t,
            Err(r) => return r,
        };
        if let Err(r) = parse_flush(args) {
            return r;
        }
        match self.flush_table(&table).await {
            Ok(()) => Reply::ok(),
            Err(r) => r,
        }
    }

    /// KEYS pattern
    pub(super) async fn keys(&mut self, args: &mut Args) -> Reply {
        let table = match self.table_or_reply() {
            Ok(t) => t,
            Err(r) => return r,
        };
        let pattern = args.next_bytes().unwrap_or_default();
        let everything = &pattern[..] == b"*";
        self.keys_matching(&table, (!everything).then_some(pattern))
            .await
    }

    /// KEYS: every shard walked page by page, in parallel, until the keys
    /// gathered pass the output limit (then the reply is the error, and no
    /// more pages are asked for). Each page is at most an equal share of
    /// the limit, so no more than twice the limit is ever held.
    async fn keys_matching(&self, table: &Arc<TableRoute>, pattern: Option<Bytes>) -> Reply {
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
        if plan.atomicity == Atomicity::Transfer {
            return self.run_transfer(plan).await;
        }
        if plan.store.is_some() {
            return self.run_store(plan).await;
        }
        if plan.atomicity == Atomicity::FirstFilled {
            return self.run_first_filled(plan).await;
        }
        if plan.shards() > 1 {
            match plan.atomicity {
                Atomicity::AllOrNothing => return self.run_atomic(plan).await,
                Atomicity::AllIfAbsent => return self.run_set_if_absent(plan).await,
                Atomicity::Move(mode) => return self.run_move(plan, mode).await,
                Atomicity::Transfer | Atomicity::FirstFilled => {}
                Atomicity::None => {}
            }
        }
        let calls = plan.parts.iter().map(|part| {
            let req = match &part.op {
                TxnOp::Write(w) => write(w.clone()),
                TxnOp::Read(r) => self.read_with(r.clone(), plan.stale_ok),
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
        self.sum_over_shards(table, req).await
    }

    /// Live keys in a table (DBSIZE): exact, every shard counts its keys.
    pub(super) async fn table_dbsize(&self, table: &Arc<TableRoute>) -> Result<i64, Reply> {
        routable(table).map_err(cluster_err)?;
        self.sum_over_shards(table, self.read(ReadOp::DbSize)).await
    }

    /// `req` on every shard, and the sum of their integer answers.
    async fn sum_over_shards(
        &self,
        table: &Arc<TableRoute>,
        req: ShardRequest,
    ) -> Result<i64, Reply> {
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

    /// FLUSHALL [ASYNC|SYNC]: FLUSHDB on every available table.
    pub(super) async fn flushall(&mut self, args: &mut Args) -> Reply {
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
    pub(super) async fn scan(&mut self, args: &mut Args) -> Reply {
        let table = match self.table_or_reply() {
            Ok(t) => t,
            Err(r) => return r,
        };
        let table = &table;
        let cursor = match args.next_bytes().ok().and_then(|c| parse_cursor(&c)) {
            Some(c) => c,
            None => return Reply::error("ERR invalid cursor"),
        };
        let mut count = 10u64;
        let mut pattern = None;
        let mut type_name: Option<String> = None;
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
                    Ok(t) => type_name = Some(String::from_utf8_lossy(&t).to_ascii_lowercase()),
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
            self.shared.scan_cursors.get(token).unwrap_or_default()
        };
        let mut keys = Vec::new();
        while shard < shards {
            let req = self.read(match &type_name {
                None => ReadOp::Scan {
                    after: after.clone(),
                    count,
                    pattern: pattern.clone(),
                },
                Some(t) => ReadOp::ScanType {
                    after: after.clone(),
                    count,
                    pattern: pattern.clone(),
                    type_name: t.clone(),
                },
            });
            let reply = match self.shared.client.execute(table, shard, req).await {
                Ok(r) => r,
                Err(e) => return cluster_err(e),
            };
            if let OpReply::Error(e) = reply {
                return Reply::Error(e);
            }
            let (next, page) = scan_reply(reply);
            keys.extend(page.into_iter().map(Reply::Bulk));
            match next {
                Some(last) => {
                    let cursor = encode_cursor(shard, self.shared.scan_cursors.put(last));
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
