//! What a process says when it cannot start, and the password taken from a
//! file: a dead etcd is one sentence naming the endpoint and the likely fix
//! (router and `shoal status`), a router open to the network without a
//! password warns at start, and `--requirepass-file` protects the router
//! without showing the password in `ps`. The runtime's worker threads come
//! from `--worker-threads`, the config file, or the cores; the CPU
//! scheduling policy of every thread from `--cpu-policy`, the config file,
//! or `batch`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{cluster, extra_router, metrics_cluster, Conn};
use shoal::devcluster::logged_metrics_addr;

/// An etcd endpoint nobody listens on.
fn dead_etcd() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Run the shoal binary to its end (at most 60 s): exit success, and its
/// output (log lines and errors).
fn run(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("shoal {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text.into_owned())
}

#[test]
fn a_dead_etcd_is_one_sentence_naming_it() {
    let etcd = dead_etcd();
    let want = format!("cannot use etcd at {etcd}: unreachable");
    let (ok, err) = run(&["router", "--listen", "127.0.0.1:0", "--etcd", &etcd]);
    assert!(!ok);
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("check that etcd runs there"), "{err}");
    assert!(!err.contains("MetadataMap"), "a debug dump: {err}");
    let (ok, err) = run(&["status", "--etcd", &etcd]);
    assert!(!ok);
    assert!(err.contains(&want), "{err}");

    // Open to the network without a password: a warning first.
    let (ok, err) = run(&["router", "--listen", "0.0.0.0:0", "--etcd", &etcd]);
    assert!(!ok);
    assert!(
        err.contains("listens on 0.0.0.0:0 without a password"),
        "{err}"
    );
    let (_, err) = run(&["router", "--listen", "127.0.0.1:0", "--etcd", &etcd]);
    assert!(!err.contains("without a password"), "{err}");
}

#[test]
fn the_password_comes_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "from-the-file\n").unwrap();
    let file_arg = file.to_str().unwrap();

    // Refused at start: both ways at once, an empty file, a missing one.
    let etcd = dead_etcd();
    let (ok, err) = run(&[
        "router",
        "--etcd",
        &etcd,
        "--requirepass",
        "x",
        "--requirepass-file",
        file_arg,
    ]);
    assert!(!ok && err.contains("not both"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let (ok, err) = run(&[
        "router",
        "--etcd",
        &etcd,
        "--requirepass-file",
        empty.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("is empty"), "{err}");
    let (ok, err) = run(&[
        "router",
        "--etcd",
        &etcd,
        "--requirepass-file",
        "/nonexistent/pw",
    ]);
    assert!(
        !ok && err.contains("cannot read the password file /nonexistent/pw"),
        "{err}"
    );

    // A router with the file: its line is the password, and nothing else.
    let cl = cluster(&dir.path().join("cluster"), 1, 1, 1);
    let (addr, _router) = extra_router(
        &cl,
        &dir.path().join("router"),
        "",
        &["--requirepass-file", file_arg],
    );
    let mut c = Conn::connect(&addr);
    assert!(c.line("GET k").starts_with(b"-NOAUTH"));
    assert!(c.line("AUTH from-the-file\\n").starts_with(b"-WRONGPASS"));
    assert!(c.line("AUTH from-the-fil").starts_with(b"-WRONGPASS"));
    assert!(c
        .line("AUTH from-the-filefrom-the-file")
        .starts_with(b"-WRONGPASS"));
    assert_eq!(c.line("AUTH from-the-file"), b"+OK\r\n");
    assert_eq!(c.line("GET k"), b"$-1\r\n");
}

/// The `shoal_runtime_worker_threads` a process's metrics endpoint reports.
fn runtime_workers(metrics_addr: &str) -> usize {
    let (_, page) = common::http_get(metrics_addr, "/metrics");
    page.lines()
        .find_map(|l| l.strip_prefix("shoal_runtime_worker_threads "))
        .unwrap_or_else(|| panic!("no worker threads gauge in:\n{page}"))
        .trim()
        .parse()
        .unwrap()
}

/// The scheduling policy of each thread of a process (`/proc/<pid>/task`,
/// field 41 of `stat`: 0 SCHED_OTHER, 3 SCHED_BATCH), by thread name.
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let (name, rest) = stat.split_once(" (").unwrap().1.rsplit_once(") ").unwrap();
        // Fields from the 3rd on; the policy is the 41st.
        let policy = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        out.push((name.to_string(), policy));
    }
    assert!(out.len() > 2, "threads of {pid}: {out:?}");
    out
}

fn all_under(pid: u32, policy: u32) -> bool {
    let threads = thread_policies(pid);
    let ok = threads.iter().all(|(_, p)| *p == policy);
    if !ok {
        eprintln!("threads of {pid}, wanted policy {policy}: {threads:?}");
    }
    ok
}

