//! Redis's own views of a router: what `INFO commandstats`, `INFO
//! latencystats`, `INFO errorstats`, `SLOWLOG` and `LATENCY` report.
//!
//! This module owns the counters behind them and their reply shapes:
//!
//! * [`CommandStats`]: per command calls, time, rejected and failed calls
//!   and a latency histogram, plus the error replies by prefix. They are
//!   written on every command, so they are sharded: a connection writes the
//!   shard of its id ([`SHARDS`] of them), each a row of relaxed atomics per
//!   command (allocated the first time the command runs). No lock is taken
//!   on the command path; error prefixes take their shard's lock, only when
//!   a command answers an error. Readers sum the shards.
//! * [`SlowLog`]: the last `slowlog-max-len` commands that took at least
//!   `slowlog-log-slower-than` µs (a lock, taken only for such commands).
//! * [`LatencyMonitor`]: Redis's latency events `command` and
//!   `fast-command` (a command at least `latency-monitor-threshold` ms,
//!   0: off), 160 samples per event, one per second (the worst); the
//!   nodes' `fsync` and `raft-commit` events are merged in when LATENCY
//!   asks (the worst per second over the live nodes, above the same
//!   threshold).
//!
//! A command's time is the router's wall-clock time from the start of its
//! execution to its reply: for a data command that is the shard round trip.
//! Requests of a pipeline run as one group (see [`super::pipeline`]) each
//! count the group's time. Commands queued in MULTI count under EXEC.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

use super::reply::Reply;
use crate::metrics::{EventLog, LatencyEvents};

/// Stats shards; a connection writes shard `id % SHARDS`.
pub const SHARDS: usize = 16;
/// Distinct error prefixes one shard tracks; further ones are counted
/// under [`ERRORS_OVERFLOW`].
const MAX_ERROR_KINDS: usize = 128;
const ERRORS_OVERFLOW: &str = "ERRORSTATS_OVERFLOW";

/// Histogram buckets: values under 8 ns exactly, then 8 linear sub-buckets
/// per power of two (at most 12.5 % wide), up to 2^40 ns (18 min; longer
/// counts there).
const SUB: usize = 8;
const MAX_POW: usize = 40;
const BUCKETS: usize = SUB + (MAX_POW - 2) * SUB;

/// The bucket of `ns`.
fn bucket(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let ns = ns.min((1u64 << MAX_POW) - 1);
    let pow = 63 - ns.leading_zeros() as usize; // >= 3
    let sub = ((ns >> (pow - 3)) & (SUB as u64 - 1)) as usize;
    SUB + (pow - 3) * SUB + sub
}

/// The largest value (ns) bucket `i` holds.
fn bucket_high(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let pow = (i - SUB) / SUB + 3;
    let sub = ((i - SUB) % SUB) as u64;
    let width = 1u64 << (pow - 3);
    (SUB as u64 + sub) * width + width - 1
}

/// One command's counters in one shard.
struct Cell {
    calls: AtomicU64,
    /// Total time, ns.
    nanos: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    hist: Box<[AtomicU64]>,
}

