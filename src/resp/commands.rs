//! The command table: every command the router knows, one row each (name,
//! arity, flags, key positions, ACL categories, documentation, handler; the
//! fields are described in [`super::spec`]), sorted by name. The dispatcher
//! ([`super::dispatch`]), MULTI, pipelines, READONLY and `COMMAND` all read
//! these rows; no other file lists command names.
//!
//! Adding a command: one row here and its handler (a `compile` function for
//! a data command, a session method otherwise), plus a state-machine
//! operation when it writes something new. docs/ARCHITECTURE.md has the
//! recipe.

use super::args::Args;
use super::cmd_blocking as cb;
use super::compile as c;
use super::compile_bitmap as cbit;
use super::compile_coll as cc;
use super::compile_keyspace as k;
use super::compile_list as cl;
use super::compile_zset as cz;
use super::errors::wrong_args;
use super::reply::Reply;
use super::session::Session;
use super::spec::flag::*;
use super::spec::{acl, CommandSpec, Group, Handler, KeySpec, Subcommands};

/// No keys.
const NONE: KeySpec = KeySpec::None;
/// The first argument is the key.
const KEY: KeySpec = KeySpec::Range {
    first: 1,
    last: 1,
    step: 1,
};
/// Every argument is a key.
const KEYS: KeySpec = KeySpec::Range {
    first: 1,
    last: -1,
    step: 1,
};
/// The first two arguments are keys.
const KEY2: KeySpec = KeySpec::Range {
    first: 1,
    last: 2,
    step: 1,
};
/// OBJECT's key: the third argument of its keyed subcommands.
const OBJECT_KEY: KeySpec = KeySpec::Find {
    first: 2,
    last: 2,
    step: 1,
    find: k::object_keys,
};
/// `numkeys key [key ...]`: keys after the count.
const NUMKEYS: KeySpec = KeySpec::Find {
    first: 0,
    last: 0,
    step: 0,
    find: cc::numkeys_at_1,
};
/// EVAL / FCALL: `script numkeys key [key ...] arg [arg ...]`.
const EVAL_KEYS: KeySpec = KeySpec::Find {
    first: 0,
    last: 0,
    step: 0,
    find: super::cmd_script::eval_keys,
};
/// `destination numkeys key [key ...]`.
const STORE_NUMKEYS: KeySpec = KeySpec::Find {
    first: 1,
    last: 1,
    step: 1,
    find: cz::keys_of_store,
};
/// `key [key ...] timeout`: every argument but the last.
const KEYS_TIMEOUT: KeySpec = KeySpec::Range {
    first: 1,
    last: -2,
    step: 1,
};
/// `timeout numkeys key [key ...]`.
const TIMEOUT_NUMKEYS: KeySpec = KeySpec::Find {
    first: 0,
    last: 0,
    step: 0,
    find: cb::keys_after_timeout_numkeys,
};
/// `BITOP op destkey key [key ...]`.
const BITOP_KEYS: KeySpec = KeySpec::Find {
    first: 2,
    last: -1,
    step: 1,
    find: cbit::bitop_keys,
};
/// Key, value, key, value...
const PAIRS: KeySpec = KeySpec::Range {
    first: 1,
    last: -1,
    step: 2,
};

/// A command answered from the connection's state.
macro_rules! local {
    ($method:ident) => {
        Handler::Local(Session::$method)
    };
}

/// A command that waits on the cluster.
macro_rules! awaits {
    ($method:ident) => {
        Handler::Async(|s, a| Box::pin(s.$method(a)))
    };
}

#[allow(clippy::too_many_arguments)]
const fn row(
    name: &'static str,
    arity: i32,
    flags: u32,
    keys: KeySpec,
    acl: u32,
    group: Group,
    handler: Handler,
    summary: &'static str,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys,
        acl,
        group,
        summary,
        handler,
        subs: None,
    }
}

const STRING: u32 = acl::STRING;
const HASH: u32 = acl::HASH;
const SET: u32 = acl::SET;
const ZSET: u32 = acl::SORTEDSET;
const LIST: u32 = acl::LIST;
const BITMAP: u32 = acl::BITMAP;
const KEYSPACE: u32 = acl::KEYSPACE;
const CONN: u32 = acl::CONNECTION;
const PS: u32 = acl::PUBSUB | acl::SLOW;
const TXN: u32 = acl::TRANSACTION;
/// Connection and transaction control: answered in any state.
const CONTROL: u32 = NOSCRIPT | LOADING | STALE | FAST;

use Group as G;
use Handler::{Data, Use};

/// Redis's categories of the subcommands of container rows (from
/// `COMMAND INFO` of redis-server 7.0; `tests/acl.rs` compares `ACL CAT`).
const SLOW: u32 = acl::SLOW;
const ADMIN_SUB: u32 = acl::ADMIN | acl::SLOW | acl::DANGEROUS;
const CONN_SUB: u32 = acl::SLOW | acl::CONNECTION;
const CONN_ADMIN_SUB: u32 = ADMIN_SUB | acl::CONNECTION;
const OBJECT_SUB: u32 = acl::KEYSPACE | acl::READ | acl::SLOW;

const SCRIPT: u32 = acl::SLOW | acl::SCRIPTING;
const SCRIPT_WRITE: u32 = acl::WRITE | acl::SLOW | acl::SCRIPTING;

static SCRIPT_SUBS: Subcommands = Subcommands {
    parent: SLOW,
    list: &[
        ("exists", SCRIPT),
        ("flush", SCRIPT),
        ("help", SCRIPT),
        ("kill", SCRIPT),
        ("load", SCRIPT),
    ],
};

static FUNCTION_SUBS: Subcommands = Subcommands {
    parent: SLOW,
    list: &[
        ("delete", SCRIPT_WRITE),
        ("dump", SCRIPT),
        ("flush", SCRIPT_WRITE),
        ("help", SCRIPT),
        ("kill", SCRIPT),
        ("list", SCRIPT),
        ("load", SCRIPT_WRITE),
        ("restore", SCRIPT_WRITE),
        ("stats", SCRIPT),
    ],
};

