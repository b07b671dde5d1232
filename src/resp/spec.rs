//! What one row of the command table says about a command: its arity, typed
//! flags, where its keys are, its ACL categories, its documentation and the
//! handler that runs it. The rows themselves are in [`super::commands`].
//!
//! Everything the router decides about a command before running it reads
//! these fields: the arity error, the auth check (`NO_AUTH`), whether it is
//! queued inside MULTI (`NO_MULTI`, `MULTI_CONTROL`, and the handler kind),
//! whether it may join a pipeline group (a [`Handler::Data`] command), whether
//! READONLY lets it read from any replica (`READONLY`), and what `COMMAND`
//! answers about it.

use bytes::Bytes;

use super::compile::Ctx;
use super::reply::Reply;
use super::session::{AsyncFn, LocalFn, UseFn};
use crate::cluster::plan::Plan;

/// Compile a data command's arguments into a plan of shard operations
/// (pure: see [`super::compile`]).
pub type CompileFn = fn(&mut super::args::Args, &Ctx) -> Result<Plan, Reply>;

/// Find the key positions of a request (every argument, command name at 0)
/// for commands whose keys move (a count argument, a `KEYS` clause...).
pub type FindKeysFn = fn(&[Bytes]) -> Vec<usize>;

/// Command flags, as bits. The first group is Redis's own (reported by
/// `COMMAND INFO` under Redis's names); the second is shoal's, used by the
/// router only.
pub mod flag {
    pub const WRITE: u32 = 1 << 0;
    pub const READONLY: u32 = 1 << 1;
    pub const DENYOOM: u32 = 1 << 2;
    pub const ADMIN: u32 = 1 << 3;
    pub const PUBSUB: u32 = 1 << 4;
    pub const NOSCRIPT: u32 = 1 << 5;
    pub const BLOCKING: u32 = 1 << 6;
    pub const LOADING: u32 = 1 << 7;
    pub const STALE: u32 = 1 << 8;
    pub const SKIP_SLOWLOG: u32 = 1 << 9;
    pub const FAST: u32 = 1 << 10;
    /// May run before AUTH.
    pub const NO_AUTH: u32 = 1 << 11;
    /// Refused inside MULTI.
    pub const NO_MULTI: u32 = 1 << 12;

    /// shoal: runs at once inside MULTI instead of being queued (MULTI,
    /// EXEC, DISCARD, WATCH, QUIT, RESET).
    pub const MULTI_CONTROL: u32 = 1 << 20;
    /// shoal: reaches every shard of the table (KEYS, SCAN, DBSIZE...).
    pub const FAN_OUT: u32 = 1 << 21;

    /// Redis's names of the Redis flags, in `COMMAND INFO` order.
    pub const NAMES: &[(u32, &str)] = &[
        (WRITE, "write"),
        (READONLY, "readonly"),
        (DENYOOM, "denyoom"),
        (ADMIN, "admin"),
        (PUBSUB, "pubsub"),
        (NOSCRIPT, "noscript"),
        (BLOCKING, "blocking"),
        (LOADING, "loading"),
        (STALE, "stale"),
        (SKIP_SLOWLOG, "skip_slowlog"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (NO_MULTI, "no_multi"),
    ];
}

/// ACL categories, as bits. A row names the categories of its data type and
/// purpose; `read`, `write`, `admin`, `dangerous`, `pubsub`, `blocking`,
/// `fast` and `slow` follow from its flags, as in Redis.
pub mod acl {
    pub const KEYSPACE: u32 = 1 << 0;
    pub const READ: u32 = 1 << 1;
    pub const WRITE: u32 = 1 << 2;
    pub const STRING: u32 = 1 << 3;
    pub const HASH: u32 = 1 << 4;
    pub const LIST: u32 = 1 << 5;
    pub const SET: u32 = 1 << 6;
    pub const SORTEDSET: u32 = 1 << 7;
    pub const BITMAP: u32 = 1 << 8;
    pub const PUBSUB: u32 = 1 << 9;
    pub const ADMIN: u32 = 1 << 10;
    pub const FAST: u32 = 1 << 11;
    pub const SLOW: u32 = 1 << 12;
    pub const BLOCKING: u32 = 1 << 13;
    pub const DANGEROUS: u32 = 1 << 14;
    pub const CONNECTION: u32 = 1 << 15;
    pub const TRANSACTION: u32 = 1 << 16;
    pub const SCRIPTING: u32 = 1 << 17;
    /// Redis's categories of types shoal does not have: named by
    /// `ACL CAT`, given to no command.
    pub const HYPERLOGLOG: u32 = 1 << 18;
    pub const GEO: u32 = 1 << 19;
    pub const STREAM: u32 = 1 << 20;

