//! The live console (`GET /` on a router's metrics address) in a real
//! headless browser: Debian's `chromium` (installed by scripts/setup),
//! driven over the DevTools protocol on a pipe, so the page runs in real
//! time and polls `/api/cluster` every second as it would for a person.
//! On a 3-node cluster the rendered map must show every shard with the
//! leader the nodes themselves report (their `/metrics`), the throughput
//! figure must follow a client's SETs, the slow commands must list them,
//! when a leader's node is killed its column must turn grey and the map
//! show the new leaders, and with etcd gone the page must say the cluster
//! cannot be read. A screenshot is saved.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shoal::devcluster::Proc;

mod common;

use common::{http_get, samples};

/// A headless chromium driven over `--remote-debugging-pipe` (fd 3: our
/// requests, fd 4: its replies and events, each JSON ending in a NUL).
/// The whole process group is killed on drop.
struct Browser {
    proc: Proc,
    to: std::io::PipeWriter,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(chromium: &std::path::Path, dir: &std::path::Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (their_in, to) = std::io::pipe().unwrap();
        let (from, their_out) = std::io::pipe().unwrap();
        let (r, w) = (their_in.as_raw_fd(), their_out.as_raw_fd());
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-pipe",
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .process_group(0);
        // SAFETY: between fork and exec, only fcntl and dup2 (async-signal
        // safe, no allocation): the pipe ends become fds 3 and 4, first
        // moved above 10 so neither overwrites the other.
        unsafe {
            cmd.pre_exec(move || {
                let r2 = libc::fcntl(r, libc::F_DUPFD, 10);
                let w2 = libc::fcntl(w, libc::F_DUPFD, 10);
                if r2 < 0 || w2 < 0 || libc::dup2(r2, 3) < 0 || libc::dup2(w2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let proc = Proc::spawn("chromium", cmd, dir).expect("chromium starts");
        drop((their_in, their_out));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from);
            let mut msg = Vec::new();
            while reader.read_until(0, &mut msg).is_ok_and(|n| n > 0) {
                msg.pop();
                if let Ok(v) = serde_json::from_slice(&msg) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                msg.clear();
            }
        });
        Browser {
            proc,
            to,
            from: rx,
            next_id: 0,
            session: None,
            _profile: profile,
        }
    }

    /// Send a DevTools command (to the page once one is open) and wait for
    /// its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("chromium reads its pipe");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.from.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "chromium did not answer {method}; its log:\n{}",
                    self.proc.log_tail(30)
                )
            });
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Open `url` in a new page and talk to that page from now on.
    fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({"url": url}));
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.session = Some(attached["sessionId"].as_str().unwrap().to_string());
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// A PNG of what the page shows.
    fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        base64_decode(r["data"].as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium's own children (renderer, GPU, zygote) are in its group.
        unsafe { libc::kill(-(self.proc.pid() as libc::pid_t), libc::SIGKILL) };
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.as_bytes().chunks(4) {
        let digits: Vec<u8> = chunk
            .iter()
            .filter(|c| **c != b'=')
            .map(|c| val(*c))
            .collect();
        let n = digits
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}

/// The map as the page draws it: per shard row its table, group, the leader
/// it names and the roles in each node's column; the node columns greyed.
const READ_MAP: &str = r#"(() => document.readyState !== 'complete' || !document.getElementById('total-ops') ? null : ({
  polls: Number(document.body.getAttribute('data-polls') || 0),
  nodes: [...document.querySelectorAll('#map th.node')].map(th => ({
    id: th.getAttribute('data-node'), grey: th.classList.contains('down'),
    ops: th.getAttribute('data-ops') })),
  shards: [...document.querySelectorAll('#map tr.shard')].map(tr => ({
    table: tr.getAttribute('data-table'), group: tr.getAttribute('data-group'),
    leader: tr.getAttribute('data-leader'),
    cells: Object.fromEntries([...tr.querySelectorAll('td[data-node]')].map(td =>
      [td.getAttribute('data-node'), td.getAttribute('data-role') || ''])) })),
  ops: document.getElementById('total-ops').getAttribute('data-ops'),
  time: document.getElementById('total-ops').getAttribute('data-time'),
  interval: document.getElementById('total-ops').getAttribute('data-interval'),
  opsText: document.getElementById('total-ops').textContent,
  p99: document.getElementById('total-p99').textContent,
  tableOps: document.querySelector('#map tr.table[data-table="default"] .figure')?.textContent,
  slow: [...document.querySelectorAll('#slowlog tbody td.cmd')].map(td => td.textContent),
  error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
}))()"#;

/// Group -> leading node, from the nodes' own `/metrics`
/// (`shoal_group_leader{group=..} 1`).
fn leaders_from_metrics(nodes: &BTreeMap<u64, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (id, addr) in nodes {
        for (k, v) in samples(&http_get(addr, "/metrics").1) {
            if k.starts_with("shoal_group_leader{") && v == 1.0 {
                let group = k.split("group=\"").nth(1).unwrap().split('"').next();
                out.insert(group.unwrap().to_string(), id.to_string());
            }
        }
    }
    out
}

