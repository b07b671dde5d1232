//! The checkers a run's history goes through. Each is a pure function from a
//! [`History`] to a list of [`Violation`]s:
//!
//! * [`registers`]: every key's GET/SET/INCR operations (final reads
//!   included) are linearizable (see [`super::linearizability`]).
//! * [`lost_writes`]: on keys only ever SET (with unique values), the value
//!   read after every fault healed is the value of a write that no
//!   acknowledged write strictly followed; nil only if no write was
//!   acknowledged.
//! * [`readonly_reads`]: a READONLY read returns nil or a value some SET on
//!   that key wrote, invoked before the read returned.
//! * [`bank`]: every committed snapshot of the accounts sums to the starting
//!   total, with no negative and no missing balance.
//! * [`moves`]: every atomic read of the move workload's keys holds exactly
//!   its [`Population`] (each set member once, in a set key; each list
//!   element once, in a list key), and every move moved an element of its
//!   own kind.
//! * [`locks`]: no two holders of one lock at once (the lock workload of
//!   [`super::scripted`]).
//! * [`limiter`]: no window of the limiter's clock holds more definite
//!   admissions than the limit.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::history::{Call, History, Op, Outcome, Ret};
use super::linearizability::{self, Verdict};

/// The move workload's keys and what they hold between them: set members
/// move only between `set_keys`, list elements only between `list_keys`,
/// every key on a shard of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Population {
    pub set_keys: Vec<String>,
    pub list_keys: Vec<String>,
    pub members: Vec<String>,
    pub elements: Vec<String>,
}

impl Population {
    /// Every key, sets first: the order of a [`Call::Contents`] read.
    pub fn keys(&self) -> Vec<String> {
        self.set_keys
            .iter()
            .chain(&self.list_keys)
            .cloned()
            .collect()
    }
}

/// A broken promise, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// `linearizability`, `lost-write`, `readonly`, `bank`, `moves`.
    pub checker: String,
    pub key: Option<String>,
    pub message: String,
    /// The operations involved (for a key: all of its operations).
    pub ops: Vec<Op>,
}

/// Outcome of [`registers`].
#[derive(Debug, Clone, Default)]
pub struct RegisterSummary {
    pub keys: usize,
    pub ops: usize,
    /// Keys whose search ran out of budget (neither passed nor failed).
    pub undecided: Vec<String>,
    pub violations: Vec<Violation>,
}

/// Search steps allowed per key.
pub const KEY_BUDGET: u64 = 20_000_000;

/// Linearizability of every key's register operations.
pub fn registers(h: &History, budget: u64) -> RegisterSummary {
    let mut sum = RegisterSummary::default();
    for (key, ops) in h.by_key() {
        let regs = match linearizability::intervals(&ops) {
            Ok(r) => r,
            Err(e) => {
                sum.violations
                    .push(violation("linearizability", key, e, &ops));
                continue;
            }
        };
        if regs.is_empty() {
            continue;
        }
        sum.keys += 1;
        sum.ops += regs.len();
        match linearizability::check(&regs, None, budget) {
            Verdict::Linearizable => {}
            Verdict::Undecided => sum.undecided.push(key.to_string()),
            Verdict::Violation { stuck_at, depth } => sum.violations.push(violation(
                "linearizability",
                key,
                format!(
                    "no linearization of {} operations on {key}: the deepest attempt \
                     ordered {depth} of them and got stuck at the return at t={stuck_at}µs",
                    regs.len()
                ),
                &ops,
            )),
        }
    }
    sum
}

fn violation(checker: &str, key: &str, message: String, ops: &[&Op]) -> Violation {
    Violation {
        checker: checker.into(),
        key: Some(key.into()),
        message,
        ops: ops.iter().map(|o| (*o).clone()).collect(),
    }
}

/// No acknowledged SET is lost: checked on every key that has a final read
/// and only SETs (no INCR), whose values are unique.
pub fn lost_writes(h: &History) -> (usize, Vec<Violation>) {
    let mut checked = 0;
    let mut out = Vec::new();
    for (key, ops) in h.by_key() {
        if ops.iter().any(|o| matches!(o.call, Call::Incr { .. })) {
            continue;
        }
        let Some(fin) = ops
            .iter()
            .filter(|o| matches!(o.call, Call::FinalGet { .. }))
            .find_map(|o| o.value())
        else {
            continue;
        };
        checked += 1;
        let sets: Vec<&&Op> = ops
            .iter()
            .filter(|o| matches!(o.call, Call::Set { .. }))
            .collect();
        let acked = || sets.iter().filter(|o| o.is_ok());
        let problem = match fin {
            None => acked().next().map(|a| {
                format!(
                    "final value is nil, but SET {key} (op {}) was acknowledged",
                    a.id
                )
            }),
            Some(v) => {
                let writer = sets
                    .iter()
                    .find(|o| matches!(o.call, Call::Set { value, .. } if value == v));
                match writer {
                    None => Some(format!("final value {v} was never written")),
                    // An unknown write may apply at any time: nothing follows it for sure.
                    Some(w) if !w.is_ok() => None,
                    Some(w) => acked().find(|a| a.invoke > w.complete).map(|a| {
                        format!(
                            "final value {v} comes from op {} (done at {}µs), but op {} \
                             (SET, acknowledged, invoked at {}µs) came after it and was lost",
                            w.id, w.complete, a.id, a.invoke
                        )
                    }),
                }
            }
        };
        if let Some(message) = problem {
            out.push(violation("lost-write", key, message, &ops));
        }
    }
    (checked, out)
}

