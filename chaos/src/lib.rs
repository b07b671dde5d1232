//! The chaos harness (issue #6), a crate of its own that the `shoal` binary
//! never links: a real cluster (etcd, nodes, two routers),
//! concurrent clients whose every operation is recorded, faults injected at
//! random from a seed, then checkers over the recorded history.
//!
//! Pure parts: [`history`] (the record), [`linearizability`] and [`checks`]
//! (the checkers), the choice of operations in [`workload`] and of faults in
//! [`faults`]. I/O drivers: the client loops in [`workload`] and
//! [`scripted`] (the lock and rate-limiter scripts), [`faults::Injector`]
//! and [`run`]. `tests/chaos.rs` runs a short randomized run; `scripts/chaos`
//! (the `shoal-chaos` binary) runs long ones. docs/RELIABILITY.md records
//! what was run and found.
//!
//! A seed fixes the fault schedule and every client's choice of operations,
//! not the interleaving: a violation is replayed by re-checking its saved
//! history (`shoal-chaos check <file>`) and re-run (probabilistically) with
//! the same seed.

pub mod checks;
pub mod faults;
pub mod history;
pub mod linearizability;
pub mod resp;
pub mod scripted;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use checks::{Population, Violation};
use faults::{FaultKind, FaultStats, Injector};
use history::{Call, History, Outcome, Recorder};
use shoal::devcluster::{ClusterOpts, LocalCluster};
use workload::{Bounds, KeySpace, Mix, Routers};

/// On, off, or on when the cluster supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    On,
    Off,
    Auto,
}

impl Toggle {
    fn auto() -> Toggle {
        Toggle::Auto
    }
}

impl std::str::FromStr for Toggle {
    type Err = String;
    fn from_str(s: &str) -> Result<Toggle, String> {
        match s {
            "on" => Ok(Toggle::On),
            "off" => Ok(Toggle::Off),
            "auto" => Ok(Toggle::Auto),
            _ => Err(format!("expected on, off or auto, not {s:?}")),
        }
    }
}

/// A chaos run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    pub seed: u64,
    /// How long clients run while faults are injected.
    pub duration: Duration,
    pub nodes: usize,
    pub shards: u32,
    pub replicas: u32,
    pub register_clients: u32,
    /// INCR in the register workload (auto: if the router knows INCR).
    pub incr: Toggle,
    /// READONLY reads in the register workload.
    pub readonly: bool,
    /// The bank workload (auto: if the router accepts MULTI).
    pub bank: Toggle,
    pub bank_accounts: usize,
    /// The move workload: SMOVE / LMOVE / RPOPLPUSH between shards (auto:
    /// if the router knows SMOVE and the table has more than one shard).
    #[serde(default = "Toggle::auto")]
    pub moves: Toggle,
    /// The lock workload: SET NX PX and the release script (auto: if the
    /// router runs EVAL).
    #[serde(default = "Toggle::auto")]
    pub locks: Toggle,
    /// The rate-limiter workload: a sliding-window ZSET script (auto: if
    /// the router runs EVAL).
    #[serde(default = "Toggle::auto")]
    pub limiter: Toggle,
    pub fault_kinds: Vec<FaultKind>,
    /// Quiet time between two faults (random in this range, ms).
    pub quiet_ms: (u64, u64),
    pub keyspace_epoch_ms: u64,
    pub keys_per_epoch: u32,
    /// The Raft engine of the cluster's tables (the router's
    /// `--default-engine`): `openraft` or `batch`.
    pub engine: String,
    /// The `shoal` binary.
    pub bin: PathBuf,
    /// Cluster directory (a fresh temporary one when `None`).
    pub dir: Option<PathBuf>,
    /// Where a violation's history is saved.
    pub out_dir: PathBuf,
}

impl RunConfig {
    pub fn new(bin: impl Into<PathBuf>, seed: u64, duration: Duration) -> RunConfig {
        RunConfig {
            seed,
            duration,
            nodes: 3,
            shards: 4,
            replicas: 3,
            register_clients: 4,
            incr: Toggle::Auto,
            readonly: true,
            bank: Toggle::Auto,
            bank_accounts: 5,
            moves: Toggle::Auto,
            locks: Toggle::Auto,
            limiter: Toggle::Auto,
            fault_kinds: FaultKind::ALL.to_vec(),
            quiet_ms: (1_000, 4_000),
            keyspace_epoch_ms: 10_000,
            keys_per_epoch: 8,
            engine: "batch".into(),
            bin: bin.into(),
            dir: None,
            out_dir: std::env::temp_dir(),
        }
    }
}