impl Cell {
    fn new() -> Cell {
        Cell {
            calls: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            hist: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn reset(&self) {
        for a in [&self.calls, &self.nanos, &self.rejected, &self.failed] {
            a.store(0, Ordering::Relaxed);
        }
        for b in self.hist.iter() {
            b.store(0, Ordering::Relaxed);
        }
    }
}

struct Shard {
    /// One per row of the command table, in its order.
    cells: Box<[OnceLock<Box<Cell>>]>,
    errors: Mutex<HashMap<String, u64>>,
}

/// A command's counters summed over the shards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandTotals {
    pub calls: u64,
    pub nanos: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Per bucket counts.
    pub hist: Vec<u64>,
}

impl CommandTotals {
    /// The value (µs) at percentile `p` (0-100]: the top of the bucket
    /// holding it, as HdrHistogram reports it.
    pub fn percentile_us(&self, p: f64) -> f64 {
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let want = ((p / 100.0 * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= want {
                return bucket_high(i) as f64 / 1000.0;
            }
        }
        bucket_high(BUCKETS - 1) as f64 / 1000.0
    }

    /// Redis's `histogram_usec`: cumulative counts at 1.024 µs doubling,
    /// only where the count grows.
    pub fn cumulative_usec(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut seen = 0u64;
        let mut i = 0;
        let total: u64 = self.hist.iter().sum();
        let mut pow = 10;
        while seen < total && pow <= MAX_POW {
            let limit = 1u64 << pow;
            let before = seen;
            while i < BUCKETS && bucket_high(i) < limit {
                seen += self.hist[i];
                i += 1;
            }
            if pow == MAX_POW {
                seen = total;
            }
            if seen > before {
                out.push((limit / 1000, seen));
            }
            pow += 1;
        }
        out
    }
}

/// How a command ended, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// It ran and answered an error.
    Failed,
}

/// Per command counters, sharded (see the module docs).
pub struct CommandStats {
    /// The command table's names, by row.
    pub names: Box<[&'static str]>,
    shards: Box<[Shard]>,
}

impl CommandStats {
    /// Counters for a command table whose rows are named `names`, in order
    /// (the table itself lives above this module).
    pub fn new(names: Vec<&'static str>) -> CommandStats {
        let rows = names.len();
        CommandStats {
            names: names.into(),
            shards: (0..SHARDS)
                .map(|_| Shard {
                    cells: (0..rows).map(|_| OnceLock::new()).collect(),
                    errors: Mutex::new(HashMap::new()),
                })
                .collect(),
        }
    }

    fn cell(&self, conn: u64, row: usize) -> Option<&Cell> {
        let shard = &self.shards[conn as usize % SHARDS];
        Some(shard.cells.get(row)?.get_or_init(|| Box::new(Cell::new())))
    }

