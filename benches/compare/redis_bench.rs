//! Running `redis-benchmark` and reading its report: throughput from the
//! summary, p50/p99/p99.9 from the "Latency by percentile distribution"
//! section (for p99.9, the first listed percentile at or above 99.9 %, so
//! the value is an upper bound within redis-benchmark's HDR resolution).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Default)]
pub struct BenchResult {
    pub requests: u64,
    pub secs: f64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Error replies printed by `-e` (redis-benchmark prints at most one a
    /// second, so this is a lower bound; 0 means none was seen).
    pub errors_seen: u64,
    /// The command line, for the report.
    pub command: String,
}

pub struct Params<'a> {
    pub addr: &'a str,
    pub test: &'a str,
    pub clients: usize,
    pub value_size: usize,
    pub keyspace: u64,
    pub pipeline: usize,
    /// A command to run instead of `test` (redis-benchmark's trailing
    /// command form; `__rand_int__` is replaced by a key number).
    pub command: Option<Vec<String>>,
}

fn args(p: &Params, requests: u64) -> Result<Vec<String>> {
    let (host, port) = p
        .addr
        .rsplit_once(':')
        .context("address must be host:port")?;
    let mut v: Vec<String> = vec![
        "-h".into(),
        host.into(),
        "-p".into(),
        port.into(),
        "-c".into(),
        p.clients.to_string(),
        "-d".into(),
        p.value_size.to_string(),
        "-r".into(),
        p.keyspace.to_string(),
        "-P".into(),
        p.pipeline.to_string(),
        "-n".into(),
        requests.to_string(),
        "-e".into(),
    ];
    match &p.command {
        Some(cmd) => v.extend(cmd.iter().cloned()),
        None => v.extend(["-t".to_string(), p.test.to_string()]),
    }
    Ok(v)
}

/// One measured run of `requests` requests.
pub fn run_once(p: &Params, requests: u64) -> Result<BenchResult> {
    let args = args(p, requests)?;
    let out = Command::new("redis-benchmark")
        .args(&args)
        .output()
        .context("cannot run redis-benchmark")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "redis-benchmark failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut r =
        parse(&stdout).with_context(|| format!("unexpected redis-benchmark output:\n{stdout}"))?;
    r.command = format!("redis-benchmark {}", args.join(" "));
    Ok(r)
}

/// Size the measured run to last about `secs` seconds: run redis-benchmark
/// for about a second (which also warms the server up), read the overall
/// rate from its progress line, stop it. Returns the request count.
pub fn calibrate(p: &Params, secs: f64) -> Result<u64> {
    let probe = Duration::from_millis(1200);
    let mut child = Command::new("redis-benchmark")
        .args(args(p, 50_000_000)?)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run redis-benchmark")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let started = Instant::now();
    while started.elapsed() < probe {
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&reader.join().unwrap_or_default()).to_string();
    // Progress lines, '\r'-separated:
    // "SET: rps=32131.5 (overall: 31007.7) avg_msec=0.904 (overall: 0.912)"
    let rate = text
        .split(['\r', '\n'])
        .filter_map(|l| l.split_once("rps=")?.1.split_once("(overall: "))
        .filter_map(|(_, rest)| rest.split(')').next()?.trim().parse::<f64>().ok())
        .rfind(|r| r.is_finite() && *r > 0.0)
        .unwrap_or(100.0);
    let min = (p.clients * p.pipeline) as u64 * 10;
    Ok(((rate * secs) as u64).clamp(min, 50_000_000))
}

pub fn parse(stdout: &str) -> Result<BenchResult> {
    let mut r = BenchResult::default();
    // Progress lines are separated by '\r'.
    let lines: Vec<&str> = stdout.split(['\n', '\r']).map(str::trim).collect();
    let mut in_percentiles = false;
    let mut percentiles: Vec<(f64, f64)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_suffix("seconds") {
            // "100000 requests completed in 0.93 seconds"
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.len() >= 5 && words[1] == "requests" && words[2] == "completed" {
                r.requests = words[0].parse()?;
                r.secs = words[4].parse()?;
            }
        }
        // A test that prepares its data (LRANGE_100 runs an LPUSH first)
        // prints one block per step: the last block is the test's.
        if line.starts_with("====== ") {
            percentiles.clear();
            in_percentiles = false;
        }
        if line.starts_with("Error from server") {
            r.errors_seen += 1;
        }
        if line.starts_with("Latency by percentile distribution") {
            in_percentiles = true;
            continue;
        }
        if in_percentiles {
            // "99.900% <= 0.735 milliseconds (cumulative count 99919)"
            match line.split_once("% <= ") {
                Some((pct, rest)) => {
                    let ms = rest.split_whitespace().next().unwrap_or_default();
                    percentiles.push((pct.trim().parse()?, ms.parse()?));
                }
                None if !line.is_empty() => in_percentiles = false,
                None => {}
            }
        }
        if let Some(rest) = line.strip_prefix("throughput summary:") {
            r.ops_per_sec = rest.split_whitespace().next().unwrap_or_default().parse()?;
        }
        if line.starts_with("avg") && line.contains("p50") {
            // The header line; the values are on the next non-empty line.
            let names: Vec<&str> = line.split_whitespace().collect();
            let values: Vec<f64> = lines[i + 1..]
                .iter()
                .find(|l| !l.is_empty())
                .map(|l| {
                    l.split_whitespace()
                        .filter_map(|v| v.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            for (n, v) in names.iter().zip(values) {
                match *n {
                    "p50" => r.p50_ms = v,
                    "p99" => r.p99_ms = v,
                    _ => {}
                }
            }
        }
    }
    r.p999_ms = percentiles
        .iter()
        .find(|(p, _)| *p >= 99.9)
        .map(|(_, ms)| *ms)
        .unwrap_or(r.p99_ms);
    if r.ops_per_sec <= 0.0 || r.requests == 0 {
        bail!("no throughput summary found");
    }
    Ok(r)
}
