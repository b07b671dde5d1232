//! Fault-injecting TCP links between the processes of a
//! [`LocalCluster`](super::LocalCluster), for network partitions in the
//! chaos harness.
//!
//! Every process that dials nodes (each node, each router) gets its own
//! proxy per destination node and is started with `--dial-via
//! <node addr>=<proxy addr>`, so every connection from endpoint `a` to node
//! `b` goes through the proxy for `(a, b)`. [`Links::cut`] stops a pair of
//! endpoints talking in both directions; [`Links::heal`] lets them talk again.
//!
//! A cut behaves like packets being dropped while TCP retransmits: bytes
//! already read are held, nothing more is read, and new connections are
//! accepted but not connected onward. On heal the held bytes go through, so
//! a peer sees late messages from before the partition, as after a real one;
//! connections that the peers gave up on (gRPC keep-alive) are closed by them.
//! A proxy whose node is down accepts and closes at once (connection refused).
//!
//! Blocking threads, like the rest of this module's parent: one thread per
//! proxy and two per connection, all ending within 50 ms of the drop of
//! [`Links`].

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

/// How often blocked threads look at the stop flag and at cuts.
const POLL: Duration = Duration::from_millis(50);

/// A pair of endpoint names, smaller first: cuts are symmetric.
fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// The endpoint name of node `id` (routers are named by their process).
pub fn node_endpoint(id: u64) -> String {
    format!("node-{id}")
}

#[derive(Default)]
struct Shared {
    cuts: Mutex<BTreeSet<(String, String)>>,
    healed: Condvar,
    /// Node id → the port it listens on now.
    upstream: Mutex<HashMap<u64, u16>>,
    stop: AtomicBool,
}

impl Shared {
    /// Block while `a`–`b` is cut; false once the links are dropped.
    fn wait_open(&self, a: &str, b: &str) -> bool {
        let key = pair(a, b);
        let Ok(mut cuts) = self.cuts.lock() else {
            return false;
        };
        while cuts.contains(&key) {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            cuts = match self.healed.wait_timeout(cuts, POLL) {
                Ok((c, _)) => c,
                Err(_) => return false,
            };
        }
        !self.stop.load(Ordering::Relaxed)
    }
}

/// The proxies of one cluster and which pairs of endpoints are cut.
#[derive(Default)]
pub struct Links {
    shared: Arc<Shared>,
    /// (from endpoint, to node) → proxy port.
    proxies: Mutex<HashMap<(String, u64), u16>>,
}

impl Links {
    pub fn new() -> Links {
        Links::default()
    }

    /// Record where node `id` listens (again after a restart on a new port).
    pub fn set_node_port(&self, id: u64, port: u16) {
        if let Ok(mut u) = self.shared.upstream.lock() {
            u.insert(id, port);
        }
    }

    /// The port of the proxy that carries `from`'s connections to node `to`,
    /// started on first use.
    pub fn proxy_port(&self, from: &str, to: u64) -> Result<u16> {
        let mut proxies = self
            .proxies
            .lock()
            .map_err(|_| anyhow::anyhow!("links poisoned"))?;
        if let Some(&port) = proxies.get(&(from.to_string(), to)) {
            return Ok(port);
        }
        // A port from the cluster's own allocator, never one planned for a
        // node that has not bound it yet (found by a chaos run whose node
        // found its port taken by a proxy).
        let mut bound = None;
        for _ in 0..20 {
            if let Ok(l) = TcpListener::bind(("127.0.0.1", super::free_port())) {
                bound = Some(l);
                break;
            }
        }
        let listener = bound.context("binding a link proxy")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let shared = self.shared.clone();
        let from_name = from.to_string();
        thread::Builder::new()
            .name(format!("link {from}->node-{to}"))
            .spawn(move || accept_loop(listener, shared, from_name, to))?;
        proxies.insert((from.to_string(), to), port);
        Ok(port)
    }

    /// `--dial-via` arguments for a process named `from`: every node known
    /// to [`Links::set_node_port`] but itself, through `from`'s proxies.
    pub fn dial_args(&self, from: &str) -> Result<Vec<String>> {
        let mut nodes: Vec<(u64, u16)> = self
            .shared
            .upstream
            .lock()
            .map(|u| u.iter().map(|(&id, &port)| (id, port)).collect())
            .unwrap_or_default();
        nodes.sort_unstable();
        let mut args = Vec::new();
        for (id, port) in nodes {
            if node_endpoint(id) == from {
                continue;
            }
            let via = self.proxy_port(from, id)?;
            args.push("--dial-via".to_string());
            args.push(format!("127.0.0.1:{port}=127.0.0.1:{via}"));
        }
        Ok(args)
    }

