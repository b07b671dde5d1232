//! The Redis protocol side of a router.
//!
//! * [`frame`]: requests off the wire, with hard limits (redis-protocol does
//!   the decoding).
//! * [`args`]: a typed cursor over one request's arguments.
//! * [`reply`]: replies as values, encoded to RESP2 or RESP3 at the edge.
//! * [`commands`]: the command table, one row per command ([`spec`] says
//!   what a row holds); [`dispatch`] runs a request through it.
//! * [`session`]: per-connection state and the commands of the connection.
//! * [`compile`]: data commands parsed and planned into shard operations;
//!   [`cmd_string`] runs the plans; [`scan`]: SCAN cursors.
//! * [`cmd_txn`]: MULTI/EXEC/WATCH; [`cmd_table`]: TABLE.*.
//! * `cmd_script`: EVAL, SCRIPT, FCALL, FUNCTION; [`scripts`]: the
//!   router's copy of the loaded scripts and function libraries.
//! * [`acl`]: users and their rules (Redis ACLs, pure); [`cmd_acl`]: the
//!   ACL command, AUTH's check, the router's copy of the users from etcd.
//! * [`errors`]: lower layers' errors as RESP replies.
//! * [`server`]: the TCP listener and connection loop.
//! * [`views`]: Redis's own views (command stats, SLOWLOG, LATENCY);
//!   [`monitor`]: MONITOR's feed.

pub mod acl;
pub mod args;
pub mod cmd_acl;
pub mod cmd_blocking;
pub mod cmd_keyspace;
mod cmd_pubsub;
mod cmd_script;
pub mod cmd_store;
pub mod cmd_string;
pub mod cmd_table;
pub mod cmd_transfer;
pub mod cmd_txn;
pub mod cmd_views;
pub mod commands;
pub mod compile;
pub mod compile_bitmap;
pub mod compile_coll;
pub mod compile_keyspace;
pub mod compile_list;
pub mod compile_zset;
pub mod dispatch;
pub mod encoding_params;
pub mod errors;
pub mod frame;
pub mod monitor;
pub mod pipeline;
pub mod pubsub;
pub mod reply;
pub mod scan;
pub mod scripts;
pub mod server;
pub mod session;
pub mod spec;
pub mod txn_retry;
pub mod users;
pub mod views;
