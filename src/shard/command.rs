//! Shard commands as values: what a router sends a shard ([`ShardRequest`]),
//! what a shard's Raft log holds ([`LogCmd`]: writes and transaction steps),
//! and what comes back ([`OpReply`]). Plain data, encoded with the versioned
//! codec ([`super::codec`]); the logic that applies them is in
//! [`super::apply`] (single writes and reads) and [`super::txn`]
//! (transactions).

use super::value::Stored;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use super::bitmap::{BitOpKind, BitRange, FieldOp, FieldType, Overflow};
pub use super::coll::{CollRead, CollWrite, HSetReply, HashPart, SetOp};
pub use super::value::Kind;

/// What a node enforces on requests, from its own configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest value a key may hold (bytes).
    pub max_value_len: u64,
    /// Largest reply the node builds for one request (bytes, RESP-encoded
    /// estimate): a SCAN page ends there, an MGET over it is refused.
    pub max_reply_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_len: 16 * 1024 * 1024,
            max_reply_len: 64 * 1024 * 1024,
        }
    }
}

/// The error of a reply that would pass `limit` bytes.
pub fn reply_too_large(what: &str, limit: usize) -> String {
    format!("ERR reply too large: {what} would pass the {limit}-byte reply limit")
}

/// What a request asks of a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardRequest {
    Write(WriteCmd),
    /// A transaction step (one-phase, PREPARE, COMMIT, ABORT): a Raft entry.
    Txn(TxnEntry),
    /// Linearizable read of keys' stored values (with version and expiry)
    /// and lock state, from one consistent view of the shard (WATCH,
    /// read-only transactions). Replies with one `[Stored encoding or nil,
    /// locked 0/1]` per key.
    ReadVersions {
        keys: Vec<Bytes>,
        now_ms: u64,
    },
    Read {
        op: ReadOp,
        /// Linearizable (leader + ReadIndex) or eventual (any replica).
        linearizable: bool,
        now_ms: u64,
    },
    /// A blocked client's wait ([`super::blocking`]): answer `Int(1)` as
    /// soon as one of `keys` holds a live collection of `kind` (at once if
    /// one does), or `Nil` after `wait_ms`. `since_ms` is when the client
    /// started blocking: the longest-blocked waiter is woken first.
    WaitFilled {
        keys: Vec<Bytes>,
        kind: Kind,
        since_ms: u64,
        wait_ms: u64,
        now_ms: u64,
    },
    /// [`ShardRequest::WaitFilled`] for the blocked command `client` (a
    /// number the router picked), which [`ShardRequest::CancelWaits`] can
    /// end early.
    WaitFilledFor {
        client: u64,
        keys: Vec<Bytes>,
        kind: Kind,
        since_ms: u64,
        wait_ms: u64,
        now_ms: u64,
    },
    /// The blocked command `client` stopped waiting (it was served through
    /// another shard, unblocked, or its connection closed): forget its
    /// waits here, so no wake-up is spent on it. Replies `Ok`.
    CancelWaits {
        client: u64,
    },
    /// Pub/Sub ([`super::pubsub`]): the router `router`'s interest in this
    /// shard, replacing its previous one: `(kind, channel, clients)` and
    /// `(pattern, clients)`. Leader only; replies `Int(reg)`, the
    /// registration's number (0 when the interest is empty).
    PubSubInterest {
        router: u64,
        channels: Vec<(u8, Bytes, u64)>,
        patterns: Vec<(Bytes, u64)>,
    },
    /// Pub/Sub: the messages queued for `router` after sequence `after`,
    /// waiting up to `wait_ms` for one. Leader only; see
    /// [`super::pubsub::Registry::poll`] for the reply.
    PubSubPoll {
        router: u64,
        reg: u64,
        after: u64,
        wait_ms: u64,
    },
    /// PUBLISH (`kind` 0) or SPUBLISH (`kind` 1) on this shard's leader:
    /// replies `Int(clients that receive it)`. Never a Raft entry.
    Publish {
        kind: u8,
        channel: Bytes,
        message: Bytes,
    },
    /// PUBSUB CHANNELS / NUMSUB / SHARDCHANNELS / SHARDNUMSUB / NUMPAT on
    /// this shard's leader: `Array([channel, clients]...)` of `kind`
    /// (matching `pattern` when given), or with `kind` 2 the distinct
    /// patterns.
    PubSubChannels {
        kind: u8,
        pattern: Option<Bytes>,
    },
    /// EVAL / FCALL on this shard's leader (see the `shard::script`
    /// module): replies the script's reply; its writes are one Raft entry.
    Script(ScriptCall),
    /// SCRIPT KILL / FUNCTION KILL: stop the scripts running on this
    /// group. Replies `Int(scripts stopped)`.
    ScriptKill,
}

