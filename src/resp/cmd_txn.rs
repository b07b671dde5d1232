//! MULTI, EXEC, DISCARD, WATCH, UNWATCH with Redis semantics, over the
//! cluster's transaction manager (`cluster::txn`).
//!
//! Commands are checked and compiled when queued (a bad one answers its error
//! and makes EXEC answer `-EXECABORT`), each bound to the table current at its
//! place in the queue: `TABLE.USE` and `SELECT` are queued like any command
//! and take effect in order at EXEC. At EXEC a queue of reads only becomes a
//! consistent snapshot read (no locks); anything else becomes one
//! transaction: one Raft entry when a single shard is involved, two-phase
//! commit otherwise. A WATCHed key that changed, or a key locked by another
//! transaction, makes EXEC answer a null array, which clients treat as
//! "retry".
//!
//! Both lists a client grows here are capped: a MULTI queues at most
//! `shoal-max-multi-commands` commands (one more is a queueing error, so EXEC
//! answers `-EXECABORT`), and a connection WATCHes at most
//! `shoal-max-watch-keys` keys (a WATCH past it is refused whole, and the
//! next EXEC aborts: it would run without the checks its client asked for).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::args::Args;
use super::compile::{op_reply, shard_keys, shard_work, Ctx, WatchedKey};
use super::errors::cluster_err;
use super::reply::Reply;
use super::session::{MultiState, Queued, Session};
use super::spec::{flag, CommandSpec, Handler};
use crate::clock::now_ms;
use crate::cluster::plan::{merge, Atomicity, Merge, Plan};
use crate::cluster::txn::{self, Outcome, ShardKeys};
use crate::cluster::ClusterError;
use crate::meta::descriptor::TableState;
use crate::shard::apply::apply_read;
use crate::shard::coll::KeysOnly;
use crate::shard::command::TxnOp;
use crate::shard::command::{OpReply, ShardRequest};
use crate::shard::pubsub::{KIND_CHANNEL, KIND_SHARD};
use crate::shard::txn::version_of;
use crate::shard::value::Stored;

const QUEUED: &str = "QUEUED";

impl Session {
    /// Note a command that failed to queue (unknown, wrong arity).
    pub(super) fn queue_failed(&mut self) {
        if let Some(m) = self.multi.as_mut() {
            m.failed = true;
        }
    }

    pub(super) fn multi(&mut self, _args: &mut Args) -> Reply {
        if self.multi.is_some() {
            return Reply::error("ERR MULTI calls can not be nested");
        }
        self.multi = Some(MultiState {
            table: self.table.clone(),
            db: self.db,
            failed: self.watch_refused,
            acl_revision: self.users.borrow().revision,
            ..Default::default()
        });
        Reply::ok()
    }

    pub(super) fn discard(&mut self, args: &mut Args) -> Reply {
        if self.multi.take().is_none() {
            return Reply::error("ERR DISCARD without MULTI");
        }
        self.unwatch(args)
    }

    pub(super) fn unwatch(&mut self, _args: &mut Args) -> Reply {
        self.watches.clear();
        self.watch_refused = false;
        Reply::ok()
    }

    /// Queue one command inside MULTI, as its row in the command table
    /// says: a data command as its plan (compiled against the table current
    /// at this point of the queue), a table switch as a switch, a connection
    /// command to run at EXEC; `NO_MULTI` rows are refused.
    pub(super) fn queue(&mut self, spec: &'static CommandSpec, args: &mut Args) -> Reply {
        let table = self.multi.as_ref().map(|m| m.table.clone());
        let reply = self.try_queue(spec, args);
        if reply.is_error() {
            self.queue_failed();
        } else if let (Some(m), Some(table)) = (self.multi.as_mut(), table) {
            let row = super::commands::row_index(spec);
            m.sources.push((row, args.all().to_vec(), table));
        }
        reply
    }

    /// EXEC after the users changed: every queued call the user may no
    /// longer make becomes its NOPERM reply (in the ACL LOG), as in Redis.
    fn recheck_queued(&mut self, m: &mut MultiState) {
        if self.users.borrow().revision == m.acl_revision || !self.refresh_user() {
            return;
        }
        for (i, (row, args, table)) in m.sources.iter().enumerate() {
            let spec = &super::commands::COMMANDS[*row];
            if let Some(d) = self.acl_denied(spec, args, table) {
                self.log_denied(&d, true);
                if let Some(q) = m.queued.get_mut(i) {
                    *q = Queued::Error(d.exec_reply());
                }
            }
        }
    }