    /// The command of table row `row` ran for `nanos`.
    pub fn record(&self, conn: u64, row: usize, nanos: u64, outcome: Outcome) {
        let Some(c) = self.cell(conn, row) else {
            return;
        };
        c.calls.fetch_add(1, Ordering::Relaxed);
        c.nanos.fetch_add(nanos, Ordering::Relaxed);
        if outcome == Outcome::Failed {
            c.failed.fetch_add(1, Ordering::Relaxed);
        }
        c.hist[bucket(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// A command was refused before it ran (arity, authentication).
    pub fn reject(&self, conn: u64, row: usize) {
        if let Some(c) = self.cell(conn, row) {
            c.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An error reply went to a client: count it under its first word.
    pub fn error(&self, conn: u64, message: &str) {
        let prefix = message.split(' ').next().unwrap_or("");
        let shard = &self.shards[conn as usize % SHARDS];
        let Ok(mut map) = shard.errors.lock() else {
            return;
        };
        if let Some(n) = map.get_mut(prefix) {
            *n += 1;
        } else if map.len() < MAX_ERROR_KINDS {
            map.insert(prefix.to_string(), 1);
        } else {
            *map.entry(ERRORS_OVERFLOW.to_string()).or_default() += 1;
        }
    }

    /// CONFIG RESETSTAT.
    pub fn reset(&self) {
        for s in self.shards.iter() {
            for c in s.cells.iter().filter_map(OnceLock::get) {
                c.reset();
            }
            if let Ok(mut m) = s.errors.lock() {
                m.clear();
            }
        }
    }

    /// Every command that ran or was refused since the last reset, in
    /// table order, with its totals.
    pub fn totals(&self) -> Vec<(&'static str, CommandTotals)> {
        let mut out = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            let mut t = CommandTotals {
                hist: vec![0; BUCKETS],
                ..Default::default()
            };
            let mut any = false;
            for s in self.shards.iter() {
                let Some(c) = s.cells[i].get() else { continue };
                any = true;
                t.calls += c.calls.load(Ordering::Relaxed);
                t.nanos += c.nanos.load(Ordering::Relaxed);
                t.rejected += c.rejected.load(Ordering::Relaxed);
                t.failed += c.failed.load(Ordering::Relaxed);
                for (sum, b) in t.hist.iter_mut().zip(c.hist.iter()) {
                    *sum += b.load(Ordering::Relaxed);
                }
            }
            if any && (t.calls > 0 || t.rejected > 0) {
                out.push((*name, t));
            }
        }
        out
    }

    /// Error replies by prefix, sorted.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for s in self.shards.iter() {
            if let Ok(m) = s.errors.lock() {
                for (k, v) in m.iter() {
                    *out.entry(k.clone()).or_default() += v;
                }
            }
        }
        out
    }

    /// All error replies counted.
    pub fn total_errors(&self) -> u64 {
        self.errors().values().sum()
    }

    /// `# Commandstats`, Redis 7's lines.
    pub fn info_commandstats(&self) -> String {
        let mut s = String::from("# Commandstats\r\n");
        for (name, t) in self.totals() {
            let usec = t.nanos / 1000;
            let per_call = if t.calls == 0 {
                0.0
            } else {
                usec as f64 / t.calls as f64
            };
            s.push_str(&format!(
                "cmdstat_{name}:calls={},usec={usec},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}\r\n",
                t.calls, t.rejected, t.failed
            ));
        }
        s.push_str("\r\n");
        s
    }

    /// `# Latencystats`: p50, p99, p99.9 of every command that ran.
    pub fn info_latencystats(&self) -> String {
        let mut s = String::from("# Latencystats\r\n");
        for (name, t) in self.totals() {
            if t.calls == 0 {
                continue;
            }
            s.push_str(&format!(
                "latency_percentiles_usec_{name}:p50={:.3},p99={:.3},p99.9={:.3}\r\n",
                t.percentile_us(50.0),
                t.percentile_us(99.0),
                t.percentile_us(99.9)
            ));
        }
        s.push_str("\r\n");
        s
    }

    /// `# Errorstats`.
    pub fn info_errorstats(&self) -> String {
        let mut s = String::from("# Errorstats\r\n");
        for (prefix, n) in self.errors() {
            s.push_str(&format!("errorstat_{prefix}:count={n}\r\n"));
        }
        s.push_str("\r\n");
        s
    }

    /// LATENCY HISTOGRAM [command ...]: per command a map of `calls` and
    /// `histogram_usec` (Redis 7's reply).
    pub fn histogram_reply(&self, wanted: &[String]) -> Reply {
        let totals = self.totals();
        let mut out = Vec::new();
        for (name, t) in totals {
            if t.calls == 0 || (!wanted.is_empty() && !wanted.iter().any(|w| w == name)) {
                continue;
            }
            let buckets = t
                .cumulative_usec()
                .into_iter()
                .map(|(us, n)| (Reply::Int(us as i64), Reply::Int(n as i64)))
                .collect();
            out.push((
                Reply::bulk(name),
                Reply::Map(vec![
                    (Reply::bulk("calls"), Reply::Int(t.calls as i64)),
                    (Reply::bulk("histogram_usec"), Reply::Map(buckets)),
                ]),
            ));
        }
        Reply::Map(out)
    }
}

/// Redis's limits on what a slow log entry keeps of a command.
const SLOWLOG_MAX_ARGC: usize = 32;
const SLOWLOG_MAX_STRING: usize = 128;

/// One slow command.
#[derive(Debug, Clone)]
pub struct SlowEntry {
    pub id: u64,
    /// Unix seconds.
    pub time: u64,
    pub micros: u64,
    /// As [`slowlog_argv`] keeps them.
    pub argv: Vec<Bytes>,
    /// The client's `addr:port` and name.
    pub peer: String,
    pub name: String,
}

/// SLOWLOG's entries and settings.
#[derive(Debug)]
pub struct SlowLog {
    entries: Mutex<VecDeque<SlowEntry>>,
    next_id: AtomicU64,
    /// µs; negative: off.
    pub slower_than: AtomicI64,
    pub max_len: AtomicU64,
}

impl Default for SlowLog {
    fn default() -> Self {
        SlowLog {
            entries: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            slower_than: AtomicI64::new(10_000),
            max_len: AtomicU64::new(128),
        }
    }
}

/// A command as the slow log keeps it: at most 32 arguments (the last says
/// how many more there were), each at most 128 bytes (then how many more).
pub fn slowlog_argv(parts: &[Bytes]) -> Vec<Bytes> {
    let argc = parts.len();
    let kept = argc.min(SLOWLOG_MAX_ARGC);
    let mut out = Vec::with_capacity(kept);
    for (j, a) in parts.iter().take(kept).enumerate() {
        if kept != argc && j == kept - 1 {
            out.push(Bytes::from(format!(
                "... ({} more arguments)",
                argc - kept + 1
            )));
        } else if a.len() > SLOWLOG_MAX_STRING {
            let mut s = a[..SLOWLOG_MAX_STRING].to_vec();
            s.extend_from_slice(
                format!("... ({} more bytes)", a.len() - SLOWLOG_MAX_STRING).as_bytes(),
            );
            out.push(Bytes::from(s));
        } else {
            out.push(a.clone());
        }
    }
    out
}

impl SlowLog {
    /// Whether a command of `micros` is logged.
    pub fn wants(&self, micros: u64) -> bool {
        let t = self.slower_than.load(Ordering::Relaxed);
        t >= 0 && micros >= t as u64
    }

    pub fn push(&self, parts: &[Bytes], micros: u64, peer: String, name: String) {
        let entry = SlowEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            time: crate::metrics::unix_secs(),
            micros,
            argv: slowlog_argv(parts),
            peer,
            name,
        };
        let max = self.max_len.load(Ordering::Relaxed) as usize;
        if let Ok(mut e) = self.entries.lock() {
            e.push_front(entry);
            e.truncate(max);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        if let Ok(mut e) = self.entries.lock() {
            e.clear();
        }
    }

    /// The newest `count` entries, newest first (the console's list).
    pub fn recent(&self, count: usize) -> Vec<SlowEntry> {
        self.entries
            .lock()
            .map(|e| e.iter().take(count).cloned().collect())
            .unwrap_or_default()
    }

    /// SLOWLOG GET: the newest `count` entries (all for `None`).
    pub fn get(&self, count: Option<usize>) -> Reply {
        let Ok(e) = self.entries.lock() else {
            return Reply::Array(Vec::new());
        };
        let n = count.unwrap_or(e.len()).min(e.len());
        Reply::Array(
            e.iter()
                .take(n)
                .map(|s| {
                    Reply::Array(vec![
                        Reply::Int(s.id as i64),
                        Reply::Int(s.time as i64),
                        Reply::Int(s.micros as i64),
                        Reply::Array(s.argv.iter().cloned().map(Reply::Bulk).collect()),
                        Reply::bulk(s.peer.clone()),
                        Reply::bulk(s.name.clone()),
                    ])
                })
                .collect(),
        )
    }
}

/// LATENCY's events: the router's own (`command`, `fast-command`) and
/// the nodes' (`fsync`, `raft-commit`, read from their status when asked),
/// the threshold that admits them, and when each was last reset.
#[derive(Debug, Default)]
pub struct LatencyMonitor {
    /// ms; 0: off.
    pub threshold_ms: AtomicU64,
    own: LatencyEvents,
    /// LATENCY RESET of node events: per event (or "" for all) the second
    /// up to which their samples are hidden.
    reset_at: Mutex<BTreeMap<String, u64>>,
}

/// The events as LATENCY shows them, by name.
pub type Events = BTreeMap<String, EventLog>;

impl LatencyMonitor {
    /// Note `event` taking `ms`, if at least the threshold (and it is on).
    pub fn sample(&self, event: &'static str, ms: u64) {
        let t = self.threshold_ms.load(Ordering::Relaxed);
        if t == 0 || ms < t {
            return;
        }
        self.own.sample(event, ms);
    }

    /// This router's events with the nodes' merged in: a node sample shows
    /// when at least the threshold and newer than the event's last reset;
    /// of the nodes' samples of one second the worst shows.
    pub fn events(&self, nodes: &[Events]) -> Events {
        let mut all = self.own.snapshot();
        let t = self.threshold_ms.load(Ordering::Relaxed);
        if t == 0 {
            return all;
        }
        let reset = self.reset_at.lock().map(|r| r.clone()).unwrap_or_default();
        let mut merged: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
        for node in nodes {
            for (name, log) in node {
                let cutoff = reset
                    .get(name)
                    .copied()
                    .max(reset.get("").copied())
                    .unwrap_or(0);
                let seconds = merged.entry(name.clone()).or_default();
                for &(at, ms) in &log.samples {
                    if ms >= t && at > cutoff {
                        let worst = seconds.entry(at).or_default();
                        *worst = (*worst).max(ms);
                    }
                }
            }
        }
        for (name, seconds) in merged {
            if seconds.is_empty() {
                continue;
            }
            let log = all.entry(name).or_default();
            for (at, ms) in seconds {
                log.add(at, ms);
            }
            log.samples.make_contiguous().sort_unstable();
        }
        all
    }

    /// LATENCY RESET [event ...]: how many events were dropped (`known`:
    /// the events shown now). Node events are hidden up to now.
    pub fn reset(&self, which: &[String], known: &Events) -> i64 {
        let now = crate::metrics::unix_secs();
        if let Ok(mut r) = self.reset_at.lock() {
            if which.is_empty() {
                r.clear();
                r.insert(String::new(), now);
            } else {
                for w in which {
                    r.insert(w.clone(), now);
                }
            }
        }
        self.own.reset(which);
        if which.is_empty() {
            known.len() as i64
        } else {
            which.iter().filter(|w| known.contains_key(*w)).count() as i64
        }
    }
}

/// LATENCY LATEST: per event its name, the time and value of its latest
/// sample, and its worst.
pub fn latency_latest(events: &Events) -> Reply {
    Reply::Array(
        events
            .iter()
            .filter_map(|(name, log)| {
                let (at, ms) = log.samples.back()?;
                Some(Reply::Array(vec![
                    Reply::bulk(name.clone()),
                    Reply::Int(*at as i64),
                    Reply::Int(*ms as i64),
                    Reply::Int(log.max as i64),
                ]))
            })
            .collect(),
    )
}

/// LATENCY HISTORY event: (time, ms) pairs, oldest first.
pub fn latency_history(events: &Events, event: &str) -> Reply {
    let samples = events.get(event).map(|l| &l.samples);
    Reply::Array(
        samples
            .into_iter()
            .flatten()
            .map(|(at, ms)| Reply::Array(vec![Reply::Int(*at as i64), Reply::Int(*ms as i64)]))
            .collect(),
    )
}

/// LATENCY DOCTOR: Redis's report, with the router's advice.
pub fn latency_doctor(events: &Events, threshold: u64) -> String {
    if events.is_empty() && threshold == 0 {
        return "I'm sorry, Dave, I can't do that. Latency monitoring is disabled in this Redis instance. You may use \"CONFIG SET latency-monitor-threshold <milliseconds>.\" in order to enable it. If we weren't in a deep space mission I'd suggest to take a look at https://redis.io/topics/latency-monitor.\n".into();
    }
    if events.is_empty() {
        return "Dave, no latency spike was observed during the lifetime of this Redis instance, not in the slightest bit. I honestly think you ought to sit down calmly, take a stress pill, and think things over.\n".into();
    }
    let mut s = String::from("Dave, I have observed latency spikes in this Redis instance. You don't mind talking about it, do you Dave?\n\n");
    for (i, (name, log)) in events.iter().enumerate() {
        let n = log.samples.len() as u64;
        let avg = log.samples.iter().map(|(_, ms)| ms).sum::<u64>() / n.max(1);
        s.push_str(&format!(
            "{}. {name}: {n} latency spikes (average {avg}ms). Worst all time event {}ms.\n",
            i + 1,
            log.max
        ));
    }
    s.push_str("\nI have a few advices for you:\n\n- This is a shoal router: a slow command is almost always a slow shard (a Raft commit, an fsync, a leader change) or a command that reaches many shards. The fsync and raft-commit events come from the nodes (the worst of each second over all of them). SLOWLOG GET shows which commands; INFO cluster shows moves and leaders; the nodes' logs show elections and stalls.\n");
    s
}

/// Calls and failed calls per table (by its index) and command row: the
/// `table` label of the router's command counter. A table's row is made
/// the first time a command runs in it; reading it takes a read lock.
pub struct TableStats {
    rows: usize,
    by_db: std::sync::RwLock<HashMap<u32, Box<[[AtomicU64; 2]]>>>,
}

impl TableStats {
    fn new(rows: usize) -> TableStats {
        TableStats {
            rows,
            by_db: Default::default(),
        }
    }

    /// The command of row `row` ran in table `db` and ended in `outcome`.
    pub fn record(&self, db: u32, row: usize, outcome: Outcome) {
        let add = |cells: &[[AtomicU64; 2]]| {
            if let Some(c) = cells.get(row) {
                c[(outcome == Outcome::Failed) as usize].fetch_add(1, Ordering::Relaxed);
            }
        };
        // Counted under the read lock: no reference count is touched.
        if let Some(cells) = self.by_db.read().ok().as_ref().and_then(|m| m.get(&db)) {
            return add(cells);
        }
        if let Ok(mut m) = self.by_db.write() {
            add(m.entry(db).or_insert_with(|| {
                (0..self.rows)
                    .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                    .collect()
            }));
        }
    }

    /// (table index, row, ok calls, failed calls) of every row that ran.
    pub fn totals(&self) -> Vec<(u32, usize, u64, u64)> {
        let Ok(m) = self.by_db.read() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (db, cells) in m.iter() {
            for (row, c) in cells.iter().enumerate() {
                let (ok, failed) = (c[0].load(Ordering::Relaxed), c[1].load(Ordering::Relaxed));
                if ok + failed > 0 {
                    out.push((*db, row, ok, failed));
                }
            }
        }
        out
    }
}

/// Everything above, shared by the router's connections.
pub struct Views {
    pub stats: CommandStats,
    pub tables: TableStats,
    pub slowlog: SlowLog,
    pub latency: LatencyMonitor,
    pub monitors: super::monitor::Monitors,
}

impl Views {
    /// The views of a router whose command table's rows are `names`.
    pub fn new(names: Vec<&'static str>) -> Views {
        Views {
            tables: TableStats::new(names.len()),
            stats: CommandStats::new(names),
            slowlog: Default::default(),
            latency: Default::default(),
            monitors: Default::default(),
        }
    }
}

/// Redis's `addReplyHelp`: a title line, the lines, and HELP's own.
pub(super) fn help(command: &str, lines: &[&str]) -> Reply {
    let mut out = vec![Reply::status(format!(
        "{command} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ))];
    out.extend(lines.iter().map(|l| Reply::status(*l)));
    out.push(Reply::status("HELP"));
    out.push(Reply::status("    Prints this help."));
    Reply::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_in_order() {
        let mut last = 0;
        for ns in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            1000,
            1023,
            1024,
            1_000_000,
            1 << 39,
            u64::MAX,
        ] {
            let b = bucket(ns);
            assert!(b >= last, "{ns}");
            assert!(b < BUCKETS);
            assert!(bucket_high(b) >= ns.min((1 << MAX_POW) - 1), "{ns} in {b}");
            if b > 0 {
                assert!(bucket_high(b - 1) < ns, "{ns} in {b}");
            }
            last = b;
        }
        // At most 12.5 % wide.
        let b = bucket(1_000_000);
        assert!(bucket_high(b) <= 1_125_000);
    }

    #[test]
    fn percentiles_and_cumulative_buckets() {
        let stats = CommandStats::new(vec!["get", "set"]);
        for i in 0..1000u64 {
            // 990 at ~10 µs, 10 at ~1 ms: p50 about 10, p99.9 about 1000.
            let ns = if i % 100 == 0 { 1_000_000 } else { 10_000 };
            stats.record(i, 0, ns, Outcome::Ok);
        }
        let (name, t) = stats.totals().into_iter().next().unwrap();
        assert_eq!((name, t.calls), ("get", 1000));
        let p50 = t.percentile_us(50.0);
        let p999 = t.percentile_us(99.9);
        assert!((10.0..11.3).contains(&p50), "{p50}");
        assert!((1000.0..1125.0).contains(&p999), "{p999}");
        let cdf = t.cumulative_usec();
        assert_eq!(cdf, vec![(16, 990), (1048, 1000)]);
        stats.reset();
        assert!(stats.totals().is_empty());
    }

    #[test]
    fn slowlog_argv_is_cut_as_redis_cuts_it() {
        let many: Vec<Bytes> = (0..40).map(|i| Bytes::from(i.to_string())).collect();
        let kept = slowlog_argv(&many);
        assert_eq!(kept.len(), 32);
        assert_eq!(kept[30], Bytes::from("30"));
        assert_eq!(kept[31], Bytes::from("... (9 more arguments)"));
        let long = vec![Bytes::from("set"), Bytes::from(vec![b'x'; 130])];
        let kept = slowlog_argv(&long);
        assert_eq!(kept[1].len(), 128 + "... (2 more bytes)".len());
        assert!(kept[1].ends_with(b"... (2 more bytes)"));
        let exact: Vec<Bytes> = (0..32).map(|i| Bytes::from(i.to_string())).collect();
        assert_eq!(slowlog_argv(&exact), exact);
    }

    #[test]
    fn latency_events_keep_one_sample_per_second_and_the_worst() {
        let m = LatencyMonitor::default();
        m.sample("command", 500);
        assert_eq!(
            latency_latest(&m.events(&[])),
            Reply::Array(vec![]),
            "off by default"
        );
        m.threshold_ms.store(10, Ordering::Relaxed);
        m.sample("command", 5);
        m.sample("command", 20);
        m.sample("command", 30);
        let Reply::Array(h) = latency_history(&m.events(&[]), "command") else {
            panic!()
        };
        // The same second, or two seconds if the clock turned.
        assert!(!h.is_empty() && h.len() <= 2);
        let Reply::Array(latest) = latency_latest(&m.events(&[])) else {
            panic!()
        };
        let Reply::Array(row) = &latest[0] else {
            panic!()
        };
        assert_eq!(row[3], Reply::Int(30));
        assert_eq!(m.reset(&[], &m.events(&[])), 1);
        assert_eq!(m.reset(&[], &m.events(&[])), 0);
    }

    #[test]
    fn node_events_merge_above_the_threshold_and_after_a_reset() {
        let m = LatencyMonitor::default();
        let node = |samples: &[(u64, u64)]| {
            let mut log = EventLog::default();
            for &(at, ms) in samples {
                log.add(at, ms);
            }
            Events::from([("fsync".to_string(), log)])
        };
        let nodes = [node(&[(100, 5), (101, 40)]), node(&[(100, 30), (102, 8)])];
        assert!(m.events(&nodes).is_empty(), "off: nothing shows");
        m.threshold_ms.store(10, Ordering::Relaxed);
        let events = m.events(&nodes);
        // Per second the worst over the nodes, below the threshold dropped.
        assert_eq!(
            events["fsync"].samples,
            std::collections::VecDeque::from([(100, 30), (101, 40)])
        );
        assert_eq!(events["fsync"].max, 40);
        assert_eq!(m.reset(&["fsync".to_string()], &events), 1);
        assert!(m.events(&nodes).is_empty(), "older samples hidden");
    }
}