/// A script to run on a shard's leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScriptCall {
    /// SHA1 of `code` (lowercase hex): the VM's cache key.
    pub sha: String,
    /// EVAL's body, or a function library's code.
    pub code: Bytes,
    /// The function FCALL calls; empty for EVAL.
    pub function: String,
    pub keys: Vec<Bytes>,
    pub args: Vec<Bytes>,
    /// EVAL_RO, FCALL_RO, or a `no-writes` function: writes are refused.
    pub read_only: bool,
    /// The client speaks RESP3 (Lua booleans reply as booleans).
    pub resp3: bool,
    /// The router's clock when the command arrived: expiry is judged at it
    /// and the writes are stamped with it.
    pub now_ms: u64,
    /// The table's descriptor, encoded by `meta` (opaque here: the runner
    /// compiles commands against it).
    pub table: Bytes,
    /// The shard of the table this group serves: keys elsewhere are refused.
    pub shard: u32,
    /// The calling user's name and rules (JSON, encoded by the router's
    /// ACL layer), checked on every command the script runs; empty when
    /// the user may run anything.
    pub user: Bytes,
    /// Largest value a write may set (the router's limit).
    pub max_value: u64,
}

/// Expiry to set with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// Remove any expiry (a plain SET).
    Clear,
    /// Keep the current expiry (SET KEEPTTL).
    Keep,
    /// Expire at this absolute Unix time in milliseconds.
    At(u64),
}

/// SET's NX / XX condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCond {
    Always,
    IfAbsent,
    IfPresent,
}

/// A write, stamped by its proposer with the time used for expiry decisions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteCmd {
    pub now_ms: u64,
    pub op: WriteOp,
}

/// EXPIRE's NX / XX / GT / LT options (Redis allows XX with GT or LT).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireCond {
    /// Only when the key has no expiry.
    pub nx: bool,
    /// Only when the key has an expiry.
    pub xx: bool,
    /// Only when the new expiry is later (no expiry counts as infinite).
    pub gt: bool,
    /// Only when the new expiry is earlier (no expiry counts as infinite).
    pub lt: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    Set {
        key: Bytes,
        value: Bytes,
        expiry: Expiry,
        cond: SetCond,
        /// Reply with the old value (SET ... GET, GETSET).
        get: bool,
    },
    /// DEL / UNLINK: number of keys removed.
    Del { keys: Vec<Bytes> },
    /// MSET (`Ok`) or, with `nx`, MSETNX (`Int(1)` if all were set, `Int(0)`
    /// if any key existed and nothing was set). All keys are in this shard.
    MSet {
        pairs: Vec<(Bytes, Bytes)>,
        nx: bool,
    },
    /// GETDEL: the value (or nil), and the key is gone.
    GetDel { key: Bytes },
    /// GETEX: the value, with the expiry changed when `expiry` is given
    /// (`Expiry::Clear` is PERSIST; `Keep` changes nothing).
    GetEx { key: Bytes, expiry: Expiry },
    /// INCR / DECR / INCRBY / DECRBY.
    IncrBy { key: Bytes, by: i64 },
    /// INCRBYFLOAT; the increment as the client sent it (validated text).
    IncrByFloat { key: Bytes, by: Bytes },
    /// APPEND. `max_len`, the largest value allowed, is stamped by the
    /// shard leader from its own configuration ([`super::apply::admit`]) before it
    /// proposes the entry; what a router sends there is overwritten.
    Append {
        key: Bytes,
        value: Bytes,
        max_len: u64,
    },
    /// SETRANGE; `max_len` as for [`WriteOp::Append`].
    SetRange {
        key: Bytes,
        offset: u64,
        value: Bytes,
        max_len: u64,
    },
    /// EXPIRE family, with the absolute deadline computed by the proposer.
    /// A deadline at or before `now_ms` deletes the key.
    Expire {
        key: Bytes,
        at_ms: i64,
        cond: ExpireCond,
    },
    /// PERSIST: 1 if an expiry was removed.
    Persist { key: Bytes },
    /// Background purge: delete those of `keys` that are expired at the
    /// stamped time (a key rewritten since it was found is left alone).
    PurgeExpired { keys: Vec<Bytes> },
    /// FLUSHDB / FLUSHALL on this shard: every key of the group goes. The
    /// state machine carries this out as one range delete; see
    /// [`WriteOp::clears_group`].
    FlushGroup,
    /// A write to a hash or a set ([`super::coll`]).
    Coll(CollWrite),
    /// RENAME, RENAMENX or COPY with both keys on this shard: one entry.
    /// The source's stored record moves (or is copied) whole, expiry
    /// included; see [`MoveMode`] for the replies.
    Move {
        src: Bytes,
        dst: Bytes,
        mode: MoveMode,
    },
    /// Store `record` under `key` as it is (its version becomes this
    /// entry's index; an expiry already past at the stamped time deletes
    /// the key instead): the destination half of a RENAME or COPY whose
    /// keys are on different shards, run inside a transaction. Reply: `Ok`.
    PutRecord { key: Bytes, record: Stored },
    /// SETBIT: the old bit. `max_len` as for [`WriteOp::Append`].
    SetBit {
        key: Bytes,
        offset: u64,
        on: bool,
        max_len: u64,
    },
    /// BITOP over keys of this shard: the length of `dst` (deleted when 0).
    BitOp {
        op: BitOpKind,
        dst: Bytes,
        keys: Vec<Bytes>,
    },
    /// BITFIELD with a SET or INCRBY: an array of one reply per op (nil
    /// for one that overflowed under FAIL). The value grows to the last
    /// bit written, even when every write fails, as in Redis; `max_len`
    /// as for [`WriteOp::Append`].
    BitField {
        key: Bytes,
        ops: Vec<FieldOp>,
        max_len: u64,
    },
}

