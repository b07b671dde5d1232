//! Request framing: cutting complete client requests off the front of a
//! connection's read buffer, with hard limits.
//!
//! This module owns [`RequestParser`] (one per connection: the framing state
//! of the request at the front of the buffer), its [`Limits`] and the
//! [`ProtocolError`] it fails with. Two request forms are understood, as in
//! Redis:
//!
//! * multibulk (`*<n>\r\n$<len>\r\n<data>\r\n...`): a cheap guard scan walks
//!   the header lines and enforces the limits *before* any data is waited
//!   for, so a client cannot make us buffer a huge declared bulk or array;
//!   only a frame the guard has seen complete is handed to the
//!   `redis-protocol` RESP2 decoder, which slices it off zero-copy;
//! * inline (anything not starting with `*`): one line, split like Redis's
//!   `sdssplitargs` (double and single quotes, escapes).
//!
//! The guard remembers where it stopped (arguments already checked, bytes
//! already searched for a newline), so a request arriving in many small reads
//! costs work linear in its size, not quadratic. Before AUTH (when a password
//! is set) Redis's unauthenticated caps apply on top of [`Limits`]: at most
//! 10 arguments, bulks of at most 16 KiB.
//!
//! Error texts are Redis 7's, after the `Protocol error: ` prefix. Nothing
//! here touches a socket; the connection loop owns the buffer and the parser.

use bytes::{Buf, Bytes, BytesMut};
use redis_protocol::resp2::{decode::decode_bytes_mut, types::BytesFrame};

use crate::num::parse_i64;

/// Hard limits on what a client may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk argument accepted (Redis `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Largest multibulk argument count accepted.
    pub max_args: usize,
    /// Longest inline request line accepted.
    pub max_inline_len: usize,
    /// The client has not authenticated (and must): Redis's unauthenticated
    /// caps, [`UNAUTH_MAX_ARGS`] and [`UNAUTH_MAX_BULK_LEN`], apply too.
    pub unauthenticated: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline_len: 64 * 1024,
            unauthenticated: false,
        }
    }
}

/// Most arguments of a multibulk request before AUTH (Redis: 10).
pub const UNAUTH_MAX_ARGS: usize = 10;
/// Largest bulk of a request before AUTH (Redis: 16 KiB).
pub const UNAUTH_MAX_BULK_LEN: usize = 16 * 1024;

/// The client's byte stream is broken; reply `-ERR <display>` and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(msg: impl Into<String>) -> Self {
        ProtocolError(msg.into())
    }
}

/// Longest `*<n>` / `$<len>` digits line tolerated without its CRLF. Any valid
/// number is at most 20 bytes, so this only bounds how long we wait.
const MAX_HEADER_LINE: usize = 32;

const ERR_MULTIBULK_LEN: &str = "invalid multibulk length";
const ERR_BULK_LEN: &str = "invalid bulk length";
const ERR_UNAUTH_MULTIBULK_LEN: &str = "unauthenticated multibulk length";
const ERR_UNAUTH_BULK_LEN: &str = "unauthenticated bulk length";
const ERR_INLINE_TOO_BIG: &str = "too big inline request";
const ERR_UNBALANCED: &str = "unbalanced quotes in request";

/// Take one complete request off the front of `buf` with a fresh parser: for
/// a buffer that holds whole requests. A connection keeps a
/// [`RequestParser`] instead, so partial requests are not re-scanned.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    RequestParser::default().parse(buf, limits)
}

/// The framing state of one connection: how far the guard has checked the
/// (incomplete) request at the front of the read buffer.
///
/// Between calls the caller may only append to the buffer; every call must
/// pass the same buffer. A state that does not fit the buffer (shorter than
/// what was checked) or limits that changed since make the guard start over,
/// so misuse costs time, never correctness.
#[derive(Debug, Default)]
pub struct RequestParser {
    progress: Progress,
    /// Bytes the guard has looked at, for the linear-work tests.
    #[cfg(test)]
    examined: usize,
}

/// Where the guard stopped in the request at the front of the buffer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum Progress {
    /// Nothing checked yet.
    #[default]
    Start,
    /// A multibulk of `count` arguments checked under `limits`: the first
    /// `done` arguments are complete and the next one's header starts at
    /// offset `pos`.
    Multibulk {
        count: usize,
        done: usize,
        pos: usize,
        limits: Limits,
    },
    /// An inline request whose first `scanned` bytes hold no `\n`.
    Inline { scanned: usize },
}

