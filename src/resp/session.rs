//! One client connection's state and the execution of its commands.
//!
//! A [`Session`] holds what Redis keeps per connection (current table,
//! protocol version, READONLY flag, name, authentication) and turns each
//! request into a [`Reply`] value: connection commands are answered here,
//! data commands become shard requests sent through the
//! `ShardClient`. Nothing here writes
//! to a socket.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::args::Args;
use super::encoding_params::EncodingParams;
use super::errors::{arg_err, wrong_args};
use super::reply::{Protocol, Reply};
use crate::cluster::client::ShardClient;
use crate::cluster::plan::Plan;
use crate::cluster::routes::TableRoute;
use crate::config::RouterConfig;
use crate::meta::etcd::Meta;

/// What the router shares between connections.
pub struct Shared {
    pub client: Arc<ShardClient>,
    pub meta: Meta,
    pub config: RouterConfig,
    pub clients: ClientRegistry,
    pub started: Instant,
    pub commands_processed: AtomicU64,
    /// Limits CONFIG SET may change at run time (initialised from `config`).
    pub limits: RuntimeLimits,
    /// Transactions coordinated by this router, for INFO.
    pub txn_stats: crate::cluster::txn::TxnStats,
    /// SCAN positions handed out by this router (bounded).
    pub scan_cursors: super::scan::ScanCursors,
    /// Command stats, SLOWLOG, LATENCY and MONITOR.
    pub views: super::views::Views,
    /// The users, as of the router's watch on etcd's `users/`.
    pub users: watch::Receiver<Arc<super::users::Users>>,
    /// ACL LOG: refused commands and failed logins on this router.
    pub acl_log: super::users::AclLog,
    /// Pub/Sub: subscribed connections and the router's interest on shards.
    pub pubsub: Arc<super::pubsub::Hub>,
    /// Loaded scripts and function libraries.
    pub scripts: super::scripts::Scripts,
    /// The cluster-wide settings (`notify-keyspace-events`), as of the
    /// router's watch on etcd's `settings/`.
    pub settings: watch::Receiver<Arc<crate::meta::etcd::PrefixState>>,
}

/// The limits an operator may change with CONFIG SET while the router runs
/// (initialised from the [`RouterConfig`] fields of the same names).
#[derive(Debug)]
pub struct RuntimeLimits {
    pub max_clients: AtomicUsize,
    pub max_bulk_len: AtomicUsize,
    /// Idle seconds before a client is closed (0: never). A watch channel,
    /// so waiting connections see a change at once.
    pub timeout: watch::Sender<u64>,
    /// TCP keepalive of sockets accepted from now on (s; 0: off).
    pub tcp_keepalive: AtomicU64,
    /// Unparsed input a client may have buffered (bytes).
    pub query_buffer_limit: AtomicUsize,
    /// Commands one MULTI may queue.
    pub max_multi_commands: AtomicUsize,
    /// Keys one connection may WATCH at once.
    pub max_watch_keys: AtomicUsize,
    /// Redis's encoding parameters: read back, used by nothing.
    pub encoding: super::encoding_params::EncodingParams,
}

impl RuntimeLimits {
    pub fn new(c: &RouterConfig) -> RuntimeLimits {
        RuntimeLimits {
            max_clients: AtomicUsize::new(c.max_clients),
            max_bulk_len: AtomicUsize::new(c.max_bulk_len),
            timeout: watch::Sender::new(c.timeout),
            tcp_keepalive: AtomicU64::new(c.tcp_keepalive),
            query_buffer_limit: AtomicUsize::new(c.client_query_buffer_limit),
            max_multi_commands: AtomicUsize::new(c.max_multi_commands),
            max_watch_keys: AtomicUsize::new(c.max_watch_keys),
            encoding: Default::default(),
        }
    }
}