/// READONLY reads return only values that were written.
pub fn readonly_reads(h: &History) -> (usize, Vec<Violation>) {
    let mut checked = 0;
    let mut out = Vec::new();
    for (key, ops) in h.by_key() {
        let has_incr = ops.iter().any(|o| matches!(o.call, Call::Incr { .. }));
        for ro in ops.iter().filter(|o| matches!(o.call, Call::RoGet { .. })) {
            let v = match &ro.outcome {
                Outcome::Ok(Ret::Value(v)) => *v,
                Outcome::Ok(other) => {
                    out.push(violation(
                        "readonly",
                        key,
                        format!("READONLY GET (op {}) returned {other:?}", ro.id),
                        &ops,
                    ));
                    continue;
                }
                _ => continue,
            };
            checked += 1;
            let Some(v) = v else { continue };
            let written = ops.iter().any(|w| {
                w.invoke < ro.complete
                    && match (&w.call, &w.outcome) {
                        (Call::Set { value, .. }, _) => *value == v,
                        (Call::Incr { .. }, Outcome::Ok(Ret::Value(r))) => *r == Some(v),
                        _ => false,
                    }
            });
            // With an INCR of unknown outcome the value is not known: skip.
            let incr_unknown = has_incr
                && ops
                    .iter()
                    .any(|w| matches!(w.call, Call::Incr { .. }) && !w.is_ok());
            if !written && !incr_unknown {
                out.push(violation(
                    "readonly",
                    key,
                    format!(
                        "READONLY GET (op {}) returned {v}, which no write invoked before it wrote",
                        ro.id
                    ),
                    &ops,
                ));
            }
        }
    }
    (checked, out)
}

/// The bank invariant: every ok snapshot (read-only MULTI/EXEC over all
/// accounts, or the final one) sums to `total` with no nil or negative
/// balance. Returns the number of snapshots checked.
pub fn bank(h: &History, accounts: &[String], total: i64) -> (usize, Vec<Violation>) {
    let mut checked = 0;
    let mut out = Vec::new();
    for op in &h.ops {
        let Call::Snapshot { keys } = &op.call else {
            continue;
        };
        let values = match &op.outcome {
            Outcome::Ok(Ret::Values(v)) => v,
            Outcome::Ok(Ret::Conflict) | Outcome::Fail(_) | Outcome::Unknown(_) => continue,
            Outcome::Ok(other) => {
                out.push(bank_violation(
                    h,
                    op,
                    format!("snapshot returned {other:?}"),
                ));
                continue;
            }
        };
        checked += 1;
        if keys.as_slice() != accounts || values.len() != accounts.len() {
            out.push(bank_violation(
                h,
                op,
                format!("snapshot of {keys:?} returned {} values", values.len()),
            ));
            continue;
        }
        let balances: HashMap<&str, Option<i64>> = keys
            .iter()
            .map(String::as_str)
            .zip(values.iter().copied())
            .collect();
        let problem = if values.iter().any(Option::is_none) {
            Some(format!("snapshot has a missing account: {balances:?}"))
        } else if values.iter().flatten().any(|&b| b < 0) {
            Some(format!("snapshot has a negative balance: {balances:?}"))
        } else {
            let sum: i64 = values.iter().flatten().sum();
            (sum != total).then(|| format!("snapshot sums to {sum}, not {total}: {balances:?}"))
        };
        if let Some(p) = problem {
            out.push(bank_violation(h, op, p));
        }
    }
    (checked, out)
}

/// A bank violation's evidence: the snapshot and the transfers that overlap
/// it or completed in the second before it.
fn bank_violation(h: &History, snap: &Op, message: String) -> Violation {
    let ops = h
        .ops
        .iter()
        .filter(|o| {
            o.id == snap.id
                || (matches!(o.call, Call::Transfer { .. })
                    && o.invoke <= snap.complete
                    && o.complete + 1_000_000 >= snap.invoke)
        })
        .cloned()
        .collect();
    Violation {
        checker: "bank".into(),
        key: None,
        message: format!("op {}: {message}", snap.id),
        ops,
    }
}

/// What [`moves`] found.
#[derive(Debug, Clone, Default)]
pub struct MoveSummary {
    /// Ok [`Call::Contents`] reads checked.
    pub snapshots: usize,
    /// SMOVE / LMOVE / RPOPLPUSH that answered they moved something.
    pub moved: usize,
    pub violations: Vec<Violation>,
}