/// What the guard scan found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// More bytes are needed.
    Incomplete,
    /// An empty request (`*0` / `*-1`) whose header is this many bytes.
    Empty(usize),
    /// A complete multibulk frame of this many bytes.
    Complete(usize),
}

impl RequestParser {
    /// Take one complete client request (a command as its arguments) off the
    /// front of `buf`.
    ///
    /// `Ok(None)`: incomplete, `buf` untouched (call again after more bytes
    /// arrive). `Ok(Some(vec![]))`: an empty request (`*0`, `*-1`, blank
    /// line), consumed; the caller ignores it. `Err`: the stream is broken;
    /// the caller replies `-ERR Protocol error: ...` and closes.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let result = match buf.first() {
            None => Ok(None),
            Some(b'*') => self.parse_multibulk(buf, limits),
            Some(_) => self.parse_inline(buf, limits),
        };
        // Only an incomplete request keeps its progress.
        if !matches!(result, Ok(None)) || buf.is_empty() {
            self.progress = Progress::Start;
        }
        result
    }

    /// Count bytes the guard looks at (tests only).
    fn examine(&mut self, _bytes: usize) {
        #[cfg(test)]
        {
            self.examined += _bytes;
        }
    }

    fn parse_multibulk(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let total = match self.scan_multibulk(buf, limits)? {
            Scan::Incomplete => return Ok(None),
            Scan::Empty(header) => {
                buf.advance(header);
                return Ok(Some(Vec::new()));
            }
            Scan::Complete(total) => total,
        };
        // The guard has validated every header and seen all bytes of the
        // frame, so the decoder only ever gets a complete, in-limits array
        // of bulks.
        let mismatch = || ProtocolError::new("internal framing mismatch");
        let (frame, amt, _) = decode_bytes_mut(buf)
            .map_err(|e| ProtocolError(e.to_string()))?
            .ok_or_else(mismatch)?;
        if amt != total {
            return Err(mismatch());
        }
        match frame {
            BytesFrame::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    BytesFrame::BulkString(b) => Ok(b),
                    _ => Err(mismatch()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(mismatch()),
        }
    }

    /// Walk the header lines of the multibulk frame at the front of `buf`,
    /// enforcing `limits`, resuming where the last call stopped. Bulk
    /// payloads are skipped by length, so the cost is proportional to the
    /// argument count, not the frame size.
    fn scan_multibulk(&mut self, buf: &[u8], limits: &Limits) -> Result<Scan, ProtocolError> {
        let resume = match &self.progress {
            Progress::Multibulk {
                count,
                done,
                pos,
                limits: checked_under,
            } if checked_under == limits && *pos <= buf.len() => Some((*count, *done, *pos)),
            _ => None,
        };
        let (count, mut done, mut pos) = match resume {
            Some(state) => state,
            None => {
                let Some((count, pos)) = self.read_header_line(buf, 1, ERR_MULTIBULK_LEN)? else {
                    return Ok(Scan::Incomplete);
                };
                if count == 0 || count == -1 {
                    return Ok(Scan::Empty(pos));
                }
                let count = usize::try_from(count)
                    .ok()
                    .filter(|&n| n <= limits.max_args)
                    .ok_or_else(|| ProtocolError::new(ERR_MULTIBULK_LEN))?;
                if limits.unauthenticated && count > UNAUTH_MAX_ARGS {
                    return Err(ProtocolError::new(ERR_UNAUTH_MULTIBULK_LEN));
                }
                (count, 0, pos)
            }
        };
        while done < count {
            let Some(end) = self.scan_bulk(buf, pos, limits)? else {
                self.progress = Progress::Multibulk {
                    count,
                    done,
                    pos,
                    limits: limits.clone(),
                };
                return Ok(Scan::Incomplete);
            };
            done += 1;
            pos = end;
        }
        Ok(Scan::Complete(pos))
    }

    /// Check the bulk argument whose `$` is at `pos`: the offset just past
    /// it (payload and CRLF), or `None` when not all of it is there yet.
    fn scan_bulk(
        &mut self,
        buf: &[u8],
        pos: usize,
        limits: &Limits,
    ) -> Result<Option<usize>, ProtocolError> {
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        self.examine(1);
        if kind != b'$' {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                printable(kind)
            )));
        }
        let Some((len, data_start)) = self.read_header_line(buf, pos + 1, ERR_BULK_LEN)? else {
            return Ok(None);
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= limits.max_bulk_len)
            .ok_or_else(|| ProtocolError::new(ERR_BULK_LEN))?;
        if limits.unauthenticated && len > UNAUTH_MAX_BULK_LEN {
            return Err(ProtocolError::new(ERR_UNAUTH_BULK_LEN));
        }
        // Payload plus its trailing CRLF. Like Redis (and redis-protocol),
        // the two bytes after the payload are skipped, not checked.
        let end = data_start
            .checked_add(len)
            .and_then(|e| e.checked_add(2))
            .ok_or_else(|| ProtocolError::new(ERR_BULK_LEN))?;
        Ok((buf.len() >= end).then_some(end))
    }

    /// Parse the integer line starting at `start` (just after `*` or `$`).
    /// Returns the value and the offset just past its CRLF, `None` when the
    /// line is not complete yet, or `err` when it is malformed or too long.
    fn read_header_line(
        &mut self,
        buf: &[u8],
        start: usize,
        err: &str,
    ) -> Result<Option<(i64, usize)>, ProtocolError> {
        let rest = buf.get(start..).unwrap_or_default();
        let window = &rest[..rest.len().min(MAX_HEADER_LINE + 1)];
        self.examine(window.len());
        let Some(cr) = window.iter().position(|&b| b == b'\r') else {
            return if rest.len() > MAX_HEADER_LINE {
                Err(ProtocolError::new(err))
            } else {
                Ok(None)
            };
        };
        match rest.get(cr + 1) {
            None => Ok(None),
            Some(b'\n') => match parse_i64(&rest[..cr]) {
                Some(v) => Ok(Some((v, start + cr + 2))),
                None => Err(ProtocolError::new(err)),
            },
            Some(_) => Err(ProtocolError::new(err)),
        }
    }

    fn parse_inline(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        // Only look as far as a legal line can reach, and not again at what
        // the last call already searched.
        let end = buf.len().min(limits.max_inline_len.saturating_add(1));
        let from = match self.progress {
            Progress::Inline { scanned } => scanned.min(end),
            _ => 0,
        };
        self.examine(end - from);
        let Some(nl) = buf[from..end].iter().position(|&b| b == b'\n') else {
            if buf.len() > limits.max_inline_len {
                return Err(ProtocolError::new(ERR_INLINE_TOO_BIG));
            }
            self.progress = Progress::Inline { scanned: end };
            return Ok(None);
        };
        let nl = from + nl;
        let line = &buf[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let args = split_args(line).ok_or_else(|| ProtocolError::new(ERR_UNBALANCED))?;
        buf.advance(nl + 1);
        Ok(Some(args.into_iter().map(Bytes::from).collect()))
    }
}

