//! The Lua 5.1 VM that runs scripts (EVAL) and function libraries
//! (FUNCTION LOAD, FCALL) as Redis 7.0 does.
//!
//! This module owns [`Vm`]: two Lua states (one for EVAL, one for
//! functions, as Redis keeps them apart), each sandboxed by
//! `prelude.lua` (Redis's globals, read-only library tables, `redis.*`),
//! the cache of compiled scripts and loaded libraries, the
//! instruction-count hook that stops a killed script, and the heap cap.
//! It does no I/O: every command a script runs goes through the [`Host`]
//! the caller passes, and every result is a [`Reply`] the caller writes.
//! Error texts are Redis 7.0.15's, byte for byte.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mlua::{
    chunk::ChunkMode, BString, Function as LuaFunction, HookTriggers, Lua, LuaOptions, MultiValue,
    StdLib, Table, Value, Variadic, VmState,
};

use crate::resp::reply::Reply;
use crate::script::convert::{self, lua_to_reply, reply_to_lua};
use crate::script::library::{self, Function, Library};
use crate::script::{bit, cjson};

/// What a running script calls back into (the shard it runs on).
pub trait Host {
    /// One command of redis.call / redis.pcall: `args[0]` is the command name.
    /// Answers the command's reply; a failing command answers Reply::Error
    /// (the VM raises it for redis.call, returns {err=...} for redis.pcall).
    /// Redis's own refusals have fixed texts, see [`errors`].
    fn call(&mut self, args: Vec<Bytes>) -> Reply;
    /// redis.log(level, msg): level is Redis's LOG_DEBUG..LOG_WARNING (0..3).
    fn log(&mut self, level: i32, message: &str);
}

/// The error texts Redis answers a script's `redis.call` with before the
/// command runs (script.c `scriptCall`); a [`Host`] answers them as
/// `Reply::Error` so scripts see what they see on Redis.
pub mod errors {
    /// The command does not exist.
    pub const UNKNOWN_COMMAND: &str = "ERR Unknown Redis command called from script";
    /// The command's arity does not match.
    pub const WRONG_ARITY: &str = "ERR Wrong number of args calling Redis command from script";
    /// The command may not run in scripts (`noscript`: EVAL, MULTI, SUBSCRIBE, ...).
    pub const NOT_ALLOWED: &str = "ERR This Redis command is not allowed from script";
    /// A write from EVAL_RO, FCALL_RO or a `no-writes` function.
    pub const READ_ONLY: &str = "ERR Write commands are not allowed from read-only scripts.";
    /// A key that was not declared in KEYS lives on another shard.
    pub const CROSS_SLOT: &str =
        "ERR Script attempted to access keys that do not hash to the same slot";
}

/// The `redis_version` shoal reports in INFO; scripts see it as
/// `redis.REDIS_VERSION`.
pub const REDIS_VERSION: &str = "7.0.0";
/// `redis.REDIS_VERSION_NUM`: 0x00MMmmpp of [`REDIS_VERSION`].
pub const REDIS_VERSION_NUM: u32 = 0x07_00_00;

/// How often (in Lua VM instructions) the hook looks at the kill flag, as
/// Redis does.
const HOOK_EVERY: u32 = 100_000;
/// Keys and args up to this many are passed to a run as call arguments;
/// more are passed as tables (Lua 5.1's C stack holds 8,000 values).
const MAX_STACK_ARGS: usize = 1_000;
/// How long a library body may run at FUNCTION LOAD (Redis: 500 ms).
const LOAD_TIMEOUT: Duration = Duration::from_millis(500);
/// Redis's text for a script stopped by SCRIPT KILL or FUNCTION KILL.
pub const KILLED: &str = "ERR Script killed by user with SCRIPT KILL...";

/// What the caller tells a run.
pub struct RunCtx {
    /// The client speaks RESP3 (HELLO 3). Conversions do not depend on it:
    /// as in Redis, a script's values take the shape of the protocol the
    /// script chose (`redis.setresp`), and the client's protocol applies
    /// when the reply is encoded.
    pub resp3: bool,
    /// Set by SCRIPT KILL / FUNCTION KILL (or a node shutting down): the running script stops
    /// at its next instruction-count hook with Redis's error text.
    pub kill: Arc<AtomicBool>,
}

