//! Linearizability of single-key registers (GET, SET, INCR), checked with the
//! Wing–Gong–Lowe search as Porcupine does it: walk the history's call and
//! return events in time order, try to linearize each pending call at its
//! place, back-track when a return is reached whose call is not linearized
//! yet, and memoize (set of linearized ops, register state) pairs so that no
//! configuration is explored twice.
//!
//! Operations whose outcome is unknown get a return time of +∞ and accept any
//! result: they may take effect at any moment after their invocation, or (by
//! being linearized after everything else) never. Failed and unknown reads
//! say nothing and are dropped. The search is bounded by a step budget; a key
//! that exhausts it is reported as undecided, not as a violation.
//!
//! Pure: plain data in, a verdict out.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::history::{Call, Op, Outcome, Ret};

/// One operation as the register model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegOp {
    /// A read that returned this value.
    Read(Option<i64>),
    /// A write of this value (acknowledged or not).
    Write(i64),
    /// An INCR that returned this value (`None`: outcome unknown).
    Incr(Option<i64>),
}

/// An operation with its interval; `ret == None` means it never returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub op: RegOp,
    pub call: u64,
    pub ret: Option<u64>,
}

/// The register model: `state` is the key's value (nil as `None`).
/// Returns the next state if `op` may be applied in `state`.
pub fn step(state: Option<i64>, op: RegOp) -> Option<Option<i64>> {
    match op {
        RegOp::Read(v) => (v == state).then_some(state),
        RegOp::Write(v) => Some(Some(v)),
        RegOp::Incr(r) => {
            let next = state.unwrap_or(0).checked_add(1)?;
            match r {
                Some(r) if r != next => None,
                _ => Some(Some(next)),
            }
        }
    }
}

/// The register operations of one key's history (final reads included).
/// Returns `Err` with a description when an ok reply was malformed.
pub fn intervals(ops: &[&Op]) -> Result<Vec<Interval>, String> {
    let mut out = Vec::new();
    for op in ops {
        let ret = match op.outcome {
            Outcome::Ok(_) => Some(op.complete),
            _ => None,
        };
        if let Outcome::Ok(Ret::Bad(b)) = &op.outcome {
            return Err(format!("op {} returned a malformed reply: {b}", op.id));
        }
        let reg = match (&op.call, &op.outcome) {
            (Call::Get { .. } | Call::FinalGet { .. }, Outcome::Ok(Ret::Value(v))) => {
                RegOp::Read(*v)
            }
            (Call::Get { .. } | Call::FinalGet { .. }, _) => continue,
            (Call::Set { value, .. }, Outcome::Ok(_) | Outcome::Unknown(_) | Outcome::Fail(_)) => {
                RegOp::Write(*value)
            }
            (Call::Incr { .. }, Outcome::Ok(Ret::Value(v))) => RegOp::Incr(*v),
            (Call::Incr { .. }, _) => RegOp::Incr(None),
            // READONLY reads are not linearizable by contract.
            (Call::RoGet { .. }, _) => continue,
            (
                Call::Transfer { .. }
                | Call::Snapshot { .. }
                | Call::SMove { .. }
                | Call::LMove { .. }
                | Call::Contents { .. }
                | Call::Acquire { .. }
                | Call::Release { .. }
                | Call::Admit { .. },
                _,
            ) => continue,
        };
        out.push(Interval {
            op: reg,
            call: op.invoke,
            ret,
        });
    }
    Ok(out)
}

/// Verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists. `stuck_at` is the return time at which the
    /// deepest search attempt failed (the place to look in the history).
    Violation {
        stuck_at: u64,
        depth: usize,
    },
    /// The step budget ran out.
    Undecided,
}

const HEAD: usize = usize::MAX;

/// Doubly linked list over the events (2 per operation: call, return).
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    head_next: usize,
    /// Event e belongs to operation `op[e]`; `is_call[e]`.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// For a call event, its return event.
    matching: Vec<usize>,
    time: Vec<u64>,
}

