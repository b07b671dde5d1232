//! Keyspace notifications (`notify-keyspace-events`): which events a write
//! makes, and their publication by the shard's leader.
//!
//! This module owns the event names and classes, Redis's text form of the
//! setting, the pure function from an applied write to its events, and the
//! [`Publisher`] that hands them to the group's Pub/Sub registry.
//! * The setting is cluster-wide, in etcd at `settings/notify-keyspace-events`
//!   (Redis's text, as CONFIG GET shows it). Routers write it (CONFIG SET);
//!   every node follows it into one [`KeyspaceEvents`] shared by its groups.
//! * Apply stays pure: [`apply_notified`] runs [`apply_op`] and, only when
//!   notifications are on, reads the keys' records before and after and
//!   returns the events as data ([`Event`]). With the setting off (the
//!   default) it is [`apply_op`] and one comparison.
//! * Only the leader publishes: after a batch is applied and written, the
//!   state machine calls [`Publisher::publish`], which does nothing on a
//!   replica that does not lead or has no router listening. The messages go
//!   to the group's own [`super::pubsub::Registry`], as PUBLISH's do:
//!   routers send `__keyspace@<db>__:<key>` interest to the key's shard and
//!   `__keyevent@<db>__:<event>` interest to every shard of the table.
//! * `<db>` is the table's index (TABLE.USE / SELECT), from the node's
//!   mirror of the table records.

use openraft::async_runtime::WatchReceiver;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use openraft::ServerState;

use super::apply::apply_op;
use super::coll::{CollWrite, HSetReply};
use super::command::{Expiry, MoveMode, OpReply, SetCond, WriteCmd, WriteOp};
use super::elements::{KeyView, SetOp};
use super::list::{End, LWrite};
use super::pubsub::{Registry, KIND_CHANNEL};
use super::types::Metrics;
use super::value::Stored;
use super::zset::{ZBy, ZWrite};

/// `K`: `__keyspace@<db>__:<key>` messages.
pub const KEYSPACE: u32 = 1 << 0;
/// `E`: `__keyevent@<db>__:<event>` messages.
pub const KEYEVENT: u32 = 1 << 1;
/// `g`: DEL, EXPIRE, RENAME... (type-independent).
pub const GENERIC: u32 = 1 << 2;
/// `$`: string commands.
pub const STRING: u32 = 1 << 3;
/// `l`: list commands.
pub const LIST: u32 = 1 << 4;
/// `s`: set commands.
pub const SET: u32 = 1 << 5;
/// `h`: hash commands.
pub const HASH: u32 = 1 << 6;
/// `z`: sorted set commands.
pub const ZSET: u32 = 1 << 7;
/// `x`: a key found expired and deleted.
pub const EXPIRED: u32 = 1 << 8;
/// `e`: evicted (shoal evicts nothing: accepted, never sent).
pub const EVICTED: u32 = 1 << 9;
/// `t`: streams (shoal has none: accepted, never sent).
pub const STREAM: u32 = 1 << 10;
/// `m`: key misses (accepted, not sent: reads are not Raft entries).
pub const KEY_MISS: u32 = 1 << 11;
/// `d`: module events (no modules: accepted, never sent).
pub const MODULE: u32 = 1 << 13;
/// `n`: a key added to the keyspace.
pub const NEW: u32 = 1 << 14;
/// `A`: `g$lshzxetd`, as in Redis 7.
pub const ALL: u32 =
    GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

/// The error of a setting with a character Redis does not know.
pub const ERR_FLAGS: &str = "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.";

/// Redis's `keyspaceEventsStringToFlags`: the flags of `text`, or `None`
/// for a character that names no class.
pub fn parse_flags(text: &[u8]) -> Option<u32> {
    let mut flags = 0;
    for c in text {
        flags |= match c {
            b'A' => ALL,
            b'g' => GENERIC,
            b'$' => STRING,
            b'l' => LIST,
            b's' => SET,
            b'h' => HASH,
            b'z' => ZSET,
            b'x' => EXPIRED,
            b'e' => EVICTED,
            b'K' => KEYSPACE,
            b'E' => KEYEVENT,
            b't' => STREAM,
            b'm' => KEY_MISS,
            b'd' => MODULE,
            b'n' => NEW,
            _ => return None,
        };
    }
    Some(flags)
}