/// Bounds of one [`Vm`].
#[derive(Debug, Clone, Copy)]
pub struct VmLimits {
    /// Lua heap cap of each of the two states, e.g. 64 MiB; hitting it is
    /// a script error, never an abort.
    pub memory_bytes: usize,
    /// Compiled scripts kept (and, separately, loaded libraries); the
    /// oldest is dropped beyond it.
    pub cached_scripts: usize,
}

/// Why the hook stopped a run.
const STOP_NONE: u8 = 0;
const STOP_KILLED: u8 = 1;
const STOP_TIMEOUT: u8 = 2;

/// What the hook watches, shared by both states' hooks.
#[derive(Default)]
struct Watch {
    kill: Mutex<Option<Arc<AtomicBool>>>,
    load_deadline: Mutex<Option<Instant>>,
    stopped: AtomicU8,
}

impl Watch {
    fn check(&self) -> mlua::Result<VmState> {
        if self.stopped.load(Ordering::Relaxed) != STOP_NONE {
            return Err(mlua::Error::runtime("script stopped"));
        }
        let killed = self
            .kill
            .lock()
            .map(|k| k.as_ref().is_some_and(|k| k.load(Ordering::Relaxed)))
            .unwrap_or(false);
        if killed {
            self.stopped.store(STOP_KILLED, Ordering::Relaxed);
            return Err(mlua::Error::runtime(
                "Script killed by user with SCRIPT KILL...",
            ));
        }
        let late = self
            .load_deadline
            .lock()
            .map(|d| d.is_some_and(|d| Instant::now() > d))
            .unwrap_or(false);
        if late {
            self.stopped.store(STOP_TIMEOUT, Ordering::Relaxed);
            return Err(mlua::Error::runtime("FUNCTION LOAD timeout"));
        }
        Ok(VmState::Continue)
    }

    fn set_kill(&self, kill: Option<Arc<AtomicBool>>) {
        if let Ok(mut k) = self.kill.lock() {
            *k = kill;
        }
    }

    fn set_deadline(&self, deadline: Option<Instant>) {
        if let Ok(mut d) = self.load_deadline.lock() {
            *d = deadline;
        }
    }
}

/// The host of a running script, lent to the Lua functions that call it.
///
/// A script's `&mut dyn Host` lives only for one run, while the Lua
/// functions that reach it are made once per state (making them per run,
/// in an mlua scope, cost about half of a small script's time). So the run
/// lends a pointer to its host for its duration: [`LentHost::lend`] stores
/// it, the guard's drop clears it, and [`LentHost::with`] reaches it only
/// while it is set.
struct LentHost<'a> {
    cell: &'a AtomicPtr<()>,
}

impl<'a> LentHost<'a> {
    fn lend(cell: &'a AtomicPtr<()>, host: &'a mut &mut dyn Host) -> LentHost<'a> {
        let p: *mut &mut dyn Host = host;
        cell.store(p.cast(), Ordering::Release);
        LentHost { cell }
    }

    fn with<R>(cell: &AtomicPtr<()>, f: impl FnOnce(&mut dyn Host) -> R) -> Option<R> {
        let p = cell.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: a non-null pointer was stored by `lend` from a
        // `&mut &mut dyn Host` that outlives the guard, and the guard clears
        // it before that borrow ends. Only the thread running the script
        // (inside `Engine::call`, which holds the VM exclusively) calls
        // back here, and a host's `call`/`log` never re-enters Lua, so this
        // is the only live reference to the host.
        let host: &mut &mut dyn Host = unsafe { &mut *p.cast::<&mut dyn Host>() };
        Some(f(&mut **host))
    }
}

impl Drop for LentHost<'_> {
    fn drop(&mut self) {
        self.cell.store(std::ptr::null_mut(), Ordering::Release);
    }
}

/// One sandboxed Lua state.
struct Engine {
    lua: Lua,
    /// `run(f [, keys, args])` → ok, result, resp3.
    run: LuaFunction,
    /// FUNCTION LOAD's runner (functions state only).
    load: Option<LuaFunction>,
    /// The host of the running script (null between runs), read by the
    /// `host` and `log` functions of `slot`.
    host: Arc<AtomicPtr<()>>,
    /// The heap cap, for error texts and collections.
    memory_bytes: usize,
}