impl Events {
    fn new(ops: &[Interval]) -> Events {
        // (time, 0 = call / 1 = return, op): calls before returns at equal
        // times, so touching operations count as concurrent (permissive).
        let mut evs: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            evs.push((o.call, 0, i));
            evs.push((o.ret.unwrap_or(u64::MAX), 1, i));
        }
        evs.sort();
        let n = evs.len();
        let mut ev = Events {
            next: (1..=n).map(|i| if i == n { HEAD } else { i }).collect(),
            prev: (0..n).map(|i| if i == 0 { HEAD } else { i - 1 }).collect(),
            head_next: if n == 0 { HEAD } else { 0 },
            op: evs.iter().map(|e| e.2).collect(),
            is_call: evs.iter().map(|e| e.1 == 0).collect(),
            matching: vec![HEAD; n],
            time: evs.iter().map(|e| e.0).collect(),
        };
        let mut call_of = vec![HEAD; ops.len()];
        for (e, &(_, kind, op)) in evs.iter().enumerate() {
            if kind == 0 {
                call_of[op] = e;
            } else {
                ev.matching[call_of[op]] = e;
            }
        }
        ev
    }

    fn next_of(&self, e: usize) -> usize {
        if e == HEAD {
            self.head_next
        } else {
            self.next[e]
        }
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        if p == HEAD {
            self.head_next = n;
        } else {
            self.next[p] = n;
        }
        if n != HEAD {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        if p == HEAD {
            self.head_next = e;
        } else {
            self.next[p] = e;
        }
        if n != HEAD {
            self.prev[n] = e;
        }
    }

    /// Remove a call and its return.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.matching[call]);
    }

    /// Undo [`Events::lift`] (in reverse order).
    fn unlift(&mut self, call: usize) {
        self.relink(self.matching[call]);
        self.relink(call);
    }
}

