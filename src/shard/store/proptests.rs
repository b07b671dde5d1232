//! Property tests of [`StateMachine`] over a real RocksDB: random logs of
//! writes (every [`WriteOp`], plus transaction steps and blank entries) on
//! a handful of keys, so commands collide, with expiry deadlines around the
//! entries' clocks.
//!
//! * Determinism: the same log applied to two fresh state machines, cut
//!   into different apply batches, gives the same replies and the same
//!   rows (data, key locks, prepared transactions), applied state and key
//!   count; a state machine reopened from the database agrees.
//! * Snapshots: applying a prefix, building a snapshot, installing it on a
//!   fresh state machine (or one holding other data) and applying the rest
//!   gives what applying everything from the start gives.
//! * A model: plain writes checked against a `BTreeMap` model of Redis
//!   strings with lazy expiry (every reply, every stored row with its
//!   version and deadline, and GET/TTL/STRLEN/EXISTS/TYPE at the entries'
//!   clocks).
//!
//! All state machines of one test share one database (a fresh group id per
//! machine), opened once. Case counts are fixed and small (RocksDB writes);
//! failures are not persisted (`failure_persistence: None`).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{TestCaseError, TestError, TestRunner};

use super::*;
use crate::shard::apply::apply_read;
use crate::shard::coll::KeysOnly;
use crate::shard::command::{
    ExpireCond, Expiry, MoveMode, ObjectField, ReadOp, SetCond, WriteCmd, WriteOp,
};
use crate::shard::command::{TxnCmd, TxnEntry, TxnOp};

use crate::testing::proptest_config as config;

// ---------------------------------------------------------------------------
// The database the state machines of one test share.

struct Env {
    engine: Arc<Engine>,
    rt: tokio::runtime::Runtime,
    next_gid: AtomicU64,
    // Last: the database is closed before its directory goes.
    _dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Arc::new(Engine::open(dir.path(), false).expect("open RocksDB"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Env {
            engine,
            rt,
            next_gid: AtomicU64::new(1),
            _dir: dir,
        }
    }

    /// A state machine of a group never used before.
    async fn fresh(&self) -> Sm {
        let gid = self.next_gid.fetch_add(1, Ordering::Relaxed);
        self.open(gid).await
    }

    async fn open(&self, gid: u64) -> Sm {
        let sm = StateMachine::open(self.engine.clone(), gid)
            .await
            .expect("open state machine");
        Sm { gid, sm }
    }

    /// Run a proptest whose cases need the database; panics with the
    /// shrunk input on failure.
    fn run<S: Strategy>(
        &self,
        cases: u32,
        strategy: S,
        test: impl Fn(&Env, S::Value) -> Result<(), TestCaseError>,
    ) where
        S::Value: std::fmt::Debug,
    {
        let mut runner = TestRunner::new(config(cases));
        match runner.run(&strategy, |value| test(self, value)) {
            Ok(()) => {}
            Err(TestError::Fail(why, value)) => {
                panic!("{why}\nminimal failing input: {value:#?}")
            }
            Err(e) => panic!("{e}"),
        }
    }
}

struct Sm {
    gid: u64,
    sm: StateMachine,
}

/// What a group holds, as rows of the database (group prefix removed).
#[derive(Debug, PartialEq)]
struct Rows {
    data: Vec<(Vec<u8>, Vec<u8>)>,
    txn_state: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Sm {
    async fn apply(&mut self, entries: &[Entry]) -> Vec<OpReply> {
        self.sm.apply_batch(entries.to_vec()).await.expect("apply")
    }

    /// Apply `entries` in batches ending at `cuts`; every reply, in order.
    async fn apply_in_batches(&mut self, entries: &[Entry], cuts: &[usize]) -> Vec<OpReply> {
        let mut replies = Vec::new();
        let mut at = 0;
        for &end in cuts.iter().chain(std::iter::once(&entries.len())) {
            let end = end.clamp(at, entries.len());
            replies.extend(self.apply(&entries[at..end]).await);
            at = end;
        }
        replies
    }

    fn rows(&self, env: &Env) -> Rows {
        let view = env.engine.view();
        let strip = |rows: Vec<engine::Row>| {
            rows.into_iter()
                .map(|(k, v)| (k[8..].to_vec(), v.into_vec()))
                .collect()
        };
        let (start, end) = group_range(self.gid);
        let data = view.scan(Cf::Data, &start, &end, usize::MAX).expect("scan");
        let (start, end) = txn_state_range(self.gid);
        let txn = view
            .scan(Cf::State, &start, &end, usize::MAX)
            .expect("scan");
        Rows {
            data: strip(data),
            txn_state: strip(txn),
        }
    }

    /// The read `op` served at `now_ms` from what the group stores.
    fn read(&self, env: &Env, op: &ReadOp, now_ms: u64) -> OpReply {
        let view = env.engine.view();
        let gid = self.gid;
        apply_read(
            op,
            now_ms,
            usize::MAX,
            &mut KeysOnly(
                |k: &[u8]| match view.get(Cf::Data, &data_key(gid, k)).expect("get") {
                    Some(raw) => Corrupt::check(gid, k, &raw).map(Some),
                    None => Ok(None),
                },
            ),
        )
        .expect("no corruption")
    }

    /// Everything observable of the group's state: rows, applied state and
    /// the key count (which must be the number of data rows).
    async fn state(&mut self, env: &Env) -> Result<(Rows, Option<LogId>, i64), TestCaseError> {
        let rows = self.rows(env);
        let (applied, _) = self.sm.applied_state().await.expect("applied state");
        let count = self.sm.key_count().await.expect("key count");
        prop_assert_eq!(count, rows.data.len() as i64, "key count vs data rows");
        Ok((rows, applied, count))
    }
}

// ---------------------------------------------------------------------------
// Generators.

/// The entries' clocks are around here; deadlines straddle them.
const T: u64 = 1_000_000;

/// A few keys, so commands collide: the empty key and one of 0xff bytes
/// sit at the two ends of the group's range.
fn key() -> impl Strategy<Value = Bytes> {
    prop::sample::select(vec![&b"a"[..], b"b", b"c", b"", b"\xff\xff"]).prop_map(Bytes::from_static)
}

fn value() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "", "0", "1", "-1", "10", "x", "hello", "007", "1.5",
            "9223372036854775807", "-9223372036854775808",
        ])
        .prop_map(|s| Bytes::from_static(s.as_bytes())),
        1 => vec(any::<u8>(), 0..6).prop_map(Bytes::from),
    ]
}

