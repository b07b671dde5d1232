//! One client connection's state and the execution of its commands.
//!
//! A [`Session`] holds what Redis keeps per connection (current table,
//! protocol version, READONLY flag, name, authentication) and turns each
//! request into a [`Reply`] value: connection commands are answered here,
//! data commands become shard requests sent through the
//! [`ShardClient`](crate::cluster::client::ShardClient). Nothing here writes
//! to a socket.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::args::{ArgError, Args};
use super::commands::{lookup, COMMANDS};
use super::reply::{Protocol, Reply};
use crate::cluster::admin::{self, TableSpec};
use crate::cluster::client::ShardClient;
use crate::cluster::routes::TableRoute;
use crate::cluster::slot::slot;
use crate::cluster::ClusterError;
use crate::config::RouterConfig;
use crate::meta::descriptor::TableState;
use crate::meta::etcd::{now_ms, Meta};
use crate::shard::command::{Expiry, OpReply, ReadOp, SetCond, ShardRequest, WriteCmd, WriteOp};

/// What the router shares between connections.
pub struct Shared {
    pub client: Arc<ShardClient>,
    pub meta: Meta,
    pub config: RouterConfig,
    pub clients: ClientRegistry,
    pub started: Instant,
    pub commands_processed: AtomicU64,
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
                connected_at: Some(Instant::now()),
                ..Default::default()
            },
        );
        Some(id)
    }

    pub fn unregister(&self, id: u64) {
        if let Ok(mut map) = self.clients.lock() {
            map.remove(&id);
        }
    }

    pub fn count(&self) -> usize {
        self.clients.lock().map(|m| m.len()).unwrap_or(0)
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
            "id={} addr={} name={} age={} db={} table={} cmd={} lib-name={} lib-ver={}",
            c.id, c.addr, c.name, age, c.db, c.table, c.last_cmd, c.lib_name, c.lib_ver
        )
    }

    fn list(&self) -> String {
        let map = match self.clients.lock() {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        map.values().map(|c| Self::line(c) + "\n").collect()
    }

    fn info(&self, id: u64) -> String {
        self.clients
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|c| Self::line(c) + "\n"))
            .unwrap_or_default()
    }
}

/// What the connection should do after a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Send the reply, then close the connection (QUIT).
    Close,
}

pub struct Session {
    shared: Arc<Shared>,
    pub id: u64,
    pub protocol: Protocol,
    table: String,
    db: u32,
    readonly: bool,
    authenticated: bool,
    name: String,
}