/// The flags of the value stored in etcd (0 when absent; an unreadable
/// value is logged and counts as off).
pub fn stored_flags(value: Option<&[u8]>) -> u32 {
    let Some(v) = value else { return 0 };
    parse_flags(v).unwrap_or_else(|| {
        tracing::warn!(value = %String::from_utf8_lossy(v), "unreadable notify-keyspace-events in etcd: notifications off");
        0
    })
}

/// Redis's `keyspaceEventsFlagsToString`: the form CONFIG GET shows.
pub fn format_flags(flags: u32) -> String {
    let mut s = String::new();
    if flags & ALL == ALL {
        s.push('A');
    } else {
        for (bit, c) in [
            (GENERIC, 'g'),
            (STRING, '$'),
            (LIST, 'l'),
            (SET, 's'),
            (HASH, 'h'),
            (ZSET, 'z'),
            (EXPIRED, 'x'),
            (EVICTED, 'e'),
            (STREAM, 't'),
            (MODULE, 'd'),
            (NEW, 'n'),
        ] {
            if flags & bit != 0 {
                s.push(c);
            }
        }
    }
    for (bit, c) in [(KEYSPACE, 'K'), (KEYEVENT, 'E'), (KEY_MISS, 'm')] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// The flags that make messages: none unless `K` or `E` is set, as in
/// Redis.
pub fn effective(flags: u32) -> u32 {
    if flags & (KEYSPACE | KEYEVENT) == 0 {
        0
    } else {
        flags
    }
}

/// One keyspace event: its class, Redis's name for it and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub class: u32,
    pub name: &'static str,
    pub key: Bytes,
}

/// The prefix of a keyspace channel, `__keyspace@<db>__:`, and the key
/// after it; `None` for any other channel.
pub fn keyspace_channel_key(channel: &[u8]) -> Option<&[u8]> {
    let rest = channel.strip_prefix(b"__keyspace@")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    rest[digits..].strip_prefix(b"__:")
}

/// Whether `channel` is a key-event channel, `__keyevent@<db>__:<event>`,
/// whose messages come from every shard of the table.
pub fn is_keyevent_channel(channel: &[u8]) -> bool {
    let Some(rest) = channel.strip_prefix(b"__keyevent@") else {
        return false;
    };
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    digits > 0 && rest[digits..].starts_with(b"__:")
}

/// Apply `cmd` over `view` as [`apply_op`] does; when `flags` (already
/// [`effective`]) is not 0, also append the events it made, in Redis's
/// order, that `flags` asks for. Pure: the events are decided from the
/// command, its reply and the keys' records before and after.
pub fn apply_notified(
    cmd: &WriteCmd,
    index: u64,
    view: &mut dyn KeyView,
    flags: u32,
    out: &mut Vec<Event>,
) -> OpReply {
    // The whole-record writes of a command whose keys span shards make no
    // events (docs/ARCHITECTURE.md, "Keyspace notifications").
    let whole_record = matches!(
        cmd.op,
        WriteOp::PutRecord { .. } | WriteOp::Coll(CollWrite::Replace { .. })
    );
    if flags == 0 || whole_record {
        return apply_op(cmd, index, view);
    }
    let mut keys: Vec<Bytes> = Vec::new();
    for k in cmd.op.keys() {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    let before: Vec<Option<Stored>> = keys.iter().map(|k| view.get(k).ok().flatten()).collect();
    let reply = apply_op(cmd, index, view);
    if matches!(reply, OpReply::Error(_)) {
        return reply;
    }
    let after: Vec<Option<Stored>> = keys.iter().map(|k| view.get(k).ok().flatten()).collect();
    let states = States {
        keys: &keys,
        before: &before,
        after: &after,
        now: cmd.now_ms,
    };
    let mut events = Vec::new();
    states.expired(&mut events);
    let mut own = Vec::new();
    write_events(cmd, &reply, &states, &mut own);
    states.created(cmd, &reply, &mut own);
    events.extend(own);
    out.extend(events.into_iter().filter(|e| e.class & flags != 0));
    reply
}

/// The records of a write's keys before and after it.
struct States<'a> {
    keys: &'a [Bytes],
    before: &'a [Option<Stored>],
    after: &'a [Option<Stored>],
    now: u64,
}