    fn try_queue(&mut self, spec: &CommandSpec, args: &mut Args) -> Reply {
        let Some(m) = self.multi.as_ref() else {
            return Reply::error("ERR internal: not in MULTI");
        };
        let cap = self
            .shared
            .limits
            .max_multi_commands
            .load(Ordering::Relaxed);
        if m.queued.len() >= cap {
            return Reply::error(format!(
                "ERR MULTI queue is full: at most {cap} commands per transaction (shoal-max-multi-commands)"
            ));
        }
        let not_here = || {
            Reply::error(format!(
                "ERR {} is not supported inside MULTI",
                spec.name.to_ascii_uppercase()
            ))
        };
        if spec.has(flag::NO_MULTI) {
            return not_here();
        }
        let queued = match spec.handler {
            Handler::Local(f) => Queued::Local(f, args.clone()),
            Handler::Use(resolve) => match resolve(self, args) {
                Ok((table, db)) => match self.table_switch_allowed(&table) {
                    Ok(()) => Queued::Use { table, db },
                    Err(r) => return r,
                },
                Err(r) => return r,
            },
            Handler::Data(compile) => {
                let table = match self.table_named(&m.table) {
                    Ok(t) => t,
                    Err(e) => return cluster_err(e),
                };
                let cx = Ctx {
                    table: &table,
                    max_value: self.shared.config.max_value_len,
                };
                // As in Redis, an error in the arguments (past the arity)
                // is the command's reply inside EXEC, not EXECABORT.
                let plan = match compile(args, &cx) {
                    Ok(p) => p,
                    Err(r) => return self.queue_reply(Queued::Error(r)),
                };
                if plan.atomicity == Atomicity::AllIfAbsent && plan.shards() > 1 {
                    return Reply::error(
                        "ERR MSETNX inside MULTI needs its keys in one shard; use a hash tag such as {user1}",
                    );
                }
                if plan.atomicity == Atomicity::Transfer
                    || plan.atomicity == Atomicity::FirstFilled
                    || plan.store.is_some()
                {
                    return Reply::error(format!(
                        "ERR {} inside MULTI needs its keys in one shard; use a hash tag such as {{user1}}",
                        spec.name.to_ascii_uppercase()
                    ));
                }
                if matches!(plan.atomicity, Atomicity::Move(_)) && plan.shards() > 1 {
                    return Reply::error(format!(
                        "ERR {} inside MULTI needs both keys in one shard; use a hash tag such as {{user1}}",
                        spec.name.to_ascii_uppercase()
                    ));
                }
                Queued::Plan(plan)
            }
            // HSCAN / SSCAN / ZSCAN queue as their read; the table's own
            // test keeps every other such row NO_MULTI.
            Handler::Async(_) if published_at_exec(spec.name) => {
                let kind = if spec.name == "publish" {
                    KIND_CHANNEL
                } else {
                    KIND_SHARD
                };
                Queued::Publish(kind, args.clone())
            }
            Handler::Async(_) => match coll_scan_kind(spec.name) {
                Some(kind) => {
                    let table = match self.table_named(&m.table) {
                        Ok(t) => t,
                        Err(e) => return cluster_err(e),
                    };
                    match self.scan_coll_plan(args, kind, &table) {
                        Ok(plan) => Queued::Plan(plan),
                        Err(r) => Queued::Error(r),
                    }
                }
                None => return not_here(),
            },
        };
        self.queue_reply(queued)
    }

    /// Add `queued` to the transaction: `QUEUED`.
    fn queue_reply(&mut self, queued: Queued) -> Reply {
        let Some(m) = self.multi.as_mut() else {
            return Reply::error("ERR internal: not in MULTI");
        };
        if let Queued::Use { table, db } = &queued {
            m.table = table.clone();
            m.db = *db;
        }
        m.queued.push(queued);
        Reply::status(QUEUED)
    }