/// The offending byte as Redis's `%c` would show it; non-ASCII bytes become
/// `?` so the message stays valid UTF-8.
fn printable(b: u8) -> char {
    if b.is_ascii() {
        char::from(b)
    } else {
        '?'
    }
}

/// C `isspace` in the "C" locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Redis `sdssplitargs`. `None` means unbalanced quotes (or a closing quote
/// not followed by a space / end of line). The C original works on a
/// NUL-terminated string, so a NUL byte ends the line; `at` reproduces that.
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut out = Vec::new();
    let mut p = 0usize;
    loop {
        while at(p) != 0 && is_space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Some(out);
        }
        let mut current = Vec::new();
        let (mut in_dq, mut in_sq) = (false, false);
        loop {
            let c = at(p);
            if in_dq {
                let hex = if c == b'\\' && at(p + 1) == b'x' {
                    hex_val(at(p + 2)).zip(hex_val(at(p + 3)))
                } else {
                    None
                };
                if let Some((hi, lo)) = hex {
                    current.push(hi * 16 + lo);
                    p += 4;
                    continue;
                }
                if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    current.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    // A closing quote must be followed by a space or the end.
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else if in_sq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    current.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        if c != 0 {
                            p += 1;
                        }
                        break;
                    }
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    other => current.push(other),
                }
            }
            p += 1;
        }
        out.push(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        parse_request(&mut buf, &Limits::default())
    }

    fn req(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
    }

    fn err(msg: &str) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        Err(ProtocolError(msg.to_string()))
    }

    /// Parse everything currently parseable, as the connection loop would.
    fn drain(parser: &mut RequestParser, buf: &mut BytesMut, limits: &Limits) -> Vec<Vec<Bytes>> {
        let mut out = Vec::new();
        while let Some(r) = parser.parse(buf, limits).expect("valid stream") {
            out.push(r);
        }
        out
    }

    #[test]
    fn complete_multibulk() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let limits = Limits::default();
        assert_eq!(
            parse_request(&mut buf, &limits),
            Ok(Some(req(&[b"GET", b"key"])))
        );
        assert_eq!(&buf[..], b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(parse_request(&mut buf, &limits), Ok(Some(req(&[b"PING"]))));
        assert!(buf.is_empty());
        assert_eq!(parse_request(&mut buf, &limits), Ok(None));
    }

    #[test]
    fn incomplete_leaves_buffer_untouched() {
        let full = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(
                parse_request(&mut buf, &Limits::default()),
                Ok(None),
                "{cut}"
            );
            assert_eq!(&buf[..], &full[..cut]);
        }
    }

    #[test]
    fn pipelined_split_at_every_byte() {
        let stream: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n\
            PING\r\n\
            *0\r\n\
            set \"a b\" 'c d'\n\
            *2\r\n$4\r\nECHO\r\n$0\r\n\r\n\
            \r\n\
            *-1\r\n\
            *1\r\n$4\r\nQUIT\r\n";
        let expected = vec![
            req(&[b"SET", b"k", b"a\r\nb"]),
            req(&[b"PING"]),
            vec![],
            req(&[b"set", b"a b", b"c d"]),
            req(&[b"ECHO", b""]),
            vec![],
            vec![],
            req(&[b"QUIT"]),
        ];
        let limits = Limits::default();
        // All at once.
        let mut buf = BytesMut::from(stream);
        let mut parser = RequestParser::default();
        assert_eq!(drain(&mut parser, &mut buf, &limits), expected);
        assert!(buf.is_empty());
        // One byte at a time, the parser keeping its place.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in stream {
            buf.extend_from_slice(&[b]);
            got.extend(drain(&mut parser, &mut buf, &limits));
        }
        assert_eq!(got, expected);
        assert!(buf.is_empty());
        // Every two-piece split.
        for cut in 0..=stream.len() {
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut got = drain(&mut parser, &mut buf, &limits);
            buf.extend_from_slice(&stream[cut..]);
            got.extend(drain(&mut parser, &mut buf, &limits));
            assert_eq!(got, expected, "cut at {cut}");
        }
    }

    #[test]
    fn binary_safe_and_empty_bulk() {
        assert_eq!(
            parse(b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$6\r\n\r\n\0\xff\r\n\r\n"),
            Ok(Some(req(&[b"SET", b"", b"\r\n\0\xff\r\n"])))
        );
    }

    #[test]
    fn empty_requests() {
        assert_eq!(parse(b"*0\r\n"), Ok(Some(vec![])));
        assert_eq!(parse(b"*-1\r\n"), Ok(Some(vec![])));
        assert_eq!(parse(b"\r\n"), Ok(Some(vec![])));
        assert_eq!(parse(b"\n"), Ok(Some(vec![])));
        assert_eq!(parse(b"   \t \r\n"), Ok(Some(vec![])));
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn huge_bulk_rejected_on_header() {
        let limits = Limits {
            max_bulk_len: 16 * 1024 * 1024,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$999999999999\r\n"[..]);
        assert_eq!(parse_request(&mut buf, &limits), err("invalid bulk length"));
        let mut buf = BytesMut::from(&b"*1\r\n$16777217\r\n"[..]);
        assert_eq!(parse_request(&mut buf, &limits), err("invalid bulk length"));
        // Exactly at the limit is fine (and incomplete until the data arrives).
        let mut buf = BytesMut::from(&b"*1\r\n$16777216\r\n"[..]);
        assert_eq!(parse_request(&mut buf, &limits), Ok(None));
        // Beyond i64 / 20 digits.
        assert_eq!(
            parse(b"*1\r\n$99999999999999999999999\r\n"),
            err("invalid bulk length")
        );
    }

    #[test]
    fn huge_array_count_rejected() {
        let limits = Limits {
            max_args: 1000,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&b"*1001\r\n"[..]);
        assert_eq!(
            parse_request(&mut buf, &limits),
            err("invalid multibulk length")
        );
        let mut buf = BytesMut::from(&b"*1000\r\n"[..]);
        assert_eq!(parse_request(&mut buf, &limits), Ok(None));
        assert_eq!(
            parse(b"*9223372036854775807\r\n"),
            err("invalid multibulk length")
        );
    }

    #[test]
    fn negative_lengths() {
        assert_eq!(parse(b"*-2\r\n"), err("invalid multibulk length"));
        assert_eq!(parse(b"*1\r\n$-1\r\n"), err("invalid bulk length"));
        assert_eq!(parse(b"*1\r\n$-5\r\n"), err("invalid bulk length"));
        assert_eq!(
            parse(b"*1\r\n$-9223372036854775808\r\n"),
            err("invalid bulk length")
        );
    }

    #[test]
    fn non_numeric_lengths() {
        for bad in [
            &b"*x\r\n"[..],
            b"*\r\n",
            b"*+1\r\n",
            b"*01\r\n",
            b"* 1\r\n",
            b"*1 \r\n",
            b"*-0\r\n",
            b"*1\rX",
        ] {
            assert_eq!(parse(bad), err("invalid multibulk length"), "{bad:?}");
        }
        for bad in [
            &b"*1\r\n$x\r\n"[..],
            b"*1\r\n$\r\n",
            b"*1\r\n$+3\r\n",
            b"*1\r\n$03\r\n",
            b"*1\r\n$3.0\r\n",
            b"*1\r\n$3\rX",
        ] {
            assert_eq!(parse(bad), err("invalid bulk length"), "{bad:?}");
        }
    }

    #[test]
    fn header_line_without_crlf() {
        // Up to MAX_HEADER_LINE bytes we wait; one more is an error.
        assert_eq!(parse(&[&b"*"[..], &[b'1'; 32]].concat()), Ok(None));
        assert_eq!(
            parse(&[&b"*"[..], &[b'1'; 33]].concat()),
            err("invalid multibulk length")
        );
        assert_eq!(parse(&[&b"*1\r\n$"[..], &[b'0'; 32]].concat()), Ok(None));
        assert_eq!(
            parse(&[&b"*1\r\n$"[..], &[b'0'; 33]].concat()),
            err("invalid bulk length")
        );
        // A lone CR at the end waits for its LF.
        assert_eq!(parse(b"*1\r"), Ok(None));
        assert_eq!(parse(b"*1\r\n$3\r"), Ok(None));
    }

    #[test]
    fn expected_dollar() {
        assert_eq!(parse(b"*1\r\n:5\r\n"), err("expected '$', got ':'"));
        assert_eq!(
            parse(b"*2\r\n$1\r\na\r\n*1\r\n"),
            err("expected '$', got '*'")
        );
        assert_eq!(parse(b"*1\r\n\xfe"), err("expected '$', got '?'"));
        assert_eq!(
            ProtocolError("expected '$', got 'x'".into()).to_string(),
            "Protocol error: expected '$', got 'x'"
        );
    }

    #[test]
    fn bulk_trailer_is_skipped_like_redis() {
        // Redis does not check the two bytes after a payload; neither do we.
        assert_eq!(parse(b"*1\r\n$2\r\nhiXY"), Ok(Some(req(&[b"hi"]))));
    }

    #[test]
    fn inline_basic() {
        assert_eq!(parse(b"PING\r\n"), Ok(Some(req(&[b"PING"]))));
        assert_eq!(parse(b"set  k\tv\n"), Ok(Some(req(&[b"set", b"k", b"v"]))));
        assert_eq!(parse(b"PING"), Ok(None));
        assert_eq!(parse(b"PING\r"), Ok(None));
    }

    #[test]
    fn inline_quotes() {
        assert_eq!(
            parse(b"set \"a b\" \"\\x41\\n\\t\\r\\b\\a\\\\\\\"\\q\"\r\n"),
            Ok(Some(req(&[b"set", b"a b", b"A\n\t\r\x08\x07\\\"q"])))
        );
        assert_eq!(
            parse(b"set 'it\\'s' 'a\\nb' '\"'\r\n"),
            Ok(Some(req(&[b"set", b"it's", b"a\\nb", b"\""])))
        );
        // Quotes may start mid-token; \x needs two hex digits.
        assert_eq!(
            parse(b"echo foo\"bar baz\" \"\\xZ1\" \"\"\n"),
            Ok(Some(req(&[b"echo", b"foobar baz", b"xZ1", b""])))
        );
        // A NUL ends the line, as in the C original.
        assert_eq!(parse(b"get a\0b c\n"), Ok(Some(req(&[b"get", b"a"]))));
        for bad in [
            &b"set \"abc\n"[..],
            b"set 'abc\n",
            b"set \"a\"b\n",
            b"set 'it''s'\n",
            b"set \"a\\\"\n",
            b"set \"a\0\"\n",
        ] {
            assert_eq!(parse(bad), err("unbalanced quotes in request"), "{bad:?}");
        }
    }

    #[test]
    fn inline_too_long() {
        let limits = Limits {
            max_inline_len: 16,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&[b'a'; 16][..]);
        assert_eq!(parse_request(&mut buf, &limits), Ok(None));
        buf.extend_from_slice(b"a");
        assert_eq!(
            parse_request(&mut buf, &limits),
            err("too big inline request")
        );
        let mut buf = BytesMut::from(&[&[b'a'; 16][..], b"\n"].concat()[..]);
        assert_eq!(
            parse_request(&mut buf, &limits),
            Ok(Some(req(&[&[b'a'; 16]])))
        );
        let mut buf = BytesMut::from(&[&[b'a'; 17][..], b"\n"].concat()[..]);
        assert_eq!(
            parse_request(&mut buf, &limits),
            err("too big inline request")
        );
    }

    /// Everything `parse` yields for the bytes in `buf`, up to the first
    /// incomplete request or error.
    type Outcome = Vec<Result<Vec<Bytes>, ProtocolError>>;

    fn drain_all(
        parser: &mut RequestParser,
        buf: &mut BytesMut,
        limits: &Limits,
        out: &mut Outcome,
    ) {
        if matches!(out.last(), Some(Err(_))) {
            return;
        }
        loop {
            match parser.parse(buf, limits) {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => return,
                Err(e) => {
                    out.push(Err(e));
                    return;
                }
            }
        }
    }

    /// A tiny deterministic PRNG (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, below: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % below as u64) as usize
        }
    }

    #[test]
    fn garbage_never_panics_and_chunking_never_matters() {
        // Deterministic pseudo-random fuzz over a small alphabet of
        // protocol-significant bytes. Each input is parsed all at once and
        // fed in random pieces to one parser: the outcomes must agree.
        let alphabet = b"*$\r\n0123-+ \"'\\x:ab\0";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..20_000 {
            let len = rng.next(40);
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.next(alphabet.len())])
                .collect();
            let limits = Limits {
                max_bulk_len: 64,
                max_args: 8,
                max_inline_len: 32,
                unauthenticated: rng.next(2) == 0,
            };
            let mut whole = Outcome::new();
            let mut buf = BytesMut::from(&input[..]);
            drain_all(&mut RequestParser::default(), &mut buf, &limits, &mut whole);
            let mut pieces = Outcome::new();
            let mut parser = RequestParser::default();
            let mut fed = BytesMut::new();
            let mut at = 0;
            while at < input.len() {
                let n = 1 + rng.next(4);
                let end = (at + n).min(input.len());
                fed.extend_from_slice(&input[at..end]);
                at = end;
                drain_all(&mut parser, &mut fed, &limits, &mut pieces);
            }
            assert_eq!(pieces, whole, "input {:?}", String::from_utf8_lossy(&input));
            if !matches!(whole.last(), Some(Err(_))) {
                assert_eq!(
                    fed,
                    buf,
                    "leftover of {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
            distinct.insert(input);
        }
        assert!(
            distinct.len() > 15_000,
            "only {} distinct inputs",
            distinct.len()
        );
    }

    /// A multibulk request of `n` arguments of varied length.
    fn big_request(n: usize) -> (Vec<u8>, Vec<Bytes>) {
        let args: Vec<Bytes> = (0..n)
            .map(|i| Bytes::from(format!("arg{}", i % 1000).repeat(1 + i % 3)))
            .collect();
        let mut wire = format!("*{n}\r\n").into_bytes();
        for a in &args {
            wire.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            wire.extend_from_slice(a);
            wire.extend_from_slice(b"\r\n");
        }
        (wire, args)
    }

    /// Feed `wire` `step` bytes at a time to one parser; the requests and
    /// the bytes the guard looked at.
    fn feed(wire: &[u8], step: usize, limits: &Limits) -> (Vec<Vec<Bytes>>, usize) {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            got.extend(drain(&mut parser, &mut buf, limits));
        }
        assert!(buf.is_empty());
        (got, parser.examined)
    }

    #[test]
    fn slow_multibulk_costs_linear_work() {
        let limits = Limits::default();
        let (wire, args) = big_request(20_000);
        let (got, examined) = feed(&wire, 1, &limits);
        assert_eq!(got, vec![args.clone()]);
        // Each call looks at one header window (at most 34 bytes) beyond
        // where it resumes: linear in the bytes fed.
        assert!(
            examined <= 34 * wire.len(),
            "{examined} bytes examined for a {}-byte request",
            wire.len()
        );
        let (got, _) = feed(&wire, 7, &limits);
        assert_eq!(got, vec![args]);

        // Without the saved position (a fresh parser per read) the same
        // request costs quadratic work: the guard re-walks every header.
        let (wire, _) = big_request(500);
        let (_, linear) = feed(&wire, 1, &limits);
        let mut fresh = 0;
        for cut in 1..=wire.len() {
            let mut parser = RequestParser::default();
            let mut buf = BytesMut::from(&wire[..cut]);
            let _ = parser.parse(&mut buf, &limits);
            fresh += parser.examined;
        }
        assert!(fresh > 20 * linear, "fresh {fresh} vs kept {linear}");
    }

    #[test]
    fn slow_big_bulk_and_inline_cost_linear_work() {
        let limits = Limits::default();
        let value = vec![b'v'; 64 * 1024];
        let mut wire = format!("*1\r\n${}\r\n", value.len()).into_bytes();
        wire.extend_from_slice(&value);
        wire.extend_from_slice(b"\r\n");
        let (got, examined) = feed(&wire, 1, &limits);
        assert_eq!(got, vec![vec![Bytes::from(value)]]);
        assert!(examined <= 34 * wire.len(), "{examined}");

        let mut line = vec![b'a'; 60_000];
        line.extend_from_slice(b"\r\n");
        let (got, examined) = feed(&line, 1, &limits);
        assert_eq!(got, vec![vec![Bytes::from(vec![b'a'; 60_000])]]);
        assert!(examined <= line.len(), "{examined}");
    }

    #[test]
    fn unauthenticated_caps() {
        let unauth = Limits {
            unauthenticated: true,
            ..Limits::default()
        };
        let parse_unauth = |input: &[u8]| parse_request(&mut BytesMut::from(input), &unauth);
        assert_eq!(
            parse_unauth(b"*11\r\n"),
            err("unauthenticated multibulk length")
        );
        assert_eq!(parse_unauth(b"*10\r\n"), Ok(None));
        assert_eq!(
            parse_unauth(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n"),
            err("unauthenticated bulk length")
        );
        assert_eq!(parse_unauth(b"*2\r\n$4\r\nAUTH\r\n$16384\r\n"), Ok(None));
        // Invalid lengths are reported as such first, as in Redis.
        assert_eq!(parse_unauth(b"*-5\r\n"), err("invalid multibulk length"));
        assert_eq!(parse_unauth(b"*1\r\n$-5\r\n"), err("invalid bulk length"));
        // Inline requests keep their own cap.
        assert_eq!(
            parse_unauth(b"a b c d e f g h i j k l\r\n").map(|r| r.map(|v| v.len())),
            Ok(Some(12))
        );
        // Authenticated, the same requests are fine.
        assert_eq!(parse(b"*11\r\n"), Ok(None));
        assert_eq!(parse(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n"), Ok(None));
    }

    #[test]
    fn stricter_limits_rescan_a_partial_request() {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*12\r\n$3\r\nSET\r\n$1\r\nk\r\n"[..]);
        assert_eq!(parser.parse(&mut buf, &Limits::default()), Ok(None));
        let unauth = Limits {
            unauthenticated: true,
            ..Limits::default()
        };
        assert_eq!(
            parser.parse(&mut buf, &unauth),
            err("unauthenticated multibulk length")
        );
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$100\r\n"[..]);
        assert_eq!(parser.parse(&mut buf, &Limits::default()), Ok(None));
        let small = Limits {
            max_bulk_len: 99,
            ..Limits::default()
        };
        assert_eq!(parser.parse(&mut buf, &small), err("invalid bulk length"));
    }
}

#[cfg(test)]
mod proptests;