/// What [`WriteOp::Move`] does, with Redis's replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveMode {
    /// RENAME: `Ok`, or `ERR no such key`; the destination is replaced.
    Rename,
    /// RENAMENX: 1, 0 when the destination exists, or `ERR no such key`.
    RenameNx,
    /// COPY: 1, or 0 when the source is absent or (without `replace`) the
    /// destination exists. The source stays.
    Copy { replace: bool },
}

/// The error of RENAME / RENAMENX on an absent source.
pub const ERR_NO_SUCH_KEY: &str = "ERR no such key";

/// The error of COPY onto its own source.
pub const ERR_SAME_OBJECT: &str = "ERR source and destination objects are the same";

impl WriteOp {
    /// Bytes this write carries (keys and values), for batch sizing.
    pub fn value_len(&self) -> usize {
        let keys: usize = self.keys().iter().map(|k| k.len()).sum();
        let values = match self {
            WriteOp::Set { value, .. }
            | WriteOp::Append { value, .. }
            | WriteOp::SetRange { value, .. } => value.len(),
            WriteOp::MSet { pairs, .. } => pairs.iter().map(|(_, v)| v.len()).sum(),
            WriteOp::IncrByFloat { by, .. } => by.len(),
            WriteOp::PutRecord { record, .. } => record.data.len(),
            WriteOp::Coll(c) => c.elements().iter().map(|e| e.len()).sum(),
            _ => 0,
        };
        keys.saturating_add(values)
    }

    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            WriteOp::Set { key, .. }
            | WriteOp::GetDel { key }
            | WriteOp::GetEx { key, .. }
            | WriteOp::IncrBy { key, .. }
            | WriteOp::IncrByFloat { key, .. }
            | WriteOp::Append { key, .. }
            | WriteOp::SetRange { key, .. }
            | WriteOp::Expire { key, .. }
            | WriteOp::Persist { key } => vec![key],
            WriteOp::Del { keys } | WriteOp::PurgeExpired { keys } => keys.iter().collect(),
            WriteOp::MSet { pairs, .. } => pairs.iter().map(|(k, _)| k).collect(),
            WriteOp::FlushGroup => Vec::new(),
            WriteOp::Move { src, dst, .. } => vec![src, dst],
            WriteOp::PutRecord { key, .. }
            | WriteOp::SetBit { key, .. }
            | WriteOp::BitField { key, .. } => vec![key],
            WriteOp::BitOp { dst, keys, .. } => std::iter::once(dst).chain(keys).collect(),
            WriteOp::Coll(c) => c.keys(),
        }
    }

    /// Whether applying this op removes every key of the group (done by the
    /// state machine with a range delete, before the entry's other changes).
    pub fn clears_group(&self) -> bool {
        matches!(self, WriteOp::FlushGroup)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReadOp {
    Get {
        key: Bytes,
    },
    /// EXISTS / TOUCH: how many of the keys exist (a key named twice counts
    /// twice).
    Exists {
        keys: Vec<Bytes>,
    },
    /// MGET: one bulk or nil per key, in order.
    MGet {
        keys: Vec<Bytes>,
    },
    StrLen {
        key: Bytes,
    },
    GetRange {
        key: Bytes,
        start: i64,
        end: i64,
    },
    /// TTL (`ms: false`, seconds rounded) or PTTL.
    Ttl {
        key: Bytes,
        ms: bool,
    },
    /// TYPE: `string` or `none`.
    Type {
        key: Bytes,
    },
    /// One page of the group's keys, in key order, strictly after `after`
    /// (empty: from the start). At most `count` stored keys are examined
    /// (the node clamps it to [`MAX_SCAN_COUNT`]), and the page also ends
    /// once its keys reach the node's reply limit; expired keys and keys
    /// not matching `pattern` are skipped. Served by the host from an
    /// iterator over the group's range, filtered by [`super::apply::scan_page`]. Reply:
    /// `[Bulk(next), Array(keys)]` where `next` is the last key examined,
    /// or nil when the group is exhausted.
    Scan {
        after: Bytes,
        count: u64,
        pattern: Option<Bytes>,
    },
    /// DBSIZE: live keys in the group (exact: reads every key).
    DbSize,
    /// The keys the group stores, from the counter the state machine keeps
    /// as it applies (no scan; expired keys not yet purged count, as in
    /// Redis's INFO keyspace). For INFO. Reply: `Int`.
    KeyCount,
    /// A read of a hash or a set ([`super::coll`]).
    Coll(CollRead),
    /// EXPIRETIME (`ms: false`, Unix seconds) or PEXPIRETIME: the absolute
    /// deadline, -1 without expiry, -2 when absent.
    ExpireTime {
        key: Bytes,
        ms: bool,
    },
    /// OBJECT ENCODING / FREQ / IDLETIME / REFCOUNT of a key: nil when
    /// absent.
    Object {
        key: Bytes,
        field: ObjectField,
    },
    /// SCAN ... TYPE: [`ReadOp::Scan`] counting only keys of one type
    /// (`string`, `hash`, `set`, `zset`, `list`; any other name matches
    /// nothing, as in Redis). Rows of other types count as examined.
    ScanType {
        after: Bytes,
        count: u64,
        pattern: Option<Bytes>,
        type_name: String,
    },
    GetBit {
        key: Bytes,
        offset: u64,
    },
    BitCount {
        key: Bytes,
        range: Option<BitRange>,
    },
    /// BITPOS (`end_given`: an explicit end was given).
    BitPos {
        key: Bytes,
        bit: bool,
        range: Option<BitRange>,
        end_given: bool,
    },
    /// BITFIELD or BITFIELD_RO with only GETs: an array of the values.
    BitField {
        key: Bytes,
        ops: Vec<FieldOp>,
    },
}

/// What OBJECT asks of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectField {
    Encoding,
    Freq,
    IdleTime,
    RefCount,
}