impl States<'_> {
    fn at(&self, key: &[u8]) -> Option<usize> {
        self.keys.iter().position(|k| k[..] == *key)
    }

    fn live_before(&self, key: &[u8]) -> bool {
        self.at(key)
            .and_then(|i| self.before[i].as_ref())
            .is_some_and(|v| v.live_at(self.now))
    }

    fn live_after(&self, key: &[u8]) -> bool {
        self.at(key)
            .and_then(|i| self.after[i].as_ref())
            .is_some_and(|v| v.live_at(self.now))
    }

    fn ttl_before(&self, key: &[u8]) -> u64 {
        self.at(key)
            .and_then(|i| self.before[i].as_ref())
            .map_or(0, |v| v.expire_at_ms)
    }

    /// A key found expired and replaced or removed: "expired", as Redis's
    /// key lookup sends it before the command's own events.
    fn expired(&self, out: &mut Vec<Event>) {
        for (i, key) in self.keys.iter().enumerate() {
            let (b, a) = (&self.before[i], &self.after[i]);
            let expired = b.as_ref().is_some_and(|v| !v.live_at(self.now));
            let replaced = match (b, a) {
                (Some(b), Some(a)) => a.version != b.version || a.expire_at_ms != b.expire_at_ms,
                (Some(_), None) => true,
                _ => false,
            };
            if expired && replaced {
                out.push(ev(EXPIRED, "expired", key));
            }
        }
    }

    /// A key that did not exist and does now: "new", where Redis's `dbAdd`
    /// sends it, just before the first event of the command on that key.
    /// RENAME and COPY delete their destination and add it again, before
    /// anything else: "new" first, even over an existing key.
    fn created(&self, cmd: &WriteCmd, reply: &OpReply, own: &mut Vec<Event>) {
        let first = match &cmd.op {
            WriteOp::Move { src, dst, .. } if src != dst && positive(reply) => Some(dst),
            _ => None,
        };
        for (i, key) in self.keys.iter().enumerate() {
            let was = self.before[i].as_ref().is_some_and(|v| v.live_at(self.now));
            let is = self.after[i].as_ref().is_some_and(|v| v.live_at(self.now));
            if (was || !is) && first != Some(key) {
                continue;
            }
            let at = if first == Some(key) {
                0
            } else {
                own.iter().position(|e| e.key == *key).unwrap_or(own.len())
            };
            own.insert(at, ev(NEW, "new", key));
        }
    }

    /// `name` on `key`, then "del" if the write emptied it.
    fn then_del(&self, class: u32, name: &'static str, key: &Bytes, out: &mut Vec<Event>) {
        out.push(ev(class, name, key));
        if self.live_before(key) && !self.live_after(key) {
            out.push(ev(GENERIC, "del", key));
        }
    }

    /// A STORE command's result at `dst`: `name` when it holds one, "del"
    /// when it was removed.
    fn stored(&self, class: u32, name: &'static str, dst: &Bytes, out: &mut Vec<Event>) {
        if self.live_after(dst) {
            out.push(ev(class, name, dst));
        } else if self.live_before(dst) {
            out.push(ev(GENERIC, "del", dst));
        }
    }
}

fn ev(class: u32, name: &'static str, key: &Bytes) -> Event {
    Event {
        class,
        name,
        key: key.clone(),
    }
}

fn positive(reply: &OpReply) -> bool {
    match reply {
        OpReply::Int(n) => *n > 0,
        OpReply::Nil | OpReply::NilArray | OpReply::Error(_) => false,
        OpReply::Array(v) => !v.is_empty(),
        _ => true,
    }
}

fn end_name(end: End, pop: bool) -> &'static str {
    match (end, pop) {
        (End::Left, true) => "lpop",
        (End::Right, true) => "rpop",
        (End::Left, false) => "lpush",
        (End::Right, false) => "rpush",
    }
}

/// The key a multi-key pop (LMPOP, ZMPOP) answered for.
fn popped_key(reply: &OpReply) -> Option<&Bytes> {
    match reply {
        OpReply::Array(v) => match v.first() {
            Some(OpReply::Bulk(k)) => Some(k),
            _ => None,
        },
        _ => None,
    }
}