static ACL_SUBS: Subcommands = Subcommands {
    parent: SLOW,
    list: &[
        ("cat", SLOW),
        ("deluser", ADMIN_SUB),
        ("genpass", SLOW),
        ("dryrun", ADMIN_SUB),
        ("getuser", ADMIN_SUB),
        ("help", SLOW),
        ("list", ADMIN_SUB),
        ("log", ADMIN_SUB),
        ("setuser", ADMIN_SUB),
        ("users", ADMIN_SUB),
        ("whoami", SLOW),
    ],
};
static CLIENT_SUBS: Subcommands = Subcommands {
    parent: SLOW,
    list: &[
        ("getname", CONN_SUB),
        ("help", CONN_SUB),
        ("id", CONN_SUB),
        ("info", CONN_SUB),
        ("kill", CONN_ADMIN_SUB),
        ("list", CONN_ADMIN_SUB),
        ("setinfo", CONN_SUB),
        ("setname", CONN_SUB),
        ("unblock", CONN_ADMIN_SUB),
    ],
};
static COMMAND_SUBS: Subcommands = Subcommands {
    parent: CONN_SUB,
    list: &[
        ("count", CONN_SUB),
        ("docs", CONN_SUB),
        ("getkeys", CONN_SUB),
        ("help", CONN_SUB),
        ("info", CONN_SUB),
        ("list", CONN_SUB),
    ],
};
static CONFIG_SUBS: Subcommands = Subcommands {
    parent: SLOW,
    list: &[
        ("get", ADMIN_SUB),
        ("help", SLOW),
        ("resetstat", ADMIN_SUB),
        ("set", ADMIN_SUB),
    ],
};
static LATENCY_SUBS: Subcommands = Subcommands {
    parent: SLOW,
    list: &[
        ("doctor", ADMIN_SUB),
        ("help", SLOW),
        ("histogram", ADMIN_SUB),
        ("history", ADMIN_SUB),
        ("latest", ADMIN_SUB),
        ("reset", ADMIN_SUB),
    ],
};
static OBJECT_SUBS: Subcommands = Subcommands {
    parent: SLOW,
    list: &[
        ("encoding", OBJECT_SUB),
        ("freq", OBJECT_SUB),
        ("help", acl::KEYSPACE | acl::SLOW),
        ("idletime", OBJECT_SUB),
        ("refcount", OBJECT_SUB),
    ],
};
static SLOWLOG_SUBS: Subcommands = Subcommands {
    parent: SLOW,
    list: &[
        ("get", ADMIN_SUB),
        ("help", SLOW),
        ("len", ADMIN_SUB),
        ("reset", ADMIN_SUB),
    ],
};

