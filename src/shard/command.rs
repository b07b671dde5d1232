//! Shard commands as values, and the pure logic that applies them.
//!
//! A router turns a RESP command into a [`ShardRequest`]: a [`WriteCmd`]
//! (proposed to the shard's Raft log) or a [`ReadOp`] (served from a replica's
//! data after the consistency check the request asks for). Both travel over
//! gRPC as bincode and writes are stored in the Raft log as they are.
//!
//! **Determinism rule.** [`apply_write`] decides the outcome of a write from
//! the command (including the `now_ms` the *proposer* stamped into it) and the
//! current stored values only. It never reads the clock, a random source or
//! anything else local, so every replica that applies the same log reaches the
//! same data. Everything here is plain data in, plain data out: the storage
//! module feeds it values and writes back what it returns.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A stored value: the user bytes plus what the store needs to know about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Raft log index of the write that last changed this key.
    pub version: u64,
    /// Absolute expiry time in Unix milliseconds; 0 means no expiry.
    pub expire_at_ms: u64,
    pub data: Bytes,
}

impl Stored {
    /// Encoding in the data column family: version (8, BE) ++ expiry (8, BE) ++ bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.data.len());
        v.extend_from_slice(&self.version.to_be_bytes());
        v.extend_from_slice(&self.expire_at_ms.to_be_bytes());
        v.extend_from_slice(&self.data);
        v
    }

    pub fn decode(raw: &[u8]) -> Option<Stored> {
        if raw.len() < 16 {
            return None;
        }
        let version = u64::from_be_bytes(raw[0..8].try_into().ok()?);
        let expire_at_ms = u64::from_be_bytes(raw[8..16].try_into().ok()?);
        Some(Stored {
            version,
            expire_at_ms,
            data: Bytes::copy_from_slice(&raw[16..]),
        })
    }

    /// Whether the value is still alive at `now_ms`.
    pub fn live_at(&self, now_ms: u64) -> bool {
        self.expire_at_ms == 0 || self.expire_at_ms > now_ms
    }
}

/// What a request asks of a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardRequest {
    Write(WriteCmd),
    /// A transaction step (one-phase, PREPARE, COMMIT, ABORT): a Raft entry.
    Txn(super::txn::TxnEntry),
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
}

impl WriteOp {
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            WriteOp::Set { key, .. } => vec![key],
            WriteOp::Del { keys } => keys.iter().collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReadOp {
    Get {
        key: Bytes,
    },
    /// EXISTS: how many of the keys exist (a key named twice counts twice).
    Exists {
        keys: Vec<Bytes>,
    },
}

impl ReadOp {
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            ReadOp::Get { key } => vec![key],
            ReadOp::Exists { keys } => keys.iter().collect(),
        }
    }
}

/// What a Raft log entry of a shard carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LogCmd {
    Write(WriteCmd),
    Txn(super::txn::TxnEntry),
}

/// A shard's answer, turned into a RESP reply by the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OpReply {
    Ok,
    Nil,
    Int(i64),
    Bulk(Bytes),
    Array(Vec<OpReply>),
    /// A Redis error text with its prefix (`ERR ...`, `WRONGTYPE ...`).
    Error(String),
}

/// The changes one write makes: each key to a new value or to nothing.
pub type Changes = Vec<(Bytes, Option<Stored>)>;

/// Apply one write to the current values, deterministically.
///
/// `read` returns the stored value of a key as of just before this write
/// (the caller layers earlier writes of the same batch over the database).
/// `index` is the Raft log index of the entry: it becomes the version of every
/// value written. Returns the reply and the changes to make.
pub fn apply_write(
    cmd: &WriteCmd,
    index: u64,
    read: &mut dyn FnMut(&[u8]) -> Option<Stored>,
) -> (OpReply, Changes) {
    let now = cmd.now_ms;
    match &cmd.op {
        WriteOp::Set {
            key,
            value,
            expiry,
            cond,
            get,
        } => {
            let old = read(key).filter(|v| v.live_at(now));
            let allowed = match cond {
                SetCond::Always => true,
                SetCond::IfAbsent => old.is_none(),
                SetCond::IfPresent => old.is_some(),
            };
            let old_reply = || match &old {
                Some(v) => OpReply::Bulk(v.data.clone()),
                None => OpReply::Nil,
            };
            if !allowed {
                let reply = if *get { old_reply() } else { OpReply::Nil };
                return (reply, Vec::new());
            }
            let expire_at_ms = match expiry {
                Expiry::Clear => 0,
                Expiry::Keep => old.as_ref().map_or(0, |v| v.expire_at_ms),
                Expiry::At(t) => *t,
            };
            let reply = if *get { old_reply() } else { OpReply::Ok };
            // An expiry already in the past deletes the key (Redis semantics).
            let new = if expire_at_ms != 0 && expire_at_ms <= now {
                None
            } else {
                Some(Stored {
                    version: index,
                    expire_at_ms,
                    data: value.clone(),
                })
            };
            (reply, vec![(key.clone(), new)])
        }
        WriteOp::Del { keys } => {
            let mut removed = 0;
            let mut changes: Changes = Vec::new();
            for key in keys {
                if changes.iter().any(|(k, _)| k == key) {
                    continue;
                }
                // An expired value is purged too, but only a live one counts.
                if let Some(v) = read(key) {
                    if v.live_at(now) {
                        removed += 1;
                    }
                    changes.push((key.clone(), None));
                }
            }
            (OpReply::Int(removed), changes)
        }
    }
}