impl Engine {
    fn new(functions: bool, limits: &VmLimits, watch: &Arc<Watch>) -> mlua::Result<Engine> {
        let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::DEBUG;
        // SAFETY: `debug` is loaded only for the prelude, which keeps
        // `debug.getinfo` in a local for its error handler and removes the
        // library from every name a script can reach.
        let lua = unsafe { Lua::unsafe_new_with(libs, LuaOptions::new()) };
        let raw = lua.create_table()?;
        let w = watch.clone();
        raw.set(
            "killed",
            lua.create_function(move |_, ()| Ok(w.stopped.load(Ordering::Relaxed) != STOP_NONE))?,
        )?;
        let slot = lua.create_table()?;
        let host: Arc<AtomicPtr<()>> = Arc::default();
        let h = host.clone();
        slot.set(
            "host",
            lua.create_function(move |lua, args: MultiValue| {
                let mut args = args.into_iter();
                let resp3 = matches!(args.next(), Some(Value::Boolean(true)));
                let argv: Option<Vec<Bytes>> = args.map(|v| convert::command_arg(&v)).collect();
                let fail = |msg: &str| -> mlua::Result<(Value, bool)> {
                    Ok((Value::Table(convert::error_table(lua, msg)?), true))
                };
                let argv = match argv {
                    None => return fail(convert::ARG_TYPE_ERROR),
                    Some(a) if a.is_empty() => {
                        return fail(
                            "ERR Please specify at least one argument for this redis lib call",
                        )
                    }
                    Some(a) => a,
                };
                let reply =
                    match LentHost::with(&h, |host| host.call(argv)) {
                        Some(reply) => reply,
                        None => return fail(
                            "ERR redis.call/pcall can only be called inside a script invocation",
                        ),
                    };
                let failed = reply.is_error();
                Ok((reply_to_lua(lua, &reply, resp3)?, failed))
            })?,
        )?;
        let h = host.clone();
        slot.set(
            "log",
            lua.create_function(move |_, (level, msg): (i32, mlua::LuaString)| {
                let msg = msg.to_string_lossy();
                // Outside a run (a library body at FUNCTION LOAD): tracing.
                if LentHost::with(&h, |host| host.log(level, &msg)).is_none() {
                    match level {
                        0 | 1 => tracing::debug!(target: "script", "{msg}"),
                        2 => tracing::info!(target: "script", "{msg}"),
                        _ => tracing::warn!(target: "script", "{msg}"),
                    }
                }
                Ok(())
            })?,
        )?;
        raw.set("slot", slot.clone())?;
        raw.set(
            "raiser",
            lua.create_function(|lua, inner: LuaFunction| {
                // SAFETY: the closure pops the one argument (`inner`) and
                // pushes one C closure over it, within the stack space
                // `exec_raw` checked.
                unsafe {
                    lua.exec_raw::<LuaFunction>(inner, |l| {
                        mlua::ffi::lua_pushcclosure(l, raiser, 1);
                    })
                }
            })?,
        )?;
        raw.set(
            "sha1hex",
            lua.create_function(|_, s: mlua::LuaString| Ok(sha1_hex(&s.as_bytes())))?,
        )?;
        raw.set("version", REDIS_VERSION)?;
        raw.set("version_num", REDIS_VERSION_NUM)?;
        raw.set("name_error", library::NAME_ERROR)?;
        raw.set("flags", library::FLAGS.to_vec())?;
        raw.set("cjson", cjson::module(&lua)?)?;
        raw.set("bit", bit::module(&lua)?)?;
        let rand = Arc::new(AtomicU64::new(rand48_seed(0)));
        let (r1, r2) = (rand.clone(), rand);
        raw.set(
            "random",
            lua.create_function(move |_, args: Variadic<Value>| Ok(math_random(&r1, &args)))?,
        )?;
        raw.set(
            "randomseed",
            lua.create_function(move |_, args: Variadic<Value>| {
                Ok(match check_int(&args, 0, "randomseed") {
                    Ok(seed) => {
                        r2.store(rand48_seed(seed), Ordering::Relaxed);
                        (Value::Nil, None)
                    }
                    Err(e) => (Value::Nil, Some(e)),
                })
            })?,
        )?;
        let mode = if functions { "functions" } else { "eval" };
        let exports: Table = lua
            .load(include_str!("prelude.lua"))
            .set_name("=[shoal]")
            .call((raw, mode))?;
        let run: LuaFunction = exports.get("run")?;
        let load: Option<LuaFunction> = exports.get("load")?;
        let w = watch.clone();
        // The global hook: Lua 5.1 copies it into every coroutine a script
        // creates, so a loop inside a coroutine is stopped too.
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_, _| w.check(),
        )?;
        lua.gc_collect()?;
        lua.set_memory_limit(limits.memory_bytes)?;
        Ok(Engine {
            lua,
            run,
            load,
            host,
            memory_bytes: limits.memory_bytes,
        })
    }

    /// Run `f` (with `keys`/`args` tables for a function) and turn what
    /// it answered into a reply; `name` is what errors call the script
    /// (its SHA1 for EVAL, the function's name for FCALL).
    fn call(
        &self,
        watch: &Watch,
        f: &LuaFunction,
        fargs: (&[Bytes], &[Bytes]),
        name: &str,
        ctx: &RunCtx,
        host: &mut dyn Host,
    ) -> Reply {
        let memory_bytes = self.memory_bytes;
        watch.stopped.store(STOP_NONE, Ordering::Relaxed);
        watch.set_kill(Some(ctx.kill.clone()));
        let mut host: &mut dyn Host = host;
        let _lent = LentHost::lend(&self.host, &mut host);
        let result = (|| -> mlua::Result<Reply> {
            let (keys, args) = fargs;
            let (ok, value, resp3): (bool, Value, bool) =
                if keys.len() + args.len() <= MAX_STACK_ARGS {
                    // The common case: one call, the strings on the stack.
                    let all: Variadic<BString> = keys
                        .iter()
                        .chain(args)
                        .map(|b| BString::from(&b[..]))
                        .collect();
                    self.run.call((f, keys.len(), all))?
                } else {
                    let keys = bytes_table(&self.lua, keys)?;
                    let args = bytes_table(&self.lua, args)?;
                    self.run.call((f, -1, keys, args))?
                };
            if ok {
                return Ok(lua_to_reply(&value, resp3));
            }
            let stopped = watch.stopped.load(Ordering::Relaxed);
            Ok(error_reply(&value, name, stopped, memory_bytes))
        })();
        drop(_lent);
        watch.set_kill(None);
        // Lua 5.1 has no emergency collection: after a script that used
        // half the cap (or failed on it), collect now so the next one
        // starts with room.
        if self.lua.used_memory() > memory_bytes / 2 {
            collect(&self.lua);
        }
        match result {
            Ok(reply) => reply,
            Err(e) => self.failure(e, name),
        }
    }

    /// An error that escaped the sandbox's handler: out of memory (Lua
    /// skips handlers then) or a broken state.
    fn failure(&self, e: mlua::Error, name: &str) -> Reply {
        let memory_bytes = self.memory_bytes;
        collect(&self.lua);
        match e {
            mlua::Error::MemoryError(_) => Reply::Error(format!(
                "ERR Error running script {name}, not enough memory: scripts may use {memory_bytes} bytes"
            )),
            e => Reply::Error(format!("ERR Error running script {name}: {e}")),
        }
    }
}