/// Why the drawn map does not match `leaders` (2 shards x 3 replicas on
/// `nodes`, the `dead` one unreachable and greyed), if it does not.
fn map_mismatch(
    map: &Value,
    leaders: &BTreeMap<String, String>,
    nodes: &[u64],
    dead: Option<u64>,
) -> Option<String> {
    check_map(map, leaders, nodes, dead).err()
}

fn check_map(
    map: &Value,
    leaders: &BTreeMap<String, String>,
    nodes: &[u64],
    dead: Option<u64>,
) -> Result<(), String> {
    let shards = map["shards"].as_array().ok_or("no map drawn")?;
    let drawn: Vec<&str> = shards.iter().filter_map(|s| s["group"].as_str()).collect();
    let want: Vec<&str> = leaders.keys().map(|g| g.as_str()).collect();
    if leaders.len() != 2 || drawn != want {
        return Err(format!("groups drawn {drawn:?}, led {leaders:?}"));
    }
    let columns: Vec<(String, bool)> = map["nodes"]
        .as_array()
        .ok_or("no node columns")?
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap_or("").to_string(),
                n["grey"] == true,
            )
        })
        .collect();
    let want: Vec<(String, bool)> = nodes
        .iter()
        .map(|n| (n.to_string(), Some(*n) == dead))
        .collect();
    if columns != want {
        return Err(format!("node columns (id, grey) {columns:?}"));
    }
    let dead = dead.map(|d| d.to_string());
    for s in shards {
        let group = s["group"].as_str().ok_or("a row without a group")?;
        let leader = &leaders[group];
        if s["table"] != "default" || s["leader"].as_str() != Some(leader) {
            return Err(format!("group {group}: drawn {s}, led by node {leader}"));
        }
        let cells = s["cells"].as_object().ok_or("a row without cells")?;
        let marked: Vec<&String> = cells
            .iter()
            .filter(|(_, r)| r.as_str() == Some("leader"))
            .map(|(n, _)| n)
            .collect();
        if marked != [leader] {
            return Err(format!("group {group}: leader marks in {marked:?}"));
        }
        let followers = cells.values().filter(|r| *r == "follower").count();
        let want = if dead.is_some() { 1 } else { 2 };
        if followers != want {
            return Err(format!("group {group}: {followers} followers drawn: {s}"));
        }
        if let Some(d) = &dead {
            if cells[d] != "unreachable" {
                return Err(format!("group {group}: node {d} drawn as {}", cells[d]));
            }
        }
    }
    Ok(())
}