impl ReadOp {
    /// The keys the read looks at (none for whole-group reads).
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            ReadOp::Get { key }
            | ReadOp::StrLen { key }
            | ReadOp::GetRange { key, .. }
            | ReadOp::Ttl { key, .. }
            | ReadOp::Type { key }
            | ReadOp::ExpireTime { key, .. }
            | ReadOp::Object { key, .. }
            | ReadOp::GetBit { key, .. }
            | ReadOp::BitCount { key, .. }
            | ReadOp::BitPos { key, .. }
            | ReadOp::BitField { key, .. } => vec![key],
            ReadOp::Exists { keys } | ReadOp::MGet { keys } => keys.iter().collect(),
            ReadOp::Scan { .. } | ReadOp::ScanType { .. } | ReadOp::DbSize | ReadOp::KeyCount => {
                Vec::new()
            }
            ReadOp::Coll(c) => c.keys(),
        }
    }
}

/// What a Raft log entry of a shard carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LogCmd {
    Write(WriteCmd),
    Txn(TxnEntry),
    /// Plain writes of several clients proposed together by the leader
    /// (`shard::proposer`): applied in order, each as if it were its own
    /// entry; the reply is an array of their replies.
    Batch(Vec<WriteCmd>),
    /// Plain writes and one-phase transactions (a router's pipelines) of
    /// several clients proposed together by the leader: [`LogCmd::Batch`]
    /// when some of them are transactions. Applied in order, each as if it
    /// were its own entry; the reply is an array of their replies.
    Mixed(Vec<Proposal>),
}

/// One client's part of a [`LogCmd::Mixed`] entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Proposal {
    Write(WriteCmd),
    Txn(TxnEntry),
}

impl Proposal {
    /// The bytes of keys and values it carries (the proposer's budget).
    pub fn value_len(&self) -> usize {
        match self {
            Proposal::Write(cmd) => cmd.op.value_len(),
            Proposal::Txn(t) => t.value_len(),
        }
    }
}