/// The move invariant. Every ok [`Call::Contents`] read (the final one
/// included) holds exactly `pop`: each member once across the set keys,
/// each element once across the list keys, nothing else. A move whose
/// outcome is unknown changes nothing here: moved or not, the population is
/// the same. Every ok move answered 0/1 (SMOVE, as its member) or nil / an
/// element of the list population (LMOVE, RPOPLPUSH).
pub fn moves(h: &History, pop: &Population) -> MoveSummary {
    let mut sum = MoveSummary::default();
    let keys = pop.keys();
    for op in &h.ops {
        let problem = match (&op.call, &op.outcome) {
            (Call::Contents { keys: asked }, Outcome::Ok(Ret::Elements(got))) => {
                sum.snapshots += 1;
                if *asked != keys || got.len() != keys.len() {
                    Some(format!(
                        "a read of {asked:?} returned {} keys (expected {keys:?})",
                        got.len()
                    ))
                } else {
                    let (sets, lists) = got.split_at(pop.set_keys.len());
                    let mut found = Vec::new();
                    found.extend(misplaced(&pop.set_keys, sets, &pop.members, "member"));
                    found.extend(misplaced(&pop.list_keys, lists, &pop.elements, "element"));
                    (!found.is_empty()).then(|| {
                        let contents: Vec<String> = keys
                            .iter()
                            .zip(got)
                            .map(|(k, v)| format!("{k}={v:?}"))
                            .collect();
                        format!("{}; contents: {}", found.join("; "), contents.join(" "))
                    })
                }
            }
            (Call::Contents { .. }, Outcome::Ok(other)) => {
                Some(format!("the read returned {other:?}"))
            }
            (Call::SMove { member, .. }, Outcome::Ok(Ret::Moved(m))) => {
                sum.moved += m.is_some() as usize;
                m.as_ref()
                    .filter(|m| *m != member)
                    .map(|m| format!("SMOVE of {member} answered {m}"))
            }
            (Call::LMove { .. }, Outcome::Ok(Ret::Moved(e))) => {
                sum.moved += e.is_some() as usize;
                e.as_ref()
                    .filter(|e| !pop.elements.contains(e))
                    .map(|e| format!("the move returned {e:?}, not an element of the lists"))
            }
            (Call::SMove { .. } | Call::LMove { .. }, Outcome::Ok(other)) => {
                Some(format!("the move answered {other:?}"))
            }
            _ => None,
        };
        if let Some(p) = problem {
            sum.violations.push(moves_violation(h, op, p));
        }
    }
    sum
}

/// What is wrong with one family of keys' contents: population items
/// missing or seen more than once, and items not of the population.
fn misplaced(keys: &[String], got: &[Vec<String>], items: &[String], what: &str) -> Vec<String> {
    let mut seen: BTreeMap<&str, Vec<&str>> = items.iter().map(|i| (i.as_str(), vec![])).collect();
    let mut foreign = Vec::new();
    for (key, values) in keys.iter().zip(got) {
        for v in values {
            match seen.get_mut(v.as_str()) {
                Some(at) => at.push(key),
                None => foreign.push(format!("{v} in {key}")),
            }
        }
    }
    let lost: Vec<&str> = seen
        .iter()
        .filter(|(_, at)| at.is_empty())
        .map(|(i, _)| *i)
        .collect();
    let twice: Vec<String> = seen
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(i, at)| format!("{i} in {}", at.join(" and ")))
        .collect();
    let mut out = Vec::new();
    if !lost.is_empty() {
        out.push(format!("{} {what}s lost: {lost:?}", lost.len()));
    }
    if !twice.is_empty() {
        out.push(format!("{} {what}s duplicated: {twice:?}", twice.len()));
    }
    if !foreign.is_empty() {
        out.push(format!("not in the population: {foreign:?}"));
    }
    out
}

/// A move violation's evidence: the operation and the moves that overlap
/// it or completed in the second before it.
fn moves_violation(h: &History, at: &Op, message: String) -> Violation {
    let ops = h
        .ops
        .iter()
        .filter(|o| {
            o.id == at.id
                || (matches!(o.call, Call::SMove { .. } | Call::LMove { .. })
                    && o.invoke <= at.complete
                    && o.complete + 1_000_000 >= at.invoke)
        })
        .cloned()
        .collect();
    Violation {
        checker: "moves".into(),
        key: None,
        message: format!("op {}: {message}", at.id),
        ops,
    }
}

/// What [`locks`] found.
#[derive(Debug, Clone, Default)]
pub struct LockSummary {
    /// Acquires that answered `+OK` in time: the holders checked.
    pub held: usize,
    /// Acquires that answered `+OK` later than TTL/2 after they were sent
    /// (not counted as holding).
    pub late: usize,
    /// The intervals were taken on the wall clock (every operation recorded
    /// it), not on the monotonic one.
    pub wall_clock: bool,
    pub violations: Vec<Violation>,
}

/// Slack taken off every TTL, for a store that keeps expiry times in whole
/// milliseconds (its "now" may be up to 1 ms behind the real time).
pub const TTL_SLACK_US: u64 = 1_000;

/// An operation's (invoke, complete) on the clock [`locks`] works on.
fn lock_times(op: &Op, wall_clock: bool) -> (u64, u64) {
    match op.wall {
        Some(w) if wall_clock => (w.invoke, w.complete),
        _ => (op.invoke, op.complete),
    }
}