    /// WATCH key [key ...]: remember each key's version, read linearizably.
    pub(super) async fn watch(&mut self, args: &mut Args) -> Reply {
        if self.multi.is_some() {
            return Reply::error("ERR WATCH inside MULTI is not allowed");
        }
        let keys = args.rest();
        let cap = self.shared.limits.max_watch_keys.load(Ordering::Relaxed);
        if self.watches.len().saturating_add(keys.len()) > cap {
            self.watch_refused = true;
            return Reply::error(format!(
                "ERR too many WATCHed keys: at most {cap} per connection (shoal-max-watch-keys); the next EXEC will abort"
            ));
        }
        let table = match self.table_named(&self.table.clone()) {
            Ok(t) => t,
            Err(e) => return cluster_err(e),
        };
        let reads = shard_keys(&table, &keys);
        let now = now_ms();
        let calls = reads.iter().map(|r| {
            let req = ShardRequest::ReadVersions {
                keys: r.keys.clone(),
                now_ms: now,
            };
            self.shared.client.execute(&r.table, r.shard, req)
        });
        let results = futures::future::join_all(calls).await;
        for (r, result) in reads.iter().zip(results) {
            let rows = match result {
                Ok(OpReply::Array(rows)) => rows,
                Ok(other) => return op_reply(other),
                Err(e) => return cluster_err(e),
            };
            for (key, row) in r.keys.iter().zip(rows) {
                let stored = match row {
                    OpReply::Array(fields) => match fields.first() {
                        // The node checked it; unreadable here is a bug, not "absent".
                        Some(OpReply::Bulk(raw)) => match Stored::decode(raw) {
                            Ok(s) => Some(s),
                            Err(e) => {
                                return cluster_err(ClusterError::Internal(format!(
                                    "a shard sent an unreadable value: {e}"
                                )))
                            }
                        },
                        _ => None,
                    },
                    _ => None,
                };
                self.watches.push(WatchedKey {
                    table: table.clone(),
                    key: key.clone(),
                    version: version_of(stored.as_ref(), now),
                });
            }
        }
        Reply::ok()
    }

