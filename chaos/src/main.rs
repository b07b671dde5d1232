//! `shoal-chaos`: long chaos runs against a local cluster of real processes
//! (`scripts/chaos` builds and calls it), and re-checking of a saved
//! violation. See the `shoal_chaos` crate and docs/RELIABILITY.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shoal_chaos::{self as chaos, faults::FaultKind, RunConfig, Toggle};

#[derive(Parser)]
#[command(about = "Chaos runs: workloads + random faults on a local shoal cluster, then checkers")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Re-run the checkers on a saved violation file.
    Check { file: PathBuf },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Run length in minutes (added to --seconds).
    #[arg(long, default_value_t = 0)]
    minutes: u64,
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Seed of the fault schedule and the clients' choices (random if absent).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 4)]
    shards: u32,
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Bank workload (WATCH/MULTI/EXEC transfers, read-only MULTI snapshots).
    #[arg(long, default_value = "auto")]
    bank: Toggle,
    /// Move workload (SMOVE / LMOVE / RPOPLPUSH between shards, MULTI reads
    /// of every moved element).
    #[arg(long, default_value = "auto")]
    moves: Toggle,
    /// Lock workload (SET NX PX, the Redlock release script by EVALSHA).
    #[arg(long, default_value = "auto")]
    locks: Toggle,
    /// Rate-limiter workload (a sliding-window ZSET script).
    #[arg(long, default_value = "auto")]
    limiter: Toggle,
    /// INCR in the register workload.
    #[arg(long, default_value = "auto")]
    incr: Toggle,
    /// Comma-separated fault kinds (kill-node, kill-leader, pause-node,
    /// pause-leader, kill-router, restart-etcd, isolate-node, split-nodes, cut-router,
    /// join-drain);
    /// all by default.
    #[arg(long)]
    faults: Option<String>,
    /// The Raft engine of the cluster's tables: batch or openraft.
    #[arg(long, default_value = "batch")]
    engine: String,
    /// Where violation files go.
    #[arg(long, default_value = "chaos-out")]
    out: PathBuf,
    /// The shoal binary (default: next to this one).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    shoal::init_logging("warn");
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Check { file }) => match chaos::check_file(&file) {
            Ok(r) => report(&r),
            Err(e) => {
                eprintln!("shoal-chaos: {e:#}");
                ExitCode::from(2)
            }
        },
        None => run(cli.run),
    }
}

/// Print the report; exit 0 if every check passed, else 1.
fn report(r: &chaos::Report) -> ExitCode {
    println!("{r}");
    if r.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(a: RunArgs) -> ExitCode {
    let secs = a.minutes * 60 + a.seconds;
    let secs = if secs == 0 { 60 } else { secs };
    let seed = a.seed.unwrap_or_else(|| rand::random::<u32>() as u64);
    let bin = a.shoal_bin.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("shoal")))
            .unwrap_or_else(|| PathBuf::from("shoal"))
    });
    let mut cfg = RunConfig::new(bin, seed, Duration::from_secs(secs));
    cfg.nodes = a.nodes;
    cfg.shards = a.shards;
    cfg.replicas = a.replicas;
    cfg.register_clients = a.clients;
    cfg.bank = a.bank;
    cfg.moves = a.moves;
    cfg.locks = a.locks;
    cfg.limiter = a.limiter;
    cfg.incr = a.incr;
    cfg.out_dir = a.out;
    cfg.engine = a.engine;
    if let Some(f) = a.faults {
        let mut kinds = Vec::new();
        for name in f.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match FaultKind::parse(name) {
                Some(k) => kinds.push(k),
                None => {
                    eprintln!("shoal-chaos: unknown fault kind {name:?}");
                    return ExitCode::from(2);
                }
            }
        }
        cfg.fault_kinds = kinds;
    }
    match chaos::run(&cfg) {
        Ok(r) => report(&r),
        Err(e) => {
            eprintln!("shoal-chaos: harness error (seed {seed}): {e:#}");
            ExitCode::from(2)
        }
    }
}