fn bytes_table(lua: &Lua, items: &[Bytes]) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, b) in items.iter().enumerate() {
        t.raw_set(i + 1, lua.create_string(b)?)?;
    }
    Ok(t)
}

/// The C function behind Redis's raising API (`redis.call`, `redis.log`,
/// cjson, bit, ...): calls its upvalue with the arguments, which answers
/// `(value, err)`; a nil `err` returns `value`, a string `err` is raised
/// with the caller's position (as `luaL_error`), any other `err` (the
/// `{err=...}` tables) is raised as it is. Being C, it keeps the caller's
/// frame even when called in a tail position, so errors name the
/// script's line as Redis's do.
unsafe extern "C-unwind" fn raiser(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    use mlua::ffi;
    // SAFETY: Lua calls this as a C closure with one upvalue (see the
    // `raiser` constructor); the stack holds only our arguments. No Rust
    // value with a destructor is alive when `lua_error` jumps out.
    unsafe {
        let n = ffi::lua_gettop(l);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_insert(l, 1);
        ffi::lua_call(l, n, 2);
        if ffi::lua_type(l, 2) == ffi::LUA_TNIL {
            ffi::lua_settop(l, 1);
            return 1;
        }
        if ffi::lua_type(l, 2) == ffi::LUA_TSTRING {
            ffi::luaL_where(l, 1);
            ffi::lua_pushvalue(l, 2);
            ffi::lua_concat(l, 2);
        } else {
            ffi::lua_pushvalue(l, 2);
        }
        ffi::lua_error(l)
    }
}