/// Every command, sorted by name. (Kept as a table: rustfmt would give each
/// row ten lines.)
#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    row("acl", -2, NOSCRIPT | LOADING | STALE | NO_MULTI, NONE, 0, G::Server, awaits!(acl),
        "A container for Access List Control commands.").with_subs(&ACL_SUBS),
    row("append", 3, WRITE | DENYOOM | FAST, KEY, STRING, G::String, Data(c::append),
        "Appends a string to the value of a key. Creates the key if it doesn't exist."),
    row("auth", -2, CONTROL | NO_AUTH | NO_MULTI, NONE, CONN, G::Connection, local!(auth),
        "Authenticates the connection."),
    row("bitcount", -2, READONLY, KEY, BITMAP, G::Bitmap, Data(cbit::bitcount),
        "Counts the number of set bits (population counting) in a string."),
    row("bitfield", -2, WRITE | DENYOOM, KEY, BITMAP, G::Bitmap, Data(cbit::bitfield),
        "Performs arbitrary bitfield integer operations on strings."),
    row("bitfield_ro", -2, READONLY | FAST, KEY, BITMAP, G::Bitmap, Data(cbit::bitfield_ro),
        "Performs arbitrary read-only bitfield integer operations on strings."),
    row("bitop", -4, WRITE | DENYOOM, BITOP_KEYS, BITMAP, G::Bitmap, Data(cbit::bitop),
        "Performs bitwise operations on multiple strings, and stores the result."),
    row("bitpos", -3, READONLY, KEY, BITMAP, G::Bitmap, Data(cbit::bitpos),
        "Finds the first set (1) or clear (0) bit in a string."),
    row("blmove", 6, WRITE | DENYOOM | BLOCKING, KEY2, LIST, G::List, Data(cb::blmove),
        "Pops an element from a list, pushes it to another list and returns it. Blocks until an element is available otherwise. Deletes the list if the last element was moved."),
    row("blmpop", -5, WRITE | BLOCKING, TIMEOUT_NUMKEYS, LIST, G::List, Data(cb::blmpop),
        "Pops the first element from one of multiple lists. Blocks until an element is available otherwise. Deletes the list if the last element was popped."),
    row("blpop", -3, WRITE | BLOCKING, KEYS_TIMEOUT, LIST, G::List, Data(cb::blpop),
        "Removes and returns the first element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped."),
    row("brpop", -3, WRITE | BLOCKING, KEYS_TIMEOUT, LIST, G::List, Data(cb::brpop),
        "Removes and returns the last element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped."),
    row("brpoplpush", 4, WRITE | DENYOOM | BLOCKING, KEY2, LIST, G::List, Data(cb::brpoplpush),
        "Pops an element from a list, pushes it to another list and returns it. Block until an element is available otherwise. Deletes the list if the last element was popped."),
    row("bzmpop", -5, WRITE | BLOCKING, TIMEOUT_NUMKEYS, ZSET, G::SortedSet, Data(cb::bzmpop),
        "Removes and returns a member by score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped."),
    row("bzpopmax", -3, WRITE | FAST | BLOCKING, KEYS_TIMEOUT, ZSET, G::SortedSet, Data(cb::bzpopmax),
        "Removes and returns the member with the highest score from one or more sorted sets. Blocks until a member available otherwise.  Deletes the sorted set if the last element was popped."),
    row("bzpopmin", -3, WRITE | FAST | BLOCKING, KEYS_TIMEOUT, ZSET, G::SortedSet, Data(cb::bzpopmin),
        "Removes and returns the member with the lowest score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped."),
    row("client", -2, ADMIN | NOSCRIPT | LOADING | STALE | NO_MULTI, NONE, CONN, G::Connection,
        local!(client), "A container for client connection commands.")
        .with_subs(&CLIENT_SUBS),
    row("cluster.drain", 2, ADMIN | LOADING | STALE | NO_MULTI, NONE, 0, G::Shoal,
        awaits!(cluster_drain),
        "Moves every replica off a node, which is then removed (shoal)."),
    row("command", -1, LOADING | STALE | NO_MULTI, NONE, CONN, G::Server, Handler::Local(command),
        "Returns detailed information about all commands.")
        .with_subs(&COMMAND_SUBS),
    row("config", -2, ADMIN | NOSCRIPT | LOADING | STALE | NO_MULTI, NONE, 0, G::Server,
        awaits!(config), "A container for server configuration commands.")
        .with_subs(&CONFIG_SUBS),
    row("copy", -3, WRITE | DENYOOM, KEY2, KEYSPACE, G::Generic, Data(k::copy),
        "Copies the value of a key to a new key."),
    row("dbsize", 1, READONLY | FAST | NO_MULTI | FAN_OUT, NONE, KEYSPACE, G::Server,
        awaits!(dbsize), "Returns the number of keys in the table."),
    row("decr", 2, WRITE | DENYOOM | FAST, KEY, STRING, G::String, Data(c::decr),
        "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist."),
    row("decrby", 3, WRITE | DENYOOM | FAST, KEY, STRING, G::String, Data(c::decrby),
        "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist."),
    row("del", -2, WRITE, KEYS, KEYSPACE, G::Generic, Data(c::del),
        "Deletes one or more keys."),
    row("discard", 1, CONTROL | MULTI_CONTROL, NONE, TXN, G::Transactions, local!(discard),
        "Discards a transaction."),
    row("echo", 2, FAST, NONE, CONN, G::Connection, local!(echo),
        "Returns the given string."),
    row("eval", -3, NOSCRIPT | STALE | NO_MULTI, EVAL_KEYS, SCRIPT, G::Scripting, awaits!(eval),
        "Executes a server-side Lua script."),
    row("eval_ro", -3, READONLY | NOSCRIPT | STALE | NO_MULTI, EVAL_KEYS, SCRIPT, G::Scripting,
        awaits!(eval_ro), "Executes a read-only server-side Lua script."),
    row("evalsha", -3, NOSCRIPT | STALE | NO_MULTI, EVAL_KEYS, SCRIPT, G::Scripting,
        awaits!(evalsha), "Executes a server-side Lua script by SHA1 digest."),
    row("evalsha_ro", -3, READONLY | NOSCRIPT | STALE | NO_MULTI, EVAL_KEYS, SCRIPT, G::Scripting,
        awaits!(evalsha_ro), "Executes a read-only server-side Lua script by SHA1 digest."),
    row("exec", 1, NOSCRIPT | LOADING | STALE | SKIP_SLOWLOG | MULTI_CONTROL, NONE, TXN,
        G::Transactions, Handler::Async(|s, _| Box::pin(s.exec())),
        "Executes all commands in a transaction."),
    row("exists", -2, READONLY | FAST, KEYS, KEYSPACE, G::Generic, Data(c::exists),
        "Determines whether one or more keys exist."),
    row("expire", -3, WRITE | FAST, KEY, KEYSPACE, G::Generic, Data(c::expire),
        "Sets the expiration time of a key in seconds."),
    row("expireat", -3, WRITE | FAST, KEY, KEYSPACE, G::Generic, Data(c::expireat),
        "Sets the expiration time of a key to a Unix timestamp."),
    row("expiretime", 2, READONLY | FAST, KEY, KEYSPACE, G::Generic, Data(k::expiretime),
        "Returns the expiration time of a key as a Unix timestamp."),
    row("fcall", -3, NOSCRIPT | STALE | NO_MULTI, EVAL_KEYS, SCRIPT, G::Scripting, awaits!(fcall),
        "Invokes a function."),
    row("fcall_ro", -3, READONLY | NOSCRIPT | STALE | NO_MULTI, EVAL_KEYS, SCRIPT, G::Scripting,
        awaits!(fcall_ro), "Invokes a read-only function."),
    row("flushall", -1, WRITE | NO_MULTI | FAN_OUT, NONE, KEYSPACE | acl::DANGEROUS, G::Server,
        awaits!(flushall), "Removes all keys from all tables."),
    row("flushdb", -1, WRITE | NO_MULTI | FAN_OUT, NONE, KEYSPACE | acl::DANGEROUS, G::Server,
        awaits!(flushdb), "Removes all keys from the current table."),
    row("function", -2, NOSCRIPT | NO_MULTI, NONE, 0, G::Scripting, awaits!(function),
        "A container for function commands.").with_subs(&FUNCTION_SUBS),
    row("get", 2, READONLY | FAST, KEY, STRING, G::String, Data(c::get),
        "Returns the string value of a key."),
    row("getbit", 3, READONLY | FAST, KEY, BITMAP, G::Bitmap, Data(cbit::getbit),
        "Returns a bit value by offset."),
    row("getdel", 2, WRITE | FAST, KEY, STRING, G::String, Data(c::getdel),
        "Returns the string value of a key after deleting the key."),
    row("getex", -2, WRITE | FAST, KEY, STRING, G::String, Data(c::getex),
        "Returns the string value of a key after setting its expiration time."),
    row("getrange", 4, READONLY, KEY, STRING, G::String, Data(c::getrange),
        "Returns a substring of the string stored at a key."),
    row("getset", 3, WRITE | DENYOOM | FAST, KEY, STRING, G::String, Data(c::getset),
        "Returns the previous string value of a key after setting it to a new value."),
    row("hdel", -3, WRITE | FAST, KEY, HASH, G::Hash, Data(cc::hdel),
        "Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain."),
    row("hello", -1, CONTROL | NO_AUTH | NO_MULTI, NONE, CONN, G::Connection, local!(hello),
        "Handshakes with the server."),
    row("hexists", 3, READONLY | FAST, KEY, HASH, G::Hash, Data(cc::hexists),
        "Determines whether a field exists in a hash."),
    row("hget", 3, READONLY | FAST, KEY, HASH, G::Hash, Data(cc::hget),
        "Returns the value of a field in a hash."),
    row("hgetall", 2, READONLY, KEY, HASH, G::Hash, Data(cc::hgetall),
        "Returns all fields and values in a hash."),
    row("hincrby", 4, WRITE | DENYOOM | FAST, KEY, HASH, G::Hash, Data(cc::hincrby),
        "Increments the integer value of a field in a hash by a number. Uses 0 as initial value if the field doesn't exist."),
    row("hincrbyfloat", 4, WRITE | DENYOOM | FAST, KEY, HASH, G::Hash, Data(cc::hincrbyfloat),
        "Increments the floating point value of a field by a number. Uses 0 as initial value if the field doesn't exist."),
    row("hkeys", 2, READONLY, KEY, HASH, G::Hash, Data(cc::hkeys),
        "Returns all fields in a hash."),
    row("hlen", 2, READONLY | FAST, KEY, HASH, G::Hash, Data(cc::hlen),
        "Returns the number of fields in a hash."),
    row("hmget", -3, READONLY | FAST, KEY, HASH, G::Hash, Data(cc::hmget),
        "Returns the values of all fields in a hash."),
    row("hmset", -4, WRITE | DENYOOM | FAST, KEY, HASH, G::Hash, Data(cc::hmset),
        "Sets the values of multiple fields."),
    row("hrandfield", -2, READONLY, KEY, HASH, G::Hash, Data(cc::hrandfield),
        "Returns one or more random fields from a hash."),
    row("hscan", -3, READONLY, KEY, HASH, G::Hash, awaits!(hscan),
        "Iterates over fields and values of a hash."),
    row("hset", -4, WRITE | DENYOOM | FAST, KEY, HASH, G::Hash, Data(cc::hset),
        "Creates or modifies the value of a field in a hash."),
    row("hsetnx", 4, WRITE | DENYOOM | FAST, KEY, HASH, G::Hash, Data(cc::hsetnx),
        "Sets the value of a field in a hash only when the field doesn't exist."),
    row("hstrlen", 3, READONLY | FAST, KEY, HASH, G::Hash, Data(cc::hstrlen),
        "Returns the length of the value of a field."),
    row("hvals", 2, READONLY, KEY, HASH, G::Hash, Data(cc::hvals),
        "Returns all values in a hash."),
    row("incr", 2, WRITE | DENYOOM | FAST, KEY, STRING, G::String, Data(c::incr),
        "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist."),
    row("incrby", 3, WRITE | DENYOOM | FAST, KEY, STRING, G::String, Data(c::incrby),
        "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist."),
    row("incrbyfloat", 3, WRITE | DENYOOM | FAST, KEY, STRING, G::String, Data(c::incrbyfloat),
        "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist."),
    row("info", -1, LOADING | STALE | NO_MULTI, NONE, acl::DANGEROUS, G::Server, awaits!(info),
        "Returns information and statistics about the server and the cluster."),
    row("keys", 2, READONLY | NO_MULTI | FAN_OUT, NONE, KEYSPACE | acl::DANGEROUS, G::Generic,
        awaits!(keys), "Returns all key names that match a pattern."),
    row("latency", -2, ADMIN | LOADING | STALE | NO_MULTI, NONE, 0, G::Server, awaits!(latency),
        "A container for latency diagnostics commands.")
        .with_subs(&LATENCY_SUBS),
    row("lcs", -3, READONLY, KEY2, STRING, G::String, Data(k::lcs),
        "Finds the longest common substring."),
    row("lindex", 3, READONLY, KEY, LIST, G::List, Data(cl::lindex),
        "Returns an element from a list by its index."),
    row("linsert", 5, WRITE | DENYOOM, KEY, LIST, G::List, Data(cl::linsert),
        "Inserts an element before or after another element in a list."),
    row("llen", 2, READONLY | FAST, KEY, LIST, G::List, Data(cl::llen),
        "Returns the length of a list."),
    row("lmove", 5, WRITE | DENYOOM, KEY2, LIST, G::List, Data(cl::lmove),
        "Returns an element after popping it from one list and pushing it to another. Deletes the list if the last element was moved."),
    row("lmpop", -4, WRITE, NUMKEYS, LIST, G::List, Data(cl::lmpop),
        "Returns multiple elements from a list after removing them. Deletes the list if the last element was popped."),
    row("lpop", -2, WRITE | FAST, KEY, LIST, G::List, Data(cl::lpop),
        "Returns the first elements in a list after removing it. Deletes the list if the last element was popped."),
    row("lpos", -3, READONLY, KEY, LIST, G::List, Data(cl::lpos),
        "Returns the index of matching elements in a list."),
    row("lpush", -3, WRITE | DENYOOM | FAST, KEY, LIST, G::List, Data(cl::lpush),
        "Prepends one or more elements to a list. Creates the key if it doesn't exist."),
    row("lpushx", -3, WRITE | DENYOOM | FAST, KEY, LIST, G::List, Data(cl::lpushx),
        "Prepends one or more elements to a list only when the list exists."),
    row("lrange", 4, READONLY, KEY, LIST, G::List, Data(cl::lrange),
        "Returns a range of elements from a list."),
    row("lrem", 4, WRITE, KEY, LIST, G::List, Data(cl::lrem),
        "Removes elements from a list. Deletes the list if the last element was removed."),
    row("lset", 4, WRITE | DENYOOM, KEY, LIST, G::List, Data(cl::lset),
        "Sets the value of an element in a list by its index."),
    row("ltrim", 4, WRITE, KEY, LIST, G::List, Data(cl::ltrim),
        "Removes elements from both ends a list. Deletes the list if all elements were trimmed."),
    row("mget", -2, READONLY | FAST, KEYS, STRING, G::String, Data(c::mget),
        "Atomically returns the string values of one or more keys."),
    row("monitor", 1, ADMIN | NOSCRIPT | LOADING | STALE | NO_MULTI, NONE, 0, G::Server,
        local!(monitor), "Listens for all requests received by the router in real time."),
    row("mset", -3, WRITE | DENYOOM, PAIRS, STRING, G::String, Data(c::mset),
        "Atomically creates or modifies the string values of one or more keys."),
    row("msetnx", -3, WRITE | DENYOOM, PAIRS, STRING, G::String, Data(c::msetnx),
        "Atomically modifies the string values of one or more keys only when all keys don't exist."),
    row("multi", 1, CONTROL | MULTI_CONTROL, NONE, TXN, G::Transactions, local!(multi),
        "Starts a transaction."),
    row("object", -2, READONLY, OBJECT_KEY, KEYSPACE, G::Generic, Data(k::object),
        "A container for object introspection commands.")
        .with_subs(&OBJECT_SUBS),
    row("persist", 2, WRITE | FAST, KEY, KEYSPACE, G::Generic, Data(c::persist),
        "Removes the expiration time of a key."),
    row("pexpire", -3, WRITE | FAST, KEY, KEYSPACE, G::Generic, Data(c::pexpire),
        "Sets the expiration time of a key in milliseconds."),
    row("pexpireat", -3, WRITE | FAST, KEY, KEYSPACE, G::Generic, Data(c::pexpireat),
        "Sets the expiration time of a key to a Unix milliseconds timestamp."),
    row("pexpiretime", 2, READONLY | FAST, KEY, KEYSPACE, G::Generic, Data(k::pexpiretime),
        "Returns the expiration time of a key as a Unix milliseconds timestamp."),
    row("ping", -1, FAST, NONE, CONN, G::Connection, local!(ping),
        "Returns the server's liveliness response."),
    row("psetex", 4, WRITE | DENYOOM, KEY, STRING, G::String, Data(k::psetex),
        "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist."),
    row("psubscribe", -2, PUBSUB | NO_MULTI | NOSCRIPT | LOADING | STALE, NONE, PS, G::Pubsub,
        awaits!(psubscribe), "Listens for messages published to channels that match one or more patterns."),
    row("pttl", 2, READONLY | FAST, KEY, KEYSPACE, G::Generic, Data(c::pttl),
        "Returns the expiration time in milliseconds of a key."),
    row("publish", 3, PUBSUB | LOADING | STALE | FAST, NONE, acl::PUBSUB | acl::FAST, G::Pubsub,
        awaits!(publish), "Posts a message to a channel."),
    row("pubsub", -2, NO_MULTI | LOADING | STALE, NONE, 0, G::Pubsub,
        awaits!(pubsub), "A container for Pub/Sub commands."),
    row("punsubscribe", -1, PUBSUB | NO_MULTI | NOSCRIPT | LOADING | STALE, NONE, PS, G::Pubsub,
        awaits!(punsubscribe), "Stops listening to messages published to channels that match one or more patterns."),
    row("quit", -1, CONTROL | NO_AUTH | MULTI_CONTROL, NONE, CONN, G::Connection, local!(quit),
        "Closes the connection."),
    row("randomkey", 1, READONLY | NO_MULTI | FAN_OUT, NONE, KEYSPACE, G::Generic,
        awaits!(randomkey), "Returns a random key name from the table."),
    row("readonly", 1, FAST | LOADING | STALE | NO_MULTI, NONE, CONN, G::Connection,
        local!(readonly), "Lets read-only commands of this connection read from any replica."),
    row("readwrite", 1, FAST | LOADING | STALE | NO_MULTI, NONE, CONN, G::Connection,
        local!(readwrite), "Makes reads of this connection linearizable again."),
    row("rename", 3, WRITE, KEY2, KEYSPACE, G::Generic, Data(k::rename),
        "Renames a key and overwrites the destination."),
    row("renamenx", 3, WRITE | FAST, KEY2, KEYSPACE, G::Generic, Data(k::renamenx),
        "Renames a key only when the target key name doesn't exist."),
    row("reset", 1, CONTROL | NO_AUTH | MULTI_CONTROL, NONE, CONN, G::Connection, local!(reset),
        "Resets the connection."),
    row("rpop", -2, WRITE | FAST, KEY, LIST, G::List, Data(cl::rpop),
        "Returns and removes the last elements of a list. Deletes the list if the last element was popped."),
    row("rpoplpush", 3, WRITE | DENYOOM, KEY2, LIST, G::List, Data(cl::rpoplpush),
        "Returns the last element of a list after removing and pushing it to another list. Deletes the list if the last element was popped."),
    row("rpush", -3, WRITE | DENYOOM | FAST, KEY, LIST, G::List, Data(cl::rpush),
        "Appends one or more elements to a list. Creates the key if it doesn't exist."),
    row("rpushx", -3, WRITE | DENYOOM | FAST, KEY, LIST, G::List, Data(cl::rpushx),
        "Appends an element to a list only when the list exists."),
    row("sadd", -3, WRITE | DENYOOM | FAST, KEY, SET, G::Set, Data(cc::sadd),
        "Adds one or more members to a set. Creates the key if it doesn't exist."),
    row("scan", -2, READONLY | NO_MULTI | FAN_OUT, NONE, KEYSPACE, G::Generic, awaits!(scan),
        "Iterates over the key names in the table."),
    row("scard", 2, READONLY | FAST, KEY, SET, G::Set, Data(cc::scard),
        "Returns the number of members in a set."),
    row("script", -2, NOSCRIPT | NO_MULTI, NONE, 0, G::Scripting, awaits!(script),
        "A container for Lua scripts management commands.").with_subs(&SCRIPT_SUBS),
    row("sdiff", -2, READONLY, KEYS, SET, G::Set, Data(cc::sdiff),
        "Returns the difference of multiple sets."),
    row("sdiffstore", -3, WRITE | DENYOOM, KEYS, SET, G::Set, Data(cc::sdiffstore),
        "Stores the difference of multiple sets in a key."),
    row("select", 2, LOADING | STALE | FAST, NONE, CONN, G::Connection, Use(Session::select),
        "Changes the table of the connection to the one with this database index."),
    row("set", -3, WRITE | DENYOOM, KEY, STRING, G::String, Data(c::set),
        "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist."),
    row("setbit", 4, WRITE | DENYOOM, KEY, BITMAP, G::Bitmap, Data(cbit::setbit),
        "Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist."),
    row("setex", 4, WRITE | DENYOOM, KEY, STRING, G::String, Data(k::setex),
        "Sets the string value and expiration time of a key. Creates the key if it doesn't exist."),
    row("setnx", 3, WRITE | DENYOOM | FAST, KEY, STRING, G::String, Data(c::setnx),
        "Set the string value of a key only when the key doesn't exist."),
    row("setrange", 4, WRITE | DENYOOM, KEY, STRING, G::String, Data(c::setrange),
        "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist."),
    row("sinter", -2, READONLY, KEYS, SET, G::Set, Data(cc::sinter),
        "Returns the intersect of multiple sets."),
    row("sintercard", -3, READONLY, NUMKEYS, SET, G::Set, Data(cc::sintercard),
        "Returns the number of members of the intersect of multiple sets."),
    row("sinterstore", -3, WRITE | DENYOOM, KEYS, SET, G::Set, Data(cc::sinterstore),
        "Stores the intersect of multiple sets in a key."),
    row("sismember", 3, READONLY | FAST, KEY, SET, G::Set, Data(cc::sismember),
        "Determines whether a member belongs to a set."),
    row("slowlog", -2, ADMIN | LOADING | STALE, NONE, 0, G::Server, local!(slowlog),
        "A container for slow log commands.")
        .with_subs(&SLOWLOG_SUBS),
    row("smembers", 2, READONLY, KEY, SET, G::Set, Data(cc::smembers),
        "Returns all members of a set."),
    row("smismember", -3, READONLY | FAST, KEY, SET, G::Set, Data(cc::smismember),
        "Determines whether multiple members belong to a set."),
    row("smove", 4, WRITE | FAST, KEY2, SET, G::Set, Data(cc::smove),
        "Moves a member from one set to another."),
    row("spop", -2, WRITE | FAST, KEY, SET, G::Set, Data(cc::spop),
        "Returns one or more random members from a set after removing them. Deletes the set if the last member was popped."),
    row("spublish", 3, PUBSUB | LOADING | STALE | FAST, NONE, acl::PUBSUB | acl::FAST, G::Pubsub,
        awaits!(spublish), "Post a message to a shard channel"),
    row("srandmember", -2, READONLY, KEY, SET, G::Set, Data(cc::srandmember),
        "Get one or multiple random members from a set"),
    row("srem", -3, WRITE | FAST, KEY, SET, G::Set, Data(cc::srem),
        "Removes one or more members from a set. Deletes the set if the last member was removed."),
    row("sscan", -3, READONLY, KEY, SET, G::Set, awaits!(sscan),
        "Iterates over members of a set."),
    row("ssubscribe", -2, PUBSUB | NO_MULTI | NOSCRIPT | LOADING | STALE, NONE, PS, G::Pubsub,
        awaits!(ssubscribe), "Listens for messages published to shard channels."),
    row("strlen", 2, READONLY | FAST, KEY, STRING, G::String, Data(c::strlen),
        "Returns the length of a string value."),
    row("subscribe", -2, PUBSUB | NO_MULTI | NOSCRIPT | LOADING | STALE, NONE, PS, G::Pubsub,
        awaits!(subscribe), "Listens for messages published to channels."),
    row("substr", 4, READONLY, KEY, STRING, G::String, Data(c::getrange),
        "Returns a substring from a string value."),
    row("sunion", -2, READONLY, KEYS, SET, G::Set, Data(cc::sunion),
        "Returns the union of multiple sets."),
    row("sunionstore", -3, WRITE | DENYOOM, KEYS, SET, G::Set, Data(cc::sunionstore),
        "Stores the union of multiple sets in a key."),
    row("sunsubscribe", -1, PUBSUB | NO_MULTI | NOSCRIPT | LOADING | STALE, NONE, PS, G::Pubsub,
        awaits!(sunsubscribe), "Stops listening to messages posted to shard channels."),
    row("table.create", -2, ADMIN | LOADING | STALE | NO_MULTI, NONE, 0, G::Shoal,
        awaits!(table_create), "Creates a table: TABLE.CREATE name [shards [replicas]] [ENGINE openraft|batch] (shoal)."),
    row("table.describe", 2, ADMIN | LOADING | STALE | NO_MULTI, NONE, 0, G::Shoal,
        awaits!(table_describe), "Describes a table's shards, replicas and leaders (shoal)."),
    row("table.drop", 2, ADMIN | LOADING | STALE | NO_MULTI, NONE, 0, G::Shoal,
        awaits!(table_drop), "Drops a table and its data (shoal)."),
    row("table.list", 1, ADMIN | LOADING | STALE | NO_MULTI, NONE, 0, G::Shoal,
        local!(table_list), "Lists the tables (shoal)."),
    row("table.use", 2, FAST | LOADING | STALE, NONE, CONN, G::Shoal, Use(Session::table_use),
        "Changes the table of the connection (shoal)."),
    row("time", 1, LOADING | STALE | FAST, NONE, 0, G::Server, local!(time),
        "Returns the server time."),
    row("touch", -2, READONLY | FAST, KEYS, KEYSPACE, G::Generic, Data(c::exists),
        "Returns the number of existing keys out of those specified."),
    row("ttl", 2, READONLY | FAST, KEY, KEYSPACE, G::Generic, Data(c::ttl),
        "Returns the expiration time in seconds of a key."),
    row("type", 2, READONLY | FAST, KEY, KEYSPACE, G::Generic, Data(c::type_of),
        "Determines the type of value stored at a key."),
    row("unlink", -2, WRITE | FAST, KEYS, KEYSPACE, G::Generic, Data(c::del),
        "Deletes one or more keys."),
    row("unsubscribe", -1, PUBSUB | NO_MULTI | NOSCRIPT | LOADING | STALE, NONE, PS, G::Pubsub,
        awaits!(unsubscribe), "Stops listening to messages posted to channels."),
    row("unwatch", 1, CONTROL, NONE, TXN, G::Transactions, local!(unwatch),
        "Forgets about watched keys of a transaction."),
    row("watch", -2, CONTROL | MULTI_CONTROL, KEYS, TXN, G::Transactions, awaits!(watch),
        "Monitors changes to keys to determine the execution of a transaction."),
    row("zadd", -4, WRITE | DENYOOM | FAST, KEY, ZSET, G::SortedSet, Data(cz::zadd),
        "Adds one or more members to a sorted set, or updates their scores. Creates the key if it doesn't exist."),
    row("zcard", 2, READONLY | FAST, KEY, ZSET, G::SortedSet, Data(cz::zcard),
        "Returns the number of members in a sorted set."),
    row("zcount", 4, READONLY | FAST, KEY, ZSET, G::SortedSet, Data(cz::zcount),
        "Returns the count of members in a sorted set that have scores within a range."),
    row("zdiff", -3, READONLY, NUMKEYS, ZSET, G::SortedSet, Data(cz::zdiff),
        "Returns the difference between multiple sorted sets."),
    row("zdiffstore", -4, WRITE | DENYOOM, STORE_NUMKEYS, ZSET, G::SortedSet, Data(cz::zdiffstore),
        "Stores the difference of multiple sorted sets in a key."),
    row("zincrby", 4, WRITE | DENYOOM | FAST, KEY, ZSET, G::SortedSet, Data(cz::zincrby),
        "Increments the score of a member in a sorted set."),
    row("zinter", -3, READONLY, NUMKEYS, ZSET, G::SortedSet, Data(cz::zinter),
        "Returns the intersect of multiple sorted sets."),
    row("zintercard", -3, READONLY, NUMKEYS, ZSET, G::SortedSet, Data(cz::zintercard),
        "Returns the number of members of the intersect of multiple sorted sets."),
    row("zinterstore", -4, WRITE | DENYOOM, STORE_NUMKEYS, ZSET, G::SortedSet, Data(cz::zinterstore),
        "Stores the intersect of multiple sorted sets in a key."),
    row("zlexcount", 4, READONLY | FAST, KEY, ZSET, G::SortedSet, Data(cz::zlexcount),
        "Returns the number of members in a sorted set within a lexicographical range."),
    row("zmpop", -4, WRITE, NUMKEYS, ZSET, G::SortedSet, Data(cz::zmpop),
        "Returns the highest- or lowest-scoring members from one or more sorted sets after removing them. Deletes the sorted set if the last member was popped."),
    row("zmscore", -3, READONLY | FAST, KEY, ZSET, G::SortedSet, Data(cz::zmscore),
        "Returns the score of one or more members in a sorted set."),
    row("zpopmax", -2, WRITE | FAST, KEY, ZSET, G::SortedSet, Data(cz::zpopmax),
        "Returns the highest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped."),
    row("zpopmin", -2, WRITE | FAST, KEY, ZSET, G::SortedSet, Data(cz::zpopmin),
        "Returns the lowest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped."),
    row("zrandmember", -2, READONLY, KEY, ZSET, G::SortedSet, Data(cz::zrandmember),
        "Returns one or more random members from a sorted set."),
    row("zrange", -4, READONLY, KEY, ZSET, G::SortedSet, Data(cz::zrange),
        "Returns members in a sorted set within a range of indexes."),
    row("zrangebylex", -4, READONLY, KEY, ZSET, G::SortedSet, Data(cz::zrangebylex),
        "Returns members in a sorted set within a lexicographical range."),
    row("zrangebyscore", -4, READONLY, KEY, ZSET, G::SortedSet, Data(cz::zrangebyscore),
        "Returns members in a sorted set within a range of scores."),
    row("zrangestore", -5, WRITE | DENYOOM, KEY2, ZSET, G::SortedSet, Data(cz::zrangestore),
        "Stores a range of members from sorted set in a key."),
    row("zrank", 3, READONLY | FAST, KEY, ZSET, G::SortedSet, Data(cz::zrank),
        "Returns the index of a member in a sorted set ordered by ascending scores."),
    row("zrem", -3, WRITE | FAST, KEY, ZSET, G::SortedSet, Data(cz::zrem),
        "Removes one or more members from a sorted set. Deletes the sorted set if all members were removed."),
    row("zremrangebylex", 4, WRITE, KEY, ZSET, G::SortedSet, Data(cz::zremrangebylex),
        "Removes members in a sorted set within a lexicographical range. Deletes the sorted set if all members were removed."),
    row("zremrangebyrank", 4, WRITE, KEY, ZSET, G::SortedSet, Data(cz::zremrangebyrank),
        "Removes members in a sorted set within a range of indexes. Deletes the sorted set if all members were removed."),
    row("zremrangebyscore", 4, WRITE, KEY, ZSET, G::SortedSet, Data(cz::zremrangebyscore),
        "Removes members in a sorted set within a range of scores. Deletes the sorted set if all members were removed."),
    row("zrevrange", -4, READONLY, KEY, ZSET, G::SortedSet, Data(cz::zrevrange),
        "Returns members in a sorted set within a range of indexes in reverse order."),
    row("zrevrangebylex", -4, READONLY, KEY, ZSET, G::SortedSet, Data(cz::zrevrangebylex),
        "Returns members in a sorted set within a lexicographical range in reverse order."),
    row("zrevrangebyscore", -4, READONLY, KEY, ZSET, G::SortedSet, Data(cz::zrevrangebyscore),
        "Returns members in a sorted set within a range of scores in reverse order."),
    row("zrevrank", 3, READONLY | FAST, KEY, ZSET, G::SortedSet, Data(cz::zrevrank),
        "Returns the index of a member in a sorted set ordered by descending scores."),
    row("zscan", -3, READONLY, KEY, ZSET, G::SortedSet, awaits!(zscan),
        "Iterates over members and scores of a sorted set."),
    row("zscore", 3, READONLY | FAST, KEY, ZSET, G::SortedSet, Data(cz::zscore),
        "Returns the score of a member in a sorted set."),
    row("zunion", -3, READONLY, NUMKEYS, ZSET, G::SortedSet, Data(cz::zunion),
        "Returns the union of multiple sorted sets."),
    row("zunionstore", -4, WRITE | DENYOOM, STORE_NUMKEYS, ZSET, G::SortedSet, Data(cz::zunionstore),
        "Stores the union of multiple sorted sets in a key."),
];