/// What a run did and found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub seed: u64,
    pub seconds: f64,
    pub ops: usize,
    pub ops_ok: usize,
    pub ops_fail: usize,
    pub ops_unknown: usize,
    pub incr: bool,
    pub bank: bool,
    pub faults: FaultStats,
    pub keys_checked: usize,
    pub register_ops_checked: usize,
    pub undecided_keys: Vec<String>,
    pub final_reads_checked: usize,
    pub unreadable_keys: Vec<String>,
    pub readonly_reads_checked: usize,
    pub bank_snapshots_checked: usize,
    pub transfers_committed: usize,
    /// The move workload ran.
    #[serde(default)]
    pub moves: bool,
    /// SMOVE / LMOVE / RPOPLPUSH sent, and those that moved something.
    #[serde(default)]
    pub moves_sent: usize,
    #[serde(default)]
    pub moves_done: usize,
    #[serde(default)]
    pub moves_unknown: usize,
    /// Median time of an SMOVE / LMOVE / RPOPLPUSH that answered, in ms.
    #[serde(default)]
    pub move_median_ms: u64,
    /// Atomic reads of the moved population checked (final one included).
    #[serde(default)]
    pub move_snapshots_checked: usize,
    /// The lock workload ran (or, re-checked from a file, left acquires).
    #[serde(default)]
    pub locks: bool,
    /// Acquires sent; those that held the lock (OK within TTL/2); those
    /// whose OK came too late to count.
    #[serde(default)]
    pub lock_acquires: usize,
    #[serde(default)]
    pub locks_held: usize,
    #[serde(default)]
    pub locks_late: usize,
    /// Releases sent, and those that deleted the holder's own key (1).
    #[serde(default)]
    pub lock_releases: usize,
    #[serde(default)]
    pub lock_releases_done: usize,
    /// The rate-limiter workload ran (or left requests).
    #[serde(default)]
    pub limiter: bool,
    #[serde(default)]
    pub limiter_admitted: usize,
    #[serde(default)]
    pub limiter_rejected: usize,
    #[serde(default)]
    pub limiter_unknown: usize,
    /// How far the wall clock moved against the monotonic one during the
    /// run (least, greatest, in ms; see [`checks::clock_drift_us`]).
    #[serde(default)]
    pub clock_drift_ms: Option<(i64, i64)>,
    /// The lock checker took its intervals on the wall clock.
    #[serde(default)]
    pub locks_on_wall_clock: bool,
    pub violations: Vec<Violation>,
    /// Processes that died without being killed by the harness.
    pub crashes: Vec<String>,
    /// Where the history was saved (on a violation).
    pub saved: Option<PathBuf>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.crashes.is_empty() && self.unreadable_keys.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fs = &self.faults;
        writeln!(f, "chaos run seed={} ({:.0} s)", self.seed, self.seconds)?;
        writeln!(
            f,
            "  operations   {} (ok {}, fail {}, unknown {}); incr {}, bank {}, moves {}, locks {}, limiter {}",
            self.ops,
            self.ops_ok,
            self.ops_fail,
            self.ops_unknown,
            self.incr,
            self.bank,
            self.moves,
            self.locks,
            self.limiter
        )?;
        writeln!(
            f,
            "  faults       {} (kill-node {}, kill-leader {}, pause-node {}, pause-leader {}, kill-router {}, restart-etcd {}, partition {}, \
             join {}, drain {} ({} finished, {} replicas had moved onto joined nodes))",
            fs.total(),
            fs.kill_node,
            fs.kill_leader,
            fs.pause_node,
            fs.pause_leader,
            fs.kill_router,
            fs.restart_etcd,
            fs.partition,
            fs.joins,
            fs.drains,
            fs.drains_done,
            fs.replicas_moved_on
        )?;
        match fs.failover() {
            Some((med, max)) => writeln!(
                f,
                "  failover     median {med} ms, max {max} ms over {} leader kills ({} without a write in 30 s)",
                fs.failover_ms.len(),
                fs.failover_timeouts
            )?,
            None => writeln!(f, "  failover     no leader kill measured")?,
        }
        writeln!(
            f,
            "  checks       linearizability: {} keys / {} ops ({} undecided); lost writes: {} keys; \
             READONLY: {} reads; bank: {} snapshots, {} transfers committed; \
             moves: {} snapshots, {} moved of {} sent ({} unknown, median {} ms)",
            self.keys_checked,
            self.register_ops_checked,
            self.undecided_keys.len(),
            self.final_reads_checked,
            self.readonly_reads_checked,
            self.bank_snapshots_checked,
            self.transfers_committed,
            self.move_snapshots_checked,
            self.moves_done,
            self.moves_sent,
            self.moves_unknown,
            self.move_median_ms
        )?;
        if self.locks || self.limiter {
            writeln!(
                f,
                "  scripts      locks: {} held of {} acquires ({} late), {} released of {} releases; \
                 limiter: {} admitted, {} rejected, {} unknown",
                self.locks_held,
                self.lock_acquires,
                self.locks_late,
                self.lock_releases_done,
                self.lock_releases,
                self.limiter_admitted,
                self.limiter_rejected,
                self.limiter_unknown
            )?;
        }
        if let Some((lo, hi)) = self.clock_drift_ms {
            writeln!(
                f,
                "  clock        wall clock against the monotonic clock: {lo:+} .. {hi:+} ms over the run{}",
                if self.locks && self.locks_on_wall_clock {
                    "; locks checked on the wall clock"
                } else {
                    ""
                }
            )?;
        }
        for c in &self.crashes {
            writeln!(f, "  CRASH        {c}")?;
        }
        if !self.unreadable_keys.is_empty() {
            writeln!(
                f,
                "  UNREADABLE   {} keys could not be read after healing: {:?}",
                self.unreadable_keys.len(),
                self.unreadable_keys.iter().take(10).collect::<Vec<_>>()
            )?;
        }
        for v in self.violations.iter().take(SHOWN_VIOLATIONS) {
            writeln!(f, "  VIOLATION    [{}] {}", v.checker, v.message)?;
        }
        if self.violations.len() > SHOWN_VIOLATIONS {
            writeln!(
                f,
                "  VIOLATION    ... and {} more (all in the saved history)",
                self.violations.len() - SHOWN_VIOLATIONS
            )?;
        }
        if let Some(p) = &self.saved {
            writeln!(f, "  saved        {}", p.display())?;
            writeln!(
                f,
                "  replay       re-check: shoal-chaos check {}\n               re-run:   scripts/chaos --seconds {:.0} --seed {}",
                p.display(),
                self.seconds,
                self.seed
            )?;
        }
        write!(
            f,
            "  result       {}",
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

/// Violations the report prints (a value lost for good breaks every later
/// snapshot); the saved history holds them all.
const SHOWN_VIOLATIONS: usize = 20;

/// What a violation file holds: enough to re-check without the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub seed: u64,
    pub config: RunConfig,
    pub accounts: Vec<String>,
    pub bank_total: i64,
    /// The move workload's keys and population (`None`: it did not run).
    #[serde(default)]
    pub population: Option<Population>,
    pub violations: Vec<Violation>,
    pub history: History,
}