/// The reply for a script that raised `err` (what Redis's
/// `luaCallFunction` answers): the `err` field, then
/// ` script: <name>, on <source>:<line>.` when the handler found the
/// position.
fn error_reply(err: &Value, name: &str, stopped: u8, memory_bytes: usize) -> Reply {
    let Value::Table(t) = err else {
        let msg = match err {
            // Lua calls no handler for a memory error.
            Value::String(s) if s.as_bytes().as_ref() == b"not enough memory" => {
                return Reply::Error(format!(
                    "ERR Error running script {name}, not enough memory: scripts may use {memory_bytes} bytes"
                ))
            }
            Value::String(s) => s.to_string_lossy(),
            _ => "execution failure".to_string(),
        };
        let msg: String = msg.chars().take(100).collect();
        return Reply::Error(format!("ERR Error running script {name}, {msg}"));
    };
    let text = |k: &str| match t.get::<Value>(k) {
        Ok(Value::String(s)) => Some(s.to_string_lossy()),
        Ok(Value::Number(n)) => Some(lua_number_text(n)),
        Ok(Value::Integer(n)) => Some(n.to_string()),
        _ => None,
    };
    let msg = match stopped {
        STOP_KILLED => KILLED.to_string(),
        // Lua raised a table without `err` (Redis 7.0 crashes on this).
        _ => text("err").unwrap_or_else(|| "ERR unknown error".to_string()),
    };
    match (text("source"), text("line")) {
        (Some(source), Some(line)) => {
            Reply::Error(format!("{msg} script: {name}, on {source}:{line}."))
        }
        _ => Reply::Error(msg),
    }
}

/// Lua 5.1's `tostring` of a number (`%.14g`).
fn lua_number_text(n: f64) -> String {
    convert::format_g(n, 14)
}

/// A loaded library: its description and its callbacks.
struct LoadedLib {
    library: Library,
    callbacks: HashMap<String, LuaFunction>,
}

/// A bounded map that drops the oldest entry.
struct Cache<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    cap: usize,
}

