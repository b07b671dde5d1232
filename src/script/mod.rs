//! Scripts: Redis's Lua layer (EVAL, FUNCTION, FCALL) and the node's runner.
//!
//! [`lua`] owns the Lua 5.1 VM: Redis's sandbox, the `redis.*` API, the
//! compiled-script cache, the instruction-count hook that stops a killed
//! script and the heap cap. Whatever a script touches goes through the
//! [`lua::Host`] its caller passes in (the shard it runs on); this module
//! never does I/O itself. [`convert`] turns replies into Lua values and
//! back, as Redis 7.0's `script_lua.c` does. [`cjson`] and [`bit`] are the
//! two libraries Redis preloads. [`library`] parses function libraries
//! (`#!lua name=...`, `redis.register_function`).
//!
//! [`node`] is the node's runner (a pool of VMs; the commands a script
//! calls compiled by the command table and run on the shard's view) and
//! the router's FUNCTION LOAD parser. It sits above `resp` (it compiles
//! commands as a router does) and is handed to the lower layers as
//! `shard::script::ScriptRunner` (by `main`, for a node) and
//! `resp::scripts::LibraryParser` (by `router`).

pub mod bit;
pub mod cjson;
pub mod convert;
pub mod library;
pub mod lua;
pub mod node;