/// Every checker over a history (`pop`: the move workload's, if it ran).
pub fn check_history(
    h: &History,
    accounts: &[String],
    bank_total: i64,
    pop: Option<&Population>,
    report: &mut Report,
) {
    let regs = checks::registers(h, checks::KEY_BUDGET);
    report.keys_checked = regs.keys;
    report.register_ops_checked = regs.ops;
    report.undecided_keys = regs.undecided;
    report.violations.extend(regs.violations);
    let (n, v) = checks::lost_writes(h);
    report.final_reads_checked = n;
    report.violations.extend(v);
    let (n, v) = checks::readonly_reads(h);
    report.readonly_reads_checked = n;
    report.violations.extend(v);
    if !accounts.is_empty() {
        let (n, v) = checks::bank(h, accounts, bank_total);
        report.bank_snapshots_checked = n;
        report.violations.extend(v);
    }
    if let Some(pop) = pop {
        let m = checks::moves(h, pop);
        report.moves = true;
        report.move_snapshots_checked = m.snapshots;
        report.moves_done = m.moved;
        report.violations.extend(m.violations);
    }
    let sent: Vec<&history::Op> = h
        .ops
        .iter()
        .filter(|o| matches!(o.call, Call::SMove { .. } | Call::LMove { .. }))
        .collect();
    script_checks(h, report);
    report.moves_sent = sent.len();
    report.moves_unknown = sent.iter().filter(|o| o.is_unknown()).count();
    let mut took: Vec<u64> = sent
        .iter()
        .filter(|o| o.is_ok())
        .map(|o| (o.complete - o.invoke) / 1000)
        .collect();
    took.sort_unstable();
    report.move_median_ms = took.get(took.len() / 2).copied().unwrap_or(0);
    report.ops = h.ops.len();
    report.clock_drift_ms = checks::clock_drift_us(h).map(|(lo, hi)| (lo / 1000, hi / 1000));
    report.ops_ok = h.ops.iter().filter(|o| o.is_ok()).count();
    report.ops_unknown = h.ops.iter().filter(|o| o.is_unknown()).count();
    report.ops_fail = report.ops - report.ops_ok - report.ops_unknown;
    report.transfers_committed = h
        .ops
        .iter()
        .filter(|o| {
            matches!(o.call, Call::Transfer { .. })
                && o.outcome == Outcome::Ok(history::Ret::Committed)
        })
        .count();
}