    pub const NAMES: &[(u32, &str)] = &[
        (KEYSPACE, "keyspace"),
        (READ, "read"),
        (WRITE, "write"),
        (STRING, "string"),
        (HASH, "hash"),
        (LIST, "list"),
        (SET, "set"),
        (SORTEDSET, "sortedset"),
        (BITMAP, "bitmap"),
        (PUBSUB, "pubsub"),
        (ADMIN, "admin"),
        (FAST, "fast"),
        (SLOW, "slow"),
        (BLOCKING, "blocking"),
        (DANGEROUS, "dangerous"),
        (CONNECTION, "connection"),
        (TRANSACTION, "transaction"),
        (SCRIPTING, "scripting"),
        (HYPERLOGLOG, "hyperloglog"),
        (GEO, "geo"),
        (STREAM, "stream"),
    ];
}

/// The documentation group of a command (`COMMAND DOCS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Generic,
    String,
    Connection,
    Server,
    Transactions,
    Hash,
    Set,
    SortedSet,
    List,
    Bitmap,
    /// shoal's own: tables and placement.
    Shoal,
    Pubsub,
    Scripting,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Generic => "generic",
            Group::String => "string",
            Group::Connection => "connection",
            Group::Server => "server",
            Group::Transactions => "transactions",
            Group::Hash => "hash",
            Group::Set => "set",
            Group::SortedSet => "sorted-set",
            Group::List => "list",
            Group::Bitmap => "bitmap",
            Group::Shoal => "shoal",
            Group::Pubsub => "pubsub",
            Group::Scripting => "scripting",
        }
    }
}

/// Where a command's keys are.
#[derive(Debug, Clone, Copy)]
pub enum KeySpec {
    /// No keys.
    None,
    /// Keys from `first` to `last` (negative: counted from the end, -1 the
    /// last argument) every `step` arguments.
    Range { first: i32, last: i32, step: i32 },
    /// Keys found by a function of the arguments; `first`, `last`, `step`
    /// are what `COMMAND INFO` reports (Redis's legacy triple).
    Find {
        first: i32,
        last: i32,
        step: i32,
        find: FindKeysFn,
    },
}

/// How a command runs.
#[derive(Clone, Copy)]
pub enum Handler {
    /// A data command: compiled into a plan (pure), then run on its shards.
    /// Queued inside MULTI as its plan; may join a pipeline group.
    Data(CompileFn),
    /// Answered from the connection's own state. Queued inside MULTI and run
    /// at EXEC, in order.
    Local(LocalFn),
    /// Anything that waits on the cluster (keyspace fan-out, tables,
    /// transactions, INFO). Never queued: such a row is `NO_MULTI` or
    /// `MULTI_CONTROL`.
    Async(AsyncFn),
    /// Switches the connection's table (SELECT, TABLE.USE): resolves the
    /// target; inside MULTI the switch is queued and later commands are
    /// compiled against it.
    Use(UseFn),
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handler::Data(_) => "Data",
            Handler::Local(_) => "Local",
            Handler::Async(_) => "Async",
            Handler::Use(_) => "Use",
        })
    }
}

/// The subcommands of a container row (CLIENT, CONFIG, ACL...), for ACL
/// rules: each has its own permission and categories, as in Redis
/// (`+client|id`, `config|set` is `@admin`).
#[derive(Debug)]
pub struct Subcommands {
    /// ACL categories of the container itself (Redis's: `@slow`, and
    /// `@connection` for COMMAND).
    pub parent: u32,
    /// Each subcommand (lowercase) and all its ACL categories.
    pub list: &'static [(&'static str, u32)],
}

/// One row of the command table.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis's convention: positive is the exact argument count (the name
    /// included), negative a minimum.
    pub arity: i32,
    /// [`flag`] bits.
    pub flags: u32,
    pub keys: KeySpec,
    /// [`acl`] bits named by the row (the rest follows from the flags).
    pub acl: u32,
    pub group: Group,
    pub summary: &'static str,
    pub handler: Handler,
    /// A container's subcommands, for ACL rules.
    pub subs: Option<&'static Subcommands>,
}

impl CommandSpec {
    /// The row with these subcommands.
    pub const fn with_subs(mut self, subs: &'static Subcommands) -> CommandSpec {
        self.subs = Some(subs);
        self
    }

    /// Whether every bit of `flags` is set.
    pub fn has(&self, flags: u32) -> bool {
        self.flags & flags == flags
    }

    pub fn is_write(&self) -> bool {
        self.has(flag::WRITE)
    }

    /// Whether `argc` (command name included) satisfies the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc.min(i32::MAX as usize) as i32;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    /// Indexes of the key arguments of `args` (command name at 0), which
    /// satisfy the arity.
    pub fn key_positions(&self, args: &[Bytes]) -> Vec<usize> {
        let argc = args.len() as i64;
        match self.keys {
            KeySpec::None => Vec::new(),
            KeySpec::Find { find, .. } => find(args),
            KeySpec::Range { first, last, step } => {
                if first <= 0 || step <= 0 {
                    return Vec::new();
                }
                let last = if last < 0 {
                    argc + last as i64
                } else {
                    last as i64
                };
                (first as i64..=last.min(argc - 1))
                    .step_by(step as usize)
                    .map(|i| i as usize)
                    .collect()
            }
        }
    }