fn deadline() -> impl Strategy<Value = u64> {
    T - 10..T + 80
}

fn expiry() -> impl Strategy<Value = Expiry> {
    prop_oneof![
        Just(Expiry::Clear),
        Just(Expiry::Keep),
        deadline().prop_map(Expiry::At),
    ]
}

fn set_cond() -> impl Strategy<Value = SetCond> {
    prop::sample::select(vec![SetCond::Always, SetCond::IfAbsent, SetCond::IfPresent])
}

fn expire_cond() -> impl Strategy<Value = ExpireCond> {
    prop_oneof![
        3 => Just(ExpireCond::default()),
        1 => (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(nx, xx, gt, lt)| ExpireCond { nx, xx, gt, lt }),
    ]
}

fn move_mode() -> impl Strategy<Value = MoveMode> {
    prop::sample::select(vec![
        MoveMode::Rename,
        MoveMode::RenameNx,
        MoveMode::Copy { replace: false },
        MoveMode::Copy { replace: true },
    ])
}

/// Plain writes; `float`: include INCRBYFLOAT (the model leaves it out);
/// `whole_group`: include FLUSHDB and the expiry purge.
fn write_op(float: bool, whole_group: bool) -> BoxedStrategy<WriteOp> {
    let mut ops: Vec<(u32, BoxedStrategy<WriteOp>)> = vec![
        (
            5,
            (key(), value(), expiry(), set_cond(), any::<bool>())
                .prop_map(|(key, value, expiry, cond, get)| WriteOp::Set {
                    key,
                    value,
                    expiry,
                    cond,
                    get,
                })
                .boxed(),
        ),
        (2, vec(key(), 0..4).prop_map(|keys| WriteOp::Del { keys }).boxed()),
        (
            2,
            (vec((key(), value()), 1..4), any::<bool>())
                .prop_map(|(pairs, nx)| WriteOp::MSet { pairs, nx })
                .boxed(),
        ),
        (1, key().prop_map(|key| WriteOp::GetDel { key }).boxed()),
        (
            1,
            (key(), expiry())
                .prop_map(|(key, expiry)| WriteOp::GetEx { key, expiry })
                .boxed(),
        ),
        (
            2,
            (key(), prop_oneof![4 => -3i64..4, 1 => Just(i64::MAX), 1 => Just(i64::MIN)])
                .prop_map(|(key, by)| WriteOp::IncrBy { key, by })
                .boxed(),
        ),
        (
            2,
            (key(), value(), 4u64..24)
                .prop_map(|(key, value, max_len)| WriteOp::Append {
                    key,
                    value,
                    max_len,
                })
                .boxed(),
        ),
        (
            2,
            (key(), 0u64..12, value(), 4u64..24)
                .prop_map(|(key, offset, value, max_len)| WriteOp::SetRange {
                    key,
                    offset,
                    value,
                    max_len,
                })
                .boxed(),
        ),
        (
            2,
            (
                key(),
                prop_oneof![4 => (T - 20..T + 80).prop_map(|t| t as i64), 1 => Just(-1i64), 1 => Just(i64::MAX)],
                expire_cond()
            )
                .prop_map(|(key, at_ms, cond)| WriteOp::Expire { key, at_ms, cond })
                .boxed(),
        ),
        (1, key().prop_map(|key| WriteOp::Persist { key }).boxed()),
        (
            2,
            (key(), key(), move_mode())
                .prop_map(|(src, dst, mode)| WriteOp::Move { src, dst, mode })
                .boxed(),
        ),
        (
            1,
            (key(), value(), prop_oneof![Just(0u64), deadline()])
                .prop_map(|(key, data, expire_at_ms)| WriteOp::PutRecord {
                    key,
                    record: Stored {
                        version: 999,
                        expire_at_ms,
                        data,
                        coll: None,
                    },
                })
                .boxed(),
        ),
    ];
    if float {
        ops.push((
            1,
            (
                key(),
                prop::sample::select(vec!["1", "-0.5", "1.5e3", "0.1", "1e308", "-1e308"]),
            )
                .prop_map(|(key, by)| WriteOp::IncrByFloat {
                    key,
                    by: Bytes::from_static(by.as_bytes()),
                })
                .boxed(),
        ));
    }
    if whole_group {
        ops.push((
            1,
            vec(key(), 0..4)
                .prop_map(|keys| WriteOp::PurgeExpired { keys })
                .boxed(),
        ));
        ops.push((1, Just(WriteOp::FlushGroup).boxed()));
    }
    proptest::strategy::Union::new_weighted(ops).boxed()
}