/// The lock and limiter checkers, and their counts. Each runs when its
/// workload left operations in the history (and then sets its flag in the
/// report; it never clears it).
pub fn script_checks(h: &History, report: &mut Report) {
    report.lock_acquires = h
        .ops
        .iter()
        .filter(|o| matches!(o.call, Call::Acquire { .. }))
        .count();
    let releases = || {
        h.ops
            .iter()
            .filter(|o| matches!(o.call, Call::Release { .. }))
    };
    report.lock_releases = releases().count();
    report.lock_releases_done = releases()
        .filter(|o| o.outcome == Outcome::Ok(history::Ret::Released(true)))
        .count();
    if report.lock_acquires > 0 {
        let l = checks::locks(h);
        report.locks = true;
        report.locks_held = l.held;
        report.locks_late = l.late;
        report.locks_on_wall_clock = l.wall_clock;
        report.violations.extend(l.violations);
    }
    if h.ops.iter().any(|o| matches!(o.call, Call::Admit { .. })) {
        let l = checks::limiter(h);
        report.limiter = true;
        report.limiter_admitted = l.admitted;
        report.limiter_rejected = l.rejected;
        report.limiter_unknown = l.unknown;
        report.violations.extend(l.violations);
    }
}

/// Re-run the checkers on a saved violation file.
pub fn check_file(path: &Path) -> Result<Report> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let saved: Saved = serde_json::from_slice(&bytes)?;
    let mut report = Report {
        seed: saved.seed,
        ..Report::default()
    };
    check_history(
        &saved.history,
        &saved.accounts,
        saved.bank_total,
        saved.population.as_ref(),
        &mut report,
    );
    Ok(report)
}