#[test]
fn the_console_draws_the_cluster_and_its_load() {
    let chromium = common::which("chromium").unwrap_or_else(|| {
        panic!("chromium is not installed: run scripts/setup (Debian package chromium)")
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut cl, router, addrs) = common::metrics_cluster(&dir.path().join("cluster"));
    let console = addrs
        .iter()
        .find(|(n, _)| n.starts_with("router"))
        .map(|(_, a)| a.clone())
        .unwrap();
    let nodes: BTreeMap<u64, String> = addrs
        .iter()
        .filter_map(|(n, a)| Some((n.strip_prefix("node-")?.parse().ok()?, a.clone())))
        .collect();
    let ids: Vec<u64> = nodes.keys().copied().collect();
    assert_eq!(ids, [1, 2, 3], "{addrs:?}");

    // What the router serves there, over plain HTTP.
    let (status, page) = http_get(&console, "/");
    assert_eq!(status, 200);
    assert!(page.contains("/console.js"), "{page}");
    assert_eq!(http_get(&console, "/console.js").0, 200);
    assert_eq!(http_get(&console, "/console.css").0, 200);
    let (status, body) = http_get(&console, "/nothing-here");
    assert_eq!(status, 404);
    assert!(body.contains("/api/cluster"), "{body}");
    // One reading serves every poll within a second.
    let read = || -> Value { serde_json::from_str(&http_get(&console, "/api/cluster").1).unwrap() };
    let (a, b) = (read(), read());
    assert_eq!(a["time_ms"], b["time_ms"], "two polls, two readings");
    assert_eq!(a["nodes"].as_array().unwrap().len(), 3, "{a}");

    let mut browser = Browser::start(&chromium, &dir.path().join("chromium"));
    browser.open(&format!("http://{console}/"));

    // Every shard with the leader its nodes report.
    let mut map = Value::Null;
    let mut why = None;
    let drawn = common::wait_until(Duration::from_secs(30), || {
        map = browser.eval(READ_MAP);
        why = map_mismatch(&map, &leaders_from_metrics(&nodes), &ids, None);
        why.is_none()
    });
    assert!(drawn, "the map is wrong: {why:?}\n{map:#}");
    assert_eq!(map["error"], "", "{map:#}");
    let polls = map["polls"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let later = browser.eval(READ_MAP)["polls"].as_u64().unwrap();
    assert!(
        later >= polls + 2,
        "the page polled {polls} then {later} times"
    );

    // Idle: next to nothing served.
    let idle: f64 = browser.eval(READ_MAP)["ops"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a throughput figure");

    // Load: SETs from the redis crate while the page stays open; every
    // command is slow enough for a slow log at 0 µs.
    let mut con = common::connect(&router);
    common::ok(&mut con, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    // When each SET was answered (Unix ms, SETs answered so far).
    let answered = Arc::new(Mutex::new(vec![(unix_ms(), 0u64)]));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, answered) = (stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                common::ok(&mut con, &["SET", &format!("console-{n}"), "v"]);
                n += 1;
                answered.lock().unwrap().push((unix_ms(), n));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // The page's readings: Unix ms -> (seconds covered, req/s shown).
    let mut readings = BTreeMap::new();
    let mut last = Value::Null;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(500));
        last = browser.eval(READ_MAP);
        let num = |k: &str| last[k].as_str().and_then(|s| s.parse::<f64>().ok());
        if let (Some(t), Some(i), Some(ops)) = (num("time"), num("interval"), num("ops")) {
            readings.insert(t as u64, (i, ops));
        }
    }
    let shot = browser.screenshot();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    // Each figure against the SETs answered in the window it covers.
    let answered = answered.lock().unwrap();
    let sent_by = |t: u64| {
        answered
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |(_, n)| *n)
    };
    let mut ratios: Vec<f64> = Vec::new();
    let mut shown = Vec::new();
    for (t, (secs, ops)) in &readings {
        let from = t - (secs * 1000.0) as u64;
        let sent = (sent_by(*t) - sent_by(from)) as f64 / secs;
        shown.push(format!("{ops:.0}/{sent:.0}"));
        ratios.push(ops / sent.max(1.0));
    }
    ratios.sort_by(f64::total_cmp);
    eprintln!(
        "idle {idle:.1} req/s; under load, shown/sent req/s per reading: {}; p99 {}",
        shown.join(" "),
        last["p99"]
    );
    assert!(idle < 20.0, "idle cluster shown at {idle} req/s");
    assert!(
        ratios.len() >= 3,
        "{} readings in 5 s: {last:#}",
        ratios.len()
    );
    let median = ratios[ratios.len() / 2];
    assert!(
        (0.95..=1.05).contains(&median) && ratios.iter().all(|r| (0.85..=1.15).contains(r)),
        "shown/sent: {shown:?}"
    );
    // The nodes' columns add up to the total, and p99 is a time.
    let by_node: f64 = last["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["ops"].as_str()?.parse::<f64>().ok())
        .sum();
    let total: f64 = last["ops"].as_str().unwrap().parse().unwrap();
    assert!((by_node - total).abs() < 1e-6 * total.max(1.0), "{last:#}");
    let p99 = last["p99"].as_str().unwrap();
    assert!(p99.ends_with(" ms") || p99.ends_with(" µs"), "p99 {p99:?}");
    assert!(
        last["tableOps"]
            .as_str()
            .is_some_and(|t| !t.starts_with("0 ") && !t.starts_with('–')),
        "{last:#}"
    );
    assert!(
        last["slow"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().is_some_and(|c| c.starts_with("SET console-"))),
        "slow commands: {}",
        last["slow"]
    );

    // The screenshot, for a person to look at.
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 10_000,
        "{}",
        shot.len()
    );
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    std::fs::write(&path, &shot).unwrap();
    eprintln!("screenshot: {}", path.display());

    // The leader of the first group killed: its column goes grey, its
    // cells unreachable, and every shard shows the leader the other two
    // nodes report.
    let leaders = leaders_from_metrics(&nodes);
    let victim: u64 = leaders.values().next().unwrap().parse().unwrap();
    cl.kill_node(victim).unwrap();
    let alive: BTreeMap<u64, String> = nodes
        .iter()
        .filter(|(id, _)| **id != victim)
        .map(|(id, a)| (*id, a.clone()))
        .collect();
    let mut map = Value::Null;
    let mut why = None;
    let redrawn = common::wait_until(Duration::from_secs(60), || {
        map = browser.eval(READ_MAP);
        why = map_mismatch(&map, &leaders_from_metrics(&alive), &ids, Some(victim));
        why.is_none()
    });
    assert!(redrawn, "after node {victim} died: {why:?}\n{map:#}");

    // etcd gone: the router cannot read the cluster, and says so.
    cl.etcd_mut().proc_mut().sigkill().unwrap();
    let mut map = Value::Null;
    let said = common::wait_until(Duration::from_secs(30), || {
        map = browser.eval(READ_MAP);
        map["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot read the cluster"))
    });
    assert!(said, "with etcd down: {map:#}");
    let (status, body) = http_get(&console, "/api/cluster");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    drop(browser);
    cl.shutdown();
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
