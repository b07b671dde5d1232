//! PUBLISH fan-out (issue 19): one publisher, N subscribers of one
//! channel, on redis-server and on a shoal router. Each message carries the
//! time it was sent, so every subscriber measures the delivery latency of
//! each message it gets; the throughput is the messages delivered to all
//! subscribers per second, from the first PUBLISH to the last delivery.
//!
//! Plain std threads and raw RESP over TCP: one thread per subscriber, the
//! publisher sends PUBLISH in pipelines of 100.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What to run.
pub struct Spec {
    pub subscribers: usize,
    pub messages: u64,
    pub size: usize,
}

/// What a run measured.
pub struct Outcome {
    /// Messages delivered (summed over subscribers) per second.
    pub delivered_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub wall_s: f64,
    /// Messages that never arrived within the timeout (all subscribers).
    pub lost: u64,
}

const CHANNEL: &str = "bench:fanout";
const PIPELINE: u64 = 100;
/// How long a subscriber waits for the next message before giving up.
const QUIET: Duration = Duration::from_secs(20);

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The length of the first whole reply in `buf` (RESP2), if whole.
fn reply_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let n = || -> Option<i64> { std::str::from_utf8(&buf[1..end]).ok()?.parse().ok() };
    match buf.first()? {
        b'+' | b'-' | b':' => Some(end + 2),
        b'$' => {
            let n = n()?;
            if n < 0 {
                return Some(end + 2);
            }
            let total = end + 2 + n as usize + 2;
            (buf.len() >= total).then_some(total)
        }
        b'*' => {
            let mut at = end + 2;
            for _ in 0..n()?.max(0) {
                at += reply_len(&buf[at..])?;
            }
            Some(at)
        }
        _ => None,
    }
}

/// The last bulk of a `message` push: its payload.
fn payload(reply: &[u8]) -> Option<&[u8]> {
    let body = reply.strip_suffix(b"\r\n")?;
    let start = body.iter().rposition(|&c| c == b'\n')? + 1;
    Some(&body[start..])
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        stream.set_read_timeout(Some(QUIET))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    fn read(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(n) = reply_len(&self.buf) {
                return Ok(self.buf.drain(..n).collect());
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Run the fan-out on `addr`.
pub fn run(addr: &str, spec: &Spec) -> Result<Outcome> {
    let start = Arc::new(Instant::now());
    let mut subs = Vec::new();
    for _ in 0..spec.subscribers {
        let mut c = Conn::connect(addr)?;
        c.stream
            .write_all(&encode(&[b"SUBSCRIBE", CHANNEL.as_bytes()]))?;
        let r = c.read()?;
        if !r.starts_with(b"*3\r\n$9\r\nsubscribe") {
            bail!("SUBSCRIBE answered {}", String::from_utf8_lossy(&r));
        }
        let (start, n) = (start.clone(), spec.messages);
        subs.push(thread::spawn(move || {
            let mut lat = Vec::with_capacity(n as usize);
            let mut last = Duration::ZERO;
            while (lat.len() as u64) < n {
                let Ok(m) = c.read() else { break };
                let at = start.elapsed();
                let sent = payload(&m)
                    .and_then(|p| std::str::from_utf8(p.get(..20)?).ok())
                    .and_then(|t| t.trim().parse::<u64>().ok());
                if let Some(ns) = sent {
                    lat.push(at.as_nanos().saturating_sub(u128::from(ns)) as u64);
                    last = at;
                }
            }
            (lat, last)
        }));
    }
    let mut publisher = Conn::connect(addr)?;
    let first = start.elapsed();
    let mut sent = 0u64;
    while sent < spec.messages {
        let batch = PIPELINE.min(spec.messages - sent);
        let mut out = Vec::new();
        for _ in 0..batch {
            let mut msg = format!("{:>20}", start.elapsed().as_nanos()).into_bytes();
            msg.resize(spec.size.max(20), b'x');
            out.extend(encode(&[b"PUBLISH", CHANNEL.as_bytes(), &msg]));
        }
        publisher.stream.write_all(&out)?;
        for _ in 0..batch {
            let r = publisher.read()?;
            if !r.starts_with(b":") {
                bail!("PUBLISH answered {}", String::from_utf8_lossy(&r));
            }
        }
        sent += batch;
    }
    let mut all = Vec::new();
    let mut end = first;
    for s in subs {
        let (lat, last) = s
            .join()
            .map_err(|_| anyhow::anyhow!("subscriber panicked"))?;
        all.extend(lat);
        end = end.max(last);
    }
    let expected = spec.messages * spec.subscribers as u64;
    let lost = expected.saturating_sub(all.len() as u64);
    all.sort_unstable();
    let pct = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |ns| *ns as f64 / 1e6)
    };
    let wall_s = (end - first).as_secs_f64().max(1e-9);
    Ok(Outcome {
        delivered_per_sec: all.len() as f64 / wall_s,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        wall_s,
        lost,
    })
}