/// Run a whole chaos run: start the cluster, run the workloads while
/// injecting faults, heal, read everything back, check. Returns the report
/// (check [`Report::passed`]); `Err` only when the harness itself failed.
pub fn run(cfg: &RunConfig) -> Result<Report> {
    let started = Instant::now();
    let tmp;
    let dir = match &cfg.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile_dir()?;
            tmp.clone()
        }
    };
    let mut opts = ClusterOpts::new(&cfg.bin, &dir);
    opts.nodes = cfg.nodes;
    opts.default_shards = cfg.shards;
    opts.default_replicas = cfg.replicas;
    opts.router_args = vec!["--default-engine".into(), cfg.engine.clone()];
    opts.links = cfg.fault_kinds.iter().any(|k| k.is_partition());
    let mut cluster = LocalCluster::start(opts).context("starting the cluster")?;
    cluster.add_router().context("starting the second router")?;
    let result = drive(cfg, &mut cluster, started);
    if result.as_ref().map(|r| !r.passed()).unwrap_or(true) {
        eprintln!("cluster directory kept: {}", dir.display());
        eprintln!("{}", cluster.logs());
    }
    cluster.shutdown();
    drop(cluster);
    if cfg.dir.is_none() && result.as_ref().map(Report::passed).unwrap_or(false) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn tempfile_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir().join(format!(
        "shoal-chaos-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

fn drive(cfg: &RunConfig, cluster: &mut LocalCluster, started: Instant) -> Result<Report> {
    let routers = Routers::new(cluster.router_addrs());
    let first = cluster.router_addr();
    let incr = match cfg.incr {
        Toggle::On => true,
        Toggle::Off => false,
        Toggle::Auto => workload::incr_supported(&first),
    };
    let bank = match cfg.bank {
        Toggle::On => true,
        Toggle::Off => false,
        Toggle::Auto => workload::multi_supported(&first),
    };
    let moves = match cfg.moves {
        Toggle::On => true,
        Toggle::Off => false,
        Toggle::Auto => cfg.shards > 1 && workload::smove_supported(&first),
    };
    let scripts = || scripted::scripts_supported(&first);
    let locks = match cfg.locks {
        Toggle::On => true,
        Toggle::Off => false,
        Toggle::Auto => scripts(),
    };
    let limiter = match cfg.limiter {
        Toggle::On => true,
        Toggle::Off => false,
        Toggle::Auto => scripts(),
    };
    println!(
        "chaos: seed {} for {:?}: {} nodes, {} shards, incr {incr}, bank {bank}, moves {moves}, \
         locks {locks}, limiter {limiter}, readonly {}",
        cfg.seed, cfg.duration, cfg.nodes, cfg.shards, cfg.readonly
    );
    let accounts = if bank {
        workload::accounts(cfg.bank_accounts)
    } else {
        vec![]
    };
    workload::bank_setup(&first, &accounts)?;
    let bank_total = workload::BANK_START * accounts.len() as i64;
    let population = if moves {
        let pop = workload::move_population(&first)?;
        workload::move_setup(&first, &pop)?;
        Some(pop)
    } else {
        None
    };

    let rec = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let bounds = Bounds {
        deadline: Instant::now() + cfg.duration,
        max_ops: cfg.duration.as_secs().max(1) * 2_000,
        stop: stop.clone(),
    };
    let ks = KeySpace {
        epoch_ms: cfg.keyspace_epoch_ms,
        keys: cfg.keys_per_epoch,
    };
    let mix = Mix {
        incr,
        readonly: cfg.readonly,
    };
    let mut handles = Vec::new();
    for id in 0..cfg.register_clients {
        let (routers, rec, bounds) = (routers.clone(), rec.clone(), bounds.clone());
        let seed = cfg.seed;
        handles.push(thread::spawn(move || {
            workload::register_client(id, seed, routers, rec, ks, mix, bounds)
        }));
    }
    if bank {
        for (i, snapshots) in [false, false, true].into_iter().enumerate() {
            let (routers, rec, bounds) = (routers.clone(), rec.clone(), bounds.clone());
            let (seed, accounts) = (cfg.seed, accounts.clone());
            let id = 1000 + i as u32;
            handles.push(thread::spawn(move || {
                workload::bank_client(id, seed, routers, rec, accounts, snapshots, bounds)
            }));
        }
    }

    if let Some(pop) = &population {
        for (i, reader) in [false, false, true].into_iter().enumerate() {
            let (routers, rec, bounds) = (routers.clone(), rec.clone(), bounds.clone());
            let (seed, pop) = (cfg.seed, pop.clone());
            let id = 2000 + i as u32;
            handles.push(thread::spawn(move || {
                workload::move_client(id, seed, routers, rec, pop, reader, bounds)
            }));
        }
    }

    if locks {
        let spec = scripted::LockSpec::chaos();
        for k in 0..spec.keys {
            for i in 0..spec.clients_per_key {
                let (routers, rec, bounds) = (routers.clone(), rec.clone(), bounds.clone());
                let (seed, key) = (cfg.seed, scripted::LockSpec::key(k));
                let id = 3000 + k * 100 + i;
                handles.push(thread::spawn(move || {
                    scripted::lock_client(id, seed, routers, rec, key, spec, bounds)
                }));
            }
        }
    }
    if limiter {
        let spec = scripted::LimiterSpec::chaos();
        for i in 0..spec.clients {
            let (routers, rec, bounds) = (routers.clone(), rec.clone(), bounds.clone());
            let seed = cfg.seed;
            handles.push(thread::spawn(move || {
                scripted::limiter_client(4000 + i, seed, routers, rec, spec, bounds)
            }));
        }
    }

    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut injector = Injector::new(cluster, routers.clone(), rec.clone());
    let mut crashes = Vec::new();
    let mut harness_error = None;
    while Instant::now() < bounds.deadline {
        let quiet = rng.gen_range(cfg.quiet_ms.0..=cfg.quiet_ms.1.max(cfg.quiet_ms.0));
        let left = bounds.deadline.saturating_duration_since(Instant::now());
        thread::sleep(Duration::from_millis(quiet).min(left));
        if Instant::now() >= bounds.deadline {
            break;
        }
        let Some(fault) = faults::next_fault(&mut rng, cfg.nodes, &cfg.fault_kinds) else {
            continue;
        };
        if let Err(e) = injector.inject(&fault, &mut rng) {
            harness_error = Some(e.context(format!("injecting {fault:?}")));
            break;
        }
        crashes.extend(
            injector
                .cluster
                .unexpected_exits()
                .iter()
                .map(|e| e.to_string()),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    injector.heal()?;
    let stats = injector.stats.clone();
    crashes.extend(cluster.unexpected_exits().iter().map(|e| e.to_string()));
    if let Some(e) = harness_error {
        return Err(e);
    }

    // Every fault healed: read back everything that was written.
    rec.fault("all faults healed; final reads");
    let written = rec.snapshot();
    let mut keys: Vec<String> = written
        .ops
        .iter()
        .filter(|o| o.call.is_write())
        .filter_map(|o| o.call.key().map(str::to_string))
        .collect();
    keys.sort();
    keys.dedup();
    let routers_now = Routers::new(routers.all());
    let unreadable = workload::final_reads(&routers_now, &rec, &keys, Duration::from_secs(120));
    if bank && !workload::final_snapshot(&routers_now, &rec, &accounts, Duration::from_secs(60)) {
        crashes.push("no final bank snapshot succeeded within 60 s".into());
    }
    if let Some(pop) = &population {
        if !workload::final_contents(&routers_now, &rec, pop, Duration::from_secs(60)) {
            crashes.push("no final read of the moved population succeeded within 60 s".into());
        }
    }

    let history = rec.snapshot();
    let mut report = Report {
        seed: cfg.seed,
        incr,
        bank,
        locks,
        limiter,
        faults: stats,
        crashes,
        unreadable_keys: unreadable,
        ..Report::default()
    };
    check_history(
        &history,
        &accounts,
        bank_total,
        population.as_ref(),
        &mut report,
    );
    report.seconds = started.elapsed().as_secs_f64();
    if !report.passed() {
        let saved = Saved {
            seed: cfg.seed,
            config: cfg.clone(),
            accounts,
            bank_total,
            population,
            violations: report.violations.clone(),
            history,
        };
        std::fs::create_dir_all(&cfg.out_dir)?;
        let path = cfg.out_dir.join(format!(
            "chaos-violation-seed{}-{}.json",
            cfg.seed,
            std::process::id()
        ));
        std::fs::write(&path, serde_json::to_vec(&saved)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        report.saved = Some(path);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::history::{Op, Ret};
    use super::*;

    fn op(id: u64, client: u32, call: Call, invoke: u64, complete: u64, ret: Ret) -> Op {
        Op {
            id,
            client,
            call,
            invoke,
            complete,
            outcome: Outcome::Ok(ret),
            wall: None,
        }
    }

    /// The counterexample of bug 1 (docs/RELIABILITY.md): a SET in flight
    /// across a leader kill, resent by the router and applied twice.
    fn double_applied_set() -> History {
        let k = || "m:2:3".to_string();
        let set = |id, c, v, i, r| op(id, c, Call::Set { key: k(), value: v }, i, r, Ret::Done);
        let get = |id, c, v, i, r| op(id, c, Call::Get { key: k() }, i, r, Ret::Value(Some(v)));
        History {
            ops: vec![
                set(4701, 2, 3000001143, 24_228_995, 28_224_185),
                get(4713, 3, 3000001143, 27_912_531, 27_977_968),
                set(4727, 3, 4000001169, 28_102_937, 28_105_837),
                get(4735, 3, 4000001169, 28_118_328, 28_119_502),
                set(4751, 3, 4000001193, 28_174_281, 28_177_297),
                get(4762, 0, 3000001143, 28_225_921, 28_227_621),
            ],
            faults: vec![],
        }
    }

    #[test]
    fn the_double_applied_set_of_bug_1_is_caught_and_survives_a_save() {
        let h = double_applied_set();
        let mut report = Report::default();
        check_history(&h, &[], 0, None, &mut report);
        assert!(!report.passed());
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.violations[0].checker, "linearizability");

        // Saved and re-checked from the file, as `shoal-chaos check` does.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        let saved = Saved {
            seed: 2,
            config: RunConfig::new("shoal", 2, Duration::from_secs(1)),
            accounts: vec![],
            bank_total: 0,
            population: None,
            violations: report.violations.clone(),
            history: h.clone(),
        };
        std::fs::write(&path, serde_json::to_vec(&saved).unwrap()).unwrap();
        let again = check_file(&path).unwrap();
        assert_eq!(again.violations, report.violations);

        // Without the second application (the last GET sees the newest value), it passes.
        let mut good = h;
        good.ops[5].outcome = Outcome::Ok(Ret::Value(Some(4000001193)));
        let mut report = Report::default();
        check_history(&good, &[], 0, None, &mut report);
        assert!(report.passed(), "{report}");
    }
}
