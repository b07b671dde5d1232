//! Request framing: cutting complete client requests off the front of a
//! connection's read buffer, with hard limits.
//!
//! This module owns [`parse_request`], its [`Limits`] and the
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
//! Error texts are Redis 7's, after the `Protocol error: ` prefix.

use bytes::{Buf, Bytes, BytesMut};
use redis_protocol::resp2::{decode::decode_bytes_mut, types::BytesFrame};

use crate::resp::args::parse_i64;

/// Hard limits on what a client may send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest bulk argument accepted (Redis `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Largest multibulk argument count accepted.
    pub max_args: usize,
    /// Longest inline request line accepted.
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

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
const ERR_INLINE_TOO_BIG: &str = "too big inline request";
const ERR_UNBALANCED: &str = "unbalanced quotes in request";

/// Take one complete client request (a command as its arguments) off the
/// front of `buf`.
///
/// `Ok(None)`: incomplete, `buf` untouched (call again after more bytes
/// arrive). `Ok(Some(vec![]))`: an empty request (`*0`, `*-1`, blank line),
/// consumed; the caller ignores it. `Err`: the stream is broken; the caller
/// replies `-ERR Protocol error: ...` and closes.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
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

fn parse_multibulk(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let total = match scan_multibulk(buf, limits)? {
        Scan::Incomplete => return Ok(None),
        Scan::Empty(header) => {
            buf.advance(header);
            return Ok(Some(Vec::new()));
        }
        Scan::Complete(total) => total,
    };
    // The guard has validated every header and seen all bytes of the frame,
    // so the decoder only ever gets a complete, in-limits array of bulks.
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
/// enforcing `limits`, without copying or remembering anything. Bulk
/// payloads are skipped by length, so the cost is proportional to the
/// argument count, not the frame size.
fn scan_multibulk(buf: &[u8], limits: &Limits) -> Result<Scan, ProtocolError> {
    let Some((count, mut pos)) = read_header_line(buf, 1, ERR_MULTIBULK_LEN)? else {
        return Ok(Scan::Incomplete);
    };
    if count == 0 || count == -1 {
        return Ok(Scan::Empty(pos));
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n <= limits.max_args)
        .ok_or_else(|| ProtocolError::new(ERR_MULTIBULK_LEN))?;
    for _ in 0..count {
        let Some(&kind) = buf.get(pos) else {
            return Ok(Scan::Incomplete);
        };
        if kind != b'$' {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                printable(kind)
            )));
        }
        let Some((len, data_start)) = read_header_line(buf, pos + 1, ERR_BULK_LEN)? else {
            return Ok(Scan::Incomplete);
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= limits.max_bulk_len)
            .ok_or_else(|| ProtocolError::new(ERR_BULK_LEN))?;
        // Payload plus its trailing CRLF. Like Redis (and redis-protocol),
        // the two bytes after the payload are skipped, not checked.
        let end = data_start
            .checked_add(len)
            .and_then(|e| e.checked_add(2))
            .ok_or_else(|| ProtocolError::new(ERR_BULK_LEN))?;
        if buf.len() < end {
            return Ok(Scan::Incomplete);
        }
        pos = end;
    }
    Ok(Scan::Complete(pos))
}

/// Parse the integer line starting at `start` (just after `*` or `$`).
/// Returns the value and the offset just past its CRLF, `None` when the line
/// is not complete yet, or `err` when it is malformed or too long.
fn read_header_line(
    buf: &[u8],
    start: usize,
    err: &str,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(MAX_HEADER_LINE + 1)];
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

/// The offending byte as Redis's `%c` would show it; non-ASCII bytes become
/// `?` so the message stays valid UTF-8.
fn printable(b: u8) -> char {
    if b.is_ascii() {
        char::from(b)
    } else {
        '?'
    }
}

fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    // Only look as far as a legal line can reach.
    let window = &buf[..buf.len().min(limits.max_inline_len.saturating_add(1))];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() > limits.max_inline_len {
            Err(ProtocolError::new(ERR_INLINE_TOO_BIG))
        } else {
            Ok(None)
        };
    };
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_args(line).ok_or_else(|| ProtocolError::new(ERR_UNBALANCED))?;
    buf.advance(nl + 1);
    Ok(Some(args.into_iter().map(Bytes::from).collect()))
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
    fn drain(buf: &mut BytesMut, limits: &Limits) -> Vec<Vec<Bytes>> {
        let mut out = Vec::new();
        while let Some(r) = parse_request(buf, limits).expect("valid stream") {
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
        assert_eq!(drain(&mut buf, &limits), expected);
        assert!(buf.is_empty());
        // One byte at a time.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in stream {
            buf.extend_from_slice(&[b]);
            got.extend(drain(&mut buf, &limits));
        }
        assert_eq!(got, expected);
        assert!(buf.is_empty());
        // Every two-piece split.
        for cut in 0..=stream.len() {
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut got = drain(&mut buf, &limits);
            buf.extend_from_slice(&stream[cut..]);
            got.extend(drain(&mut buf, &limits));
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

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random fuzz over a small alphabet of
        // protocol-significant bytes.
        let alphabet = b"*$\r\n0123-+ \"'\\x:ab\0";
        let limits = Limits {
            max_bulk_len: 64,
            max_args: 8,
            max_inline_len: 64,
        };
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..(seed % 24) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                input.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(_)) = parse_request(&mut buf, &limits) {
                if buf.is_empty() {
                    break;
                }
            }
        }
    }
}