    /// Stop `a` and `b` talking (both directions, every connection).
    pub fn cut(&self, a: &str, b: &str) {
        if let Ok(mut c) = self.shared.cuts.lock() {
            c.insert(pair(a, b));
        }
    }

    /// Let every cut pair talk again.
    pub fn heal(&self) {
        if let Ok(mut c) = self.shared.cuts.lock() {
            c.clear();
        }
        self.shared.healed.notify_all();
    }

    /// The pairs cut now.
    pub fn cuts(&self) -> Vec<(String, String)> {
        self.shared
            .cuts
            .lock()
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.healed.notify_all();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, from: String, to: u64) {
    let to_name = node_endpoint(to);
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                let shared = shared.clone();
                let (from, to_name) = (from.clone(), to_name.clone());
                let _ = thread::Builder::new()
                    .name("link conn".into())
                    .spawn(move || connect(client, shared, &from, to, &to_name));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL / 5),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// One accepted connection: wait out a cut, connect to the node, pump.
fn connect(client: TcpStream, shared: Arc<Shared>, from: &str, to: u64, to_name: &str) {
    let _ = client.set_nonblocking(false);
    if !shared.wait_open(from, to_name) {
        return;
    }
    let Some(port) = shared
        .upstream
        .lock()
        .ok()
        .and_then(|u| u.get(&to).copied())
    else {
        return;
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(server) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return; // the node is down: the client sees its connection closed
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (a, b) = (from.to_string(), to_name.to_string());
    let shared2 = shared.clone();
    let up = thread::Builder::new()
        .name("link pump".into())
        .spawn(move || pump(client, server, &shared2, &a, &b));
    pump(s2, c2, &shared, from, to_name);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

/// Copy `src` to `dst`, holding data while the pair is cut. Ends (closing
/// both sockets) on an error or when the links are dropped; on EOF it passes
/// the half-close on.
fn pump(mut src: TcpStream, mut dst: TcpStream, shared: &Shared, a: &str, b: &str) {
    let _ = src.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let n = match src.read(&mut buf) {
            Ok(0) => {
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if !shared.wait_open(a, b) {
            break;
        }
        if dst.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server standing in for node 1.
    fn echo_server() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let mut w = s;
                    let _ = io::copy(&mut r, &mut w);
                });
            }
        });
        port
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn a_cut_holds_bytes_until_healed_and_only_for_that_pair() {
        let links = Links::new();
        links.set_node_port(1, echo_server());
        let via_a = links.proxy_port("router", 1).unwrap();
        let via_b = links.proxy_port("node-2", 1).unwrap();
        assert_eq!(
            links.proxy_port("router", 1).unwrap(),
            via_a,
            "one proxy per pair"
        );
        let mut a = TcpStream::connect(("127.0.0.1", via_a)).unwrap();
        let mut b = TcpStream::connect(("127.0.0.1", via_b)).unwrap();
        assert_eq!(roundtrip(&mut a, b"hello").unwrap(), b"hello");

        links.cut("node-1", "router");
        assert_eq!(links.cuts(), vec![("node-1".into(), "router".into())]);
        a.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        let err = roundtrip(&mut a, b"held").unwrap_err();
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        // Another pair still talks, and a new connection on the cut pair
        // is accepted but gets nothing through.
        assert_eq!(roundtrip(&mut b, b"other").unwrap(), b"other");
        let mut fresh = TcpStream::connect(("127.0.0.1", via_a)).unwrap();
        fresh
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(roundtrip(&mut fresh, b"x").is_err());

        let healed = Instant::now();
        links.heal();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = [0u8; 4];
        a.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"held", "bytes sent during the cut arrive after it");
        assert!(healed.elapsed() < Duration::from_secs(2));
        fresh
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = [0u8; 1];
        fresh.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
    }

    #[test]
    fn a_down_node_closes_the_connection_and_args_skip_oneself() {
        let links = Links::new();
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        links.set_node_port(3, port);
        let via = links.proxy_port("node-1", 3).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", via)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "closed, not hung");

        links.set_node_port(1, 7001);
        let args = links.dial_args("node-1").unwrap();
        assert_eq!(
            args,
            vec![
                "--dial-via".to_string(),
                format!("127.0.0.1:{port}=127.0.0.1:{via}")
            ]
        );
    }
}