/// The events of one applied write (not an error), as Redis 7's
/// commands send them with `notifyKeyspaceEvent`.
fn write_events(cmd: &WriteCmd, reply: &OpReply, s: &States<'_>, out: &mut Vec<Event>) {
    match &cmd.op {
        WriteOp::Set {
            key, expiry, cond, ..
        } => {
            let allowed = match cond {
                SetCond::Always => true,
                SetCond::IfAbsent => !s.live_before(key),
                SetCond::IfPresent => s.live_before(key),
            };
            if allowed {
                out.push(ev(STRING, "set", key));
                if let Expiry::At(_) = expiry {
                    out.push(ev(GENERIC, "expire", key));
                }
            }
        }
        WriteOp::MSet { pairs, nx } => {
            if !*nx || *reply == OpReply::Int(1) {
                for (k, _) in pairs {
                    out.push(ev(STRING, "set", k));
                }
            }
        }
        WriteOp::Del { keys } => {
            let mut seen: Vec<&Bytes> = Vec::new();
            for k in keys {
                if !seen.contains(&k) && s.live_before(k) {
                    out.push(ev(GENERIC, "del", k));
                }
                seen.push(k);
            }
        }
        WriteOp::PurgeExpired { .. } | WriteOp::FlushGroup => {}
        WriteOp::GetDel { key } => {
            if positive(reply) {
                out.push(ev(GENERIC, "del", key));
            }
        }
        WriteOp::GetEx { key, expiry } => {
            if !positive(reply) {
                return;
            }
            match expiry {
                Expiry::Keep => {}
                Expiry::Clear => {
                    if s.ttl_before(key) != 0 {
                        out.push(ev(GENERIC, "persist", key));
                    }
                }
                Expiry::At(_) if !s.live_after(key) => out.push(ev(GENERIC, "del", key)),
                Expiry::At(_) => out.push(ev(GENERIC, "expire", key)),
            }
        }
        WriteOp::IncrBy { key, .. } => out.push(ev(STRING, "incrby", key)),
        WriteOp::IncrByFloat { key, .. } => out.push(ev(STRING, "incrbyfloat", key)),
        WriteOp::Append { key, .. } => out.push(ev(STRING, "append", key)),
        WriteOp::SetRange { key, value, .. } => {
            if !value.is_empty() {
                out.push(ev(STRING, "setrange", key));
            }
        }
        WriteOp::Expire { key, .. } => {
            if positive(reply) {
                let name = if s.live_after(key) { "expire" } else { "del" };
                out.push(ev(GENERIC, name, key));
            }
        }
        WriteOp::Persist { key } => {
            if positive(reply) {
                out.push(ev(GENERIC, "persist", key));
            }
        }
        WriteOp::Move { src, dst, mode } => {
            if !positive(reply) || src == dst {
                return;
            }
            match mode {
                MoveMode::Rename | MoveMode::RenameNx => {
                    out.push(ev(GENERIC, "rename_from", src));
                    out.push(ev(GENERIC, "rename_to", dst));
                }
                MoveMode::Copy { .. } => out.push(ev(GENERIC, "copy_to", dst)),
            }
        }
        WriteOp::SetBit { key, .. } | WriteOp::BitField { key, .. } => {
            out.push(ev(STRING, "setbit", key))
        }
        WriteOp::BitOp { dst, .. } => s.stored(STRING, "set", dst, out),
        // Not reached (see apply_notified).
        WriteOp::PutRecord { .. } => {}
        WriteOp::Coll(c) => coll_events(c, reply, s, out),
    }
}

fn coll_events(c: &CollWrite, reply: &OpReply, s: &States<'_>, out: &mut Vec<Event>) {
    match c {
        CollWrite::HSet {
            key, reply: kind, ..
        } => {
            // HSETNX that found the field sets nothing.
            if *kind != HSetReply::IfAbsent || positive(reply) {
                out.push(ev(HASH, "hset", key));
            }
        }
        CollWrite::HDel { key, .. } => {
            if positive(reply) {
                s.then_del(HASH, "hdel", key, out);
            }
        }
        CollWrite::HIncrBy { key, .. } => out.push(ev(HASH, "hincrby", key)),
        CollWrite::HIncrByFloat { key, .. } => out.push(ev(HASH, "hincrbyfloat", key)),
        CollWrite::SAdd { key, .. } => {
            if positive(reply) {
                out.push(ev(SET, "sadd", key));
            }
        }
        CollWrite::SRem { key, .. } => {
            if positive(reply) {
                s.then_del(SET, "srem", key, out);
            }
        }
        CollWrite::SPop { key, .. } => {
            if positive(reply) {
                s.then_del(SET, "spop", key, out);
            }
        }
        CollWrite::SMove { src, dst, .. } => {
            if positive(reply) && src != dst {
                s.then_del(SET, "srem", src, out);
                out.push(ev(SET, "sadd", dst));
            }
        }
        CollWrite::SStore { op, dst, .. } => {
            let name = match op {
                SetOp::Inter => "sinterstore",
                SetOp::Union => "sunionstore",
                SetOp::Diff => "sdiffstore",
            };
            s.stored(SET, name, dst, out);
        }
        CollWrite::Z(z) => zset_events(z, reply, s, out),
        CollWrite::L(l) => list_events(l, reply, s, out),
        CollWrite::Replace { .. } => {}
    }
}