/// Never two holders of one lock. Each acquire that answered `+OK` at most
/// TTL/2 after it was sent holds the lock over
/// `[its OK arrived, min(its release was sent, its SET was sent + TTL)]`
/// (TTL less [`TTL_SLACK_US`]); two such intervals of one key must not
/// overlap.
///
/// Why this is sound with faults and unknown outcomes: every client is a
/// thread of the harness and every time is read from one clock of this
/// machine. The store grants the lock at some instant `g` between the SET's
/// sending (`invoke`) and the OK's arrival (`complete`), and from then on
/// the key holds the token until a release deletes it (not before that
/// release was sent) or the TTL runs out (not before `g + TTL`, and `g` is
/// not before `invoke`). So the checked interval lies inside the time the
/// key really held the token. A correct store never holds two tokens in
/// one key at once (SET NX succeeds only on a missing key), so the
/// intervals of two holders are disjoint. Outcomes the client never saw
/// cannot create a false alarm: an acquire of unknown outcome is no holder
/// here (at most it keeps others out longer), and a release of unknown
/// outcome still was sent at its `invoke`. The TTL/2 rule only removes
/// holders; it keeps the holders that count those that knew in time that
/// they held the lock, as Redlock's validity time does (measured, as a
/// client measures it, on the monotonic clock).
///
/// **Which clock.** The store stamps `PX` onto the wall clock (a router's
/// `now + TTL`, as redis-server does with its own clock), so "not before
/// `g + TTL`" holds on the wall clock, and the intervals are taken there
/// whenever every operation recorded it ([`super::history::Wall`]). On the
/// monotonic clock the argument breaks when the wall clock steps forward
/// during a run: a virtual machine's wall clock jumped 0.69 s ahead of its
/// monotonic clock in one chaos run (seed 2026, docs/RELIABILITY.md), so
/// a lock expired 0.69 s "early" on the monotonic clock, exactly as it
/// would have on redis-server, and the monotonic check reported two
/// holders. The wall-clock check assumes the wall clock never steps back
/// (as [`limiter`] does); a history without wall times (saved before they
/// were recorded) is checked on the monotonic clock.
pub fn locks(h: &History) -> LockSummary {
    let wall_clock = !h.ops.is_empty() && h.ops.iter().all(|o| o.wall.is_some());
    let at = |op: &Op| lock_times(op, wall_clock);
    let mut sum = LockSummary {
        wall_clock,
        ..LockSummary::default()
    };
    // The first release of each token (tokens are unique per acquire).
    let mut released: HashMap<(&str, &str), &Op> = HashMap::new();
    for op in &h.ops {
        if let Call::Release { key, token } = &op.call {
            let e = released.entry((key, token)).or_insert(op);
            if at(op).0 < at(e).0 {
                *e = op;
            }
        }
    }
    // Per key: (start, end, the acquire, its release).
    type Held<'a> = (u64, u64, &'a Op, Option<&'a Op>);
    let mut held: BTreeMap<&str, Vec<Held>> = BTreeMap::new();
    for op in &h.ops {
        let Call::Acquire { key, token, ttl_ms } = &op.call else {
            continue;
        };
        match &op.outcome {
            Outcome::Ok(Ret::Acquired(true)) => {}
            Outcome::Ok(Ret::Acquired(false)) | Outcome::Unknown(_) | Outcome::Fail(_) => continue,
            Outcome::Ok(other) => {
                sum.violations.push(Violation {
                    checker: "locks".into(),
                    key: Some(key.clone()),
                    message: format!("op {}: SET NX answered {other:?}", op.id),
                    ops: vec![op.clone()],
                });
                continue;
            }
        }
        let ttl_us = ttl_ms * 1000;
        if op.complete - op.invoke > ttl_us / 2 {
            sum.late += 1;
            continue;
        }
        let (invoke, complete) = at(op);
        let release = released.get(&(key.as_str(), token.as_str())).copied();
        let expiry = (invoke + ttl_us).saturating_sub(TTL_SLACK_US);
        let end = release.map_or(expiry, |r| at(r).0.min(expiry));
        if end <= complete {
            continue;
        }
        sum.held += 1;
        held.entry(key)
            .or_default()
            .push((complete, end, op, release));
    }
    let clock = if wall_clock {
        "wall clock, Unix µs"
    } else {
        "µs"
    };
    for (key, mut hs) in held {
        hs.sort_by_key(|h| (h.0, h.2.id));
        // The holder whose interval reaches furthest so far.
        let mut last: Option<&Held> = None;
        for h in &hs {
            if let Some(p) = last {
                if h.0 < p.1 {
                    let mut ops = vec![p.2.clone(), h.2.clone()];
                    ops.extend(p.3.into_iter().chain(h.3).cloned());
                    sum.violations.push(Violation {
                        checker: "locks".into(),
                        key: Some(key.to_string()),
                        message: format!(
                            "two holders of {key}: op {} ({:?}) held it over {}..{} ({clock}) and \
                             op {} ({:?}) got it at {}",
                            p.2.id,
                            token_of(p.2),
                            p.0,
                            p.1,
                            h.2.id,
                            token_of(h.2),
                            h.0
                        ),
                        ops,
                    });
                }
            }
            if last.is_none_or(|p| h.1 > p.1) {
                last = Some(h);
            }
        }
    }
    sum
}