/// Where CONFIG SET stores a parameter.
enum Setting<'a> {
    Size(&'a AtomicUsize),
    Secs(&'a AtomicU64),
    Watched(&'a watch::Sender<u64>),
    /// A signed value (`slowlog-log-slower-than`), stored as its bits.
    Signed(&'a std::sync::atomic::AtomicI64),
}

impl Setting<'_> {
    fn store(&self, v: u64) {
        match self {
            Setting::Size(a) => {
                a.store(usize::try_from(v).unwrap_or(usize::MAX), Ordering::Relaxed)
            }
            Setting::Secs(a) => a.store(v, Ordering::Relaxed),
            Setting::Watched(w) => {
                w.send_replace(v);
            }
            Setting::Signed(a) => a.store(v as i64, Ordering::Relaxed),
        }
    }
}

/// Connected clients, for CLIENT LIST and the client limit.
#[derive(Default)]
pub struct ClientRegistry {
    next_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, ClientInfo>>,
}

#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub name: String,
    pub table: String,
    pub db: u32,
    pub connected_at: Option<Instant>,
    pub last_cmd: String,
    pub lib_name: String,
    pub lib_ver: String,
    /// The user the client authenticated as (`default` until AUTH).
    pub user: String,
    /// Signalled by CLIENT KILL; the connection loop closes on it.
    pub kill: Arc<tokio::sync::Notify>,
    /// A blocked command's state, for CLIENT UNBLOCK.
    pub unblock: Arc<Unblock>,
}

/// Whether a client is blocked (BLPOP...), and CLIENT UNBLOCK's signal.
#[derive(Debug, Default)]
pub struct Unblock {
    pub blocked: std::sync::atomic::AtomicBool,
    /// Unblock with an error rather than as a timeout.
    pub error: std::sync::atomic::AtomicBool,
    pub notify: tokio::sync::Notify,
}

impl ClientRegistry {
    /// Register a new client, unless `max` are already connected.
    pub fn register(&self, addr: String, max: usize) -> Option<u64> {
        let mut map = self.clients.lock().ok()?;
        if map.len() >= max {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        map.insert(
            id,
            ClientInfo {
                id,
                addr,
                table: "default".into(),
                user: "default".into(),
                connected_at: Some(Instant::now()),
                ..Default::default()
            },
        );
        Some(id)
    }

    /// The kill switch of a client (its connection loop waits on it).
    pub fn kill_handle(&self, id: u64) -> Option<Arc<tokio::sync::Notify>> {
        self.clients.lock().ok()?.get(&id).map(|c| c.kill.clone())
    }

    /// A client's blocking state.
    pub fn unblock_handle(&self, id: u64) -> Option<Arc<Unblock>> {
        self.clients
            .lock()
            .ok()?
            .get(&id)
            .map(|c| c.unblock.clone())
    }

    /// CLIENT KILL: signal every client matching; returns how many.
    fn kill(&self, id: Option<u64>, addr: Option<&str>, skip: Option<u64>) -> i64 {
        let Ok(map) = self.clients.lock() else {
            return 0;
        };
        let mut n = 0;
        for c in map.values() {
            if id.is_some_and(|i| i != c.id)
                || addr.is_some_and(|a| a != c.addr)
                || skip == Some(c.id)
            {
                continue;
            }
            c.kill.notify_one();
            n += 1;
        }
        n
    }

    pub fn unregister(&self, id: u64) {
        if let Ok(mut map) = self.clients.lock() {
            map.remove(&id);
        }
    }

    pub fn count(&self) -> usize {
        self.clients.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Clients registered since start (INFO's `total_connections_received`).
    pub fn received(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Clients blocked in BLPOP and the like right now.
    pub fn blocked(&self) -> usize {
        self.clients
            .lock()
            .map(|m| {
                m.values()
                    .filter(|c| c.unblock.blocked.load(Ordering::Relaxed))
                    .count()
            })
            .unwrap_or(0)
    }

    /// A client's `addr:port` (empty once gone).
    pub fn addr(&self, id: u64) -> String {
        self.clients
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|c| c.addr.clone()))
            .unwrap_or_default()
    }

    /// Note the command a client ran last (CLIENT LIST's `cmd`).
    pub(super) fn update_last_cmd(&self, id: u64, name: &str) {
        self.update(id, |c| {
            if c.last_cmd != name {
                c.last_cmd = name.to_string();
            }
        });
    }

    /// Note the user a client authenticated as.
    pub(super) fn set_user(&self, id: u64, user: String) {
        self.update(id, |c| c.user = user);
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut ClientInfo)) {
        if let Ok(mut map) = self.clients.lock() {
            if let Some(c) = map.get_mut(&id) {
                f(c);
            }
        }
    }

    fn line(c: &ClientInfo) -> String {
        let age = c.connected_at.map_or(0, |t| t.elapsed().as_secs());
        format!(
            "id={} addr={} name={} age={} db={} table={} cmd={} user={} lib-name={} lib-ver={}",
            c.id, c.addr, c.name, age, c.db, c.table, c.last_cmd, c.user, c.lib_name, c.lib_ver
        )
    }

    fn list(&self) -> String {
        let map = match self.clients.lock() {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        map.values().map(|c| Self::line(c) + "\n").collect()
    }

    /// CLIENT INFO's line without its newline (ACL LOG's `client-info`).
    pub(super) fn info_line(&self, id: u64) -> String {
        self.info(id).trim_end().to_string()
    }

    fn info(&self, id: u64) -> String {
        self.clients
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|c| Self::line(c) + "\n"))
            .unwrap_or_default()
    }
}

/// A command answered from the connection's own state (command table
/// handler kind `Local`).
pub type LocalFn = fn(&mut Session, &mut Args) -> Reply;

/// A command that waits on the cluster (handler kind `Async`).
pub type AsyncFn = for<'a> fn(&'a mut Session, &'a mut Args) -> BoxFuture<'a, Reply>;

/// A table switch (SELECT, TABLE.USE): the table named and its index.
pub type UseFn = fn(&Session, &mut Args) -> Result<(String, u32), Reply>;

/// What the connection should do after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Send the reply, then close the connection (QUIT).
    Close,
}

pub struct Session {
    pub(super) shared: Arc<Shared>,
    pub id: u64,
    pub protocol: Protocol,
    pub(super) table: String,
    pub(super) db: u32,
    pub(super) readonly: bool,
    pub(super) authenticated: bool,
    /// The user whose rules apply (`default` until AUTH), as of the last
    /// look at `users`.
    pub(super) user: Arc<super::users::User>,
    /// The router's users (a clone of [`Shared::users`]).
    pub(super) users: watch::Receiver<Arc<super::users::Users>>,
    pub(super) name: String,
    /// Inside MULTI: the queued transaction.
    pub(super) multi: Option<MultiState>,
    /// WATCHed keys with their versions.
    pub(super) watches: Vec<super::compile::WatchedKey>,
    /// A WATCH was refused (too many keys): the next transaction aborts,
    /// since it would run without all the checks its client asked for.
    pub(super) watch_refused: bool,
    /// QUIT ran: close the connection once its reply is sent.
    pub(super) closing: bool,
    /// The command running may read from any replica: its row is
    /// `READONLY` and the connection said READONLY (set by the dispatcher).
    pub(super) stale_ok: bool,
    /// MONITOR ran: the connection loop turns this connection into a feed.
    pub monitor: bool,
    /// Pub/Sub subscriptions.
    pub(super) subs: super::pubsub::SubState,
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.subs.active() {
            self.leave_pubsub();
        }
    }
}

