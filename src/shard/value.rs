//! A stored value ([`Stored`]: the user bytes, the log index of the last
//! write, the expiry) and its encoding; and [`Corrupt`], what a reader gets
//! for a record it cannot decode (never an absent key).

use super::codec::{self, CodecError, Format};
use super::command::*;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A key's record in the data column family: a string's bytes, or a
/// collection's metadata (its elements are rows of the `sub` column family,
/// see [`super::coll`]), plus what the store needs to know about either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Raft log index of the write that last changed this key (what WATCH
    /// compares).
    pub version: u64,
    /// Absolute expiry time in Unix milliseconds; 0 means no expiry.
    pub expire_at_ms: u64,
    /// A string's bytes; empty for a collection.
    pub data: Bytes,
    /// `None` for a string; a collection's metadata otherwise.
    pub coll: Option<Coll>,
}

/// The type of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    Hash,
    Set,
    ZSet,
    List,
}

impl Kind {
    /// The name TYPE answers.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hash => "hash",
            Kind::Set => "set",
            Kind::ZSet => "zset",
            Kind::List => "list",
        }
    }
}

/// A collection's metadata (kvrocks's model): its elements are rows keyed
/// by (key, `gen`, element), so a new generation makes every older row
/// invisible at once (DEL, overwrite and expiry are O(1); a background
/// pass removes the rows of dead generations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coll {
    pub kind: Kind,
    /// The log index of the write that created this generation, unique to
    /// it: the prefix of its element rows.
    pub gen: u64,
    /// Elements (fields, members, list items). Never 0: the last element
    /// removed removes the key.
    pub len: u64,
    /// A list's first index (elements live at `left .. left + len`);
    /// 0 for the other kinds.
    pub left: u64,
}

/// [`Stored`] as format version 1 wrote it (strings only).
#[derive(Deserialize)]
struct StoredV1 {
    version: u64,
    expire_at_ms: u64,
    data: Bytes,
}

impl Stored {
    /// Encoding in the data column family (and in a `ReadVersions` reply):
    /// the [`Format::Stored`] blob of the codec (header, then version and
    /// expiry as varints, then the length-prefixed bytes).
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(Format::Stored, self)
    }

    /// A value written by this encoding. Values written by builds before
    /// formats carried versions (version 8 B ++ expiry 8 B ++ bytes, whose
    /// first byte is 0 for any log index below 2^56) are refused as
    /// version 0, never misread.
    pub fn decode(raw: &[u8]) -> Result<Stored, CodecError> {
        let (version, payload) = codec::split(Format::Stored, raw)?;
        if version >= Format::Stored.same_type_since() {
            return codec::decode_payload(Format::Stored, version, payload);
        }
        let v1: StoredV1 = codec::decode_payload(Format::Stored, version, payload)?;
        Ok(Stored::string(v1.version, v1.expire_at_ms, v1.data))
    }

    /// A string value.
    pub fn string(version: u64, expire_at_ms: u64, data: Bytes) -> Stored {
        Stored {
            version,
            expire_at_ms,
            data,
            coll: None,
        }
    }

    /// The type TYPE names.
    pub fn type_name(&self) -> &'static str {
        self.coll.map_or("string", |c| c.kind.name())
    }

    /// The collection's metadata when it is of `kind`; `Err(())` when the
    /// key holds another type.
    pub fn coll_of(&self, kind: Kind) -> Result<Coll, WrongType> {
        match self.coll {
            Some(c) if c.kind == kind => Ok(c),
            _ => Err(WrongType),
        }
    }

    /// Whether the key holds a string.
    pub fn is_string(&self) -> bool {
        self.coll.is_none()
    }

    /// Whether the value is still alive at `now_ms`.
    pub fn live_at(&self, now_ms: u64) -> bool {
        self.expire_at_ms == 0 || self.expire_at_ms > now_ms
    }
}

/// A command met a key holding the wrong kind of value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongType;

/// Redis's reply for it.
pub const ERR_WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

impl WrongType {
    pub fn reply(self) -> OpReply {
        OpReply::Error(ERR_WRONGTYPE.into())
    }
}

/// Why an operation stopped without changing anything: the corruption it
/// met, or a key of the wrong type. Either becomes its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Corrupt(Corrupt),
    WrongType,
}

impl From<Corrupt> for Stop {
    fn from(c: Corrupt) -> Stop {
        Stop::Corrupt(c)
    }
}

impl From<WrongType> for Stop {
    fn from(_: WrongType) -> Stop {
        Stop::WrongType
    }
}

impl Stop {
    pub fn reply(&self) -> OpReply {
        match self {
            Stop::Corrupt(c) => c.reply(),
            Stop::WrongType => WrongType.reply(),
        }
    }
}

/// Where a corrupt record was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Place {
    /// A value in the data column family.
    Key(Bytes),
    /// The lock row of a key.
    Lock(Bytes),
    /// A prepared transaction's record.
    Prepared(u64),
    /// A Raft log entry.
    LogEntry(u64),
    /// An element row of a collection.
    Element(Bytes),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Key(k) => write!(f, "key {}", printable(k)),
            Place::Lock(k) => write!(f, "lock of key {}", printable(k)),
            Place::Prepared(t) => write!(f, "prepared transaction {t}"),
            Place::LogEntry(i) => write!(f, "log entry {i}"),
            Place::Element(k) => write!(f, "element of key {}", printable(k)),
        }
    }
}

/// A record of group `group` that does not decode: the reply of whatever
/// command met it (the shard layer's one data error; its text is the RESP
/// error, `ERR` prefix included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("ERR corrupt data at group {group} {place}")]
pub struct Corrupt {
    pub group: u64,
    pub place: Place,
}

impl Corrupt {
    /// Report a corrupt record (an error log line with the group and the
    /// place) and return the error to hand to the client.
    pub fn found(group: u64, place: Place, why: &dyn fmt::Display) -> Corrupt {
        tracing::error!(group, place = %place, "corrupt data: {why}");
        Corrupt { group, place }
    }

    /// Decode a stored value of `key`, or report it corrupt.
    pub fn check(group: u64, key: &[u8], raw: &[u8]) -> Result<Stored, Corrupt> {
        Stored::decode(raw)
            .map_err(|e| Corrupt::found(group, Place::Key(Bytes::copy_from_slice(key)), &e))
    }

    pub fn reply(&self) -> OpReply {
        OpReply::Error(self.to_string())
    }
}

/// Longest part of a key shown in an error or a log line.
const SHOWN_KEY_BYTES: usize = 128;

/// A key quoted for a one-line message, like Redis's `sdscatrepr`: control
/// and non-ASCII bytes escaped (so no CR/LF reaches a RESP error line), cut
/// after 128 bytes.
pub fn printable(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len().min(SHOWN_KEY_BYTES) + 2);
    out.push('"');
    for &c in key.iter().take(SHOWN_KEY_BYTES) {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(c as char),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push('"');
    if key.len() > SHOWN_KEY_BYTES {
        out.push_str(&format!("... ({} bytes)", key.len()));
    }
    out
}