fn clock() -> impl Strategy<Value = u64> {
    // Not monotonic: routers stamp entries with their own clocks.
    T..T + 60
}

fn write_cmd(float: bool, whole_group: bool) -> impl Strategy<Value = WriteCmd> {
    (clock(), write_op(float, whole_group)).prop_map(|(now_ms, op)| WriteCmd { now_ms, op })
}

/// What one log entry carries.
#[derive(Debug, Clone)]
enum Step {
    Write(WriteCmd),
    Txn(TxnEntry),
    /// Writes the leader proposed together.
    Batch(Vec<WriteCmd>),
    /// Writes and transactions the leader proposed together.
    Mixed(Vec<Proposal>),
    Blank,
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        4 => write_op(true, false).prop_map(TxnOp::Write),
        1 => key().prop_map(|key| TxnOp::Read(ReadOp::Get { key })),
    ]
}

fn txn_entry() -> impl Strategy<Value = TxnEntry> {
    let txn_id = 1u64..4;
    let watches = || vec((key(), prop_oneof![Just(0u64), 1u64..40]), 0..2);
    let cmd = prop_oneof![
        2 => (vec(txn_op(), 1..4), watches())
            .prop_map(|(ops, watches)| TxnCmd::OnePhase { ops, watches }),
        3 => (txn_id.clone(), vec(txn_op(), 1..4), watches())
            .prop_map(|(txn_id, ops, watches)| TxnCmd::Prepare { txn_id, ops, watches }),
        2 => txn_id.clone().prop_map(|txn_id| TxnCmd::Commit { txn_id }),
        1 => txn_id.prop_map(|txn_id| TxnCmd::Abort { txn_id }),
    ];
    (clock(), cmd).prop_map(|(now_ms, cmd)| TxnEntry { now_ms, cmd })
}

/// A one-phase transaction without watches: what a router's pipeline
/// sends, and what applies the same inside a mixed batch as alone (a
/// watch compares versions, which a batch's parts share).
fn pipeline_txn() -> impl Strategy<Value = TxnEntry> {
    (clock(), vec(txn_op(), 1..4)).prop_map(|(now_ms, ops)| TxnEntry {
        now_ms,
        cmd: TxnCmd::OnePhase {
            ops,
            watches: Vec::new(),
        },
    })
}

