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

/// A loopback TCP port that was free a moment ago (the OS picks it by binding
/// 127.0.0.1:0) and that this process has not handed out before.
pub fn free_port() -> u16 {
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
    let mut stream = TcpStream::connect_timeout(&resolve(addr)?, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
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