/// Serve a read from the current values. Pure, like [`apply_write`].
pub fn apply_read(
    op: &ReadOp,
    now_ms: u64,
    read: &mut dyn FnMut(&[u8]) -> Option<Stored>,
) -> OpReply {
    let mut live = |key: &[u8]| read(key).filter(|v| v.live_at(now_ms));
    match op {
        ReadOp::Get { key } => match live(key) {
            Some(v) => OpReply::Bulk(v.data),
            None => OpReply::Nil,
        },
        ReadOp::Exists { keys } => {
            OpReply::Int(keys.iter().filter(|k| live(k).is_some()).count() as i64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(db: &mut HashMap<Bytes, Stored>, index: u64, cmd: WriteCmd) -> OpReply {
        let snapshot = db.clone();
        let (reply, changes) = apply_write(&cmd, index, &mut |k| snapshot.get(k).cloned());
        for (k, v) in changes {
            match v {
                Some(v) => db.insert(k, v),
                None => db.remove(&k),
            };
        }
        reply
    }

    fn set(key: &str, value: &str, cond: SetCond, expiry: Expiry, now_ms: u64) -> WriteCmd {
        WriteCmd {
            now_ms,
            op: WriteOp::Set {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                expiry,
                cond,
                get: false,
            },
        }
    }

    #[test]
    fn set_nx_xx_and_versions() {
        let mut db = HashMap::new();
        assert_eq!(
            run(
                &mut db,
                1,
                set("k", "a", SetCond::IfPresent, Expiry::Clear, 0)
            ),
            OpReply::Nil
        );
        assert!(db.is_empty());
        assert_eq!(
            run(
                &mut db,
                2,
                set("k", "a", SetCond::IfAbsent, Expiry::Clear, 0)
            ),
            OpReply::Ok
        );
        assert_eq!(
            run(
                &mut db,
                3,
                set("k", "b", SetCond::IfAbsent, Expiry::Clear, 0)
            ),
            OpReply::Nil
        );
        assert_eq!(db[&Bytes::from("k")].data, Bytes::from("a"));
        assert_eq!(db[&Bytes::from("k")].version, 2);
        assert_eq!(
            run(
                &mut db,
                4,
                set("k", "c", SetCond::IfPresent, Expiry::Clear, 0)
            ),
            OpReply::Ok
        );
        assert_eq!(db[&Bytes::from("k")].version, 4);
    }

    #[test]
    fn expiry_is_decided_by_the_stamped_time() {
        let mut db = HashMap::new();
        run(
            &mut db,
            1,
            set("k", "a", SetCond::Always, Expiry::At(100), 50),
        );
        let get = ReadOp::Get {
            key: Bytes::from("k"),
        };
        assert_eq!(
            apply_read(&get, 99, &mut |k| db.get(k).cloned()),
            OpReply::Bulk(Bytes::from("a"))
        );
        assert_eq!(
            apply_read(&get, 100, &mut |k| db.get(k).cloned()),
            OpReply::Nil
        );
        // NX sees an expired key as absent.
        assert_eq!(
            run(
                &mut db,
                2,
                set("k", "b", SetCond::IfAbsent, Expiry::Keep, 150)
            ),
            OpReply::Ok
        );
        // KEEPTTL kept the (expired) deadline's absence: the old value was dead, so 0.
        assert_eq!(db[&Bytes::from("k")].expire_at_ms, 0);
        // An expiry in the past deletes.
        run(
            &mut db,
            3,
            set("k", "c", SetCond::Always, Expiry::At(10), 150),
        );
        assert!(db.is_empty());
    }

    #[test]
    fn del_counts_live_keys_once() {
        let mut db = HashMap::new();
        run(&mut db, 1, set("a", "1", SetCond::Always, Expiry::Clear, 0));
        run(&mut db, 2, set("b", "1", SetCond::Always, Expiry::At(5), 0));
        let del = WriteCmd {
            now_ms: 10,
            op: WriteOp::Del {
                keys: vec![
                    Bytes::from("a"),
                    Bytes::from("a"),
                    Bytes::from("b"),
                    Bytes::from("c"),
                ],
            },
        };
        assert_eq!(run(&mut db, 3, del), OpReply::Int(1));
        assert!(!db.contains_key(&Bytes::from("a")));
    }

    #[test]
    fn stored_roundtrip() {
        let v = Stored {
            version: 7,
            expire_at_ms: 99,
            data: Bytes::from_static(b"\x00\r\nbin"),
        };
        assert_eq!(Stored::decode(&v.encode()), Some(v));
        assert_eq!(Stored::decode(b"short"), None);
    }
}