/// Look a command up by its lowercase name.
pub fn lookup(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS
        .binary_search_by(|c| c.name.cmp(name))
        .ok()
        .map(|i| &COMMANDS[i])
}

/// The index of a row in [`COMMANDS`] (its id for ACL rules).
pub fn row_index(spec: &CommandSpec) -> usize {
    COMMANDS
        .binary_search_by(|c| c.name.cmp(spec.name))
        .expect("a row of the command table")
}

/// A command named by an argument (any case).
fn named(arg: &[u8]) -> Option<&'static CommandSpec> {
    lookup(&String::from_utf8_lossy(arg).to_ascii_lowercase())
}

/// `COMMAND [COUNT | LIST [FILTERBY ACLCAT cat | PATTERN p] | INFO name... |
/// DOCS name... | GETKEYS cmd arg...]`, answered from the table.
fn command(_: &mut Session, args: &mut Args) -> Reply {
    let Ok(sub) = args.next_string() else {
        return Reply::Array(COMMANDS.iter().map(CommandSpec::info).collect());
    };
    let rest = args.rest();
    match sub.to_ascii_lowercase().as_str() {
        "count" => Reply::Int(COMMANDS.len() as i64),
        "list" => command_list(&rest),
        "info" if rest.is_empty() => Reply::Array(COMMANDS.iter().map(CommandSpec::info).collect()),
        "info" => Reply::Array(
            rest.iter()
                .map(|n| named(n).map_or(Reply::NilArray, CommandSpec::info))
                .collect(),
        ),
        "docs" => {
            let wanted: Vec<&CommandSpec> = if rest.is_empty() {
                COMMANDS.iter().collect()
            } else {
                rest.iter().filter_map(|n| named(n)).collect()
            };
            Reply::Map(
                wanted
                    .into_iter()
                    .map(|c| (Reply::bulk(c.name), c.docs()))
                    .collect(),
            )
        }
        "getkeys" => {
            let Some(first) = rest.first() else {
                return wrong_args("command|getkeys");
            };
            match named(first) {
                Some(c) if c.arity_ok(rest.len()) => {
                    let keys = c.key_positions(&rest);
                    if keys.is_empty() {
                        return Reply::error("ERR The command has no key arguments");
                    }
                    Reply::Array(
                        keys.into_iter()
                            .map(|i| Reply::Bulk(rest[i].clone()))
                            .collect(),
                    )
                }
                Some(_) => Reply::error("ERR Invalid number of arguments specified for command"),
                None => Reply::error("ERR Invalid command specified"),
            }
        }
        other => Reply::error(format!(
            "ERR unknown subcommand '{other}'. Try COMMAND HELP."
        )),
    }
}