fn zset_events(z: &ZWrite, reply: &OpReply, s: &States<'_>, out: &mut Vec<Event>) {
    match z {
        ZWrite::ZAdd { key, flags, .. } => {
            // Redis sends it when a member was added or its score changed.
            // The reply counts additions only, so without NX (which never
            // updates) an unchanged ZADD sends it too.
            let changed = if flags.incr {
                *reply != OpReply::Nil
            } else {
                !flags.nx || positive(reply)
            };
            if changed {
                let name = if flags.incr { "zincr" } else { "zadd" };
                out.push(ev(ZSET, name, key));
            }
        }
        ZWrite::ZIncrBy { key, .. } => out.push(ev(ZSET, "zincr", key)),
        ZWrite::ZRem { key, .. } => {
            if positive(reply) {
                s.then_del(ZSET, "zrem", key, out);
            }
        }
        ZWrite::ZRemRange { key, by } => {
            if positive(reply) {
                let name = match by {
                    ZBy::Rank { .. } => "zremrangebyrank",
                    ZBy::Score { .. } => "zremrangebyscore",
                    ZBy::Lex { .. } => "zremrangebylex",
                };
                s.then_del(ZSET, name, key, out);
            }
        }
        ZWrite::ZPop { key, max, .. } => {
            if positive(reply) {
                s.then_del(ZSET, if *max { "zpopmax" } else { "zpopmin" }, key, out);
            }
        }
        ZWrite::ZMPop { max, .. } => {
            if let Some(key) = popped_key(reply) {
                s.then_del(ZSET, if *max { "zpopmax" } else { "zpopmin" }, key, out);
            }
        }
        ZWrite::ZRangeStore { dst, .. } => s.stored(ZSET, "zrangestore", dst, out),
        ZWrite::ZStore { dst, combine } => {
            let name = match combine.op {
                SetOp::Inter => "zinterstore",
                SetOp::Union => "zunionstore",
                SetOp::Diff => "zdiffstore",
            };
            s.stored(ZSET, name, dst, out);
        }
    }
}

fn list_events(l: &LWrite, reply: &OpReply, s: &States<'_>, out: &mut Vec<Event>) {
    match l {
        LWrite::Push { key, end, .. } => {
            if positive(reply) {
                out.push(ev(LIST, end_name(*end, false), key));
            }
        }
        LWrite::Pop { key, end, .. } => {
            if positive(reply) {
                s.then_del(LIST, end_name(*end, true), key, out);
            }
        }
        LWrite::MPop { end, .. } => {
            if let Some(key) = popped_key(reply) {
                s.then_del(LIST, end_name(*end, true), key, out);
            }
        }
        LWrite::Move { src, dst, from, to } => {
            if positive(reply) {
                out.push(ev(LIST, end_name(*to, false), dst));
                s.then_del(LIST, end_name(*from, true), src, out);
            }
        }
        LWrite::LSet { key, .. } => out.push(ev(LIST, "lset", key)),
        LWrite::LInsert { key, .. } => {
            if positive(reply) {
                out.push(ev(LIST, "linsert", key));
            }
        }
        LWrite::LRem { key, .. } => {
            if positive(reply) {
                s.then_del(LIST, "lrem", key, out);
            }
        }
        LWrite::LTrim { key, .. } => {
            if s.live_before(key) {
                s.then_del(LIST, "ltrim", key, out);
            }
        }
    }
}