    pub(super) async fn exec(&mut self) -> Reply {
        let Some(mut m) = self.multi.take() else {
            return Reply::error("ERR EXEC without MULTI");
        };
        let watches = std::mem::take(&mut self.watches);
        self.watch_refused = false;
        if m.failed {
            return Reply::error("EXECABORT Transaction discarded because of previous errors.");
        }
        self.recheck_queued(&mut m);
        // A table dropped or re-created since queueing: nothing runs.
        let view = self.shared.client.routes();
        for q in &m.queued {
            if let Queued::Plan(p) = q {
                let same = view.table(&p.table.desc.name).is_some_and(|t| {
                    t.desc.table_id == p.table.desc.table_id
                        && t.desc.state == TableState::Available
                });
                if !same {
                    return Reply::error(format!(
                        "EXECABORT table '{}' was dropped or changed while the transaction was queued",
                        p.table.desc.name
                    ));
                }
            }
        }
        let plans: Vec<Plan> = m
            .queued
            .iter()
            .filter_map(|q| match q {
                Queued::Plan(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        // The snapshot holds key records, not collections' elements: a
        // transaction that reads a collection runs on the shards.
        let snapshot = plans
            .iter()
            .all(|p| p.is_read_only() && !p.reads_elements());
        // A conflict is a changed WATCHed key (EXEC answers nil), or, with
        // nothing watched, only a lock another transaction held: then the
        // transaction is tried again (Redis never fails such an EXEC), with
        // a growing random pause, for up to the request timeout.
        let deadline =
            Instant::now() + Duration::from_millis(self.shared.config.request_timeout_ms);
        let mut pause = Duration::from_millis(1);
        let mut replies = loop {
            let outcome = if snapshot {
                self.exec_snapshot(&plans, &watches).await
            } else {
                self.exec_write(plans.clone(), &watches).await
            };
            match outcome {
                Ok(Some(r)) => break r.into_iter(),
                Ok(None) if watches.is_empty() && Instant::now() < deadline => {
                    let wait = rand::Rng::gen_range(&mut rand::thread_rng(), Duration::ZERO..=pause);
                    tokio::time::sleep(wait).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Ok(None) if watches.is_empty() => {
                    return Reply::error(
                        "TRYAGAIN the transaction's keys stayed locked by other transactions; nothing was done",
                    )
                }
                Ok(None) => return Reply::NilArray,
                Err(e) => return cluster_err(e),
            }
        };
        let mut out = Vec::with_capacity(m.queued.len());
        for q in m.queued {
            out.push(match q {
                Queued::Plan(p) if p.merge == Merge::CollScan => replies
                    .next()
                    .map_or(Reply::Nil, |r| self.scan_coll_reply(r)),
                Queued::Plan(_) => replies.next().map_or(Reply::Nil, op_reply),
                Queued::Error(r) => r,
                Queued::Local(f, mut args) => f(self, &mut args),
                // Published once the transaction's writes are done.
                Queued::Publish(kind, mut args) => self.publish_kind(&mut args, kind).await,
                Queued::Use { table, db } => {
                    self.use_table(&table, db);
                    Reply::ok()
                }
            });
        }
        Reply::Array(out)
    }

    /// Reads only: a consistent snapshot of every key, no locks.
    async fn exec_snapshot(
        &self,
        plans: &[Plan],
        watches: &[WatchedKey],
    ) -> Result<Option<Vec<OpReply>>, ClusterError> {
        let mut reads: Vec<ShardKeys> = Vec::new();
        let mut add =
            |table: &std::sync::Arc<crate::cluster::routes::TableRoute>, keys: Vec<Bytes>| {
                for sk in shard_keys(table, &keys) {
                    match reads.iter_mut().find(|r| {
                        r.table.desc.table_id == table.desc.table_id && r.shard == sk.shard
                    }) {
                        Some(r) => r.keys.extend(sk.keys),
                        None => reads.push(sk),
                    }
                }
            };
        for p in plans {
            add(
                &p.table,
                p.parts.iter().flat_map(|part| part.op.keys()).collect(),
            );
        }
        for w in watches {
            add(&w.table, vec![w.key.clone()]);
        }
        for r in reads.iter_mut() {
            r.keys.sort();
            r.keys.dedup();
        }
        if reads.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let Some(snapshot) = txn::snapshot_read(&self.shared.client, &reads).await? else {
            return Ok(None);
        };
        let now = now_ms();
        for w in watches {
            let v = snapshot.get(&(w.table.desc.name.clone(), w.key.clone()));
            if version_of(v, now) != w.version {
                return Ok(None);
            }
        }
        let max_reply = self.shared.config.max_output_len;
        let mut out = Vec::with_capacity(plans.len());
        for p in plans {
            let name = p.table.desc.name.clone();
            let replies = p
                .parts
                .iter()
                .map(|part| match &part.op {
                    TxnOp::Read(op) => apply_read(
                        op,
                        now,
                        max_reply,
                        &mut KeysOnly(|k: &[u8]| {
                            Ok(snapshot
                                .get(&(name.clone(), Bytes::copy_from_slice(k)))
                                .cloned())
                        }),
                    )
                    .unwrap_or_else(|c| c.reply()),
                    TxnOp::Write(_) => {
                        OpReply::Error("ERR internal: write in a read-only transaction".into())
                    }
                })
                .collect();
            out.push(merge(&p.merge, replies));
        }
        Ok(Some(out))
    }

    /// Anything that writes: one transaction over every shard involved.
    async fn exec_write(
        &self,
        plans: Vec<Plan>,
        watches: &[WatchedKey],
    ) -> Result<Option<Vec<OpReply>>, ClusterError> {
        let work = shard_work(&plans, watches);
        let n: usize = plans.iter().map(|p| p.parts.len()).sum();
        let outcome = txn::execute(
            &self.shared.client,
            &self.shared.meta,
            work,
            n,
            &self.shared.txn_stats,
        )
        .await?;
        let Outcome::Committed(replies) = outcome else {
            return Ok(None);
        };
        let mut replies = replies.into_iter();
        let out = plans
            .iter()
            .map(|p| merge(&p.merge, replies.by_ref().take(p.parts.len()).collect()))
            .collect();
        Ok(Some(out))
    }
}

/// Whether a command queued inside MULTI is published at EXEC, in its
/// place (PUBLISH, SPUBLISH).
pub(super) fn published_at_exec(name: &str) -> bool {
    matches!(name, "publish" | "spublish")
}

/// The collection a scan command with a cursor walks (HSCAN, SSCAN,
/// ZSCAN): the async rows that may be queued inside MULTI.
pub(super) fn coll_scan_kind(name: &str) -> Option<crate::shard::command::Kind> {
    use crate::shard::command::Kind;
    match name {
        "hscan" => Some(Kind::Hash),
        "sscan" => Some(Kind::Set),
        "zscan" => Some(Kind::ZSet),
        _ => None,
    }
}