/// Check one key's operations, starting from `initial`, spending at most
/// `budget` search steps.
pub fn check(ops: &[Interval], initial: Option<i64>, budget: u64) -> Verdict {
    let mut ev = Events::new(ops);
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<i64>)> = HashSet::new();
    let mut calls: Vec<(usize, Option<i64>)> = Vec::new();
    let mut state = initial;
    let mut entry = ev.head_next;
    let mut steps = 0u64;
    let mut deepest = (0usize, 0u64);
    while ev.head_next != HEAD {
        steps += 1;
        if steps > budget {
            return Verdict::Undecided;
        }
        debug_assert!(entry != HEAD, "a list with events ends with a return");
        let op = ev.op[entry];
        if ev.is_call[entry] {
            if let Some(next) = step(state, ops[op].op) {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), next)) {
                    calls.push((entry, state));
                    state = next;
                    ev.lift(entry);
                    entry = ev.head_next;
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = ev.next_of(entry);
        } else {
            // A return whose call is not linearized: back-track.
            if calls.len() >= deepest.0 {
                deepest = (calls.len(), ev.time[entry]);
            }
            let Some((call, s)) = calls.pop() else {
                return Verdict::Violation {
                    stuck_at: deepest.1,
                    depth: deepest.0,
                };
            };
            let op = ev.op[call];
            state = s;
            linearized[op / 64] &= !(1 << (op % 64));
            ev.unlift(call);
            entry = ev.next_of(call);
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(op: RegOp, call: u64, ret: u64) -> Interval {
        Interval {
            op,
            call,
            ret: Some(ret),
        }
    }

    fn lost(op: RegOp, call: u64) -> Interval {
        Interval {
            op,
            call,
            ret: None,
        }
    }

    const B: u64 = 1_000_000;

    #[test]
    fn sequential_register_is_linearizable() {
        let h = [
            iv(RegOp::Read(None), 0, 1),
            iv(RegOp::Write(5), 2, 3),
            iv(RegOp::Read(Some(5)), 4, 5),
            iv(RegOp::Incr(Some(6)), 6, 7),
            iv(RegOp::Read(Some(6)), 8, 9),
        ];
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_acknowledged_write_is_a_violation() {
        let h = [
            iv(RegOp::Write(1), 0, 1),
            iv(RegOp::Write(2), 2, 3),
            iv(RegOp::Read(Some(1)), 4, 5),
        ];
        assert!(matches!(check(&h, None, B), Verdict::Violation { .. }));
    }

    #[test]
    fn concurrent_operations_may_be_ordered_either_way() {
        // Write 2 overlaps both reads: read 1 then read 2 is fine.
        let h = [
            iv(RegOp::Write(1), 0, 1),
            iv(RegOp::Write(2), 2, 10),
            iv(RegOp::Read(Some(1)), 3, 4),
            iv(RegOp::Read(Some(2)), 5, 6),
        ];
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
        // ...but not 2 then 1 (no new write of 1 in between).
        let h = [
            iv(RegOp::Write(1), 0, 1),
            iv(RegOp::Write(2), 2, 10),
            iv(RegOp::Read(Some(2)), 3, 4),
            iv(RegOp::Read(Some(1)), 5, 6),
        ];
        assert!(matches!(check(&h, None, B), Verdict::Violation { .. }));
    }

    #[test]
    fn unknown_writes_may_apply_late_or_never() {
        // The lost write of 7 shows up long after its client gave up.
        let h = [
            iv(RegOp::Write(1), 0, 1),
            lost(RegOp::Write(7), 2),
            iv(RegOp::Read(Some(1)), 20, 21),
            iv(RegOp::Read(Some(7)), 30, 31),
        ];
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
        // ...or never.
        let h = [
            iv(RegOp::Write(1), 0, 1),
            lost(RegOp::Write(7), 2),
            iv(RegOp::Read(Some(1)), 30, 31),
        ];
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
        // But once seen it cannot vanish.
        let h = [
            iv(RegOp::Write(1), 0, 1),
            lost(RegOp::Write(7), 2),
            iv(RegOp::Read(Some(7)), 20, 21),
            iv(RegOp::Read(Some(1)), 30, 31),
        ];
        assert!(matches!(check(&h, None, B), Verdict::Violation { .. }));
    }

    #[test]
    fn incr_is_a_read_modify_write() {
        // Two concurrent INCRs from nil cannot both return 1.
        let h = [
            iv(RegOp::Incr(Some(1)), 0, 10),
            iv(RegOp::Incr(Some(1)), 1, 11),
        ];
        assert!(matches!(check(&h, None, B), Verdict::Violation { .. }));
        let h = [
            iv(RegOp::Incr(Some(2)), 0, 10),
            iv(RegOp::Incr(Some(1)), 1, 11),
            iv(RegOp::Read(Some(2)), 12, 13),
        ];
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
        // An unknown INCR explains a jump.
        let h = [
            iv(RegOp::Write(10), 0, 1),
            lost(RegOp::Incr(None), 2),
            iv(RegOp::Incr(Some(12)), 5, 6),
        ];
        assert_eq!(check(&h, None, B), Verdict::Linearizable);
    }

    #[test]
    fn many_concurrent_ops_stay_fast_thanks_to_memoization() {
        // 8 clients, 400 ops, heavy overlap: must decide well within budget.
        let mut h = Vec::new();
        let mut t = 0;
        for round in 0..50 {
            for c in 0..8u64 {
                let v = round * 8 + c as i64;
                h.push(iv(RegOp::Write(v), t + c, t + 20 + c));
            }
            t += 20;
            h.push(iv(RegOp::Read(Some(round * 8 + 7)), t + 10, t + 11));
            t += 12;
        }
        assert_eq!(check(&h, None, 5_000_000), Verdict::Linearizable);
    }
}