/// The node's copy of the setting and of each table's index.
#[derive(Default)]
pub struct KeyspaceEvents {
    flags: AtomicU32,
    dbs: RwLock<HashMap<String, u32>>,
}

impl KeyspaceEvents {
    /// The setting, as [`effective`] flags.
    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    pub fn set_flags(&self, flags: u32) {
        self.flags.store(effective(flags), Ordering::Relaxed);
    }

    /// Replace the table name -> index map.
    pub fn set_tables(&self, dbs: HashMap<String, u32>) {
        if let Ok(mut m) = self.dbs.write() {
            *m = dbs;
        }
    }

    fn db(&self, table: &str) -> Option<u32> {
        self.dbs.read().ok()?.get(table).copied()
    }
}

/// One group's publisher of its events.
pub struct Publisher {
    pub gid: u64,
    pub table: String,
    pub events: Arc<KeyspaceEvents>,
    pub registry: Arc<Registry>,
    /// Whether this replica leads, set once its group runs: only its
    /// leader publishes.
    pub leads: OnceLock<Leads>,
}

/// How a [`Publisher`] learns whether its replica leads.
pub enum Leads {
    /// From the group's openraft metrics.
    Openraft(Metrics),
    /// From the batch loop's view of the group, on node `me`.
    Batch(Arc<super::batch::Role>, u64),
}

impl Leads {
    fn now(&self) -> bool {
        match self {
            Leads::Openraft(m) => m.borrow_watched().state == ServerState::Leader,
            Leads::Batch(role, me) => role.leader() == Some(*me),
        }
    }
}

impl Publisher {
    /// The flags an apply should collect events for: 0 when the setting is
    /// off or no router listens to this group here (so a follower, whose
    /// registry is empty, collects none).
    pub fn wanted(&self) -> u32 {
        let flags = self.events.flags();
        if flags == 0 || !self.registry.has_group(self.gid) {
            return 0;
        }
        flags
    }