/// How far the wall clock moved against the monotonic one during a run:
/// the least and the greatest (wall − monotonic) offset of any operation,
/// in µs relative to the first operation's. `None` without wall times.
/// Both readings of one end are taken back to back, so a few ms of noise
/// (a thread preempted between them) is expected on a loaded machine.
pub fn clock_drift_us(h: &History) -> Option<(i64, i64)> {
    let offsets = h
        .ops
        .iter()
        .map(|o| {
            o.wall
                .map(|w| (o.invoke, w.invoke as i64 - o.invoke as i64))
        })
        .collect::<Option<Vec<_>>>()?;
    let first = offsets.iter().min_by_key(|(invoke, _)| *invoke)?.1;
    let drift = offsets.iter().map(|(_, off)| off - first);
    Some((drift.clone().min()?, drift.max()?))
}

fn token_of(op: &Op) -> &str {
    match &op.call {
        Call::Acquire { token, .. } | Call::Release { token, .. } => token,
        _ => "",
    }
}

/// What [`limiter`] found.
#[derive(Debug, Clone, Default)]
pub struct LimiterSummary {
    pub admitted: usize,
    pub rejected: usize,
    pub unknown: usize,
    pub violations: Vec<Violation>,
}

/// At most `limit` definite admissions per window: for every admission at
/// time `t` (the time the script used, µs of the store's clock), the
/// admissions of its key in `(t - window, t]` number at most `limit`
/// (the script drops entries with scores up to `now - window` and admits
/// while fewer than `limit` remain). Requests of unknown outcome are not
/// counted: had they been admitted, the true count would only be higher,
/// so an excess among the definite ones is a real one. A malformed reply
/// is a violation too.
pub fn limiter(h: &History) -> LimiterSummary {
    let mut sum = LimiterSummary::default();
    let mut by_key: BTreeMap<&str, Vec<(i64, &Op)>> = BTreeMap::new();
    for op in &h.ops {
        let Call::Admit { key, .. } = &op.call else {
            continue;
        };
        match &op.outcome {
            Outcome::Ok(Ret::Admitted {
                admitted: true,
                at_us,
            }) => {
                sum.admitted += 1;
                by_key.entry(key).or_default().push((*at_us, op));
            }
            Outcome::Ok(Ret::Admitted {
                admitted: false, ..
            }) => sum.rejected += 1,
            Outcome::Unknown(_) | Outcome::Fail(_) => sum.unknown += 1,
            Outcome::Ok(other) => sum.violations.push(Violation {
                checker: "limiter".into(),
                key: Some(key.clone()),
                message: format!("op {}: the limiter answered {other:?}", op.id),
                ops: vec![op.clone()],
            }),
        }
    }
    for (key, mut adm) in by_key {
        adm.sort_by_key(|a| (a.0, a.1.id));
        let mut first = 0;
        // The end of the last window reported, so that one burst is one
        // violation.
        let mut reported_to = None;
        for j in 0..adm.len() {
            let (t, op) = adm[j];
            let Call::Admit {
                limit, window_us, ..
            } = &op.call
            else {
                unreachable!()
            };
            while adm[first].0 <= t - *window_us as i64 {
                first += 1;
            }
            let n = j + 1 - first;
            if n > *limit as usize && reported_to.is_none_or(|r| adm[first].0 > r) {
                reported_to = Some(t);
                sum.violations.push(Violation {
                    checker: "limiter".into(),
                    key: Some(key.to_string()),
                    message: format!(
                        "{n} admissions on {key} within {} µs ({}..={t} µs of the store's \
                         clock), limit {limit}",
                        window_us, adm[first].0
                    ),
                    ops: adm[first..=j].iter().map(|a| a.1.clone()).collect(),
                });
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::super::history::End;
    use super::*;

    fn op(id: u64, call: Call, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op {
            id,
            client: 0,
            call,
            invoke,
            complete,
            outcome,
            wall: None,
        }
    }

    fn set(id: u64, key: &str, value: i64, t: u64, ok: bool) -> Op {
        let outcome = if ok {
            Outcome::Ok(Ret::Done)
        } else {
            Outcome::Unknown("timeout".into())
        };
        op(
            id,
            Call::Set {
                key: key.into(),
                value,
            },
            t,
            t + 5,
            outcome,
        )
    }

    fn get(id: u64, key: &str, v: Option<i64>, t: u64) -> Op {
        op(
            id,
            Call::Get { key: key.into() },
            t,
            t + 5,
            Outcome::Ok(Ret::Value(v)),
        )
    }

    fn fin(id: u64, key: &str, v: Option<i64>, t: u64) -> Op {
        op(
            id,
            Call::FinalGet { key: key.into() },
            t,
            t + 5,
            Outcome::Ok(Ret::Value(v)),
        )
    }

    fn ro(id: u64, key: &str, v: Option<i64>, t: u64) -> Op {
        op(
            id,
            Call::RoGet { key: key.into() },
            t,
            t + 5,
            Outcome::Ok(Ret::Value(v)),
        )
    }

    fn hist(ops: Vec<Op>) -> History {
        History {
            ops,
            faults: vec![],
        }
    }

    #[test]
    fn registers_flags_a_stale_read_and_passes_a_good_history() {
        let good = hist(vec![
            set(0, "k", 1, 0, true),
            get(1, "k", Some(1), 10),
            set(2, "k", 2, 20, false),
            get(3, "k", Some(1), 30),
            fin(4, "k", Some(2), 100),
            set(5, "j", 9, 0, true),
        ]);
        let s = registers(&good, KEY_BUDGET);
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        assert_eq!(s.keys, 2);
        let bad = hist(vec![
            set(0, "k", 1, 0, true),
            set(1, "k", 2, 10, true),
            get(2, "k", Some(1), 20),
        ]);
        let s = registers(&bad, KEY_BUDGET);
        assert_eq!(s.violations.len(), 1);
        assert_eq!(s.violations[0].key.as_deref(), Some("k"));
        assert_eq!(s.violations[0].ops.len(), 3);
    }

    #[test]
    fn lost_writes_flags_a_vanished_acknowledged_write() {
        // Good: the last acknowledged write survives; an unknown write may win.
        let good = hist(vec![
            set(0, "a", 1, 0, true),
            set(1, "a", 2, 10, true),
            fin(2, "a", Some(2), 100),
            set(3, "b", 1, 0, true),
            set(4, "b", 2, 10, false),
            fin(5, "b", Some(2), 100),
            // Concurrent acknowledged writes: either may be last.
            set(6, "c", 1, 0, true),
            set(7, "c", 2, 1, true),
            fin(8, "c", Some(1), 100),
        ]);
        let (n, v) = lost_writes(&good);
        assert_eq!((n, v.len()), (3, 0), "{v:?}");
        let bad = hist(vec![
            set(0, "a", 1, 0, true),
            set(1, "a", 2, 10, true),
            fin(2, "a", Some(1), 100),
            set(3, "b", 1, 0, true),
            fin(4, "b", None, 100),
            fin(5, "c", Some(3), 100),
        ]);
        let (n, v) = lost_writes(&bad);
        assert_eq!(n, 3);
        let keys: Vec<_> = v.iter().map(|v| v.key.clone().unwrap()).collect();
        assert_eq!(keys, vec!["a", "b", "c"]);
    }

    #[test]
    fn readonly_reads_must_return_written_values() {
        let good = hist(vec![
            ro(0, "k", None, 0),
            set(1, "k", 1, 10, false),
            ro(2, "k", Some(1), 12),
            ro(3, "k", None, 20),
        ]);
        let (n, v) = readonly_reads(&good);
        assert_eq!((n, v.len()), (3, 0));
        let bad = hist(vec![
            set(1, "k", 1, 10, true),
            ro(2, "k", Some(5), 20),
            // Read of a value written only later.
            ro(3, "k", Some(7), 30),
            set(4, "k", 7, 100, true),
        ]);
        let (_, v) = readonly_reads(&bad);
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn bank_sum_must_hold_in_every_snapshot() {
        let accounts: Vec<String> = vec!["a".into(), "b".into()];
        let snap = |id, vals: Vec<Option<i64>>| {
            op(
                id,
                Call::Snapshot {
                    keys: accounts.clone(),
                },
                id * 10,
                id * 10 + 5,
                Outcome::Ok(Ret::Values(vals)),
            )
        };
        let transfer = op(
            1,
            Call::Transfer {
                from: "a".into(),
                to: "b".into(),
                amount: 10,
            },
            9,
            12,
            Outcome::Ok(Ret::Committed),
        );
        let good = hist(vec![
            snap(0, vec![Some(100), Some(100)]),
            transfer.clone(),
            snap(2, vec![Some(90), Some(110)]),
        ]);
        assert_eq!(bank(&good, &accounts, 200), (2, vec![]));
        // A torn snapshot: the debit is visible, the credit is not.
        let bad = hist(vec![
            transfer,
            snap(2, vec![Some(90), Some(100)]),
            snap(3, vec![Some(90), None]),
            snap(4, vec![Some(-10), Some(210)]),
        ]);
        let (n, v) = bank(&bad, &accounts, 200);
        assert_eq!((n, v.len()), (3, 3));
        assert!(v[0].message.contains("sums to 190"));
        assert_eq!(v[0].ops.len(), 2, "the overlapping transfer is evidence");
    }

    #[test]
    fn moves_must_keep_the_population_exact() {
        let pop = Population {
            set_keys: vec!["s0".into(), "s1".into()],
            list_keys: vec!["l0".into(), "l1".into()],
            members: vec!["m0".into(), "m1".into()],
            elements: vec!["e0".into(), "e1".into()],
        };
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let read = |id, got: Vec<Vec<String>>| {
            op(
                id,
                Call::Contents { keys: pop.keys() },
                id * 10,
                id * 10 + 5,
                Outcome::Ok(Ret::Elements(got)),
            )
        };
        let smove = op(
            1,
            Call::SMove {
                src: "s0".into(),
                dst: "s1".into(),
                member: "m0".into(),
            },
            9,
            12,
            Outcome::Ok(Ret::Moved(Some("m0".into()))),
        );
        let lmove = |id, outcome| {
            op(
                id,
                Call::LMove {
                    src: "l0".into(),
                    dst: "l1".into(),
                    from: End::Left,
                    to: End::Right,
                    rpoplpush: false,
                },
                id * 10,
                id * 10 + 5,
                outcome,
            )
        };
        let good = hist(vec![
            read(0, vec![v(&["m0", "m1"]), v(&[]), v(&["e0", "e1"]), v(&[])]),
            smove.clone(),
            lmove(2, Outcome::Ok(Ret::Moved(Some("e0".into())))),
            // Timed out: moved or not, the population is the same.
            lmove(3, Outcome::Unknown("timeout".into())),
            lmove(4, Outcome::Ok(Ret::Moved(None))),
            read(5, vec![v(&["m1"]), v(&["m0"]), v(&["e1"]), v(&["e0"])]),
        ]);
        let s = moves(&good, &pop);
        assert_eq!((s.snapshots, s.moved), (2, 2));
        assert!(s.violations.is_empty(), "{:?}", s.violations);

        let bad = hist(vec![
            smove,
            // Removed from s0, not yet in s1: the member is lost.
            read(2, vec![v(&["m1"]), v(&[]), v(&["e0", "e1"]), v(&[])]),
            // Added to s1 twice (two moves of one member both applied).
            read(
                3,
                vec![v(&["m0", "m1"]), v(&["m0"]), v(&["e0", "e1"]), v(&[])],
            ),
            // A list element in a set key, and a list element lost.
            read(4, vec![v(&["m0", "m1", "e1"]), v(&[]), v(&["e0"]), v(&[])]),
            lmove(5, Outcome::Ok(Ret::Moved(Some("m0".into())))),
            read(6, vec![v(&["m0", "m1"]), v(&[])]),
        ]);
        let s = moves(&bad, &pop);
        let msgs: Vec<&str> = s.violations.iter().map(|v| v.message.as_str()).collect();
        assert_eq!(msgs.len(), 5, "{msgs:#?}");
        assert!(msgs[0].contains("1 members lost: [\"m0\"]"), "{}", msgs[0]);
        assert!(msgs[1].contains("m0 in s0 and s1"), "{}", msgs[1]);
        assert!(msgs[2].contains("[\"e1 in s0\"]") && msgs[2].contains("elements lost"));
        assert!(msgs[3].contains("not an element of the lists"));
        assert!(msgs[4].contains("returned 2 keys"));
        assert_eq!(
            s.violations[0].ops.len(),
            2,
            "the overlapping move is evidence"
        );
    }

    fn acquire(id: u64, token: &str, t: u64, took: u64, outcome: Outcome) -> Op {
        let call = Call::Acquire {
            key: "lock".into(),
            token: token.into(),
            ttl_ms: 100,
        };
        op(id, call, t, t + took, outcome)
    }

    fn release(id: u64, token: &str, t: u64) -> Op {
        let call = Call::Release {
            key: "lock".into(),
            token: token.into(),
        };
        op(id, call, t, t + 500, Outcome::Ok(Ret::Released(true)))
    }

    #[test]
    fn locks_never_have_two_holders() {
        let yes = || Outcome::Ok(Ret::Acquired(true));
        let good = hist(vec![
            // a holds 1_000..50_000 (its release was sent at 50 ms).
            acquire(0, "a", 0, 1_000, yes()),
            // Refused and unknown acquires hold nothing.
            acquire(1, "x", 2_000, 1_000, Outcome::Ok(Ret::Acquired(false))),
            acquire(2, "y", 3_000, 1_000, Outcome::Unknown("timeout".into())),
            release(3, "a", 50_000),
            // b's OK arrives as a's release is sent: no overlap.
            acquire(4, "b", 45_000, 5_000, yes()),
            // b never releases: it holds until 45 + 100 - 1 ms.
            acquire(5, "c", 100_000, 44_000, yes()),
            // An OK after more than TTL/2 is not a holder.
            acquire(6, "d", 90_000, 51_000, yes()),
        ]);
        let s = locks(&good);
        assert!(s.violations.is_empty(), "{:#?}", s.violations);
        assert_eq!((s.held, s.late), (3, 1));

        let bad = hist(vec![
            acquire(0, "a", 0, 1_000, yes()),
            release(1, "a", 50_000),
            // b got it while a was still holding.
            acquire(2, "b", 30_000, 9_000, yes()),
            // c got it before b's TTL ran out (b never released).
            acquire(3, "c", 120_000, 1_000, yes()),
            acquire(4, "e", 300_000, 1_000, Outcome::Ok(Ret::Value(None))),
        ]);
        let s = locks(&bad);
        let msgs: Vec<&str> = s.violations.iter().map(|v| v.message.as_str()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:#?}");
        assert!(msgs[0].contains("answered Value(None)"), "{}", msgs[0]);
        assert!(
            msgs[1].contains("op 0 (\"a\") held it over 1000..50000"),
            "{}",
            msgs[1]
        );
        assert!(msgs[2].contains("op 2 (\"b\")") && msgs[2].contains("op 3"));
        assert_eq!(
            s.violations[1].ops.len(),
            3,
            "both acquires and a's release"
        );
    }

    /// An op whose wall clock reads `base + offset` at both ends.
    fn walled(mut o: Op, offset: u64) -> Op {
        const BASE: u64 = 1_796_458_000_000_000;
        o.wall = Some(super::super::history::Wall {
            invoke: BASE + o.invoke + offset,
            complete: BASE + o.complete + offset,
        });
        o
    }

    /// Seed 2026's false alarm in miniature: the wall clock, on which the
    /// store counts TTLs, steps 69 ms ahead of the monotonic clock while
    /// `a` holds a 100 ms lock, so `b`'s SET NX finds it expired 31 ms (on
    /// the monotonic clock) after `a` sent its SET. The monotonic check
    /// calls that two holders; the wall-clock check sees `b` get the lock
    /// after `a`'s TTL ran out, and still catches a real overlap later.
    #[test]
    fn locks_are_checked_on_the_wall_clock_when_it_steps() {
        let yes = || Outcome::Ok(Ret::Acquired(true));
        let step = 69_000;
        let ops = vec![
            walled(acquire(0, "a", 0, 1_000, yes()), 0),
            walled(acquire(1, "b", 40_000, 1_000, yes()), step),
            // c holds from 151 ms (never released), d gets it 10 ms later:
            // two holders on either clock.
            walled(acquire(2, "c", 150_000, 1_000, yes()), step),
            walled(acquire(3, "d", 160_000, 1_000, yes()), step),
        ];
        let on_wall = locks(&hist(ops.clone()));
        assert!(on_wall.wall_clock);
        let msgs: Vec<&str> = on_wall
            .violations
            .iter()
            .map(|v| v.message.as_str())
            .collect();
        assert_eq!(msgs.len(), 1, "{msgs:#?}");
        assert!(
            msgs[0].contains("(\"c\")") && msgs[0].contains("op 3 (\"d\")"),
            "{}",
            msgs[0]
        );
        assert!(msgs[0].contains("wall clock"), "{}", msgs[0]);
        assert_eq!(clock_drift_us(&hist(ops.clone())), Some((0, step as i64)));

        // Without wall times (one op lacks them), the monotonic clock: the
        // step shows as a's lock taken by b.
        let mut mono = ops;
        mono[3].wall = None;
        let on_mono = locks(&hist(mono.clone()));
        assert!(!on_mono.wall_clock);
        assert_eq!(on_mono.violations.len(), 2, "{:#?}", on_mono.violations);
        assert!(on_mono.violations[0]
            .message
            .contains("op 1 (\"b\") got it at 41000"));
        assert_eq!(clock_drift_us(&hist(mono)), None);
    }

    fn admit(id: u64, at_us: i64, outcome: Option<bool>) -> Op {
        let call = Call::Admit {
            key: "rl".into(),
            member: format!("m{id}"),
            limit: 2,
            window_us: 100,
        };
        let outcome = match outcome {
            Some(admitted) => Outcome::Ok(Ret::Admitted { admitted, at_us }),
            None => Outcome::Unknown("timeout".into()),
        };
        // Invocation order is not script-time order: the check must not care.
        op(id, call, 1_000 - id, 1_010, outcome)
    }

    #[test]
    fn the_limiter_admits_at_most_the_limit_per_window() {
        let good = hist(vec![
            admit(0, 1_000, Some(true)),
            admit(1, 1_050, Some(true)),
            admit(2, 1_060, Some(false)),
            admit(3, 1_070, None),
            // 1_000 is out of (1_000, 1_100].
            admit(4, 1_100, Some(true)),
            admit(5, 1_150, Some(true)),
        ]);
        let s = limiter(&good);
        assert!(s.violations.is_empty(), "{:#?}", s.violations);
        assert_eq!((s.admitted, s.rejected, s.unknown), (4, 1, 1));

        let bad = hist(vec![
            admit(0, 1_000, Some(true)),
            admit(1, 1_050, Some(true)),
            admit(2, 1_099, Some(true)),
            // Still the same burst: reported once.
            admit(3, 1_099, Some(true)),
            admit(4, 5_000, Some(true)),
            admit(5, 5_001, Some(true)),
            admit(6, 5_099, Some(true)),
            op(7, admit(7, 0, None).call, 0, 1, Outcome::Ok(Ret::Done)),
        ]);
        let s = limiter(&bad);
        let msgs: Vec<&str> = s.violations.iter().map(|v| v.message.as_str()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:#?}");
        assert!(msgs[0].contains("answered Done"), "{}", msgs[0]);
        assert!(
            msgs[1].starts_with("3 admissions on rl within 100 µs (1000..=1099"),
            "{}",
            msgs[1]
        );
        assert!(msgs[2].contains("(5000..=5099"), "{}", msgs[2]);
        assert_eq!(s.violations[1].ops.len(), 3);
    }
}