fn proposal(any_txn: bool) -> BoxedStrategy<Proposal> {
    let txn = if any_txn {
        txn_entry().boxed()
    } else {
        pipeline_txn().boxed()
    };
    prop_oneof![
        2 => write_cmd(true, false).prop_map(Proposal::Write),
        1 => txn.prop_map(Proposal::Txn),
    ]
    .boxed()
}

/// Any step: plain writes mostly, transaction steps, blank entries.
fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => write_cmd(true, true).prop_map(Step::Write),
        3 => txn_entry().prop_map(Step::Txn),
        2 => vec(write_cmd(true, true), 1..5).prop_map(Step::Batch),
        2 => vec(proposal(true), 1..5).prop_map(Step::Mixed),
        1 => Just(Step::Blank),
    ]
}

/// The log of `steps`, indexes from 1.
fn entries(steps: &[Step]) -> Vec<Entry> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| Entry {
            log_id: crate::shard::types::log_id(1, 1, i as u64 + 1),
            payload: match s {
                Step::Write(w) => EntryPayload::Normal(LogCmd::Write(w.clone())),
                Step::Txn(t) => EntryPayload::Normal(LogCmd::Txn(t.clone())),
                Step::Batch(b) => EntryPayload::Normal(LogCmd::Batch(b.clone())),
                Step::Mixed(m) => EntryPayload::Normal(LogCmd::Mixed(m.clone())),
                Step::Blank => EntryPayload::Blank,
            },
        })
        .collect()
}