    /// Publish `events` if this replica leads its group.
    pub fn publish(&self, events: &[Event]) {
        let flags = self.events.flags();
        if events.is_empty() || flags == 0 {
            return;
        }
        let leads = self.leads.get().is_some_and(Leads::now);
        if !leads {
            return;
        }
        let Some(db) = self.events.db(&self.table) else {
            return;
        };
        for e in events {
            if e.class & flags == 0 {
                continue;
            }
            let name = Bytes::from_static(e.name.as_bytes());
            if flags & KEYSPACE != 0 {
                let mut ch = format!("__keyspace@{db}__:").into_bytes();
                ch.extend_from_slice(&e.key);
                self.registry
                    .publish(self.gid, KIND_CHANNEL, &Bytes::from(ch), &name);
            }
            if flags & KEYEVENT != 0 {
                let ch = Bytes::from(format!("__keyevent@{db}__:{}", e.name));
                self.registry.publish(self.gid, KIND_CHANNEL, &ch, &e.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::command::ExpireCond;
    use crate::shard::elements::ReadView;
    use crate::shard::value::Corrupt;

    /// Key records in memory (string commands only).
    #[derive(Default)]
    struct Mem(HashMap<Bytes, Stored>);

    impl ReadView for Mem {
        fn get(&mut self, key: &[u8]) -> Result<Option<Stored>, Corrupt> {
            Ok(self.0.get(key).cloned())
        }
        fn sub_get(&mut self, _: &[u8], _: u64, _: &[u8]) -> Result<Option<Bytes>, Corrupt> {
            Ok(None)
        }
        fn sub_range(
            &mut self,
            _: &crate::shard::coll::Range<'_>,
        ) -> Result<Vec<(Bytes, Bytes)>, Corrupt> {
            Ok(Vec::new())
        }
    }

    impl KeyView for Mem {
        fn put(&mut self, key: &Bytes, v: Option<Stored>) {
            match v {
                Some(v) => self.0.insert(key.clone(), v),
                None => self.0.remove(key),
            };
        }
        fn put_sub(&mut self, _: &Bytes, _: u64, _: Bytes, _: Option<Bytes>) {}
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn set(key: &str, cond: SetCond) -> WriteOp {
        WriteOp::Set {
            key: b(key),
            value: b("v"),
            expiry: Expiry::Clear,
            cond,
            get: false,
        }
    }

    /// Apply `op` at time 1000 and name its events.
    fn run(m: &mut Mem, index: u64, op: WriteOp, flags: u32) -> Vec<&'static str> {
        let cmd = WriteCmd { now_ms: 1000, op };
        let mut out = Vec::new();
        apply_notified(&cmd, index, m, flags, &mut out);
        out.iter().map(|e| e.name).collect()
    }

    #[test]
    fn writes_return_their_events_as_redis_names_them() {
        let all = KEYEVENT | ALL | NEW;
        let mut m = Mem::default();
        assert_eq!(
            run(&mut m, 1, set("k", SetCond::Always), all),
            ["new", "set"]
        );
        assert_eq!(run(&mut m, 2, set("k", SetCond::IfAbsent), all), [""; 0]);
        assert_eq!(run(&mut m, 3, set("k", SetCond::IfPresent), all), ["set"]);
        // Only the classes asked for.
        assert_eq!(
            run(&mut m, 4, set("k", SetCond::Always), KEYEVENT | GENERIC),
            [""; 0]
        );
        let expire = |at_ms| WriteOp::Expire {
            key: b("k"),
            at_ms,
            cond: ExpireCond::default(),
        };
        assert_eq!(run(&mut m, 5, expire(5000), all), ["expire"]);
        assert_eq!(run(&mut m, 6, expire(10), all), ["del"]);
        // A key stored but expired: removed as "expired", never "del".
        m.0.insert(b("old"), Stored::string(1, 500, b("x")));
        let del = WriteOp::Del {
            keys: vec![b("old"), b("nope"), b("old")],
        };
        assert_eq!(run(&mut m, 7, del, all), ["expired"]);
        // Off: the same write, no events.
        assert_eq!(run(&mut m, 8, set("k", SetCond::Always), 0), [""; 0]);
        assert!(m.0.contains_key(&b("k")));
    }

    #[test]
    fn only_a_leader_with_listeners_publishes() {
        let events = Arc::new(KeyspaceEvents::default());
        let registry = Arc::new(Registry::new());
        let p = Publisher {
            gid: 1,
            table: "default".into(),
            events: events.clone(),
            registry: registry.clone(),
            leads: OnceLock::new(),
        };
        assert_eq!(p.wanted(), 0);
        events.set_flags(parse_flags(b"KEA").unwrap_or(0));
        events.set_tables(HashMap::from([("default".to_string(), 0)]));
        // No router listens here (a follower's registry is empty).
        assert_eq!(p.wanted(), 0);
        let reg = registry.register(1, 7, vec![], vec![(b("*"), 1)]);
        assert_ne!(p.wanted(), 0);
        // No Raft here that leads: nothing is queued for the router.
        p.publish(&[ev(STRING, "set", &b("k"))]);
        assert!(matches!(
            registry.poll(1, 7, reg, 0),
            Ok(crate::shard::pubsub::Polled::Wait(_))
        ));
    }

    #[test]
    fn flags_parse_and_print_as_redis_does() {
        assert_eq!(parse_flags(b""), Some(0));
        assert_eq!(
            parse_flags(b"KEA").map(format_flags).as_deref(),
            Some("AKE")
        );
        assert_eq!(
            parse_flags(b"Kg$").map(format_flags).as_deref(),
            Some("g$K")
        );
        assert_eq!(
            parse_flags(b"mnEzhsl$gxetdK").map(format_flags).as_deref(),
            Some("AKEm")
        );
        assert_eq!(parse_flags(b"KEq"), None);
        assert_eq!(effective(parse_flags(b"A").unwrap_or(0)), 0);
        assert_eq!(effective(KEYEVENT | GENERIC), KEYEVENT | GENERIC);
    }

    #[test]
    fn notification_channels_are_recognised() {
        assert_eq!(
            keyspace_channel_key(b"__keyspace@0__:foo"),
            Some(&b"foo"[..])
        );
        assert_eq!(keyspace_channel_key(b"__keyspace@12__:"), Some(&b""[..]));
        assert_eq!(keyspace_channel_key(b"__keyspace@__:foo"), None);
        assert_eq!(keyspace_channel_key(b"__keyevent@0__:set"), None);
        assert!(is_keyevent_channel(b"__keyevent@3__:del"));
        assert!(!is_keyevent_channel(b"__keyevent@x__:del"));
        assert!(!is_keyevent_channel(b"news"));
    }
}
