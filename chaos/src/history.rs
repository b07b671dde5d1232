//! The history of a chaos run: every client operation as one record (its
//! invocation and how it completed), plus the faults injected, with times in
//! microseconds on one monotonic clock started with the run. Each operation
//! also carries the wall clock's reading at both ends ([`Wall`]): the store
//! measures TTLs on the wall clock, and a virtual machine's wall clock can
//! step against its monotonic one (see [`crate::checks::locks`]).
//!
//! A record is an `invoke` event paired with its completion: `ok` (the reply
//! was seen), `fail` (an error reply that proves the operation did not take
//! effect — only ever used for reads, see below) or `unknown` (timeout,
//! connection lost, or an error after which the write may still apply).
//! Checkers treat an `unknown` write as possibly applied at any time after its
//! invocation, forever.
//!
//! Pure data: no I/O here, so checkers and their tests use it directly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What a client asked for. Values are integers so that INCR applies to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// Linearizable `GET key`.
    Get { key: String },
    /// `SET key value`.
    Set { key: String, value: i64 },
    /// `INCR key` (a read-modify-write).
    Incr { key: String },
    /// `GET key` on a connection in `READONLY` mode (eventual).
    RoGet { key: String },
    /// `GET key` after every fault healed (linearizable).
    FinalGet { key: String },
    /// WATCH from to; GET both; MULTI; SET from; SET to; EXEC.
    Transfer {
        from: String,
        to: String,
        amount: i64,
    },
    /// `MULTI; GET k1..kn; EXEC`: a consistent snapshot.
    Snapshot { keys: Vec<String> },
    /// `SMOVE src dst member` (the move workload: keys on different shards).
    SMove {
        src: String,
        dst: String,
        member: String,
    },
    /// `LMOVE src dst from to`, or `RPOPLPUSH src dst` when `rpoplpush`
    /// (the same move as `LMOVE src dst RIGHT LEFT`).
    LMove {
        src: String,
        dst: String,
        from: End,
        to: End,
        rpoplpush: bool,
    },
    /// `MULTI; SMEMBERS s1..; LRANGE l1.. 0 -1; EXEC` over the move
    /// workload's keys, sets first (the order of [`crate::checks::Population::keys`]).
    Contents { keys: Vec<String> },
    /// `SET key token NX PX ttl_ms` (the lock workload; `token` is unique
    /// per attempt).
    Acquire {
        key: String,
        token: String,
        ttl_ms: u64,
    },
    /// The lock's release script for `token` (EVALSHA, EVAL on NOSCRIPT);
    /// `invoke` is when it was sent, which ends the holder's interval.
    Release { key: String, token: String },
    /// The sliding-window limiter's script on `key`: admit `member` if
    /// fewer than `limit` were admitted in the last `window_us` µs of the
    /// store's clock.
    Admit {
        key: String,
        member: String,
        limit: u32,
        window_us: u64,
    },
}

/// An end of a list, as LMOVE names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    Left,
    Right,
}

impl End {
    pub fn arg(self) -> &'static str {
        match self {
            End::Left => "LEFT",
            End::Right => "RIGHT",
        }
    }
}

impl Call {
    /// The single key of a single-key call.
    pub fn key(&self) -> Option<&str> {
        match self {
            Call::Get { key }
            | Call::Set { key, .. }
            | Call::Incr { key }
            | Call::RoGet { key }
            | Call::FinalGet { key } => Some(key),
            Call::Transfer { .. }
            | Call::Snapshot { .. }
            | Call::SMove { .. }
            | Call::LMove { .. }
            | Call::Contents { .. }
            // Not registers: the register checkers and the final reads
            // leave them out (the script checkers read them directly).
            | Call::Acquire { .. }
            | Call::Release { .. }
            | Call::Admit { .. } => None,
        }
    }

    /// Whether the call may change data.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Call::Set { .. }
                | Call::Incr { .. }
                | Call::Transfer { .. }
                | Call::SMove { .. }
                | Call::LMove { .. }
                | Call::Acquire { .. }
                | Call::Release { .. }
                | Call::Admit { .. }
        )
    }
}