/// A transaction being queued.
#[derive(Debug, Default)]
pub struct MultiState {
    pub(super) queued: Vec<Queued>,
    /// A command failed to queue: EXEC will answer EXECABORT.
    pub(super) failed: bool,
    /// Table current at the end of the queue (TABLE.USE / SELECT inside).
    pub(super) table: String,
    pub(super) db: u32,
    /// The users' revision when MULTI started: EXEC checks every queued
    /// call again if the users changed since.
    pub(super) acl_revision: i64,
    /// Each queued call's row, request and table, for that check.
    pub(super) sources: Vec<(usize, Vec<bytes::Bytes>, String)>,
}

#[derive(Debug)]
pub(super) enum Queued {
    Plan(Plan),
    /// A command whose arguments were refused: its error is its reply at
    /// EXEC, the others run (Redis's order of checks).
    Error(Reply),
    /// A connection command (PING, ECHO, UNWATCH, TIME...), run at EXEC.
    Local(LocalFn, Args),
    /// PUBLISH (kind [`crate::shard::pubsub::KIND_CHANNEL`]) or SPUBLISH,
    /// published at EXEC in its place, after the transaction's writes.
    Publish(u8, Args),
    /// TABLE.USE / SELECT: switch the connection's table at this point.
    Use {
        table: String,
        db: u32,
    },
}

impl Session {
    pub fn new(shared: Arc<Shared>, id: u64) -> Session {
        let mut users = shared.users.clone();
        let user = default_user(&users.borrow_and_update());
        // Redis: a connection starts as `default`, authenticated when that
        // user is on and needs no password.
        let authenticated = user.is_enabled() && user.rec.nopass;
        Session {
            user,
            users,
            shared,
            id,
            protocol: Protocol::Resp2,
            table: "default".into(),
            db: 0,
            readonly: false,
            authenticated,
            name: String::new(),
            multi: None,
            watches: Vec::new(),
            watch_refused: false,
            closing: false,
            stale_ok: false,
            monitor: false,
            subs: Default::default(),
        }
    }

    pub(super) fn unknown_command(&self, args: &Args) -> Reply {
        let mut shown = String::new();
        let mut a = args.clone();
        while let Ok(b) = a.next_bytes() {
            shown.push_str(&format!("'{}' ", String::from_utf8_lossy(&b)));
        }
        Reply::error(format!(
            "ERR unknown command '{}', with args beginning with: {}",
            args.name(),
            shown
        ))
    }

    /// RESET: the connection as it was when it connected.
    pub(super) fn reset(&mut self, _args: &mut Args) -> Reply {
        self.reset_state();
        Reply::status("RESET")
    }

    fn reset_state(&mut self) {
        self.monitor = false;
        if self.subs.active() {
            self.leave_pubsub();
        }
        self.multi = None;
        self.watches.clear();
        self.watch_refused = false;
        self.protocol = Protocol::Resp2;
        self.table = "default".into();
        self.db = 0;
        self.readonly = false;
        self.name.clear();
        self.refresh_user();
        let user = default_user(&self.users.borrow());
        self.authenticated = user.is_enabled() && user.rec.nopass;
        self.user = user;
        self.shared.clients.update(self.id, |c| {
            c.user = "default".into();
            c.name.clear();
            c.table = "default".into();
            c.db = 0;
        });
    }

    /// QUIT: OK, then the connection closes.
    pub(super) fn quit(&mut self, _args: &mut Args) -> Reply {
        self.closing = true;
        Reply::ok()
    }

    pub(super) fn echo(&mut self, args: &mut Args) -> Reply {
        args.next_bytes().map(Reply::Bulk).unwrap_or_else(arg_err)
    }

    /// READONLY: reads of read-only commands may come from any replica.
    pub(super) fn readonly(&mut self, _args: &mut Args) -> Reply {
        self.readonly = true;
        Reply::ok()
    }

    pub(super) fn readwrite(&mut self, _args: &mut Args) -> Reply {
        self.readonly = false;
        Reply::ok()
    }

    pub(super) fn time(&mut self, _args: &mut Args) -> Reply {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Reply::Array(vec![
            Reply::bulk(now.as_secs().to_string()),
            Reply::bulk(now.subsec_micros().to_string()),
        ])
    }

    pub(super) fn ping(&mut self, args: &mut Args) -> Reply {
        if args.remaining() <= 1 {
            if let Some(r) = self.subscribed_ping(args.clone().next_bytes().ok()) {
                return r;
            }
        }
        match args.remaining() {
            0 => Reply::status("PONG"),
            1 => args.next_bytes().map(Reply::Bulk).unwrap_or_else(arg_err),
            _ => wrong_args("ping"),
        }
    }

