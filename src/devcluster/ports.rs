//! Ports and probes: free loopback ports that no two callers in this
//! process get twice, waiting for a TCP listener, and a one-shot RESP request.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

// Ports and probes

/// Ports handed out by [`free_port`] (or claimed for reuse) in this process,
/// never handed out twice, so parallel tests do not race for one port.
static CLAIMED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

pub(super) fn claim_port(port: u16) -> bool {
    CLAIMED_PORTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(port)
}

/// A loopback TCP port that was free a moment ago and that this process
/// has not handed out before. It is taken below the kernel's ephemeral
/// range (`ip_local_port_range`), where no outgoing connection and no
/// listener on port 0 (a metrics endpoint's) can take it between now and
/// the bind of whoever asked: a port from that range was once lost that
/// way (`Address already in use` at a node's start). Where the range
/// leaves no room below it, the OS picks (binding 127.0.0.1:0).
pub fn free_port() -> u16 {
    use rand::Rng;
    let below = ephemeral_start().unwrap_or(32768);
    let (lo, hi) = (10_000u16, below.saturating_sub(1));
    if hi > lo + 1000 {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let port = rng.gen_range(lo..=hi);
            if port_is_free(port) && claim_port(port) {
                return port;
            }
        }
    }
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind 127.0.0.1:0 to find a free port");
        if claim_port(port) {
            return port;
        }
    }
    panic!("no unclaimed free port after 1000 tries");
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_start() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Whether 127.0.0.1:`port` can be bound right now (nothing listens on it,
/// on 127.0.0.1 or on 0.0.0.0).
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

pub(super) fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no address: {addr}")))
}

pub(super) fn tcp_accepts(addr: &str) -> bool {
    resolve(addr)
        .and_then(|sa| TcpStream::connect_timeout(&sa, Duration::from_millis(500)))
        .is_ok()
}

/// Wait until something accepts TCP connections on `addr` (`host:port`).
pub fn wait_tcp(addr: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tcp_accepts(addr) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing accepted TCP connections on {addr} within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Send one RESP command (an array of bulk strings) to `addr` on a fresh
/// connection and return the first line of the reply without its CRLF, e.g.
/// `+PONG`, `+OK`, `:1` or `-ERR ...`. Enough for status, integer and error
/// replies; for a bulk reply it is only the `$<len>` header.
pub fn resp_request(addr: &str, args: &[&str], timeout: Duration) -> io::Result<String> {
    let stream = TcpStream::connect_timeout(&resolve(addr)?, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    resp_exchange(stream, args)
}

/// Send one RESP command on `stream` and read the first line of the reply
/// (see [`resp_request`]).
pub fn resp_exchange(mut stream: impl Read + Write, args: &[&str]) -> io::Result<String> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let mut line = Vec::new();
    BufReader::new(stream.take(64 * 1024)).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a whole reply line",
        ));
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_come_from_below_the_ephemeral_range() {
        let start = ephemeral_start().unwrap_or(32768);
        for _ in 0..20 {
            let p = free_port();
            if start > 11_000 {
                assert!((10_000..start).contains(&p), "{p} (ephemeral from {start})");
            }
            assert!(port_is_free(p));
        }
    }
}