impl<V> Cache<V> {
    fn new(cap: usize) -> Self {
        Cache {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    fn insert(&mut self, key: String, v: V) {
        if self.map.insert(key.clone(), v).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// The script VM of one node thread: one Lua state for EVAL, one for
/// functions. `Send`, so it can move between blocking threads; not
/// shared (a script runs alone, as in Redis).
pub struct Vm {
    eval: Engine,
    functions: Engine,
    watch: Arc<Watch>,
    limits: VmLimits,
    scripts: Cache<LuaFunction>,
    libraries: Cache<LoadedLib>,
}

impl Vm {
    /// A fresh VM with Redis's sandbox in both states.
    pub fn new(limits: VmLimits) -> Result<Vm, String> {
        let watch = Arc::new(Watch::default());
        let eval = Engine::new(false, &limits, &watch).map_err(|e| e.to_string())?;
        let functions = Engine::new(true, &limits, &watch).map_err(|e| e.to_string())?;
        Ok(Vm {
            eval,
            functions,
            watch,
            limits,
            scripts: Cache::new(limits.cached_scripts),
            libraries: Cache::new(limits.cached_scripts),
        })
    }

    /// EVAL: run `body` (whose SHA1 is `sha`, lowercase hex) with KEYS/ARGV.
    /// Compiled once per sha and kept (bounded); a compile error is Redis's text.
    pub fn eval(
        &mut self,
        sha: &str,
        body: &[u8],
        keys: &[Bytes],
        args: &[Bytes],
        ctx: &RunCtx,
        host: &mut dyn Host,
    ) -> Reply {
        let f = match self.scripts.map.get(sha) {
            Some(f) => f.clone(),
            None => {
                let compile = || {
                    self.eval
                        .lua
                        .load(body)
                        .set_name("@user_script")
                        .set_mode(ChunkMode::Text)
                        .into_function()
                };
                let compiled = match compile() {
                    Err(mlua::Error::MemoryError(_)) => {
                        collect(&self.eval.lua);
                        compile()
                    }
                    other => other,
                };
                match compiled {
                    Ok(f) => {
                        self.scripts.insert(sha.to_string(), f.clone());
                        f
                    }
                    Err(e) => {
                        return Reply::Error(format!(
                            "ERR Error compiling script (new function): {}",
                            compile_message(&e)
                        ))
                    }
                }
            }
        };
        self.eval
            .call(&self.watch, &f, (keys, args), sha, ctx, host)
    }

    /// FUNCTION LOAD's check: parse `#!lua name=<lib>`, run the library body in Redis's
    /// loading sandbox (only redis.register_function and friends), answer its functions.
    /// An error is the whole reply text, `ERR ` prefix included.
    pub fn load_library(&mut self, code: &[u8]) -> Result<Library, String> {
        let sha = sha1_hex(code);
        if let Some(lib) = self.libraries.map.get(&sha) {
            return Ok(lib.library.clone());
        }
        let lib = self.load(code)?;
        let library = lib.library.clone();
        self.libraries.insert(sha, lib);
        Ok(library)
    }

    fn load(&mut self, code: &[u8]) -> Result<LoadedLib, String> {
        let shebang = library::parse_shebang(code).map_err(|e| format!("ERR {e}"))?;
        let engine = &self.functions;
        let body = engine
            .lua
            .load(&code[shebang.body_start..])
            .set_name("@user_function")
            .set_mode(ChunkMode::Text)
            .into_function()
            .map_err(|e| format!("ERR Error compiling function: {}", compile_message(&e)))?;
        let Some(load) = &engine.load else {
            return Err("ERR functions are not available".into());
        };
        self.watch.stopped.store(STOP_NONE, Ordering::Relaxed);
        self.watch.set_deadline(Some(Instant::now() + LOAD_TIMEOUT));
        let result: mlua::Result<(bool, Value)> = load.call(body);
        self.watch.set_deadline(None);
        let timed_out = self.watch.stopped.swap(STOP_NONE, Ordering::Relaxed) == STOP_TIMEOUT;
        let registered = match result {
            Err(e) => {
                collect(&engine.lua);
                return Err(match e {
                    mlua::Error::MemoryError(_) => format!(
                        "ERR Error registering functions: out of memory (scripts may use {} bytes)",
                        self.limits.memory_bytes
                    ),
                    e => format!("ERR Error registering functions: {e}"),
                });
            }
            Ok((false, _)) if timed_out => {
                return Err("ERR Error registering functions: ERR FUNCTION LOAD timeout".into())
            }
            Ok((false, Value::String(msg))) => {
                return Err(format!(
                    "ERR Error registering functions: {}",
                    msg.to_string_lossy()
                ))
            }
            Ok((false, _)) => return Err("ERR Error registering functions".into()),
            Ok((true, Value::Table(t))) => t,
            Ok((true, _)) => return Err("ERR No functions registered".into()),
        };
        let mut functions = Vec::new();
        let mut callbacks = HashMap::new();
        for entry in registered.sequence_values::<Table>() {
            let entry = entry.map_err(|e| format!("ERR {e}"))?;
            let name: String = entry.get("name").map_err(|e| format!("ERR {e}"))?;
            let callback: LuaFunction = entry.get("callback").map_err(|e| format!("ERR {e}"))?;
            let description: Option<String> = entry.get("description").unwrap_or(None);
            let given: Vec<String> = entry.get("flags").unwrap_or_default();
            let flags = library::FLAGS
                .iter()
                .filter(|f| given.iter().any(|g| g == *f))
                .map(|f| f.to_string())
                .collect();
            functions.push(Function {
                name: name.clone(),
                description,
                flags,
            });
            callbacks.insert(name, callback);
        }
        if functions.is_empty() {
            return Err("ERR No functions registered".into());
        }
        Ok(LoadedLib {
            library: Library {
                name: shebang.name,
                engine: "LUA".into(),
                functions,
            },
            callbacks,
        })
    }

    /// FCALL: call `function` of the library `code` (loaded and cached by the code's SHA1).
    pub fn fcall(
        &mut self,
        code: &[u8],
        function: &str,
        keys: &[Bytes],
        args: &[Bytes],
        ctx: &RunCtx,
        host: &mut dyn Host,
    ) -> Reply {
        let sha = sha1_hex(code);
        if !self.libraries.map.contains_key(&sha) {
            match self.load(code) {
                Ok(lib) => self.libraries.insert(sha.clone(), lib),
                Err(e) => return Reply::Error(e),
            }
        }
        let Some(f) = self
            .libraries
            .map
            .get(&sha)
            .and_then(|lib| lib.callbacks.get(function))
            .cloned()
        else {
            return Reply::Error("ERR Function not found".into());
        };
        self.functions
            .call(&self.watch, &f, (keys, args), function, ctx, host)
    }

    /// Bytes the two Lua heaps hold now.
    pub fn used_memory(&self) -> usize {
        self.eval.lua.used_memory() + self.functions.lua.used_memory()
    }
}

/// The message of a compile error, as Lua wrote it (`user_script:1: ...`).
fn compile_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        e => e.to_string(),
    }
}

/// A full collection. mlua protects the call, which itself allocates: at
/// the cap it would fail, so the cap is lifted for the collection.
fn collect(lua: &Lua) {
    if let Ok(limit) = lua.set_memory_limit(0) {
        let _ = lua.gc_collect();
        let _ = lua.set_memory_limit(limit);
    }
}

/// SHA1 of `data` as 40 lowercase hex digits (script and library ids).
pub fn sha1_hex(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}

/// Redis's `redisSrand48`: the 48-bit state of `lrand48` for a seed.
fn rand48_seed(seed: i32) -> u64 {
    ((seed as u32 as u64) << 16) | 0x330E
}

/// One step of `redisLrand48`: 31 random bits.
fn rand48_next(state: &AtomicU64) -> i32 {
    let x = state.load(Ordering::Relaxed);
    let next = (x.wrapping_mul(0x5_DEEC_E66D).wrapping_add(0xB)) & ((1 << 48) - 1);
    state.store(next, Ordering::Relaxed);
    (next >> 17) as i32
}

/// `luaL_checkint` of argument `i` (0-based) of `name`.
fn check_int(args: &[Value], i: usize, name: &str) -> Result<i32, String> {
    let n = match args.get(i) {
        Some(Value::Number(n)) => *n,
        Some(Value::Integer(n)) => *n as f64,
        Some(Value::String(s)) => {
            match s.to_str().ok().and_then(|s| s.trim().parse::<f64>().ok()) {
                Some(n) => n,
                None => {
                    return Err(format!(
                        "bad argument #{} to '{name}' (number expected, got string)",
                        i + 1
                    ))
                }
            }
        }
        other => {
            let got = other.map_or("no value", |v| v.type_name());
            return Err(format!(
                "bad argument #{} to '{name}' (number expected, got {got})",
                i + 1
            ));
        }
    };
    Ok(n as i64 as i32)
}

/// Redis's `redis_math_random` over `redisLrand48`.
fn math_random(state: &AtomicU64, args: &[Value]) -> (Value, Option<String>) {
    const MAX: f64 = i32::MAX as f64;
    let r = f64::from(rand48_next(state) % i32::MAX) / MAX;
    let out = match args.len() {
        0 => Ok(r),
        1 => check_int(args, 0, "random").and_then(|u| {
            if u < 1 {
                Err("bad argument #1 to 'random' (interval is empty)".into())
            } else {
                Ok((r * f64::from(u)).floor() + 1.0)
            }
        }),
        2 => check_int(args, 0, "random").and_then(|l| {
            let u = check_int(args, 1, "random")?;
            if l > u {
                Err("bad argument #2 to 'random' (interval is empty)".into())
            } else {
                Ok((r * (f64::from(u) - f64::from(l) + 1.0)).floor() + f64::from(l))
            }
        }),
        _ => Err("wrong number of arguments".into()),
    };
    match out {
        Ok(n) => (Value::Number(n), None),
        Err(e) => (Value::Nil, Some(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lrand48_sequence() {
        // glibc's lrand48 after srand48(0).
        let s = AtomicU64::new(rand48_seed(0));
        let got: Vec<i32> = (0..3).map(|_| rand48_next(&s)).collect();
        assert_eq!(got, vec![366850414, 1610402240, 206956554]);
    }

    #[test]
    fn vm_moves_between_threads() {
        fn send<T: Send>() {}
        send::<Vm>();
    }

    #[test]
    fn sha1() {
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }
}