#[test]
fn worker_threads_and_cpu_policy_come_from_the_flag_the_config_file_or_defaults() {
    // Zero threads is refused, from the flag and from the file.
    let (ok, err) = run(&["node", "--worker-threads", "0"]);
    assert!(!ok && err.contains("0 is not in 1..=1024"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero.toml");
    std::fs::write(&zero, "worker_threads = 0\n").unwrap();
    let (ok, err) = run(&[
        "router",
        "--config",
        zero.to_str().unwrap(),
        "--etcd",
        &dead_etcd(),
    ]);
    assert!(
        !ok && err.contains("worker_threads must be at least 1"),
        "{err}"
    );

    // A local cluster's nodes share the machine's cores.
    let (cluster, _, addrs) = metrics_cluster(&dir.path().join("c"));
    let cores = std::thread::available_parallelism().unwrap().get();
    for node in ["node-1", "node-2", "node-3"] {
        assert_eq!(runtime_workers(&addrs[node]), (cores / 3).max(1), "{node}");
    }
    // Every thread of every node runs under SCHED_BATCH by default
    // (RocksDB's, the writer's and the runtime's alike).
    let mut cluster = cluster;
    for id in 1..=3 {
        let pid = cluster.node_pid(id).expect("node runs");
        assert!(all_under(pid, 3), "node {id}");
    }
    // A local cluster's router gets the same share; a router started
    // alone one per core by default, the file's count, the flag over the
    // file; its policy likewise (default batch).
    assert_eq!(runtime_workers(&addrs["router-2"]), (cores / 3).max(1));
    let (_, mut alone) = extra_router(
        &cluster,
        &dir.path().join("r0"),
        "",
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let log = std::fs::read_to_string(alone.log_path()).unwrap();
    let addr = logged_metrics_addr(&log).expect("the router logs its metrics address");
    assert_eq!(runtime_workers(&addr), cores, "a router started alone");
    alone.terminate().unwrap();
    for (name, toml, flags, want, policy) in [
        ("r1", "", &[][..], 3, 3),
        ("r2", "", &["--worker-threads", "5"][..], 5, 3),
        ("r3", "cpu_policy = \"normal\"\n", &[][..], 3, 0),
        (
            "r4",
            "cpu_policy = \"normal\"\n",
            &["--cpu-policy", "batch"][..],
            3,
            3,
        ),
        ("r5", "", &["--cpu-policy", "normal"][..], 3, 0),
    ] {
        let flags = [&["--metrics-listen", "127.0.0.1:0"][..], flags].concat();
        let dir = dir.path().join(name);
        let toml = format!("worker_threads = 3\n{toml}");
        let mut router = extra_router(&cluster, &dir, &toml, &flags).1;
        let log = std::fs::read_to_string(router.log_path()).unwrap();
        let addr = logged_metrics_addr(&log).expect("the router logs its metrics address");
        assert_eq!(runtime_workers(&addr), want, "{name}");
        assert!(all_under(router.pid(), policy), "{name}");
        router.terminate().unwrap();
    }
    let (ok, err) = run(&["router", "--cpu-policy", "fifo"]);
    assert!(!ok && err.contains("invalid value 'fifo'"), "{err}");
}

/// A `shoal dev` process, stopped (SIGTERM, then SIGKILL) when dropped,
/// also when the test fails; its children die with it (`PR_SET_PDEATHSIG`).
struct Dev(std::process::Child);

impl Drop for Dev {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.0.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.0.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.wait();
    }
}

/// Start `shoal dev` on `data` with `--shards shards` and `extra`; once its
/// banner is out, the shards and engine of table `default` and the
/// banner's line.
fn dev_shards(
    dir: &std::path::Path,
    data: &std::path::Path,
    shards: &str,
    extra: &[&str],
) -> (usize, String, String) {
    let port = shoal::devcluster::free_port();
    let log_path = dir.join(format!("dev-{port}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let _dev = Dev(Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["dev", "--port", &port.to_string(), "--shards", shards])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap());
    // The banner, printed once dev's own readiness check passed.
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        common::wait_until(Duration::from_secs(90), || log().contains("cluster is up")),
        "shoal dev did not come up: {}",
        log()
    );
    let addr = format!("127.0.0.1:{port}");
    let mut con = common::connect(&addr);
    let d = common::describe_table(&mut con, "default");
    let redis::Value::Array(table) = d["shards"].clone() else {
        panic!("no shards in {d:?}");
    };
    let engine: String = redis::from_redis_value(&d["engine"]).unwrap();
    let line = log()
        .lines()
        .find(|l| l.trim_start().starts_with("nodes "))
        .unwrap_or_default()
        .to_string();
    (table.len(), engine, line)
}

#[test]
fn dev_creates_the_default_table_with_the_shards_asked_for() {
    // Refused before anything starts.
    let (ok, err) = run(&["dev", "--shards", "0"]);
    assert!(!ok && err.contains("0 is not in 1..=16384"), "{err}");
    let (ok, err) = run(&["dev", "--engine", "paxos"]);
    assert!(
        !ok && err.contains("--engine must be openraft or batch, not 'paxos'"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let (shards, engine, line) = dev_shards(dir.path(), &data, "3", &["--engine", "openraft"]);
    assert_eq!((shards, engine.as_str()), (3, "openraft"));
    assert!(
        line.contains("table `default`: 3 shards x 3 replicas"),
        "{line}"
    );
    // Started again on the same data (the default engine since): the
    // table stays as it was created, and the banner does not claim
    // otherwise.
    let (shards, engine, line) = dev_shards(dir.path(), &data, "5", &[]);
    assert_eq!((shards, engine.as_str()), (3, "openraft"));
    assert!(line.contains("as first created"), "{line}");
    // A new cluster without --engine: the batch engine.
    let other = dir.path().join("dev-batch");
    let (_, engine, _) = dev_shards(dir.path(), &other, "1", &[]);
    assert_eq!(engine, "batch");
}
