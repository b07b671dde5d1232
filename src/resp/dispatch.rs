//! One request through the command table: look the command up, check its
//! arity, the connection's authentication and its user's permissions (ACL),
//! queue it inside MULTI, or run its handler. Every decision here reads the command's row
//! ([`super::spec::CommandSpec`]); no command is named.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::args::Args;
use super::commands::lookup;
use super::compile::Ctx;
use super::errors::{cluster_err, wrong_args};
use super::reply::Reply;
use super::session::{After, Session};
use super::spec::{flag, CommandSpec, Handler};
use crate::cluster::plan::Plan;

impl Session {
    /// Execute one request.
    pub async fn handle(&mut self, parts: Vec<Bytes>) -> (Reply, After) {
        let started = std::time::Instant::now();
        let mut args = Args::new(parts);
        self.shared
            .commands_processed
            .fetch_add(1, Ordering::Relaxed);
        let spec = match self.check(&args) {
            Ok(spec) => spec,
            Err(reply) => {
                self.refused(&args, &reply);
                let after = if std::mem::take(&mut self.closing) {
                    After::Close
                } else {
                    After::Continue
                };
                return (reply, after);
            }
        };
        if let Some(refused) = self.subscribed_refusal(spec.name) {
            self.shared.views.stats.error(
                self.id,
                match &refused {
                    Reply::Error(e) => e,
                    _ => "",
                },
            );
            return (refused, After::Continue);
        }
        self.shared.clients.update_last_cmd(self.id, spec.name);
        if self.multi.is_some() && !spec.has(flag::MULTI_CONTROL) {
            // Counted when EXEC runs it (under EXEC), as in Redis.
            let reply = self.queue(spec, &mut args);
            if let Reply::Error(e) = &reply {
                self.shared.views.stats.error(self.id, e);
            }
            return (reply, After::Continue);
        }
        let reply = self.run(spec, &mut args).await;
        let nanos = started.elapsed().as_nanos() as u64;
        self.account(spec, args.all(), nanos, &reply);
        let after = if std::mem::take(&mut self.closing) {
            After::Close
        } else {
            After::Continue
        };
        (reply, after)
    }

    /// The row of a request the connection may run now: known, with the
    /// right number of arguments, authenticated unless `NO_AUTH`, and
    /// allowed to the connection's user (commands, keys, table; a refusal
    /// goes to the ACL LOG). An unknown command, a wrong arity or a refusal
    /// inside MULTI makes EXEC abort. A connection whose user was deleted
    /// is closed.
    pub(super) fn check(&mut self, args: &Args) -> Result<&'static CommandSpec, Reply> {
        let Some(spec) = lookup(args.name()) else {
            self.queue_failed();
            return Err(self.unknown_command(args));
        };
        if !spec.arity_ok(args.len()) {
            self.queue_failed();
            return Err(wrong_args(spec.name));
        }
        if !self.authenticated && !spec.has(flag::NO_AUTH) {
            return Err(Reply::error("NOAUTH Authentication required."));
        }
        if !self.refresh_user() {
            self.closing = true;
            return Err(Reply::error(format!(
                "ERR user '{}' was deleted; the connection closes",
                self.user.name
            )));
        }
        let table = self.multi.as_ref().map_or(&self.table, |m| &m.table);
        if let Some(denied) = self.acl_denied(spec, args.all(), table) {
            self.log_denied(&denied, self.multi.is_some());
            self.queue_failed();
            return Err(denied.reply());
        }
        Ok(spec)
    }

    /// Whether the row's reads may come from any replica on this
    /// connection (READONLY, and a read-only command).
    pub(super) fn stale_ok_for(&self, spec: &CommandSpec) -> bool {
        self.readonly && spec.has(flag::READONLY)
    }

    /// A data command compiled against the connection's table.
    pub(super) fn compile(
        &self,
        spec: &CommandSpec,
        compile: super::spec::CompileFn,
        args: &mut Args,
    ) -> Result<Plan, Reply> {
        let table = self.table_named(&self.table).map_err(cluster_err)?;
        let cx = Ctx {
            table: &table,
            max_value: self.shared.config.max_value_len,
        };
        let mut plan = compile(args, &cx)?;
        // A write command whose call only reads (BITFIELD with only GETs)
        // reads as a read-only command does.
        plan.stale_ok = self.stale_ok_for(spec) || (self.readonly && plan.is_read_only());
        Ok(plan)
    }

    /// Run a command now (not queued).
    async fn run(&mut self, spec: &'static CommandSpec, args: &mut Args) -> Reply {
        self.stale_ok = self.stale_ok_for(spec);
        match spec.handler {
            Handler::Data(compile) => match self.compile(spec, compile, args) {
                Ok(plan) if plan.block.is_some() => self.run_blocking(plan).await,
                Ok(plan) => self.run_plan(plan).await,
                Err(reply) => reply,
            },
            Handler::Local(f) => f(self, args),
            Handler::Async(f) => f(self, args).await,
            Handler::Use(resolve) => match resolve(self, args) {
                Ok((table, db)) => match self.table_switch_allowed(&table) {
                    Ok(()) => {
                        self.use_table(&table, db);
                        Reply::ok()
                    }
                    Err(reply) => reply,
                },
                Err(reply) => reply,
            },
        }
    }
}