fn wrong_args(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn arg_err(e: ArgError) -> Reply {
    Reply::error(e.message())
}

fn cluster_err(e: ClusterError) -> Reply {
    Reply::error(e.resp_message())
}

impl Session {
    pub fn new(shared: Arc<Shared>, id: u64) -> Session {
        let authenticated = shared.config.requirepass.is_none();
        Session {
            shared,
            id,
            protocol: Protocol::Resp2,
            table: "default".into(),
            db: 0,
            readonly: false,
            authenticated,
            name: String::new(),
        }
    }

    /// Execute one request.
    pub async fn handle(&mut self, parts: Vec<Bytes>) -> (Reply, After) {
        let mut args = Args::new(parts);
        let name = args.name().to_string();
        self.shared
            .commands_processed
            .fetch_add(1, Ordering::Relaxed);
        let Some(spec) = lookup(&name) else {
            return (self.unknown_command(&args), After::Continue);
        };
        if !spec.arity_ok(args.len()) {
            return (wrong_args(&name), After::Continue);
        }
        if !self.authenticated && !spec.flags.contains(&"no-auth") {
            return (
                Reply::error("NOAUTH Authentication required."),
                After::Continue,
            );
        }
        self.shared
            .clients
            .update(self.id, |c| c.last_cmd = name.clone());
        let reply = match name.as_str() {
            "ping" => self.ping(&mut args),
            "echo" => args.next_bytes().map(Reply::Bulk).unwrap_or_else(arg_err),
            "quit" => return (Reply::ok(), After::Close),
            "reset" => {
                self.reset();
                Reply::status("RESET")
            }
            "auth" => self.auth(&mut args),
            "hello" => self.hello(&mut args),
            "select" => self.select(&mut args),
            "readonly" => {
                self.readonly = true;
                Reply::ok()
            }
            "readwrite" => {
                self.readonly = false;
                Reply::ok()
            }
            "command" => self.command(&mut args),
            "client" => self.client(&mut args),
            "config" => self.config(&mut args),
            "info" => self.info(&mut args),
            "time" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Reply::Array(vec![
                    Reply::bulk(now.as_secs().to_string()),
                    Reply::bulk(now.subsec_micros().to_string()),
                ])
            }
            "table.use" => self.table_use(&mut args),
            "table.list" => self.table_list(),
            "table.describe" => self.table_describe(&mut args).await,
            "table.create" => self.table_create(&mut args).await,
            _ => self.data(&name, &mut args).await,
        };
        (reply, After::Continue)
    }

    fn unknown_command(&self, args: &Args) -> Reply {
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

    fn reset(&mut self) {
        self.protocol = Protocol::Resp2;
        self.table = "default".into();
        self.db = 0;
        self.readonly = false;
        self.name.clear();
        self.authenticated = self.shared.config.requirepass.is_none();
        self.shared.clients.update(self.id, |c| {
            c.name.clear();
            c.table = "default".into();
            c.db = 0;
        });
    }

    fn ping(&self, args: &mut Args) -> Reply {
        match args.remaining() {
            0 => Reply::status("PONG"),
            1 => args.next_bytes().map(Reply::Bulk).unwrap_or_else(arg_err),
            _ => wrong_args("ping"),
        }
    }

    fn check_password(&self, user: &str, pass: &[u8]) -> bool {
        match &self.shared.config.requirepass {
            None => false,
            Some(p) => user == "default" && p.as_bytes() == pass,
        }
    }

    fn auth(&mut self, args: &mut Args) -> Reply {
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
        if self.shared.config.requirepass.is_none() {
            return Reply::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        }
        if self.check_password(&user, &pass) {
            self.authenticated = true;
            Reply::ok()
        } else {
            Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    fn hello(&mut self, args: &mut Args) -> Reply {
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
                    if !self.check_password(&user, &pass) {
                        return Reply::error(
                            "WRONGPASS invalid username-password pair or user is disabled.",
                        );
                    }
                    self.authenticated = true;
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

    fn use_table(&mut self, name: &str, db: u32) {
        self.table = name.to_string();
        self.db = db;
        let name = name.to_string();
        self.shared.clients.update(self.id, |c| {
            c.table = name;
            c.db = db;
        });
    }

    fn select(&mut self, args: &mut Args) -> Reply {
        let index = match args.next_i64() {
            Ok(i) => i,
            Err(_) => return Reply::error("ERR value is not an integer or out of range"),
        };
        if index < 0 || index > u32::MAX as i64 {
            return Reply::error("ERR DB index is out of range");
        }
        let view = self.shared.client.routes();
        // Table `default` is index 0 even before its creation finishes.
        if index == 0 {
            self.use_table("default", 0);
            return Reply::ok();
        }
        match view.table_by_index(index as u32) {
            Some(t) => {
                let name = t.desc.name.clone();
                self.use_table(&name, index as u32);
                Reply::ok()
            }
            None => Reply::error(format!("ERR no table has database index {index}")),
        }
    }

    fn table_use(&mut self, args: &mut Args) -> Reply {
        let name = match args.next_string() {
            Ok(n) => n,
            Err(e) => return arg_err(e),
        };
        let view = self.shared.client.routes();
        match view.table(&name) {
            Some(t) if t.desc.state != TableState::Deleting => {
                let db = t.desc.db_index;
                self.use_table(&name, db);
                Reply::ok()
            }
            _ => cluster_err(ClusterError::UnknownTable(name)),
        }
    }

    fn table_list(&self) -> Reply {
        let view = self.shared.client.routes();
        let mut names: Vec<&String> = view
            .tables
            .iter()
            .filter(|(_, t)| t.desc.state != TableState::Deleting)
            .map(|(n, _)| n)
            .collect();
        names.sort();
        Reply::Array(names.into_iter().map(|n| Reply::bulk(n.clone())).collect())
    }

    async fn table_describe(&self, args: &mut Args) -> Reply {
        let name = match args.next_string() {
            Ok(n) => n,
            Err(e) => return arg_err(e),
        };
        let view = self.shared.client.routes();
        let Some(t) = view.table(&name) else {
            return cluster_err(ClusterError::UnknownTable(name));
        };
        let d = &t.desc;
        let shards = d
            .shards
            .iter()
            .map(|s| {
                Reply::Map(vec![
                    (Reply::bulk("group_id"), Reply::Int(s.group_id as i64)),
                    (
                        Reply::bulk("slots"),
                        Reply::Array(vec![
                            Reply::Int(s.slots[0] as i64),
                            Reply::Int(s.slots[1] as i64),
                        ]),
                    ),
                    (
                        Reply::bulk("replicas"),
                        Reply::Array(s.replicas.iter().map(|r| Reply::Int(*r as i64)).collect()),
                    ),
                    (
                        Reply::bulk("leader"),
                        match self.shared.client.cached_leader(s.group_id) {
                            Some(l) => Reply::Int(l as i64),
                            None => Reply::Nil,
                        },
                    ),
                ])
            })
            .collect();
        Reply::Map(vec![
            (Reply::bulk("name"), Reply::bulk(d.name.clone())),
            (Reply::bulk("table_id"), Reply::Int(d.table_id as i64)),
            (Reply::bulk("db_index"), Reply::Int(d.db_index as i64)),
            (Reply::bulk("state"), Reply::bulk(d.state.as_str())),
            (Reply::bulk("replicas"), Reply::Int(d.replicas as i64)),
            (Reply::bulk("shards"), Reply::Array(shards)),
        ])
    }

    async fn table_create(&self, args: &mut Args) -> Reply {
        let name = match args.next_string() {
            Ok(n) => n,
            Err(e) => return arg_err(e),
        };
        let shards = if args.remaining() > 0 {
            match args.next_i64() {
                Ok(n) if (1..=16384).contains(&n) => n as usize,
                _ => return Reply::error("ERR shards must be between 1 and 16384"),
            }
        } else {
            self.shared.config.default_shards
        };
        let replicas = if args.remaining() > 0 {
            match args.next_i64() {
                Ok(n) if [1, 3, 5].contains(&n) => n as usize,
                _ => return Reply::error("ERR replicas must be 1, 3 or 5"),
            }
        } else {
            self.shared.config.default_replicas
        };
        if let Err(e) = args.finish() {
            return arg_err(e);
        }
        if !valid_table_name(&name) {
            return Reply::error(
                "ERR invalid table name: use 1 to 64 characters from a-z A-Z 0-9 _ - .",
            );
        }
        let spec = TableSpec {
            name: name.clone(),
            shards,
            replicas,
            db_index: None,
        };
        let meta = &self.shared.meta;
        if let Err(e) = admin::create_record(meta, &spec).await {
            return cluster_err(e);
        }
        if let Err(e) =
            admin::finish_creation(meta, &self.shared.client, &name, Duration::from_secs(30)).await
        {
            return cluster_err(e);
        }
        // Reply only once this router can route to it.
        let mut rx = self.shared.client.routes_receiver();
        let ready = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if rx
                    .borrow_and_update()
                    .table(&name)
                    .is_some_and(|t| t.desc.state == TableState::Available)
                {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        match ready {
            Ok(()) => Reply::ok(),
            Err(_) => Reply::error("TRYAGAIN table created but not yet visible to this router"),
        }
    }

    fn command(&self, args: &mut Args) -> Reply {
        let info = |c: &super::commands::CommandSpec| {
            Reply::Array(vec![
                Reply::bulk(c.name),
                Reply::Int(c.arity as i64),
                Reply::Set(
                    c.flags
                        .iter()
                        .map(|f| Reply::Status(f.to_string()))
                        .collect(),
                ),
                Reply::Int(c.first_key as i64),
                Reply::Int(c.last_key as i64),
                Reply::Int(c.step as i64),
            ])
        };
        let sub = match args.next_string() {
            Ok(s) => s.to_ascii_lowercase(),
            Err(_) => return Reply::Array(COMMANDS.iter().map(info).collect()),
        };
        match sub.as_str() {
            "count" => Reply::Int(COMMANDS.len() as i64),
            "list" => Reply::Array(COMMANDS.iter().map(|c| Reply::bulk(c.name)).collect()),
            "info" => Reply::Array(
                args.rest()
                    .iter()
                    .map(
                        |n| match lookup(&String::from_utf8_lossy(n).to_ascii_lowercase()) {
                            Some(c) => info(c),
                            None => Reply::NilArray,
                        },
                    )
                    .collect(),
            ),
            // Documentation is optional for clients; an empty answer is valid.
            "docs" => Reply::Map(vec![]),
            "getkeys" => {
                let rest = args.rest();
                let Some(first) = rest.first() else {
                    return wrong_args("command|getkeys");
                };
                match lookup(&String::from_utf8_lossy(first).to_ascii_lowercase()) {
                    Some(c) if c.arity_ok(rest.len()) => Reply::Array(
                        c.key_positions(rest.len())
                            .into_iter()
                            .map(|i| Reply::Bulk(rest[i].clone()))
                            .collect(),
                    ),
                    Some(_) => {
                        Reply::error("ERR Invalid number of arguments specified for command")
                    }
                    None => Reply::error("ERR Invalid command specified"),
                }
            }
            _ => Reply::error(format!("ERR unknown subcommand '{sub}'. Try COMMAND HELP.")),
        }
    }

    fn client(&mut self, args: &mut Args) -> Reply {
        let sub = match args.next_string() {
            Ok(s) => s.to_ascii_lowercase(),
            Err(e) => return arg_err(e),
        };
        match sub.as_str() {
            "id" => Reply::Int(self.id as i64),
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
            "list" => Reply::Verbatim(self.shared.clients.list()),
            "info" => Reply::Verbatim(self.shared.clients.info(self.id)),
            _ => Reply::error(format!("ERR unknown subcommand '{sub}'. Try CLIENT HELP.")),
        }
    }

    fn config(&self, args: &mut Args) -> Reply {
        let sub = match args.next_string() {
            Ok(s) => s.to_ascii_lowercase(),
            Err(e) => return arg_err(e),
        };
        if sub != "get" {
            return Reply::error(format!("ERR unknown subcommand '{sub}'. Try CONFIG HELP."));
        }
        let c = &self.shared.config;
        let params: Vec<(&str, String)> = vec![
            ("appendonly", "no".into()),
            ("databases", "16".into()),
            ("maxclients", c.max_clients.to_string()),
            ("proto-max-bulk-len", c.max_bulk_len.to_string()),
            ("save", String::new()),
            ("timeout", "0".into()),
        ];
        let mut out = Vec::new();
        for pattern in args.rest() {
            let pattern = String::from_utf8_lossy(&pattern).to_ascii_lowercase();
            for (k, v) in &params {
                if glob_match(pattern.as_bytes(), k.as_bytes())
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

    fn info(&self, args: &mut Args) -> Reply {
        let wanted: Vec<String> = args
            .rest()
            .iter()
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
            .collect();
        let show = |s: &str| {
            wanted.is_empty()
                || wanted
                    .iter()
                    .any(|w| w == s || w == "all" || w == "everything" || w == "default")
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
        if show("clients") {
            text.push_str(&format!(
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
                shared.clients.count(),
                shared.config.max_clients
            ));
        }
        if show("stats") {
            text.push_str(&format!(
                "# Stats\r\ntotal_commands_processed:{}\r\n\r\n",
                shared.commands_processed.load(Ordering::Relaxed)
            ));
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
            for t in tables {
                text.push_str(&format!(
                    "table_{}:db={},state={},shards={},replicas={}\r\n",
                    t.desc.name,
                    t.desc.db_index,
                    t.desc.state.as_str(),
                    t.desc.shards.len(),
                    t.desc.replicas
                ));
            }
            text.push_str("\r\n");
        }
        Reply::Verbatim(text)
    }

    /// The table this connection works in, if it is routable.
    fn current_table(&self) -> Result<Arc<TableRoute>, ClusterError> {
        let view = self.shared.client.routes();
        match view.table(&self.table) {
            Some(t) => match t.desc.state {
                TableState::Available => Ok(t.clone()),
                TableState::Creating => Err(ClusterError::TryAgain(format!(
                    "table '{}' is being created",
                    self.table
                ))),
                TableState::Deleting => Err(ClusterError::TableNotAvailable {
                    name: self.table.clone(),
                    state: "being dropped",
                }),
            },
            None if self.table == "default" => Err(ClusterError::TryAgain(
                "the cluster is starting: table 'default' is not created yet".into(),
            )),
            None => Err(ClusterError::UnknownTable(self.table.clone())),
        }
    }

    fn read(&self, op: ReadOp) -> ShardRequest {
        ShardRequest::Read {
            op,
            linearizable: !self.readonly,
            now_ms: now_ms(),
        }
    }

    async fn data(&mut self, name: &str, args: &mut Args) -> Reply {
        let table = match self.current_table() {
            Ok(t) => t,
            Err(e) => return cluster_err(e),
        };
        let max_value = self.shared.config.max_value_len;
        match name {
            "get" => {
                let key = args.next_bytes().unwrap_or_default();
                let req = self.read(ReadOp::Get { key: key.clone() });
                self.one(&table, &key, req).await
            }
            "set" => match parse_set(args, max_value) {
                Ok(op) => {
                    let key = op.keys()[0].clone();
                    let req = ShardRequest::Write(WriteCmd {
                        now_ms: now_ms(),
                        op,
                    });
                    self.one(&table, &key, req).await
                }
                Err(r) => r,
            },
            "del" | "unlink" => {
                let keys = args.rest();
                self.fan_out_sum(&table, keys, |keys| {
                    ShardRequest::Write(WriteCmd {
                        now_ms: now_ms(),
                        op: WriteOp::Del { keys },
                    })
                })
                .await
            }
            "exists" => {
                let keys = args.rest();
                let readonly = self.readonly;
                self.fan_out_sum(&table, keys, |keys| ShardRequest::Read {
                    op: ReadOp::Exists { keys },
                    linearizable: !readonly,
                    now_ms: now_ms(),
                })
                .await
            }
            _ => Reply::error(format!("ERR unknown command '{name}'")),
        }
    }

    async fn one(&self, table: &TableRoute, key: &[u8], req: ShardRequest) -> Reply {
        let shard = table.desc.shard_for_slot(slot(key));
        match self.shared.client.execute(table, shard, req).await {
            Ok(r) => op_reply(r),
            Err(e) => cluster_err(e),
        }
    }

    /// Split keys by shard, run one request per shard in parallel, and add up
    /// the integer replies (DEL, EXISTS).
    async fn fan_out_sum(
        &self,
        table: &Arc<TableRoute>,
        keys: Vec<Bytes>,
        make: impl Fn(Vec<Bytes>) -> ShardRequest,
    ) -> Reply {
        let mut by_shard: BTreeMap<usize, Vec<Bytes>> = BTreeMap::new();
        for k in keys {
            by_shard
                .entry(table.desc.shard_for_slot(slot(&k)))
                .or_default()
                .push(k);
        }
        let calls = by_shard.into_iter().map(|(shard, keys)| {
            let req = make(keys);
            let client = self.shared.client.clone();
            let table = table.clone();
            async move { client.execute(&table, shard, req).await }
        });
        let mut total = 0;
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(OpReply::Int(n)) => total += n,
                Ok(other) => return op_reply(other),
                Err(e) => return cluster_err(e),
            }
        }
        Reply::Int(total)
    }
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
fn parse_set(args: &mut Args, max_value: usize) -> Result<WriteOp, Reply> {
    let key = args.next_bytes().map_err(arg_err)?;
    let value = args.next_bytes().map_err(arg_err)?;
    if value.len() > max_value {
        return Err(Reply::error("ERR value is too large"));
    }
    let mut cond = SetCond::Always;
    let mut expiry = Expiry::Clear;
    let mut expiry_set = false;
    let mut get = false;
    let syntax = || Reply::error("ERR syntax error");
    while let Some(opt) = args.peek_upper() {
        let _ = args.next_bytes();
        match opt.as_str() {
            "NX" if cond == SetCond::Always => cond = SetCond::IfAbsent,
            "XX" if cond == SetCond::Always => cond = SetCond::IfPresent,
            "GET" => get = true,
            "KEEPTTL" if !expiry_set => {
                expiry = Expiry::Keep;
                expiry_set = true;
            }
            "EX" | "PX" | "EXAT" | "PXAT" if !expiry_set => {
                let n = args
                    .next_i64()
                    .map_err(|_| Reply::error("ERR value is not an integer or out of range"))?;
                if n <= 0 {
                    return Err(Reply::error(format!(
                        "ERR invalid expire time in '{}' command",
                        "set"
                    )));
                }
                let now = now_ms() as i64;
                let at = match opt.as_str() {
                    "EX" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
                    "PX" => n.checked_add(now),
                    "EXAT" => n.checked_mul(1000),
                    _ => Some(n),
                };
                let Some(at) = at else {
                    return Err(Reply::error("ERR invalid expire time in 'set' command"));
                };
                expiry = Expiry::At(at as u64);
                expiry_set = true;
            }
            _ => return Err(syntax()),
        }
    }
    Ok(WriteOp::Set {
        key,
        value,
        expiry,
        cond,
        get,
    })
}

fn op_reply(r: OpReply) -> Reply {
    match r {
        OpReply::Ok => Reply::ok(),
        OpReply::Nil => Reply::Nil,
        OpReply::Int(n) => Reply::Int(n),
        OpReply::Bulk(b) => Reply::Bulk(b),
        OpReply::Array(items) => Reply::Array(items.into_iter().map(op_reply).collect()),
        OpReply::Error(e) => Reply::Error(e),
    }
}

/// Table names: 1 to 64 characters of `[A-Za-z0-9_.-]`.
pub fn valid_table_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Redis-style glob match (`*`, `?`, `[abc]`, `\` escapes).
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| glob_match(&pattern[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && glob_match(&pattern[1..], &s[1..]),
        Some(b'[') => {
            let Some(end) = pattern.iter().position(|&c| c == b']') else {
                return !s.is_empty() && s[0] == b'[' && glob_match(&pattern[1..], &s[1..]);
            };
            let class = &pattern[1..end];
            let (negate, class) = match class.first() {
                Some(b'^') => (true, &class[1..]),
                _ => (false, class),
            };
            let Some(&c) = s.first() else { return false };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    if class[i] <= c && c <= class[i + 2] {
                        hit = true;
                    }
                    i += 3;
                } else {
                    if class[i] == c {
                        hit = true;
                    }
                    i += 1;
                }
            }
            hit != negate && glob_match(&pattern[end + 1..], &s[1..])
        }
        Some(b'\\') if pattern.len() > 1 => {
            !s.is_empty() && s[0] == pattern[1] && glob_match(&pattern[2..], &s[1..])
        }
        Some(&c) => !s.is_empty() && s[0] == c && glob_match(&pattern[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"app*", b"appendonly"));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-c]llo", b"hbllo"));
        assert!(!glob_match(b"save", b"saves"));
    }

    #[test]
    fn table_names() {
        assert!(valid_table_name("orders_2024.v1-a"));
        assert!(!valid_table_name(""));
        assert!(!valid_table_name("has space"));
        assert!(!valid_table_name(&"x".repeat(65)));
    }

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
}
