//! A minimal blocking RESP2 client for the chaos workloads: one TCP
//! connection, one command at a time, every read bounded by a timeout. Raw
//! RESP keeps the library free of a client-library dependency and makes
//! "connection lost" and "timed out" explicit, which the history needs.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

impl Value {
    /// A bulk or simple string as text.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Simple(s) => Some(s.clone()),
            Value::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Largest bulk or array a reply may announce (replies here are tiny).
const MAX_LEN: i64 = 16 * 1024 * 1024;

pub struct Conn {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    /// Connect to `addr` (127.0.0.1 only in the harness) with `timeout` for
    /// the connect and for every reply.
    pub fn connect(addr: &str, timeout: Duration) -> io::Result<Conn> {
        let sa = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, addr.to_string()))?;
        let stream = TcpStream::connect_timeout(&sa, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            addr: addr.to_string(),
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send one command and read its reply. An `Err` means the connection
    /// is no longer usable (the outcome of the command is unknown).
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Value> {
        self.send(args)?;
        self.read()
    }

    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<()> {
        let mut buf = Vec::new();
        encode(&mut buf, args);
        self.writer.write_all(&buf)
    }

    /// Send `n` copies of one command in one write (a pipeline the server
    /// reads at once) and read their `n` replies. An `Err` means the
    /// connection is no longer usable.
    pub fn call_piped<A: AsRef<[u8]>>(&mut self, args: &[A], n: usize) -> io::Result<Vec<Value>> {
        let mut buf = Vec::new();
        for _ in 0..n {
            encode(&mut buf, args);
        }
        self.writer.write_all(&buf)?;
        (0..n).map(|_| self.read()).collect()
    }

    pub fn read(&mut self) -> io::Result<Value> {
        read_value(&mut self.reader, 0)
    }
}

/// One command as a RESP array of bulk strings, appended to `buf`.
fn encode<A: AsRef<[u8]>>(buf: &mut Vec<u8>, args: &[A]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    r.take(64 * 1024).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed in the middle of a reply",
        ));
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn read_value(r: &mut impl BufRead, depth: usize) -> io::Result<Value> {
    if depth > 8 {
        return Err(bad("reply nested too deeply"));
    }
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let int = || -> io::Result<i64> {
        rest.parse()
            .map_err(|_| bad(format!("bad integer {rest:?}")))
    };
    match kind {
        "+" => Ok(Value::Simple(rest.to_string())),
        "-" => Ok(Value::Error(rest.to_string())),
        ":" => Ok(Value::Int(int()?)),
        "$" => {
            let n = int()?;
            if n < 0 {
                return Ok(Value::Bulk(None));
            }
            if n > MAX_LEN {
                return Err(bad(format!("bulk of {n} bytes")));
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(Value::Bulk(Some(buf)))
        }
        "*" => {
            let n = int()?;
            if n < 0 {
                return Ok(Value::Array(None));
            }
            if n > MAX_LEN {
                return Err(bad(format!("array of {n} elements")));
            }
            let items = (0..n)
                .map(|_| read_value(r, depth + 1))
                .collect::<io::Result<Vec<_>>>()?;
            Ok(Value::Array(Some(items)))
        }
        // RESP3 null, in case a connection was switched.
        "_" => Ok(Value::Bulk(None)),
        _ => Err(bad(format!("unexpected reply line {line:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_replies() {
        let raw = b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n-ERR x\r\n".to_vec();
        let v = read_value(&mut io::Cursor::new(raw), 0).unwrap();
        assert_eq!(
            v,
            Value::Array(Some(vec![
                Value::Bulk(Some(b"a".to_vec())),
                Value::Array(Some(vec![Value::Int(1), Value::Bulk(None)])),
                Value::Error("ERR x".into()),
            ]))
        );
        assert!(read_value(&mut io::Cursor::new(b"$5\r\nab".to_vec()), 0).is_err());
    }
}