/// A short summary for openraft's log lines (never the values).
impl std::fmt::Display for LogCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogCmd::Write(_) => write!(f, "write"),
            LogCmd::Txn(_) => write!(f, "txn"),
            LogCmd::Batch(writes) => write!(f, "batch of {}", writes.len()),
            LogCmd::Mixed(parts) => write!(f, "mixed batch of {}", parts.len()),
        }
    }
}

/// A shard's answer, turned into a RESP reply by the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OpReply {
    Ok,
    Nil,
    Int(i64),
    Bulk(Bytes),
    /// A simple string (`+string` for TYPE).
    Status(String),
    Array(Vec<OpReply>),
    /// A Redis error text with its prefix (`ERR ...`, `WRONGTYPE ...`).
    Error(String),
    /// A map (RESP3 `%`; RESP2 a flat array of keys and values): HGETALL.
    Map(Vec<(OpReply, OpReply)>),
    /// A set (RESP3 `~`; RESP2 an array): SMEMBERS, SINTER...
    Set(Vec<OpReply>),
    /// Pairs (RESP3 an array of two-element arrays; RESP2 one flat
    /// array): HRANDFIELD ... WITHVALUES, ZRANGE ... WITHSCORES.
    Pairs(Vec<(OpReply, OpReply)>),
    /// A double (RESP3 `,`; RESP2 a bulk string): ZSCORE.
    Double(f64),
    /// A null array (RESP2 `*-1`; RESP3 `_`): ZMPOP with nothing to pop.
    NilArray,
    /// A boolean (RESP3 `#t`/`#f`; RESP2 1/0): a script's Lua boolean.
    Bool(bool),
    /// Verbatim text (RESP3 `=`; RESP2 a bulk string): a script's reply.
    Verbatim(String),
}

impl OpReply {
    /// Bytes of this reply in RESP2 (what the router will send), computed
    /// without encoding it.
    pub fn resp_size(&self) -> usize {
        // Type byte, a number, CRLF.
        let head = |n: usize| 3 + n.checked_ilog10().unwrap_or(0) as usize + 1;
        match self {
            OpReply::Ok => 5,
            OpReply::Nil | OpReply::NilArray | OpReply::Bool(_) => 5,
            OpReply::Verbatim(s) => head(s.len() + 4) + s.len() + 6,
            OpReply::Double(_) => 32,
            OpReply::Int(n) => head(n.unsigned_abs() as usize) + 1,
            OpReply::Bulk(b) => head(b.len()) + b.len() + 2,
            OpReply::Status(s) | OpReply::Error(s) => s.len() + 3,
            OpReply::Array(items) | OpReply::Set(items) => {
                head(items.len()) + items.iter().map(OpReply::resp_size).sum::<usize>()
            }
            OpReply::Map(pairs) | OpReply::Pairs(pairs) => {
                head(pairs.len() * 2)
                    + pairs
                        .iter()
                        .map(|(k, v)| k.resp_size() + v.resp_size())
                        .sum::<usize>()
            }
        }
    }
}

pub const ERR_NOT_INTEGER: &str = "ERR value is not an integer or out of range";

pub const ERR_OVERFLOW: &str = "ERR increment or decrement would overflow";

pub const ERR_NOT_FLOAT: &str = "ERR value is not a valid float";

pub const ERR_NAN_INF: &str = "ERR increment would produce NaN or Infinity";

pub const ERR_TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// Most stored keys one SCAN page examines, whatever COUNT asks (SCAN's
/// COUNT is a hint; KEYS walks a group page by page).
pub const MAX_SCAN_COUNT: u64 = 100_000;

/// One queued operation of a transaction, as this shard runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TxnOp {
    Write(WriteOp),
    Read(ReadOp),
}

impl TxnOp {
    pub fn keys(&self) -> Vec<Bytes> {
        match self {
            TxnOp::Write(w) => w.keys().into_iter().cloned().collect(),
            TxnOp::Read(r) => r.keys().into_iter().cloned().collect(),
        }
    }
}

/// A WATCHed key and the version it had (0: absent).
pub type Watch = (Bytes, u64);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TxnCmd {
    OnePhase {
        ops: Vec<TxnOp>,
        watches: Vec<Watch>,
    },
    Prepare {
        txn_id: u64,
        ops: Vec<TxnOp>,
        watches: Vec<Watch>,
    },
    Commit {
        txn_id: u64,
    },
    Abort {
        txn_id: u64,
    },
}

/// A transaction log entry, stamped by its proposer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxnEntry {
    pub now_ms: u64,
    pub cmd: TxnCmd,
}
