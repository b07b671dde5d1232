//! The node's script runner ([`NodeScripts`], a `shard::script::ScriptRunner`)
//! and the router's library parser ([`Parser`]).
//!
//! A command a script calls is looked up in the router's command table and
//! compiled against the call's table, exactly as a router compiles it, then
//! run on the shard's view (`shard::script::ScriptRun`). Only data commands
//! run inside a script (and PING, ECHO, TIME); a command that waits on the
//! cluster, blocks, or changes the connection is refused with Redis's text.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::lua::{errors, Host, RunCtx, Vm, VmLimits};
use crate::cluster::plan::{merge, Atomicity};
use crate::cluster::routes::TableRoute;
use crate::meta::descriptor::TableDescriptor;
use crate::resp::acl::Denied;
use crate::resp::args::Args;
use crate::resp::commands::lookup;
use crate::resp::compile::{op_reply, Ctx};
use crate::resp::reply::Reply;
use crate::resp::scripts::{FunctionInfo, LibraryInfo, LibraryParser};
use crate::resp::spec::{flag, Handler};
use crate::resp::users::{User, UserRecord};
use crate::shard::command::OpReply;
use crate::shard::command::ScriptCall;
use crate::shard::script::{ScriptExec, ScriptRunner};

/// Lua heap one VM may use.
pub const VM_MEMORY: usize = 64 * 1024 * 1024;

/// Compiled scripts one VM keeps.
pub const VM_CACHED_SCRIPTS: usize = 500;

fn new_vm() -> Result<Vm, String> {
    Vm::new(VmLimits {
        memory_bytes: VM_MEMORY,
        cached_scripts: VM_CACHED_SCRIPTS,
    })
}

/// Runs scripts on a node: a pool of Lua VMs (one per script running at
/// once) and the tables' descriptors, decoded once.
#[derive(Default)]
pub struct NodeScripts {
    vms: Mutex<Vec<Vm>>,
    tables: Mutex<HashMap<Bytes, Arc<TableRoute>>>,
    users: Mutex<HashMap<Bytes, Arc<User>>>,
}

/// Most descriptors [`NodeScripts`] keeps decoded.
const TABLES_KEPT: usize = 256;

impl NodeScripts {
    pub fn new() -> NodeScripts {
        NodeScripts::default()
    }

    fn table(&self, encoded: &Bytes) -> Result<Arc<TableRoute>, String> {
        if let Some(t) = self
            .tables
            .lock()
            .ok()
            .and_then(|t| t.get(encoded).cloned())
        {
            return Ok(t);
        }
        let desc: TableDescriptor = serde_json::from_slice(encoded)
            .map_err(|e| format!("ERR the script's table descriptor does not decode: {e}"))?;
        let route = Arc::new(TableRoute {
            desc,
            mod_revision: 0,
        });
        if let Ok(mut t) = self.tables.lock() {
            if t.len() >= TABLES_KEPT {
                t.clear();
            }
            t.insert(encoded.clone(), route.clone());
        }
        Ok(route)
    }
}

impl NodeScripts {
    fn user(&self, encoded: &Bytes) -> Result<Option<Arc<User>>, String> {
        if encoded.is_empty() {
            return Ok(None);
        }
        if let Some(u) = self.users.lock().ok().and_then(|u| u.get(encoded).cloned()) {
            return Ok(Some(u));
        }
        let (name, rec): (String, UserRecord) = serde_json::from_slice(encoded)
            .map_err(|e| format!("ERR the script's user does not decode: {e}"))?;
        let user = Arc::new(User::from_record(&name, rec));
        if let Ok(mut u) = self.users.lock() {
            if u.len() >= TABLES_KEPT {
                u.clear();
            }
            u.insert(encoded.clone(), user.clone());
        }
        Ok(Some(user))
    }
}

impl ScriptRunner for NodeScripts {
    fn run(&self, call: &ScriptCall, exec: &mut dyn ScriptExec, kill: &Arc<AtomicBool>) -> OpReply {
        let (table, user) = match (self.table(&call.table), self.user(&call.user)) {
            (Ok(t), Ok(u)) => (t, u),
            (Err(e), _) | (_, Err(e)) => return OpReply::Error(e),
        };
        let vm = self.vms.lock().ok().and_then(|mut v| v.pop());
        let mut vm = match vm.map_or_else(new_vm, Ok) {
            Ok(vm) => vm,
            Err(e) => return OpReply::Error(format!("ERR cannot start a Lua VM: {e}")),
        };
        let mut host = ShardHost {
            exec,
            table,
            shard: call.shard as usize,
            read_only: call.read_only,
            max_value: call.max_value as usize,
            user,
        };
        let ctx = RunCtx {
            resp3: call.resp3,
            kill: kill.clone(),
        };
        let reply = if call.function.is_empty() {
            vm.eval(
                &call.sha, &call.code, &call.keys, &call.args, &ctx, &mut host,
            )
        } else {
            vm.fcall(
                &call.code,
                &call.function,
                &call.keys,
                &call.args,
                &ctx,
                &mut host,
            )
        };
        if let Ok(mut v) = self.vms.lock() {
            v.push(vm);
        }
        to_op(reply)
    }
}