    pub(super) fn auth(&mut self, args: &mut Args) -> Reply {
        let (user, pass) = match args.remaining() {
            1 => ("default".to_string(), args.next_bytes()),
            2 => {
                let u =
                    String::from_utf8_lossy(&args.next_bytes().unwrap_or_default()).into_owned();
                (u, args.next_bytes())
            }
            _ => return Reply::error("ERR syntax error"),
        };
        let pass = pass.unwrap_or_default();
        let default_nopass = default_user(&self.users.borrow()).rec.nopass;
        if args.len() == 2 && default_nopass {
            return Reply::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        }
        let command = args.all()[0].clone();
        if self.authenticate(&command, &user, &pass) {
            Reply::ok()
        } else {
            Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    pub(super) fn hello(&mut self, args: &mut Args) -> Reply {
        let mut proto = self.protocol;
        if args.remaining() > 0 {
            match args.next_i64() {
                Ok(2) => proto = Protocol::Resp2,
                Ok(3) => proto = Protocol::Resp3,
                Ok(_) => return Reply::error("NOPROTO unsupported protocol version"),
                Err(_) => {
                    return Reply::error("ERR Protocol version is not an integer or out of range")
                }
            }
        }
        while let Some(opt) = args.peek_upper() {
            let _ = args.next_bytes();
            match opt.as_str() {
                "AUTH" => {
                    let user = args.next_string().unwrap_or_default();
                    let pass = args.next_bytes().unwrap_or_default();
                    let command = args.all()[0].clone();
                    if !self.authenticate(&command, &user, &pass) {
                        return Reply::error(
                            "WRONGPASS invalid username-password pair or user is disabled.",
                        );
                    }
                }
                "SETNAME" => match args.next_string() {
                    Ok(n) => self.set_name(n),
                    Err(e) => return arg_err(e),
                },
                _ => return Reply::error(format!("ERR Syntax error in HELLO option '{opt}'")),
            }
        }
        if !self.authenticated {
            return Reply::error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        self.protocol = proto;
        let version = match proto {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        };
        Reply::Map(vec![
            (Reply::bulk("server"), Reply::bulk("redis")),
            (Reply::bulk("version"), Reply::bulk("7.0.0")),
            (Reply::bulk("proto"), Reply::Int(version)),
            (Reply::bulk("id"), Reply::Int(self.id as i64)),
            (Reply::bulk("mode"), Reply::bulk("standalone")),
            (Reply::bulk("role"), Reply::bulk("master")),
            (Reply::bulk("modules"), Reply::Array(vec![])),
        ])
    }

    fn set_name(&mut self, name: String) {
        self.name = name.clone();
        self.shared.clients.update(self.id, |c| c.name = name);
    }

    pub(super) fn use_table(&mut self, name: &str, db: u32) {
        self.table = name.to_string();
        self.db = db;
        let name = name.to_string();
        self.shared.clients.update(self.id, |c| {
            c.table = name;
            c.db = db;
        });
    }

    /// SELECT index: the table with that database index (0 is `default`,
    /// even before its creation finishes).
    pub(super) fn select(&self, args: &mut Args) -> Result<(String, u32), Reply> {
        let index = match args.next_i64() {
            Ok(i) => i,
            Err(_) => return Err(Reply::error("ERR value is not an integer or out of range")),
        };
        if index < 0 || index > u32::MAX as i64 {
            return Err(Reply::error("ERR DB index is out of range"));
        }
        if index == 0 {
            return Ok(("default".into(), 0));
        }
        match self.shared.client.routes().table_by_index(index as u32) {
            Some(t) => Ok((t.desc.name.clone(), index as u32)),
            None => Err(Reply::error(format!(
                "ERR no table has database index {index}"
            ))),
        }
    }

    pub(super) fn client(&mut self, args: &mut Args) -> Reply {
        let sub = match args.next_string() {
            Ok(s) => s.to_ascii_lowercase(),
            Err(e) => return arg_err(e),
        };
        match sub.as_str() {
            "id" => Reply::Int(self.id as i64),
            "setname" if args.remaining() != 1 => {
                Reply::error("ERR wrong number of arguments for 'client|setname' command")
            }
            "setname" => match args.next_string() {
                Ok(n) if n.contains(' ') || n.contains('\n') => Reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                ),
                Ok(n) => {
                    self.set_name(n);
                    Reply::ok()
                }
                Err(e) => arg_err(e),
            },
            "getname" => {
                if self.name.is_empty() {
                    Reply::Nil
                } else {
                    Reply::bulk(self.name.clone())
                }
            }
            "setinfo" => {
                let attr = args.next_string().unwrap_or_default().to_ascii_lowercase();
                let value = args.next_string().unwrap_or_default();
                match attr.as_str() {
                    "lib-name" => self.shared.clients.update(self.id, |c| c.lib_name = value),
                    "lib-ver" => self.shared.clients.update(self.id, |c| c.lib_ver = value),
                    _ => {
                        return Reply::error(format!("ERR Unrecognized option '{attr}'"));
                    }
                }
                Reply::ok()
            }
            "kill" => self.client_kill(args),
            "unblock" => self.client_unblock(args),
            "list" => Reply::Verbatim(self.shared.clients.list()),
            "info" => Reply::Verbatim(self.shared.clients.info(self.id)),
            _ => Reply::error(format!("ERR unknown subcommand '{sub}'. Try CLIENT HELP.")),
        }
    }

    /// CLIENT KILL addr | CLIENT KILL [ID id] [ADDR addr] [SKIPME yes|no]
    /// `CLIENT UNBLOCK client-id [TIMEOUT | ERROR]`: 1 if the client was
    /// blocked (it then answers as on timeout, or `-UNBLOCKED`), else 0.
    fn client_unblock(&self, args: &mut Args) -> Reply {
        let id = match args.next_i64() {
            Ok(id) => id,
            Err(_) => return Reply::error("ERR value is not an integer or out of range"),
        };
        let error = match args.peek_upper().as_deref() {
            None => false,
            Some("TIMEOUT") => false,
            Some("ERROR") => true,
            Some(_) => return Reply::error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR"),
        };
        let Some(u) = u64::try_from(id)
            .ok()
            .and_then(|id| self.shared.clients.unblock_handle(id))
        else {
            return Reply::Int(0);
        };
        if !u.blocked.load(Ordering::SeqCst) {
            return Reply::Int(0);
        }
        u.error.store(error, Ordering::SeqCst);
        u.notify.notify_one();
        Reply::Int(1)
    }

    fn client_kill(&self, args: &mut Args) -> Reply {
        let clients = &self.shared.clients;
        if args.remaining() == 1 {
            let addr = args.next_string().unwrap_or_default();
            return match clients.kill(None, Some(&addr), None) {
                0 => Reply::error("ERR No such client"),
                _ => Reply::ok(),
            };
        }
        let (mut id, mut addr, mut skipme) = (None, None, true);
        while args.remaining() > 0 {
            let opt = args.next_string().unwrap_or_default().to_ascii_lowercase();
            let Ok(value) = args.next_string() else {
                return Reply::error("ERR syntax error");
            };
            match opt.as_str() {
                "id" => match value.parse::<u64>() {
                    Ok(i) if i > 0 => id = Some(i),
                    _ => return Reply::error("ERR client-id should be greater than 0"),
                },
                "addr" => addr = Some(value),
                "skipme" => match value.to_ascii_lowercase().as_str() {
                    "yes" => skipme = true,
                    "no" => skipme = false,
                    _ => return Reply::error("ERR syntax error"),
                },
                _ => return Reply::error("ERR syntax error"),
            }
        }
        let skip = skipme.then_some(self.id);
        Reply::Int(clients.kill(id, addr.as_deref(), skip))
    }

    /// The CONFIG parameters this router has, with their current values.
    fn config_params(&self) -> Vec<(&'static str, String)> {
        let c = &self.shared.config;
        let l = &self.shared.limits;
        let size = |a: &AtomicUsize| a.load(Ordering::Relaxed).to_string();
        let mut params = vec![
            ("appendonly", "no".into()),
            ("databases", "16".into()),
            ("maxclients", size(&l.max_clients)),
            ("proto-max-bulk-len", size(&l.max_bulk_len)),
            ("client-query-buffer-limit", size(&l.query_buffer_limit)),
            ("save", String::new()),
            ("timeout", l.timeout.borrow().to_string()),
            (
                "tcp-keepalive",
                l.tcp_keepalive.load(Ordering::Relaxed).to_string(),
            ),
            ("shoal-max-value-len", c.max_value_len.to_string()),
            ("shoal-max-output-len", c.max_output_len.to_string()),
            ("shoal-max-multi-commands", size(&l.max_multi_commands)),
            ("shoal-max-watch-keys", size(&l.max_watch_keys)),
            (
                "client-output-buffer-limit",
                // Only the pubsub class is this router's: normal clients
                // are bounded by shoal-max-output-len, and there are no
                // replica connections.
                format!(
                    "normal 0 0 0 slave 268435456 67108864 60 pubsub {} {} {}",
                    size(&self.shared.pubsub.hard_limit),
                    size(&self.shared.pubsub.soft_limit),
                    size(&self.shared.pubsub.soft_secs)
                ),
            ),
        ];
        params.push((
            "notify-keyspace-events",
            crate::shard::notify::format_flags(crate::shard::notify::stored_flags(
                self.shared
                    .settings
                    .borrow()
                    .value("settings/", crate::meta::etcd::NOTIFY_KEYSPACE_EVENTS),
            )),
        ));
        let views = &self.shared.views;
        params.extend([
            (
                "slowlog-log-slower-than",
                views
                    .slowlog
                    .slower_than
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "slowlog-max-len",
                views.slowlog.max_len.load(Ordering::Relaxed).to_string(),
            ),
            (
                "latency-monitor-threshold",
                views
                    .latency
                    .threshold_ms
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            ("latency-tracking", "yes".into()),
            ("latency-tracking-info-percentiles", "50 99 99.9".into()),
        ]);
        params.extend(l.encoding.all());
        params
    }

    /// A parameter CONFIG SET may change: where it goes, its smallest value,
    /// and whether it is a size (`1mb`, `2gb` accepted, as in Redis).
    fn setting(&self, name: &str) -> Option<(Setting<'_>, u64, bool)> {
        let l = &self.shared.limits;
        Some(match name {
            "maxclients" => (Setting::Size(&l.max_clients), 1, false),
            "proto-max-bulk-len" => (Setting::Size(&l.max_bulk_len), 1, true),
            "client-query-buffer-limit" => (Setting::Size(&l.query_buffer_limit), 1, true),
            "timeout" => (Setting::Watched(&l.timeout), 0, false),
            "tcp-keepalive" => (Setting::Secs(&l.tcp_keepalive), 0, false),
            "shoal-max-multi-commands" => (Setting::Size(&l.max_multi_commands), 1, false),
            "shoal-max-watch-keys" => (Setting::Size(&l.max_watch_keys), 1, false),
            _ => return None,
        })
    }

    /// `client-output-buffer-limit <class> <hard> <soft> <soft seconds>
    /// ...`: the pubsub class's values (what this router enforces);
    /// `normal` and `replica` (`slave`) are accepted only as CONFIG GET
    /// shows them, since this router does not apply them.
    fn output_limit_updates(&self, value: &[u8]) -> Result<Vec<(Setting<'_>, u64)>, Reply> {
        let err = |why: &str| {
            Reply::error(format!(
                "ERR CONFIG SET failed (possibly related to argument 'client-output-buffer-limit') - {why}"
            ))
        };
        let text = String::from_utf8_lossy(value);
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() || !words.len().is_multiple_of(4) {
            return Err(err(
                "Wrong number of arguments in buffer limit configuration.",
            ));
        }
        let hub = &self.shared.pubsub;
        let mut out = Vec::new();
        for group in words.chunks(4) {
            let hard = parse_memory(group[1].as_bytes());
            let soft = parse_memory(group[2].as_bytes());
            let secs =
                super::args::parse_i64(group[3].as_bytes()).and_then(|v| u64::try_from(v).ok());
            let (Some(hard), Some(soft), Some(secs)) = (hard, soft, secs) else {
                return Err(err(
                    "Error in hard, soft or soft_seconds setting in buffer limit configuration.",
                ));
            };
            match group[0].to_ascii_lowercase().as_str() {
                "pubsub" => out.extend([
                    (Setting::Size(&hub.hard_limit), hard),
                    (Setting::Size(&hub.soft_limit), soft),
                    (Setting::Size(&hub.soft_secs), secs),
                ]),
                "normal" if (hard, soft, secs) == (0, 0, 0) => {}
                "replica" | "slave" if (hard, soft, secs) == (268435456, 67108864, 60) => {}
                "normal" | "replica" | "slave" => {
                    return Err(err(
                        "only the pubsub class can be changed on a shoal router (normal clients are bounded by shoal-max-output-len)",
                    ))
                }
                _ => {
                    return Err(err(
                        "Invalid client class specified in buffer limit configuration.",
                    ))
                }
            }
        }
        Ok(out)
    }

    /// The settings of SLOWLOG and LATENCY: where they go, their smallest
    /// value (Redis's ranges).
    fn view_setting(&self, name: &str) -> Option<(Setting<'_>, i64)> {
        let v = &self.shared.views;
        Some(match name {
            "slowlog-log-slower-than" => (Setting::Signed(&v.slowlog.slower_than), -1),
            "slowlog-max-len" => (Setting::Secs(&v.slowlog.max_len), 0),
            "latency-monitor-threshold" => (Setting::Secs(&v.latency.threshold_ms), 0),
            _ => return None,
        })
    }

    /// CONFIG SET parameter value [parameter value ...]: the limits in
    /// [`RuntimeLimits`] change at run time; all values are checked before
    /// any is applied.
    async fn config_set(&self, args: &mut Args) -> Reply {
        let rest = args.rest();
        if rest.is_empty() || !rest.len().is_multiple_of(2) {
            return Reply::error("ERR wrong number of arguments for 'config|set' command");
        }
        let mut updates = Vec::new();
        let mut encoding = Vec::new();
        let mut notify = None;
        for pair in rest.chunks(2) {
            let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
            if name == "notify-keyspace-events" {
                use crate::shard::notify::{parse_flags, ERR_FLAGS};
                if parse_flags(&pair[1]).is_none() {
                    return Reply::error(format!(
                        "ERR CONFIG SET failed (possibly related to argument '{name}') - {ERR_FLAGS}"
                    ));
                }
                // Stored as given: Redis's canonical form drops `n` next
                // to `A`, so it cannot be read back into the same flags.
                notify = Some(String::from_utf8_lossy(&pair[1]).into_owned());
                continue;
            }
            match EncodingParams::check(&name, &pair[1]) {
                Some(Ok(update)) => {
                    encoding.push(update);
                    continue;
                }
                Some(Err(e)) => return Reply::error(e),
                None => {}
            }
            if let Some((target, min)) = self.view_setting(&name) {
                // Redis's integer configs: any i64 from `min` up.
                let Some(v) = super::args::parse_i64(&pair[1]) else {
                    return Reply::error(format!(
                        "ERR CONFIG SET failed (possibly related to argument '{name}') - argument couldn't be parsed into an integer"
                    ));
                };
                if v < min {
                    return Reply::error(format!(
                        "ERR CONFIG SET failed (possibly related to argument '{name}') - argument must be between {min} and {} inclusive",
                        i64::MAX
                    ));
                }
                updates.push((target, v as u64));
                continue;
            }
            if name == "client-output-buffer-limit" {
                match self.output_limit_updates(&pair[1]) {
                    Ok(u) => updates.extend(u),
                    Err(e) => return e,
                }
                continue;
            }
            let Some((target, min, sized)) = self.setting(&name) else {
                if self.config_params().iter().any(|(k, _)| *k == name) {
                    return Reply::error(format!(
                        "ERR CONFIG SET failed (possibly related to argument '{name}') - can't set immutable config"
                    ));
                }
                return Reply::error(format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                ));
            };
            let value = if sized {
                parse_memory(&pair[1])
            } else {
                super::args::parse_i64(&pair[1]).and_then(|v| u64::try_from(v).ok())
            };
            let Some(value) = value.filter(|v| *v >= min) else {
                return Reply::error(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{name}') - argument couldn't be parsed into an integer of at least {min}"
                ));
            };
            updates.push((target, value));
        }
        if let Some(text) = notify {
            // Cluster-wide: every router and node follows it in etcd.
            let key = crate::meta::etcd::NOTIFY_KEYSPACE_EVENTS;
            match self.shared.meta.put_setting(key, &text).await {
                Ok(revision) => {
                    let mut rx = self.shared.settings.clone();
                    let seen = rx.wait_for(|s| s.revision >= revision);
                    if tokio::time::timeout(Duration::from_secs(2), seen)
                        .await
                        .is_err()
                    {
                        tracing::warn!(
                            revision,
                            "notify-keyspace-events written but not yet seen by this router's watch"
                        );
                    }
                }
                Err(e) => {
                    return Reply::error(format!(
                        "ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - cannot store it in etcd: {e}"
                    ))
                }
            }
        }
        for (target, value) in updates {
            target.store(value);
        }
        for update in encoding {
            self.shared.limits.encoding.store(update);
        }
        Reply::ok()
    }

    pub(super) async fn config(&mut self, args: &mut Args) -> Reply {
        let given = match args.next_string() {
            Ok(s) => s,
            Err(e) => return arg_err(e),
        };
        let sub = given.to_ascii_lowercase();
        match sub.as_str() {
            "get" if args.remaining() == 0 => return wrong_args("config|get"),
            "get" => {}
            "set" => return self.config_set(args).await,
            "resetstat" if args.remaining() > 0 => return wrong_args("config|resetstat"),
            "resetstat" => {
                // Redis's RESETSTAT: command, error and latency stats and
                // the command count (not SLOWLOG or LATENCY's events).
                self.shared.views.stats.reset();
                self.shared.commands_processed.store(0, Ordering::Relaxed);
                return Reply::ok();
            }
            _ => {
                return Reply::error(format!(
                    "ERR unknown subcommand '{given}'. Try CONFIG HELP."
                ))
            }
        }
        let params = self.config_params();
        let mut out = Vec::new();
        for pattern in args.rest() {
            // Redis matches parameter names ignoring case.
            for (k, v) in &params {
                if crate::glob::glob_match_nocase(&pattern, k.as_bytes())
                    && !out
                        .iter()
                        .any(|(name, _): &(Reply, Reply)| *name == Reply::bulk(*k))
                {
                    out.push((Reply::bulk(*k), Reply::bulk(v.clone())));
                }
            }
        }
        Reply::Map(out)
    }

    pub(super) async fn info(&self, args: &mut Args) -> Reply {
        let wanted: Vec<String> = args
            .rest()
            .iter()
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
            .collect();
        // Redis 7: the default sections leave out commandstats and
        // latencystats; `all` and `everything` have them.
        let show = |s: &str| {
            let default = !matches!(s, "commandstats" | "latencystats");
            (wanted.is_empty() && default)
                || wanted.iter().any(|w| {
                    w == s || w == "all" || w == "everything" || (w == "default" && default)
                })
        };
        let shared = &self.shared;
        let mut text = String::new();
        if show("server") {
            text.push_str(&format!(
                "# Server\r\nredis_version:7.0.0\r\nshoal_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::process::id(),
                shared.config.listen.rsplit(':').next().unwrap_or(""),
                shared.started.elapsed().as_secs(),
            ));
        }
        // Counters the nodes keep (collections collected, transactions
        // recovered, waits of blocked clients), asked of every live node once.
        let nodes: Vec<crate::shard::status::NodeStatus> =
            if show("stats") || show("transactions") || show("clients") {
                let view = shared.client.routes();
                let asks = view
                    .live
                    .iter()
                    .map(|n| shared.client.node_status(*n, vec![u64::MAX]));
                futures::future::join_all(asks)
                    .await
                    .into_iter()
                    .filter_map(Result::ok)
                    .collect()
            } else {
                Vec::new()
            };
        if show("clients") {
            // blocked_waits_on_nodes: the waits the nodes hold for blocked
            // clients of every router (one per shard a client waits on).
            let waits: u64 = nodes.iter().map(|s| s.blocked_waits).sum();
            text.push_str(&format!(
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\nblocked_waits_on_nodes:{waits}\r\n\r\n",
                shared.clients.count(),
                shared.limits.max_clients.load(Ordering::Relaxed),
                shared.clients.blocked(),
            ));
        }
        if show("memory") {
            let rss = resident_bytes();
            text.push_str(&format!(
                "# Memory\r\nused_memory:{rss}\r\nused_memory_rss:{rss}\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n\r\n"
            ));
        }
        if show("stats") {
            // Redis's lazyfreed_objects: here the dead collections whose
            // element rows the nodes' collectors removed (each replica
            // counts its own removal).
            let collected: u64 = nodes.iter().map(|s| s.collections_collected).sum();
            text.push_str(&format!(
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ntotal_error_replies:{}\r\nlazyfreed_objects:{collected}\r\n\r\n",
                shared.clients.received(),
                shared.commands_processed.load(Ordering::Relaxed),
                shared.views.stats.total_errors(),
            ));
        }
        if show("transactions") {
            // Recovered transactions are counted by the nodes that resolved them.
            let recovered: u64 = nodes.iter().map(|s| s.txn_recovered).sum();
            let t = &shared.txn_stats;
            text.push_str(&format!(
                "# Transactions\r\ntxn_committed:{}\r\ntxn_aborted:{}\r\ntxn_conflicts:{}\r\ntxn_one_phase:{}\r\ntxn_recovered_by_nodes:{}\r\n\r\n",
                t.committed.load(Ordering::Relaxed),
                t.aborted.load(Ordering::Relaxed),
                t.conflicts.load(Ordering::Relaxed),
                t.one_phase.load(Ordering::Relaxed),
                recovered,
            ));
        }
        // Redis's order: after the fixed sections, before Cluster and Keyspace.
        if show("commandstats") {
            text.push_str(&shared.views.stats.info_commandstats());
        }
        if show("errorstats") {
            text.push_str(&shared.views.stats.info_errorstats());
        }
        if show("latencystats") {
            text.push_str(&shared.views.stats.info_latencystats());
        }
        if show("cluster") {
            let view = shared.client.routes();
            let mut tables: Vec<&Arc<TableRoute>> = view.tables.values().collect();
            tables.sort_by_key(|t| t.desc.db_index);
            text.push_str(&format!(
                "# Cluster\r\nlive_nodes:{}\r\ntables:{}\r\n",
                view.live.len(),
                tables.len()
            ));
            let descs: Vec<_> = tables.iter().map(|t| t.desc.clone()).collect();
            let moves = crate::cluster::rebalance::describe_moves(&shared.client, &descs).await;
            text.push_str(&format!("moves_in_progress:{}\r\n", moves.len()));
            for (i, m) in moves.iter().enumerate() {
                text.push_str(&format!("move{i}:{m}\r\n"));
            }
            // Replicas no readable record names: kept, never deleted.
            let mut orphans = Vec::new();
            for node in view.live.iter() {
                if let Ok(st) = shared.client.node_status(*node, vec![]).await {
                    for g in st.groups {
                        if let Some(why) = g.orphaned {
                            orphans.push(format!(
                                "node={node},group={},table={},status=orphaned (kept),why={why}",
                                g.group_id, g.table
                            ));
                        }
                    }
                }
            }
            text.push_str(&format!("orphaned_replicas:{}\r\n", orphans.len()));
            for (i, o) in orphans.iter().enumerate() {
                text.push_str(&format!("orphan{i}:{o}\r\n"));
            }
            for t in tables {
                text.push_str(&format!(
                    "table_{}:db={},state={},shards={},replicas={}\r\n",
                    t.desc.name,
                    t.desc.db_index,
                    t.desc.state.as_str(),
                    t.desc.shards.len(),
                    t.desc.replicas
                ));
                // Each shard: group, slot range, replicas, the leader this
                // router last reached (`?` before any request went there).
                for (i, sd) in t.desc.shards.iter().enumerate() {
                    let replicas: Vec<String> = sd.replicas.iter().map(|r| r.to_string()).collect();
                    text.push_str(&format!(
                        "shard_{}_{i}:group={},slots={}-{},replicas={},leader={}\r\n",
                        t.desc.name,
                        sd.group_id,
                        sd.slots[0],
                        sd.slots[1],
                        replicas.join("/"),
                        shared
                            .client
                            .cached_leader(sd.group_id)
                            .map_or("?".to_string(), |l| l.to_string())
                    ));
                }
            }
            text.push_str("\r\n");
        }
        if show("keyspace") {
            text.push_str("# Keyspace\r\n");
            let view = shared.client.routes();
            let mut tables: Vec<&Arc<TableRoute>> = view.tables.values().collect();
            tables.sort_by_key(|t| t.desc.db_index);
            for t in tables {
                // The nodes' key counters: INFO must not read every key.
                if let Ok(n) = self.table_key_count(t).await {
                    if n > 0 {
                        text.push_str(&format!(
                            "db{}:keys={n},expires=0,avg_ttl=0\r\n",
                            t.desc.db_index
                        ));
                    }
                }
            }
            text.push_str("\r\n");
        }
        Reply::Verbatim(text)
    }
}

/// A size as Redis's `memtoull` reads it: digits with an optional unit,
/// `k`/`m`/`g` (powers of 1000) or `kb`/`mb`/`gb` (powers of 1024), any case.
fn parse_memory(s: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(s).ok()?.to_ascii_lowercase();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// This process's resident memory in bytes (0 where /proc is missing).
pub fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// The `default` user (always present: built from `requirepass` when etcd
/// has no record of it).
fn default_user(users: &super::users::Users) -> Arc<super::users::User> {
    users
        .get("default")
        .cloned()
        .unwrap_or_else(|| Arc::new(super::users::User::default_user(None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory(b"1048576"), Some(1 << 20));
        assert_eq!(parse_memory(b"1mb"), Some(1 << 20));
        assert_eq!(parse_memory(b"1MB"), Some(1 << 20));
        assert_eq!(parse_memory(b"2k"), Some(2000));
        assert_eq!(parse_memory(b"1gb"), Some(1 << 30));
        assert_eq!(parse_memory(b"7b"), Some(7));
        for bad in [
            &b""[..],
            b"mb",
            b"-1",
            b"1.5mb",
            b"1tb",
            b" 1",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_memory(bad), None, "{bad:?}");
        }
    }
}
