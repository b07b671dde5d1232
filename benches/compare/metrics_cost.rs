//! What the Prometheus endpoints cost (issue 20): a shoal cluster whose
//! nodes and router all serve `--metrics-listen`, measured with
//! redis-benchmark SET and GET, alternately with nothing scraping and with
//! every endpoint scraped once a second (Prometheus's usual interval is
//! 15 s: this is 15 times harsher). Rounds alternate off/on, then on/off,
//! so a drift of the machine over the run weighs on both sides alike.
//!
//! It also measures a scrape's own CPU directly: the processes' CPU time
//! over 50 back-to-back scrapes of every endpoint on the idle cluster,
//! which says what scraping each second costs whatever the load's noise.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal::devcluster::{ClusterOpts, LocalCluster};

use crate::{procs, redis_bench};

/// One workload's throughputs, round by round.
#[derive(Debug, Clone)]
pub struct CostRow {
    /// "SET" or "GET".
    pub workload: String,
    /// ops/s without scraping, per round.
    pub off: Vec<f64>,
    /// ops/s while every endpoint is scraped each second, per round.
    pub on: Vec<f64>,
}

impl CostRow {
    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    /// The throughput lost to scraping, in percent (negative: within noise,
    /// scraping measured faster).
    pub fn cost_pct(&self) -> f64 {
        let off = Self::mean(&self.off);
        if off == 0.0 {
            return 0.0;
        }
        100.0 * (1.0 - Self::mean(&self.on) / off)
    }
}

/// What the probe found.
#[derive(Debug, Clone, Default)]
pub struct MetricsCost {
    pub rows: Vec<CostRow>,
    /// CPU ms one scrape of all endpoints costs the cluster's processes.
    pub cpu_ms_per_scrape: f64,
    /// Bytes of one scrape of all endpoints.
    pub bytes_per_scrape: usize,
    /// Endpoints scraped.
    pub endpoints: usize,
}

pub struct Probe<'a> {
    pub bin: &'a Path,
    pub dir: &'a Path,
    pub rounds: usize,
    pub secs: f64,
    pub clients: usize,
    pub value_size: usize,
    pub keyspace: u64,
}

/// `GET path` over HTTP/1.0: the body.
fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("{addr}{path}: no HTTP answer");
    };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{addr}{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

pub fn run(p: &Probe) -> Result<MetricsCost> {
    let mut opts = ClusterOpts::new(p.bin, p.dir);
    opts.nodes = 3;
    opts.default_shards = 8;
    opts.default_replicas = 3;
    let metrics = ["--metrics-listen".to_string(), "127.0.0.1:0".to_string()];
    opts.node_args = vec!["--fsync".into(), "always".into()];
    opts.node_args.extend(metrics.clone());
    opts.router_args = metrics.to_vec();
    opts.ready_timeout = Duration::from_secs(120);
    let mut cl = LocalCluster::start(opts).context("shoal cluster with metrics")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let endpoints: Vec<String> = loop {
        let found = cl.metrics_addrs();
        if found.len() == 4 {
            break found.into_values().collect();
        }
        if Instant::now() > deadline {
            bail!("metrics addresses not logged: {found:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut pids: Vec<u32> = (1..=3).filter_map(|id| cl.node_pid(id)).collect();
    pids.extend(cl.router_pid(0));
    let cpu = |pids: &[u32]| -> f64 {
        pids.iter()
            .filter_map(|p| procs::sample(*p))
            .map(|x| x.cpu_s)
            .sum()
    };

    // A scrape's own cost, on the idle cluster.
    let scrape_all = |bytes: &AtomicU64| -> Result<()> {
        for e in &endpoints {
            let body = http_get(e, "/metrics")?;
            bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    };
    let bytes = AtomicU64::new(0);
    scrape_all(&bytes)?;
    let n = 50;
    let before = cpu(&pids);
    let bytes = AtomicU64::new(0);
    for _ in 0..n {
        scrape_all(&bytes)?;
    }
    let cpu_ms_per_scrape = (cpu(&pids) - before) * 1000.0 / n as f64;
    let bytes_per_scrape = (bytes.load(Ordering::Relaxed) / n as u64) as usize;
    eprintln!(
        "  one scrape of {} endpoints: {cpu_ms_per_scrape:.2} ms of CPU, {bytes_per_scrape} bytes",
        endpoints.len()
    );

    let router = cl.router_addr();
    let mut rows = Vec::new();
    for test in ["set", "get"] {
        let params = redis_bench::Params {
            addr: &router,
            test,
            clients: p.clients,
            value_size: p.value_size,
            keyspace: p.keyspace,
            pipeline: 1,
            command: None,
        };
        let requests = redis_bench::calibrate(&params, p.secs)?;
        let mut row = CostRow {
            workload: test.to_uppercase(),
            off: Vec::new(),
            on: Vec::new(),
        };
        for round in 0..p.rounds {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for scraping in order {
                let stop = Arc::new(AtomicBool::new(false));
                let scraper = scraping.then(|| {
                    let (stop, endpoints) = (stop.clone(), endpoints.clone());
                    std::thread::spawn(move || {
                        let mut failures = 0u32;
                        while !stop.load(Ordering::Relaxed) {
                            let next = Instant::now() + Duration::from_secs(1);
                            for e in &endpoints {
                                if http_get(e, "/metrics").is_err() {
                                    failures += 1;
                                }
                            }
                            while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                        failures
                    })
                });
                let r = redis_bench::run_once(&params, requests)?;
                stop.store(true, Ordering::Relaxed);
                if let Some(s) = scraper {
                    let failures = s.join().unwrap_or(u32::MAX);
                    if failures > 0 {
                        bail!("{failures} scrapes failed during the {test} round");
                    }
                }
                eprintln!(
                    "  {:<4} round {} {:<13} {:.0} ops/s",
                    row.workload,
                    round + 1,
                    if scraping {
                        "scraped 1/s"
                    } else {
                        "not scraped"
                    },
                    r.ops_per_sec
                );
                if scraping {
                    row.on.push(r.ops_per_sec);
                } else {
                    row.off.push(r.ops_per_sec);
                }
            }
        }
        rows.push(row);
    }
    let exits = cl.unexpected_exits();
    if !exits.is_empty() {
        bail!("a shoal process exited during the metrics probe: {exits:?}");
    }
    cl.shutdown();
    Ok(MetricsCost {
        rows,
        cpu_ms_per_scrape,
        bytes_per_scrape,
        endpoints: endpoints.len(),
    })
}