/// Batch boundaries in a log of `len` entries.
fn cuts_of(len: usize, picks: &[Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = picks.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

// ---------------------------------------------------------------------------
// Determinism and snapshots.

#[test]
fn the_same_log_gives_the_same_state_whatever_the_batches() {
    let env = Env::new();
    let strategy = (
        vec(step(), 1..48),
        vec(any::<Index>(), 0..8),
        vec(any::<Index>(), 0..8),
    );
    env.run(256, strategy, |env, (steps, picks_a, picks_b)| {
        env.rt.block_on(async {
            let log = entries(&steps);
            let mut a = env.fresh().await;
            let mut b = env.fresh().await;
            let replies_a = a
                .apply_in_batches(&log, &cuts_of(log.len(), &picks_a))
                .await;
            // b reads from SST files, not memory, from its second batch on:
            // its applies take the blocking path, a's mostly the inline one.
            let cuts_b = cuts_of(log.len(), &picks_b);
            let first_b = cuts_b.first().copied().unwrap_or(log.len());
            let mut replies_b = b.apply(&log[..first_b]).await;
            env.engine.flush().expect("flush");
            let rest: Vec<usize> = cuts_b.iter().map(|c| c.saturating_sub(first_b)).collect();
            replies_b.extend(b.apply_in_batches(&log[first_b..], &rest).await);
            prop_assert_eq!(replies_a.len(), log.len());
            prop_assert_eq!(&replies_a, &replies_b);
            let state_a = a.state(env).await?;
            prop_assert_eq!(&state_a, &b.state(env).await?);
            prop_assert_eq!(state_a.1.map(|l| l.index), Some(log.len() as u64));
            // What was written is what a restarted node loads.
            let mut reopened = env.open(a.gid).await;
            prop_assert_eq!(&reopened.state(env).await?, &state_a);
            Ok(())
        })
    });
}

/// `batched` (one entry) gives each of its parts the reply it gets as the
/// entry `one_by_one` gives it, and leaves the same values and expiries
/// (only the versions, the entry's index, differ).
async fn batched_is_one_by_one(
    env: &Env,
    one_by_one: &[Step],
    batched: Step,
) -> Result<(), TestCaseError> {
    let mut a = env.fresh().await;
    let mut b = env.fresh().await;
    let replies_a = a.apply(&entries(one_by_one)).await;
    let replies_b = b.apply(&entries(&[batched])).await;
    prop_assert_eq!(replies_b, vec![OpReply::Array(replies_a)]);
    let values = |rows: Rows| -> Vec<(Vec<u8>, Bytes, u64)> {
        rows.data
            .into_iter()
            .map(|(k, raw)| {
                let s = Stored::decode(&raw).expect("a stored value");
                (k, s.data, s.expire_at_ms)
            })
            .collect()
    };
    prop_assert_eq!(values(a.rows(env)), values(b.rows(env)));
    Ok(())
}

/// A batch entry is its writes one by one.
#[test]
fn a_batch_is_its_writes_one_by_one() {
    let env = Env::new();
    let strategy = vec(write_cmd(true, false), 1..12);
    env.run(256, strategy, |env, writes| {
        let one_by_one: Vec<Step> = writes.iter().cloned().map(Step::Write).collect();
        env.rt
            .block_on(batched_is_one_by_one(env, &one_by_one, Step::Batch(writes)))
    });
}

/// A mixed batch (plain writes and a pipeline's one-phase transactions
/// of several clients) is its parts one by one.
#[test]
fn a_mixed_batch_is_its_parts_one_by_one() {
    let env = Env::new();
    let strategy = vec(proposal(false), 1..12);
    env.run(256, strategy, |env, parts| {
        let one_by_one: Vec<Step> = parts
            .iter()
            .map(|p| match p {
                Proposal::Write(w) => Step::Write(w.clone()),
                Proposal::Txn(t) => Step::Txn(t.clone()),
            })
            .collect();
        env.rt
            .block_on(batched_is_one_by_one(env, &one_by_one, Step::Mixed(parts)))
    });
}

#[test]
fn a_snapshot_and_the_rest_of_the_log_give_the_same_state() {
    let env = Env::new();
    let strategy = (
        vec(step(), 1..40),
        any::<Index>(),
        vec(step(), 0..8),
        vec(any::<Index>(), 0..6),
    );
    env.run(256, strategy, |env, (steps, split, other, picks)| {
        let split = split.index(steps.len() + 1);
        env.rt.block_on(async {
            let log = entries(&steps);
            // Everything from the start.
            let mut full = env.fresh().await;
            let replies = full
                .apply_in_batches(&log, &cuts_of(log.len(), &picks))
                .await;
            // A prefix, then a snapshot of it.
            let mut source = env.fresh().await;
            source
                .apply_in_batches(&log[..split], &cuts_of(split, &picks))
                .await;
            let snapshot = source
                .sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await;
            let snapshot = snapshot.expect("build snapshot");
            prop_assert_eq!(
                snapshot.meta.last_log_id.map(|l| l.index),
                (split > 0).then_some(split as u64)
            );
            // Installed on a fresh replica, or on one that applied a shorter,
            // different log (openraft installs only snapshots past what a
            // replica applied).
            let mut target = env.fresh().await;
            let other: Vec<Step> = other.into_iter().take(split.saturating_sub(1)).collect();
            target.apply(&entries(&other)).await;
            target
                .sm
                .install_snapshot(&snapshot.meta, snapshot.snapshot)
                .await
                .expect("install snapshot");
            // The rest of the log, on the installed replica and on the source.
            let rest = &log[split..];
            let cuts = cuts_of(rest.len(), &picks);
            let target_replies = target.apply_in_batches(rest, &cuts).await;
            let source_replies = source.apply_in_batches(rest, &cuts).await;
            prop_assert_eq!(&target_replies[..], &replies[split..]);
            prop_assert_eq!(&source_replies[..], &replies[split..]);
            let want = full.state(env).await?;
            prop_assert_eq!(&target.state(env).await?, &want);
            prop_assert_eq!(&source.state(env).await?, &want);
            Ok(())
        })
    });
}

// ---------------------------------------------------------------------------
// The model: Redis strings with lazy expiry, written from Redis's rules.

#[derive(Debug, Clone, PartialEq)]
struct Row {
    data: Vec<u8>,
    /// 0: no expiry.
    expire_at_ms: u64,
    /// Index of the entry that last wrote the key.
    version: u64,
}

impl Row {
    fn live(&self, now: u64) -> bool {
        self.expire_at_ms == 0 || self.expire_at_ms > now
    }
}

#[derive(Debug, Default)]
struct Model {
    /// Stored rows, expired ones included until something removes them.
    rows: BTreeMap<Vec<u8>, Row>,
}

/// Redis `string2ll`: an optional `-`, digits without a leading zero, in
/// range.
fn redis_int(b: &[u8]) -> Option<i64> {
    if b == b"0" {
        return Some(0);
    }
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.first().is_none_or(|d| !(b'1'..=b'9').contains(d))
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn bulk(data: &[u8]) -> OpReply {
    OpReply::Bulk(Bytes::copy_from_slice(data))
}

fn error(text: &str) -> OpReply {
    OpReply::Error(text.into())
}

impl Model {
    fn live(&self, key: &[u8], now: u64) -> Option<&Row> {
        self.rows.get(key).filter(|r| r.live(now))
    }

    fn put(&mut self, key: &[u8], data: Vec<u8>, expire_at_ms: u64, version: u64) {
        let row = Row {
            data,
            expire_at_ms,
            version,
        };
        self.rows.insert(key.to_vec(), row);
    }

    /// Apply the write of entry `index`; its reply.
    fn apply(&mut self, index: u64, cmd: &WriteCmd) -> OpReply {
        let now = cmd.now_ms;
        match &cmd.op {
            WriteOp::Set {
                key,
                value,
                expiry,
                cond,
                get,
            } => {
                let old = self.live(key, now).cloned();
                let go = match cond {
                    SetCond::Always => true,
                    SetCond::IfAbsent => old.is_none(),
                    SetCond::IfPresent => old.is_some(),
                };
                let old_reply = || old.as_ref().map_or(OpReply::Nil, |r| bulk(&r.data));
                if !go {
                    return if *get { old_reply() } else { OpReply::Nil };
                }
                let reply = if *get { old_reply() } else { OpReply::Ok };
                let at = match expiry {
                    Expiry::Clear => 0,
                    Expiry::Keep => old.as_ref().map_or(0, |r| r.expire_at_ms),
                    Expiry::At(t) => *t,
                };
                if at != 0 && at <= now {
                    self.rows.remove(&key[..]);
                } else {
                    self.put(key, value.to_vec(), at, index);
                }
                reply
            }
            WriteOp::Del { keys } => {
                let mut seen = HashSet::new();
                let mut n = 0;
                for k in keys {
                    if seen.insert(k) {
                        if let Some(r) = self.rows.remove(&k[..]) {
                            n += r.live(now) as i64;
                        }
                    }
                }
                OpReply::Int(n)
            }
            WriteOp::MSet { pairs, nx } => {
                if *nx && pairs.iter().any(|(k, _)| self.live(k, now).is_some()) {
                    return OpReply::Int(0);
                }
                for (k, v) in pairs {
                    self.put(k, v.to_vec(), 0, index);
                }
                if *nx {
                    OpReply::Int(1)
                } else {
                    OpReply::Ok
                }
            }
            WriteOp::GetDel { key } => match self.live(key, now).cloned() {
                Some(r) => {
                    self.rows.remove(&key[..]);
                    bulk(&r.data)
                }
                None => OpReply::Nil,
            },
            WriteOp::GetEx { key, expiry } => {
                let Some(r) = self.live(key, now).cloned() else {
                    return OpReply::Nil;
                };
                match expiry {
                    Expiry::Keep => {}
                    Expiry::Clear if r.expire_at_ms == 0 => {}
                    Expiry::Clear => self.put(key, r.data.clone(), 0, index),
                    Expiry::At(t) if *t <= now => {
                        self.rows.remove(&key[..]);
                    }
                    Expiry::At(t) => self.put(key, r.data.clone(), *t, index),
                }
                bulk(&r.data)
            }
            WriteOp::IncrBy { key, by } => {
                let old = self.live(key, now).cloned();
                let current = match &old {
                    None => 0,
                    Some(r) => match redis_int(&r.data) {
                        Some(n) => n,
                        None => return error("ERR value is not an integer or out of range"),
                    },
                };
                let Some(new) = current.checked_add(*by) else {
                    return error("ERR increment or decrement would overflow");
                };
                let at = old.map_or(0, |r| r.expire_at_ms);
                self.put(key, new.to_string().into_bytes(), at, index);
                OpReply::Int(new)
            }
            WriteOp::Append {
                key,
                value,
                max_len,
            } => {
                let old = self.live(key, now).cloned();
                let mut data = old.as_ref().map_or_else(Vec::new, |r| r.data.clone());
                data.extend_from_slice(value);
                if data.len() as u64 > *max_len {
                    return error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
                }
                let len = data.len() as i64;
                self.put(key, data, old.map_or(0, |r| r.expire_at_ms), index);
                OpReply::Int(len)
            }
            WriteOp::SetRange {
                key,
                offset,
                value,
                max_len,
            } => {
                let old = self.live(key, now).cloned();
                let mut data = old.as_ref().map_or_else(Vec::new, |r| r.data.clone());
                if value.is_empty() {
                    return OpReply::Int(data.len() as i64);
                }
                let end = *offset as usize + value.len();
                if end as u64 > *max_len {
                    return error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
                }
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[*offset as usize..end].copy_from_slice(value);
                let len = data.len() as i64;
                self.put(key, data, old.map_or(0, |r| r.expire_at_ms), index);
                OpReply::Int(len)
            }
            WriteOp::Expire { key, at_ms, cond } => {
                let Some(r) = self.live(key, now).cloned() else {
                    return OpReply::Int(0);
                };
                // No expiry counts as an infinite one.
                let has = r.expire_at_ms != 0;
                let current = r.expire_at_ms as i64;
                let refused = (cond.nx && has)
                    || (cond.xx && !has)
                    || (cond.gt && (!has || *at_ms <= current))
                    || (cond.lt && has && *at_ms >= current);
                if refused {
                    return OpReply::Int(0);
                }
                if *at_ms <= now as i64 {
                    self.rows.remove(&key[..]);
                } else {
                    self.put(key, r.data, *at_ms as u64, index);
                }
                OpReply::Int(1)
            }
            WriteOp::Persist { key } => match self.live(key, now).cloned() {
                Some(r) if r.expire_at_ms != 0 => {
                    self.put(key, r.data, 0, index);
                    OpReply::Int(1)
                }
                _ => OpReply::Int(0),
            },
            WriteOp::PurgeExpired { keys } => {
                let mut n = 0;
                for k in keys.iter().collect::<HashSet<_>>() {
                    if self.rows.get(&k[..]).is_some_and(|r| !r.live(now)) {
                        self.rows.remove(&k[..]);
                        n += 1;
                    }
                }
                OpReply::Int(n)
            }
            WriteOp::FlushGroup => {
                self.rows.clear();
                OpReply::Ok
            }
            WriteOp::IncrByFloat { .. }
            | WriteOp::Coll(_)
            | WriteOp::SetBit { .. }
            | WriteOp::BitOp { .. }
            | WriteOp::BitField { .. } => {
                unreachable!("not in the model's logs")
            }
            WriteOp::Move { src, dst, mode } => {
                let Some(r) = self.live(src, now).cloned() else {
                    return match mode {
                        MoveMode::Copy { .. } => OpReply::Int(0),
                        _ => error("ERR no such key"),
                    };
                };
                let same = src == dst;
                let taken = self.live(dst, now).is_some();
                match mode {
                    MoveMode::Rename if same => return OpReply::Ok,
                    MoveMode::RenameNx if same || taken => return OpReply::Int(0),
                    MoveMode::Copy { .. } if same => {
                        return error("ERR source and destination objects are the same")
                    }
                    MoveMode::Copy { replace: false } if taken => return OpReply::Int(0),
                    _ => {}
                }
                self.put(dst, r.data, r.expire_at_ms, index);
                match mode {
                    MoveMode::Rename => {
                        self.rows.remove(&src[..]);
                        OpReply::Ok
                    }
                    MoveMode::RenameNx => {
                        self.rows.remove(&src[..]);
                        OpReply::Int(1)
                    }
                    MoveMode::Copy { .. } => OpReply::Int(1),
                }
            }
            WriteOp::PutRecord { key, record } => {
                if record.expire_at_ms != 0 && record.expire_at_ms <= now {
                    self.rows.remove(&key[..]);
                } else {
                    self.put(key, record.data.to_vec(), record.expire_at_ms, index);
                }
                OpReply::Ok
            }
        }
    }

    /// What the reads of `key` answer at `now`.
    fn reads(&self, key: &[u8], now: u64) -> Vec<OpReply> {
        let r = self.live(key, now);
        let ttl = |ms: bool| match r {
            None => OpReply::Int(-2),
            Some(r) if r.expire_at_ms == 0 => OpReply::Int(-1),
            Some(r) => {
                let left = (r.expire_at_ms - now) as i64;
                OpReply::Int(if ms { left } else { (left + 500) / 1000 })
            }
        };
        vec![
            r.map_or(OpReply::Nil, |r| bulk(&r.data)),
            ttl(true),
            ttl(false),
            OpReply::Int(r.map_or(0, |r| r.data.len() as i64)),
            OpReply::Int(r.is_some() as i64),
            OpReply::Status(if r.is_some() { "string" } else { "none" }.into()),
            // EXPIRETIME, PEXPIRETIME.
            r.map_or(OpReply::Int(-2), |r| match r.expire_at_ms {
                0 => OpReply::Int(-1),
                t => OpReply::Int(t as i64 / 1000),
            }),
            r.map_or(OpReply::Int(-2), |r| match r.expire_at_ms {
                0 => OpReply::Int(-1),
                t => OpReply::Int(t as i64),
            }),
            // OBJECT ENCODING and REFCOUNT.
            r.map_or(OpReply::Nil, |r| {
                let encoding = match redis_int(&r.data) {
                    Some(_) if r.data.len() <= 20 => "int",
                    _ if r.data.len() <= 44 => "embstr",
                    _ => "raw",
                };
                bulk(encoding.as_bytes())
            }),
            r.map_or(OpReply::Nil, |r| {
                OpReply::Int(match redis_int(&r.data) {
                    Some(n) if (0..10_000).contains(&n) => 2_147_483_647,
                    _ => 1,
                })
            }),
        ]
    }
}

fn read_ops(key: &[u8]) -> Vec<ReadOp> {
    let key = Bytes::copy_from_slice(key);
    vec![
        ReadOp::Get { key: key.clone() },
        ReadOp::Ttl {
            key: key.clone(),
            ms: true,
        },
        ReadOp::Ttl {
            key: key.clone(),
            ms: false,
        },
        ReadOp::StrLen { key: key.clone() },
        ReadOp::Exists {
            keys: vec![key.clone()],
        },
        ReadOp::Type { key: key.clone() },
        ReadOp::ExpireTime {
            key: key.clone(),
            ms: false,
        },
        ReadOp::ExpireTime {
            key: key.clone(),
            ms: true,
        },
        ReadOp::Object {
            key: key.clone(),
            field: ObjectField::Encoding,
        },
        ReadOp::Object {
            key,
            field: ObjectField::RefCount,
        },
    ]
}

/// Compare the group with the model: every row, and every read of every
/// key at `now`.
fn check_against_model(env: &Env, sm: &Sm, model: &Model, now: u64) -> Result<(), TestCaseError> {
    let stored: BTreeMap<Vec<u8>, Row> = sm
        .rows(env)
        .data
        .into_iter()
        .map(|(k, raw)| {
            let s = Stored::decode(&raw).expect("a stored value");
            let row = Row {
                data: s.data.to_vec(),
                expire_at_ms: s.expire_at_ms,
                version: s.version,
            };
            (k, row)
        })
        .collect();
    prop_assert_eq!(&stored, &model.rows);
    for key in [&b"a"[..], b"b", b"c", b"", b"\xff\xff", b"never"] {
        let got: Vec<OpReply> = read_ops(key)
            .iter()
            .map(|op| sm.read(env, op, now))
            .collect();
        prop_assert_eq!(got, model.reads(key, now), "reads of {:?} at {}", key, now);
    }
    Ok(())
}

#[test]
fn plain_writes_match_a_model_of_redis_strings() {
    let env = Env::new();
    let strategy = (
        vec(
            prop_oneof![
                12 => write_cmd(false, true).prop_map(Step::Write),
                1 => Just(Step::Blank),
            ],
            1..48,
        ),
        vec(any::<Index>(), 0..8),
        vec(clock(), 1..3),
    );
    env.run(512, strategy, |env, (steps, picks, read_times)| {
        env.rt.block_on(async {
            let log = entries(&steps);
            let mut sm = env.fresh().await;
            let mut model = Model::default();
            let mut at = 0;
            for &end in cuts_of(log.len(), &picks).iter().chain([&log.len()]) {
                if end <= at {
                    continue;
                }
                let replies = sm.apply(&log[at..end]).await;
                for (i, (step, reply)) in steps[at..end].iter().zip(&replies).enumerate() {
                    let index = (at + i) as u64 + 1;
                    let want = match step {
                        Step::Write(cmd) => model.apply(index, cmd),
                        _ => OpReply::Ok,
                    };
                    prop_assert_eq!(reply, &want, "entry {}: {:?}", index, step);
                }
                // Read at the last entry's clock and at other times.
                let last = steps[..end]
                    .iter()
                    .rev()
                    .find_map(|s| match s {
                        Step::Write(w) => Some(w.now_ms),
                        _ => None,
                    })
                    .unwrap_or(T);
                for now in std::iter::once(last).chain(read_times.iter().copied()) {
                    check_against_model(env, &sm, &model, now)?;
                }
                let count = sm.sm.key_count().await.expect("key count");
                prop_assert_eq!(count, model.rows.len() as i64, "key count");
                at = end;
            }
            Ok(())
        })
    });
}

/// The model's integer parsing is Redis's (the model must not be wrong
/// where the store is right).
#[test]
fn the_model_parses_integers_like_redis() {
    for (s, v) in [("0", Some(0)), ("-1", Some(-1)), ("10", Some(10))] {
        assert_eq!(redis_int(s.as_bytes()), v, "{s}");
    }
    assert_eq!(redis_int(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(redis_int(b"-9223372036854775808"), Some(i64::MIN));
    for s in [
        "",
        "-",
        "-0",
        "007",
        "+1",
        " 1",
        "1 ",
        "1.5",
        "9223372036854775808",
        "x",
    ] {
        assert_eq!(redis_int(s.as_bytes()), None, "{s:?}");
    }
}