/// A successful reply, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", content = "v", rename_all = "snake_case")]
pub enum Ret {
    /// `+OK` of a SET.
    Done,
    /// A GET's value (nil as `None`) or INCR's new value.
    Value(Option<i64>),
    /// A snapshot's values, in the order of its keys.
    Values(Vec<Option<i64>>),
    /// A transfer whose EXEC committed.
    Committed,
    /// A transfer whose EXEC returned nil (a WATCHed key changed), or that
    /// was not attempted because the source balance was too small.
    Conflict,
    /// What a move moved: SMOVE's member when it answered 1, LMOVE's
    /// element; `None` for SMOVE 0 or LMOVE nil.
    Moved(Option<String>),
    /// A [`Call::Contents`] read: each key's members or elements, in the
    /// order of its keys.
    Elements(Vec<Vec<String>>),
    /// SET NX's answer: `+OK` (`true`) or nil.
    Acquired(bool),
    /// The release script's answer: 1 (`true`, the key held the token and
    /// was deleted) or 0.
    Released(bool),
    /// The limiter's verdict and the time the script used (µs of the
    /// store's clock, `TIME`).
    Admitted { admitted: bool, at_us: i64 },
    /// A reply that should be impossible (not an integer, wrong shape): every
    /// checker reports it.
    Bad(String),
}

/// How an operation completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Outcome {
    Ok(Ret),
    /// Did not take effect (reads only; a failed write is `Unknown`).
    Fail(String),
    /// May or may not have taken effect.
    Unknown(String),
}

/// One operation: invoked at `invoke`, completion seen at `complete` (for
/// `Unknown`, when the client gave up — the effect may come later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub id: u64,
    pub client: u32,
    pub call: Call,
    pub invoke: u64,
    pub complete: u64,
    pub outcome: Outcome,
    /// The wall clock at `invoke` and `complete` (absent in histories saved
    /// before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall: Option<Wall>,
}

/// Wall-clock readings (Unix microseconds) at an operation's two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wall {
    pub invoke: u64,
    pub complete: u64,
}

/// Now on the wall clock, in Unix microseconds (0 before 1970).
pub fn wall_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Op {
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self.outcome, Outcome::Unknown(_))
    }

    /// The returned value of an ok GET / INCR / READONLY GET.
    pub fn value(&self) -> Option<Option<i64>> {
        match &self.outcome {
            Outcome::Ok(Ret::Value(v)) => Some(*v),
            _ => None,
        }
    }
}

/// A fault the harness injected (or healed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEvent {
    pub at: u64,
    pub what: String,
}

/// A whole run: what the checkers read and what a violation file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
    pub faults: Vec<FaultEvent>,
}

impl History {
    /// Operations grouped by their single key (multi-key calls left out),
    /// each group in invocation order.
    pub fn by_key(&self) -> BTreeMap<&str, Vec<&Op>> {
        let mut out: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
        for op in &self.ops {
            if let Some(k) = op.call.key() {
                out.entry(k).or_default().push(op);
            }
        }
        for ops in out.values_mut() {
            ops.sort_by_key(|o| (o.invoke, o.id));
        }
        out
    }
}

/// Thread-safe recorder shared by the clients and the fault injector.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    inner: Arc<Mutex<History>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            inner: Arc::new(Mutex::new(History::default())),
            next_id: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Microseconds since the recorder was created (monotonic).
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Run `f` as operation `call` of `client` and record it.
    pub fn record(&self, client: u32, call: Call, f: impl FnOnce(&Call) -> Outcome) -> Op {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (invoke, wall_invoke) = (self.now(), wall_now_us());
        let outcome = f(&call);
        let (complete, wall_complete) = (self.now(), wall_now_us());
        let op = Op {
            id,
            client,
            call,
            invoke,
            complete,
            outcome,
            wall: Some(Wall {
                invoke: wall_invoke,
                complete: wall_complete,
            }),
        };
        self.lock().ops.push(op.clone());
        op
    }

    pub fn fault(&self, what: impl Into<String>) {
        let at = self.now();
        let what = what.into();
        tracing::info!(at_ms = at / 1000, "fault: {what}");
        self.lock().faults.push(FaultEvent { at, what });
    }

    pub fn snapshot(&self) -> History {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