    /// Redis's legacy (first, last, step) key triple.
    pub fn legacy_keys(&self) -> (i32, i32, i32) {
        match self.keys {
            KeySpec::None => (0, 0, 0),
            KeySpec::Range { first, last, step }
            | KeySpec::Find {
                first, last, step, ..
            } => (first, last, step),
        }
    }

    /// Every ACL category: the row's, plus those its flags imply.
    pub fn acl_categories(&self) -> u32 {
        let mut cats = self.acl;
        let implied = [
            (flag::WRITE, acl::WRITE),
            (flag::READONLY, acl::READ),
            (flag::ADMIN, acl::ADMIN | acl::DANGEROUS),
            (flag::PUBSUB, acl::PUBSUB),
            (flag::BLOCKING, acl::BLOCKING),
            (flag::FAST, acl::FAST),
        ];
        for (f, c) in implied {
            if self.has(f) {
                cats |= c;
            }
        }
        // Redis (`setImplicitACLCategories`): a read-only scripting command
        // (EVAL_RO, FCALL_RO) is not `@read`, its script decides what it
        // reads.
        if self.acl & acl::SCRIPTING != 0 {
            cats &= !acl::READ | self.acl;
        }
        if !self.has(flag::FAST) {
            cats |= acl::SLOW;
        }
        cats
    }

    /// The names of the Redis flags set, plus `movablekeys` for keys found
    /// by a function.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&str> = flag::NAMES
            .iter()
            .filter(|(bit, _)| self.has(*bit))
            .map(|(_, n)| *n)
            .collect();
        if matches!(self.keys, KeySpec::Find { .. }) {
            names.push("movablekeys");
        }
        names
    }

    /// `COMMAND INFO`'s entry (Redis 7: ten fields).
    pub fn info(&self) -> Reply {
        let (first, last, step) = self.legacy_keys();
        let cats = self.acl_categories();
        Reply::Array(vec![
            Reply::bulk(self.name),
            Reply::Int(self.arity as i64),
            Reply::Set(
                self.flag_names()
                    .into_iter()
                    .map(|f| Reply::Status(f.to_string()))
                    .collect(),
            ),
            Reply::Int(first as i64),
            Reply::Int(last as i64),
            Reply::Int(step as i64),
            Reply::Set(
                acl::NAMES
                    .iter()
                    .filter(|(bit, _)| cats & bit != 0)
                    .map(|(_, n)| Reply::Status(format!("@{n}")))
                    .collect(),
            ),
            // Tips, key specifications, subcommands.
            Reply::Array(vec![]),
            Reply::Array(self.key_specs()),
            Reply::Array(vec![]),
        ])
    }

    /// Redis 7 key specifications.
    fn key_specs(&self) -> Vec<Reply> {
        let map = |pairs: Vec<(&'static str, Reply)>| {
            Reply::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (Reply::bulk(k), v))
                    .collect(),
            )
        };
        let access: &[&str] = if self.is_write() {
            &["RW", "UPDATE"]
        } else {
            &["RO", "ACCESS"]
        };
        let flags = Reply::Array(
            access
                .iter()
                .map(|f| Reply::Status(f.to_string()))
                .collect(),
        );
        let begin = |index: i32| {
            map(vec![
                ("type", Reply::bulk("index")),
                ("spec", map(vec![("index", Reply::Int(index as i64))])),
            ])
        };
        match self.keys {
            KeySpec::None => vec![],
            KeySpec::Range { first, last, step } => {
                // Redis counts `lastkey` from the first key, or from the end
                // when negative.
                let lastkey = if last < 0 { last } else { last - first };
                vec![map(vec![
                    ("flags", flags),
                    ("begin_search", begin(first)),
                    (
                        "find_keys",
                        map(vec![
                            ("type", Reply::bulk("range")),
                            (
                                "spec",
                                map(vec![
                                    ("lastkey", Reply::Int(lastkey as i64)),
                                    ("keystep", Reply::Int(step as i64)),
                                    ("limit", Reply::Int(0)),
                                ]),
                            ),
                        ]),
                    ),
                ])]
            }
            KeySpec::Find { first, .. } => vec![map(vec![
                ("flags", flags),
                ("begin_search", begin(first)),
                (
                    "find_keys",
                    map(vec![
                        ("type", Reply::bulk("unknown")),
                        ("spec", map(vec![])),
                    ]),
                ),
            ])],
        }
    }

    /// `COMMAND DOCS`'s entry.
    pub fn docs(&self) -> Reply {
        Reply::Map(vec![
            (Reply::bulk("summary"), Reply::bulk(self.summary)),
            (Reply::bulk("group"), Reply::bulk(self.group.as_str())),
        ])
    }
}