/// A script's reply as the shard sends it back.
pub fn to_op(r: Reply) -> OpReply {
    match r {
        Reply::Status(s) => OpReply::Status(s),
        Reply::Error(e) => OpReply::Error(e),
        Reply::Int(n) => OpReply::Int(n),
        Reply::Bulk(b) => OpReply::Bulk(b),
        Reply::Nil => OpReply::Nil,
        Reply::NilArray => OpReply::NilArray,
        Reply::Array(items) | Reply::Push(items) | Reply::Many(items) => {
            OpReply::Array(items.into_iter().map(to_op).collect())
        }
        Reply::Map(pairs) => OpReply::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (to_op(k), to_op(v)))
                .collect(),
        ),
        Reply::Set(items) => OpReply::Set(items.into_iter().map(to_op).collect()),
        Reply::Pairs(pairs) => OpReply::Pairs(
            pairs
                .into_iter()
                .map(|(k, v)| (to_op(k), to_op(v)))
                .collect(),
        ),
        Reply::Double(d) => OpReply::Double(d),
        Reply::Bool(b) => OpReply::Bool(b),
        Reply::Verbatim(s) => OpReply::Verbatim(s),
    }
}

const ERR_NOPERM_COMMAND: &str =
    "ERR The user executing the script can't run this command or subcommand";
const ERR_NOPERM_KEY: &str = "ERR The user executing the script can't access at least one of the keys mentioned in the command arguments";
const ERR_NON_LOCAL: &str = "ERR Script attempted to access a non local key in a cluster node";

/// What a script's `redis.call` reaches: the shard it runs on.
struct ShardHost<'a> {
    exec: &'a mut dyn ScriptExec,
    table: Arc<TableRoute>,
    shard: usize,
    read_only: bool,
    max_value: usize,
    /// The caller's rules (`None`: every command allowed).
    user: Option<Arc<User>>,
}

impl Host for ShardHost<'_> {
    fn call(&mut self, args: Vec<Bytes>) -> Reply {
        let Some(name) = args.first() else {
            return Reply::error(
                "ERR Please specify at least one argument for this redis lib call",
            );
        };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let Some(spec) = lookup(&name) else {
            return Reply::error(errors::UNKNOWN_COMMAND);
        };
        if !spec.arity_ok(args.len()) {
            return Reply::error(errors::WRONG_ARITY);
        }
        if spec.has(flag::NOSCRIPT) || spec.has(flag::BLOCKING) {
            return Reply::error(errors::NOT_ALLOWED);
        }
        if self.read_only && spec.is_write() {
            return Reply::error(errors::READ_ONLY);
        }
        if let Some(user) = &self.user {
            match user.check(spec, &args, &self.table.desc.name) {
                Ok(()) => {}
                Err(Denied::Key(_)) => return Reply::error(ERR_NOPERM_KEY),
                Err(Denied::Table(t)) => {
                    return Reply::error(format!(
                        "ERR The user executing the script can't use the '{t}' table"
                    ))
                }
                Err(_) => return Reply::error(ERR_NOPERM_COMMAND),
            }
        }
        let mut a = Args::new(args);
        let compile = match spec.handler {
            Handler::Data(compile) => compile,
            _ => return self.local(&name, &mut a),
        };
        let cx = Ctx {
            table: &self.table,
            max_value: self.max_value,
        };
        let plan = match compile(&mut a, &cx) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let local = plan.parts.iter().all(|p| p.shard == self.shard)
            && plan.store.is_none()
            && matches!(
                plan.atomicity,
                Atomicity::None | Atomicity::AllOrNothing | Atomicity::AllIfAbsent
            );
        // A key on another shard, declared or not.
        if !local {
            return Reply::error(ERR_NON_LOCAL);
        }
        let replies = plan.parts.into_iter().map(|p| self.exec.op(p.op)).collect();
        op_reply(merge(&plan.merge, replies))
    }

    fn log(&mut self, level: i32, message: &str) {
        match level {
            0 => tracing::debug!(target: "shoal::script", "{message}"),
            1 | 2 => tracing::info!(target: "shoal::script", "{message}"),
            _ => tracing::warn!(target: "shoal::script", "{message}"),
        }
    }
}

impl ShardHost<'_> {
    /// The few connection commands a script may call.
    fn local(&mut self, name: &str, args: &mut Args) -> Reply {
        let _ = args.next_bytes();
        match name {
            "ping" => match args.next_bytes() {
                Ok(msg) => Reply::Bulk(msg),
                Err(_) => Reply::status("PONG"),
            },
            "echo" => args.next_bytes().map_or(Reply::Nil, Reply::Bulk),
            "time" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Reply::Array(vec![
                    Reply::bulk(now.as_secs().to_string()),
                    Reply::bulk(now.subsec_micros().to_string()),
                ])
            }
            _ => Reply::error(errors::NOT_ALLOWED),
        }
    }
}

/// The router's FUNCTION LOAD parser: one Lua VM behind a lock.
pub struct Parser(Mutex<Option<Vm>>);

impl Parser {
    pub fn new() -> Parser {
        Parser(Mutex::new(None))
    }
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl LibraryParser for Parser {
    fn parse(&self, code: &[u8]) -> Result<LibraryInfo, String> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| "ERR the library parser failed earlier".to_string())?;
        if guard.is_none() {
            *guard = Some(new_vm()?);
        }
        let vm = guard.as_mut().expect("just made");
        let lib = vm.load_library(code)?;
        Ok(LibraryInfo {
            name: lib.name,
            functions: lib
                .functions
                .into_iter()
                .map(|f| FunctionInfo {
                    name: f.name,
                    description: f.description,
                    flags: f.flags,
                })
                .collect(),
        })
    }
}