/// COMMAND LIST [FILTERBY ACLCAT category | PATTERN pattern]
fn command_list(rest: &[bytes::Bytes]) -> Reply {
    let keep: Box<dyn Fn(&CommandSpec) -> bool> = match rest {
        [] => Box::new(|_| true),
        [by, what, value] if by.eq_ignore_ascii_case(b"filterby") => {
            let value = value.clone();
            match what.to_ascii_lowercase().as_slice() {
                b"aclcat" => {
                    let Some((bit, _)) = acl::NAMES
                        .iter()
                        .find(|(_, n)| n.as_bytes().eq_ignore_ascii_case(&value))
                    else {
                        return Reply::Array(vec![]);
                    };
                    let bit = *bit;
                    Box::new(move |c| c.acl_categories() & bit != 0)
                }
                b"pattern" => {
                    Box::new(move |c| crate::glob::glob_match_nocase(&value, c.name.as_bytes()))
                }
                // No modules here: nothing matches.
                b"module" => Box::new(|_| false),
                _ => return Reply::error("ERR syntax error"),
            }
        }
        _ => return Reply::error("ERR syntax error"),
    };
    Reply::Array(
        COMMANDS
            .iter()
            .filter(|c| keep(c))
            .map(|c| Reply::bulk(c.name))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for w in COMMANDS.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        assert!(lookup("get").is_some());
        assert!(lookup("nosuch").is_none());
        for c in COMMANDS {
            assert_eq!(c.name, c.name.to_ascii_lowercase(), "names are lowercase");
            assert!(!c.summary.is_empty(), "{} has a summary", c.name);
        }
    }

    #[test]
    fn movable_keys_of_collections() {
        let k = |cmd: &str| {
            lookup(cmd.split(' ').next().unwrap())
                .unwrap()
                .key_positions(&req(cmd))
        };
        assert_eq!(k("blpop a b 0"), vec![1, 2]);
        assert_eq!(k("blmpop 0 2 a b left"), vec![3, 4]);
        assert_eq!(k("zunionstore d 2 a b weights 1 2"), vec![1, 3, 4]);
        assert_eq!(k("sintercard 2 a b limit 1"), vec![2, 3]);
        assert_eq!(k("zunion 2 a b"), vec![2, 3]);
        assert_eq!(k("smove a b m"), vec![1, 2]);
    }

    #[test]
    fn arity_and_keys() {
        let set = lookup("set").unwrap();
        assert!(!set.arity_ok(2));
        assert!(set.arity_ok(3));
        assert!(set.arity_ok(6));
        assert_eq!(set.key_positions(&req("set k v ex 10")), vec![1]);
        let del = lookup("del").unwrap();
        assert_eq!(del.key_positions(&req("del a b c")), vec![1, 2, 3]);
        let mset = lookup("mset").unwrap();
        assert_eq!(mset.key_positions(&req("mset a 1 b 2")), vec![1, 3]);
        let get = lookup("get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(3));
        assert!(lookup("ping")
            .unwrap()
            .key_positions(&req("ping x"))
            .is_empty());
    }

    /// The rows agree with themselves: what the dispatcher, MULTI and
    /// pipelines infer from a row cannot contradict its flags.
    #[test]
    fn rows_are_consistent() {
        for c in COMMANDS {
            let n = c.name;
            // The connection loop tells blocking commands apart by their
            // first letter before it looks them up (`server.rs`).
            assert!(!c.has(BLOCKING) || n.starts_with('b'), "{n}: blocking");
            assert!(
                !(c.has(WRITE) && c.has(READONLY)),
                "{n}: write and readonly"
            );
            assert!(
                !(c.has(NO_MULTI) && c.has(MULTI_CONTROL)),
                "{n}: both refused and run inside MULTI"
            );
            // Anything that waits on the cluster cannot be queued, but for
            // the collection scans, which queue as their read, and PUBLISH,
            // which EXEC runs in its place.
            if matches!(c.handler, Handler::Async(_))
                && crate::resp::cmd_txn::coll_scan_kind(n).is_none()
                && !crate::resp::cmd_txn::published_at_exec(n)
            {
                assert!(
                    c.has(NO_MULTI) || c.has(MULTI_CONTROL),
                    "{n}: an Async handler must be NO_MULTI or MULTI_CONTROL"
                );
            }
            // Data commands are keyed, and say whether they write.
            if matches!(c.handler, Handler::Data(_)) {
                assert!(!matches!(c.keys, KeySpec::None), "{n}: data without keys");
                assert!(
                    c.has(WRITE) || c.has(READONLY),
                    "{n}: data neither read nor write"
                );
                assert!(!c.has(FAN_OUT), "{n}: data commands route by key");
            }
            // A fan-out command names no keys (it reaches every shard).
            if c.has(FAN_OUT) {
                assert!(matches!(c.keys, KeySpec::None), "{n}: fan-out with keys");
            }
            // Only what must run before AUTH skips it.
            if c.has(NO_AUTH) {
                assert!(
                    ["auth", "hello", "quit", "reset"].contains(&n),
                    "{n} runs unauthenticated"
                );
            }
        }
    }

    /// Keys that move (ZUNIONSTORE dest numkeys key..., EVAL script numkeys
    /// key...): found by the row's function, reported as `movablekeys`.
    #[test]
    fn keys_found_by_a_function() {
        fn numkeys_after_dest(args: &[Bytes]) -> Vec<usize> {
            let n = args
                .get(2)
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            std::iter::once(1)
                .chain((3..3 + n).filter(|i| *i < args.len()))
                .collect()
        }
        let spec = CommandSpec {
            name: "zunionstore",
            arity: -4,
            flags: WRITE | DENYOOM,
            keys: KeySpec::Find {
                first: 1,
                last: 1,
                step: 1,
                find: numkeys_after_dest,
            },
            acl: acl::SORTEDSET,
            group: Group::Generic,
            summary: "test row",
            handler: Handler::Local(command),
            subs: None,
        };
        assert_eq!(
            spec.key_positions(&req("zunionstore d 2 a b WEIGHTS 1 2")),
            vec![1, 3, 4]
        );
        assert!(spec.flag_names().contains(&"movablekeys"));
        assert_eq!(spec.legacy_keys(), (1, 1, 1));
    }

    #[test]
    fn info_has_redis_7_shape() {
        let Reply::Array(fields) = lookup("get").unwrap().info() else {
            panic!()
        };
        assert_eq!(fields.len(), 10);
        assert_eq!(fields[0], Reply::bulk("get"));
        assert_eq!(fields[1], Reply::Int(2));
        assert_eq!(
            fields[2],
            Reply::Set(vec![
                Reply::Status("readonly".into()),
                Reply::Status("fast".into())
            ])
        );
        assert_eq!(
            &fields[3..6],
            &[Reply::Int(1), Reply::Int(1), Reply::Int(1)]
        );
        assert_eq!(
            fields[6],
            Reply::Set(vec![
                Reply::Status("@read".into()),
                Reply::Status("@string".into()),
                Reply::Status("@fast".into()),
            ])
        );
        // FLUSHALL: admin-free but dangerous, slow, write.
        let cats = lookup("flushall").unwrap().acl_categories();
        assert!(cats & acl::DANGEROUS != 0 && cats & acl::SLOW != 0 && cats & acl::WRITE != 0);
    }
}
