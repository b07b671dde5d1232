//! Reply values and their wire encoding.
//!
//! This module owns [`Reply`], the value every command produces, and
//! [`Protocol`], the connection's negotiated RESP version. Replies stay
//! values until the connection writes them: [`Reply::encode`] appends the
//! bytes for RESP2 or RESP3 to an output buffer. It also owns
//! [`format_double`], Redis's textual form of a double.
//!
//! Encoding goes through `redis-protocol`'s encoders wherever the crate can
//! express the value exactly; the few shapes it cannot are written by hand
//! (see [`Reply::encode`] for which and why).

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use redis_protocol::bytes_utils::Str;
use redis_protocol::resp2::{encode::extend_encode as resp2_encode, types::BytesFrame as R2};
use redis_protocol::resp3::{
    encode::complete::extend_encode as resp3_encode,
    types::{BytesFrame as R3, VerbatimStringFormat},
};

use crate::resp::args::ArgError;
use crate::resp::frame::ProtocolError;

/// A reply value, independent of protocol version.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Simple string, `+OK`.
    Status(String),
    /// Error with its prefix word, e.g. `ERR unknown command 'foo'`,
    /// `WRONGTYPE ...`, `CLUSTERDOWN ...`.
    Error(String),
    /// Integer.
    Int(i64),
    /// Binary-safe bulk string.
    Bulk(Bytes),
    /// Null bulk: RESP2 `$-1`, RESP3 `_`.
    Nil,
    /// Null array: RESP2 `*-1`, RESP3 `_` (EXEC abort).
    NilArray,
    /// Array.
    Array(Vec<Reply>),
    /// Map: RESP3 `%`; RESP2 flat array `k, v, k, v`. Order is kept.
    Map(Vec<(Reply, Reply)>),
    /// Set: RESP3 `~`; RESP2 array. Order is kept, no dedup.
    Set(Vec<Reply>),
    /// Pairs (HRANDFIELD ... WITHVALUES, ZRANGE ... WITHSCORES): RESP3 an
    /// array of two-element arrays; RESP2 one flat array.
    Pairs(Vec<(Reply, Reply)>),
    /// Double: RESP3 `,`; RESP2 bulk string, both as [`format_double`].
    Double(f64),
    /// Boolean: RESP3 `#t`/`#f`; RESP2 integer 1/0.
    Bool(bool),
    /// Verbatim text: RESP3 `=` with format `txt`; RESP2 bulk string.
    Verbatim(String),
    /// Out-of-band data (pub/sub messages and (un)subscribe
    /// confirmations): RESP3 push `>`; RESP2 array.
    Push(Vec<Reply>),
    /// Several replies to one command, written one after another
    /// (SUBSCRIBE answers once per channel).
    Many(Vec<Reply>),
}

/// The RESP version a connection speaks (`HELLO 3` switches to RESP3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2, the default.
    #[default]
    Resp2,
    /// RESP3.
    Resp3,
}

impl Reply {
    /// `+OK`
    pub fn ok() -> Self {
        Reply::Status("OK".to_string())
    }

    /// A status (simple string) reply.
    pub fn status(s: impl Into<String>) -> Self {
        Reply::Status(s.into())
    }

    /// An error reply; `msg` includes the prefix word (`ERR ...`).
    pub fn error(msg: impl Into<String>) -> Self {
        Reply::Error(msg.into())
    }

    /// A bulk string reply.
    pub fn bulk(b: impl Into<Bytes>) -> Self {
        Reply::Bulk(b.into())
    }

    /// An integer reply.
    pub fn int(i: i64) -> Self {
        Reply::Int(i)
    }

    /// An array of bulk strings.
    pub fn bulks<I, B>(items: I) -> Self
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        Reply::Array(items.into_iter().map(Reply::bulk).collect())
    }

    /// True for [`Reply::Error`].
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// About how many bytes the encoded reply takes (exact for payloads,
    /// generous for headers), for output budgets; cheaper than encoding.
    pub fn size_hint(&self) -> usize {
        let items = |items: &[Reply]| items.iter().map(Reply::size_hint).sum::<usize>();
        match self {
            Reply::Status(s) | Reply::Error(s) => s.len() + 3,
            Reply::Verbatim(s) => s.len() + 32,
            Reply::Bulk(b) => b.len() + 24,
            Reply::Int(_) | Reply::Double(_) => 48,
            Reply::Nil | Reply::NilArray | Reply::Bool(_) => 8,
            Reply::Array(v) | Reply::Set(v) | Reply::Push(v) | Reply::Many(v) => 24 + items(v),
            Reply::Map(pairs) | Reply::Pairs(pairs) => {
                24 + pairs
                    .iter()
                    .map(|(k, v)| k.size_hint() + v.size_hint())
                    .sum::<usize>()
            }
        }
    }

    /// Append this reply's wire bytes for `proto` to `out`.
    ///
    /// Subtrees the `redis-protocol` encoders can express exactly are encoded
    /// by the crate. Written by hand instead:
    /// * RESP2 null array `*-1`: the crate's RESP2 frame has a single
    ///   `Null`, which it writes as `$-1`.
    /// * RESP3 map and set: the crate stores them in a `HashMap`/`HashSet`,
    ///   which would reorder (and dedup) entries; replies like `HGETALL` or
    ///   `CONFIG GET` must keep ours.
    /// * RESP3 double: the crate prints with Rust's `f64` `Display`
    ///   (`1e20` becomes `100000000000000000000`), not Redis's format.
    ///
    /// An aggregate holding one of these gets a hand-written header and each
    /// element is encoded on its own (so crate-expressible elements still
    /// go through the crate).
    pub fn encode(&self, proto: Protocol, out: &mut BytesMut) {
        self.encode_with(proto, out, true);
    }

    /// The encoded bytes as a fresh buffer.
    pub fn to_bytes(&self, proto: Protocol) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(proto, &mut out);
        out.freeze()
    }

    fn encode_with(&self, proto: Protocol, out: &mut BytesMut, use_crate: bool) {
        if use_crate && self.encode_via_crate(proto, out) {
            return;
        }
        match (self, proto) {
            (Reply::Status(s), _) => put_line(out, b'+', sanitize(s).as_bytes()),
            (Reply::Error(s), _) => put_line(out, b'-', sanitize(s).as_bytes()),
            (Reply::Int(i), _) => put_line(out, b':', i.to_string().as_bytes()),
            (Reply::Bulk(b), _) => put_bulk(out, b),
            (Reply::Nil, Protocol::Resp2) => out.put_slice(b"$-1\r\n"),
            (Reply::NilArray, Protocol::Resp2) => out.put_slice(b"*-1\r\n"),
            (Reply::Nil | Reply::NilArray, Protocol::Resp3) => out.put_slice(b"_\r\n"),
            (Reply::Array(items), _) => put_aggregate(out, b'*', items, proto, use_crate),
            (Reply::Set(items), Protocol::Resp2) => {
                put_aggregate(out, b'*', items, proto, use_crate)
            }
            (Reply::Set(items), Protocol::Resp3) => {
                put_aggregate(out, b'~', items, proto, use_crate)
            }
            (Reply::Pairs(pairs), Protocol::Resp3) => {
                put_line(out, b'*', pairs.len().to_string().as_bytes());
                for (k, v) in pairs {
                    out.put_slice(b"*2\r\n");
                    k.encode_with(proto, out, use_crate);
                    v.encode_with(proto, out, use_crate);
                }
            }
            (Reply::Map(pairs) | Reply::Pairs(pairs), _) => {
                let (kind, len) = match proto {
                    Protocol::Resp2 => (b'*', pairs.len().saturating_mul(2)),
                    Protocol::Resp3 => (b'%', pairs.len()),
                };
                put_line(out, kind, len.to_string().as_bytes());
                for (k, v) in pairs {
                    k.encode_with(proto, out, use_crate);
                    v.encode_with(proto, out, use_crate);
                }
            }
            (Reply::Double(d), Protocol::Resp2) => put_bulk(out, format_double(*d).as_bytes()),
            (Reply::Double(d), Protocol::Resp3) => {
                put_line(out, b',', format_double(*d).as_bytes())
            }
            (Reply::Bool(b), Protocol::Resp2) => put_line(out, b':', if *b { b"1" } else { b"0" }),
            (Reply::Bool(b), Protocol::Resp3) => put_line(out, b'#', if *b { b"t" } else { b"f" }),
            (Reply::Push(items), Protocol::Resp2) => {
                put_aggregate(out, b'*', items, proto, use_crate)
            }
            (Reply::Push(items), Protocol::Resp3) => {
                put_aggregate(out, b'>', items, proto, use_crate)
            }
            (Reply::Many(items), _) => {
                for item in items {
                    item.encode_with(proto, out, use_crate);
                }
            }
            (Reply::Verbatim(s), Protocol::Resp2) => put_bulk(out, s.as_bytes()),
            (Reply::Verbatim(s), Protocol::Resp3) => {
                put_line(out, b'=', (s.len() + 4).to_string().as_bytes());
                out.put_slice(b"txt:");
                out.put_slice(s.as_bytes());
                out.put_slice(b"\r\n");
            }
        }
    }

    /// Encode through `redis-protocol` if the whole subtree is expressible.
    /// Returns false (with `out` unchanged) otherwise.
    fn encode_via_crate(&self, proto: Protocol, out: &mut BytesMut) -> bool {
        let start = out.len();
        let ok = match proto {
            Protocol::Resp2 => to_resp2(self).is_some_and(|f| resp2_encode(out, &f, false).is_ok()),
            Protocol::Resp3 => to_resp3(self).is_some_and(|f| resp3_encode(out, &f, false).is_ok()),
        };
        if !ok {
            out.truncate(start);
        }
        ok
    }
}

impl From<ArgError> for Reply {
    fn from(e: ArgError) -> Self {
        Reply::Error(e.message())
    }
}

impl From<ProtocolError> for Reply {
    /// `ERR Protocol error: ...`
    fn from(e: ProtocolError) -> Self {
        Reply::Error(format!("ERR {e}"))
    }
}

/// Status and error lines must not contain CR or LF: replace them with
/// spaces (as Redis does for error strings).
fn sanitize(s: &str) -> Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        Cow::Owned(s.replace(['\r', '\n'], " "))
    } else {
        Cow::Borrowed(s)
    }
}

fn put_line(out: &mut BytesMut, kind: u8, body: &[u8]) {
    out.reserve(body.len() + 3);
    out.put_u8(kind);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    put_line(out, b'$', data.len().to_string().as_bytes());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

fn put_aggregate(out: &mut BytesMut, kind: u8, items: &[Reply], proto: Protocol, use_crate: bool) {
    put_line(out, kind, items.len().to_string().as_bytes());
    for item in items {
        item.encode_with(proto, out, use_crate);
    }
}

fn to_resp2(r: &Reply) -> Option<R2> {
    Some(match r {
        Reply::Status(s) => R2::SimpleString(Bytes::from(sanitize(s).into_owned())),
        Reply::Error(s) => R2::Error(Str::from(sanitize(s).into_owned())),
        Reply::Int(i) => R2::Integer(*i),
        Reply::Bulk(b) => R2::BulkString(b.clone()),
        Reply::Nil => R2::Null,
        Reply::NilArray | Reply::Push(_) | Reply::Many(_) => return None,
        Reply::Array(items) | Reply::Set(items) => {
            R2::Array(items.iter().map(to_resp2).collect::<Option<_>>()?)
        }
        Reply::Map(pairs) | Reply::Pairs(pairs) => R2::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| [k, v])
                .map(to_resp2)
                .collect::<Option<_>>()?,
        ),
        Reply::Double(d) => R2::BulkString(Bytes::from(format_double(*d))),
        Reply::Bool(b) => R2::Integer(i64::from(*b)),
        Reply::Verbatim(s) => R2::BulkString(Bytes::copy_from_slice(s.as_bytes())),
    })
}

fn to_resp3(r: &Reply) -> Option<R3> {
    Some(match r {
        Reply::Status(s) => R3::SimpleString {
            data: Bytes::from(sanitize(s).into_owned()),
            attributes: None,
        },
        Reply::Error(s) => R3::SimpleError {
            data: Str::from(sanitize(s).into_owned()),
            attributes: None,
        },
        Reply::Int(i) => R3::Number {
            data: *i,
            attributes: None,
        },
        Reply::Bulk(b) => R3::BlobString {
            data: b.clone(),
            attributes: None,
        },
        Reply::Nil | Reply::NilArray => R3::Null,
        Reply::Array(items) => R3::Array {
            data: items.iter().map(to_resp3).collect::<Option<_>>()?,
            attributes: None,
        },
        // See `Reply::encode` for why these are hand-written.
        Reply::Map(_)
        | Reply::Set(_)
        | Reply::Double(_)
        | Reply::Pairs(_)
        | Reply::Push(_)
        | Reply::Many(_) => return None,
        Reply::Bool(b) => R3::Boolean {
            data: *b,
            attributes: None,
        },
        Reply::Verbatim(s) => R3::VerbatimString {
            data: Bytes::copy_from_slice(s.as_bytes()),
            format: VerbatimStringFormat::Text,
            attributes: None,
        },
    })
}

/// A double as Redis 7.2+ prints it (`d2string`): `nan`, `inf`, `-inf`,
/// `0`/`-0`; integral values within ±`i64::MAX/2` as plain integers (`3`);
/// otherwise the shortest round-trip digits laid out like `fpconv_dtoa`
/// (`1.5`, `0.001`, `1e-7`, `1e+20`).
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "nan".to_string();
    }
    if d.is_infinite() {
        return if d < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    const HALF: f64 = (i64::MAX / 2) as f64;
    if (-HALF..=HALF).contains(&d) {
        let l = d as i64;
        if l as f64 == d {
            return l.to_string();
        }
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.2345e-7".
    let sci = format!("{:e}", d.abs());
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return d.to_string();
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return d.to_string();
    };
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let mut s = String::with_capacity(24);
    if d < 0.0 {
        s.push('-');
    }
    emit_digits(&digits, exp, &mut s);
    s
}

/// `fpconv_dtoa`'s `emit_digits`: `digits` (no leading zero) scaled so the
/// first digit is at decimal exponent `exp`.
fn emit_digits(digits: &[u8], exp: i32, s: &mut String) {
    let push = |s: &mut String, ds: &[u8]| s.extend(ds.iter().map(|&b| char::from(b)));
    let nd = digits.len() as i32;
    // Value = digits * 10^k.
    let k = exp - (nd - 1);
    let abs_exp = exp.abs();
    if k >= 0 && abs_exp < nd + 7 {
        // Plain integer with trailing zeros.
        push(s, digits);
        s.extend(std::iter::repeat_n('0', k as usize));
    } else if k < 0 && (k > -7 || abs_exp < 4) {
        let offset = nd + k;
        if offset <= 0 {
            s.push_str("0.");
            s.extend(std::iter::repeat_n('0', (-offset) as usize));
            push(s, digits);
        } else {
            let (int, frac) = digits.split_at(offset as usize);
            push(s, int);
            s.push('.');
            push(s, frac);
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        push(s, first);
        if !rest.is_empty() {
            s.push('.');
            push(s, rest);
        }
        s.push('e');
        s.push(if exp < 0 { '-' } else { '+' });
        s.push_str(&abs_exp.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, proto: Protocol) -> Vec<u8> {
        r.to_bytes(proto).to_vec()
    }

    fn manual(r: &Reply, proto: Protocol) -> Vec<u8> {
        let mut out = BytesMut::new();
        r.encode_with(proto, &mut out, false);
        out.to_vec()
    }

    /// (reply, RESP2 bytes, RESP3 bytes)
    fn cases() -> Vec<(Reply, &'static [u8], &'static [u8])> {
        vec![
            (Reply::ok(), b"+OK\r\n", b"+OK\r\n"),
            (Reply::status("a\r\nb"), b"+a  b\r\n", b"+a  b\r\n"),
            (
                Reply::error("ERR unknown command 'foo'"),
                b"-ERR unknown command 'foo'\r\n",
                b"-ERR unknown command 'foo'\r\n",
            ),
            (
                Reply::error("WRONGTYPE x\ny\r"),
                b"-WRONGTYPE x y \r\n",
                b"-WRONGTYPE x y \r\n",
            ),
            (Reply::int(0), b":0\r\n", b":0\r\n"),
            (Reply::int(-42), b":-42\r\n", b":-42\r\n"),
            (
                Reply::Int(i64::MIN),
                b":-9223372036854775808\r\n",
                b":-9223372036854775808\r\n",
            ),
            (Reply::bulk("hi"), b"$2\r\nhi\r\n", b"$2\r\nhi\r\n"),
            (Reply::bulk(""), b"$0\r\n\r\n", b"$0\r\n\r\n"),
            (
                Reply::bulk(&b"a\r\n\0"[..]),
                b"$4\r\na\r\n\0\r\n",
                b"$4\r\na\r\n\0\r\n",
            ),
            (Reply::Nil, b"$-1\r\n", b"_\r\n"),
            (Reply::NilArray, b"*-1\r\n", b"_\r\n"),
            (Reply::Array(vec![]), b"*0\r\n", b"*0\r\n"),
            (
                Reply::bulks(["a", "bc"]),
                b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n",
                b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n",
            ),
            (
                Reply::Map(vec![
                    (Reply::bulk("k1"), Reply::Int(1)),
                    (Reply::bulk("a"), Reply::Nil),
                ]),
                b"*4\r\n$2\r\nk1\r\n:1\r\n$1\r\na\r\n$-1\r\n",
                b"%2\r\n$2\r\nk1\r\n:1\r\n$1\r\na\r\n_\r\n",
            ),
            (Reply::Map(vec![]), b"*0\r\n", b"%0\r\n"),
            (
                Reply::Set(vec![Reply::bulk("x"), Reply::bulk("x")]),
                b"*2\r\n$1\r\nx\r\n$1\r\nx\r\n",
                b"~2\r\n$1\r\nx\r\n$1\r\nx\r\n",
            ),
            (Reply::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n"),
            (Reply::Double(3.0), b"$1\r\n3\r\n", b",3\r\n"),
            (Reply::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n"),
            (
                Reply::Double(f64::NEG_INFINITY),
                b"$4\r\n-inf\r\n",
                b",-inf\r\n",
            ),
            (Reply::Double(1e20), b"$5\r\n1e+20\r\n", b",1e+20\r\n"),
            (Reply::Bool(true), b":1\r\n", b"#t\r\n"),
            (Reply::Bool(false), b":0\r\n", b"#f\r\n"),
            (
                Reply::Verbatim("a\r\nb".into()),
                b"$4\r\na\r\nb\r\n",
                b"=8\r\ntxt:a\r\nb\r\n",
            ),
            (
                Reply::Verbatim(String::new()),
                b"$0\r\n\r\n",
                b"=4\r\ntxt:\r\n",
            ),
        ]
    }

    #[test]
    fn every_variant_both_protocols() {
        for (reply, r2, r3) in cases() {
            assert_eq!(
                enc(&reply, Protocol::Resp2),
                r2,
                "RESP2 {reply:?}: {:?}",
                String::from_utf8_lossy(&enc(&reply, Protocol::Resp2))
            );
            assert_eq!(
                enc(&reply, Protocol::Resp3),
                r3,
                "RESP3 {reply:?}: {:?}",
                String::from_utf8_lossy(&enc(&reply, Protocol::Resp3))
            );
        }
    }

    #[test]
    fn crate_and_manual_encoders_agree() {
        let mut all: Vec<Reply> = cases().into_iter().map(|c| c.0).collect();
        all.push(Reply::Array(all.clone()));
        for r in &all {
            for proto in [Protocol::Resp2, Protocol::Resp3] {
                assert_eq!(enc(r, proto), manual(r, proto), "{proto:?} {r:?}");
            }
        }
    }

    #[test]
    fn crate_path_is_taken_where_expressible() {
        let via_crate = |r: &Reply, p: Protocol| r.encode_via_crate(p, &mut BytesMut::new());
        let arr = Reply::Array(vec![Reply::bulk("a"), Reply::Bool(true), Reply::Nil]);
        assert!(via_crate(&arr, Protocol::Resp2));
        assert!(via_crate(&arr, Protocol::Resp3));
        assert!(via_crate(&Reply::Verbatim("x".into()), Protocol::Resp3));
        assert!(via_crate(&Reply::Map(vec![]), Protocol::Resp2));
        assert!(!via_crate(&Reply::NilArray, Protocol::Resp2));
        assert!(!via_crate(&Reply::Map(vec![]), Protocol::Resp3));
        assert!(!via_crate(&Reply::Set(vec![]), Protocol::Resp3));
        assert!(!via_crate(&Reply::Double(1.0), Protocol::Resp3));
        let mut out = BytesMut::from(&b"keep"[..]);
        assert!(!Reply::Double(1.0).encode_via_crate(Protocol::Resp3, &mut out));
        assert_eq!(&out[..], b"keep");
    }

    #[test]
    fn nested_arrays() {
        let r = Reply::Array(vec![
            Reply::Int(1),
            Reply::Array(vec![Reply::bulk("a"), Reply::Array(vec![])]),
            Reply::NilArray,
            Reply::Nil,
        ]);
        assert_eq!(
            enc(&r, Protocol::Resp2),
            b"*4\r\n:1\r\n*2\r\n$1\r\na\r\n*0\r\n*-1\r\n$-1\r\n"
        );
        assert_eq!(
            enc(&r, Protocol::Resp3),
            b"*4\r\n:1\r\n*2\r\n$1\r\na\r\n*0\r\n_\r\n_\r\n"
        );
        // Map inside an array inside a map, RESP2 vs RESP3.
        let r = Reply::Map(vec![(
            Reply::bulk("m"),
            Reply::Array(vec![Reply::Map(vec![(
                Reply::bulk("k"),
                Reply::Double(0.5),
            )])]),
        )]);
        assert_eq!(
            enc(&r, Protocol::Resp2),
            b"*2\r\n$1\r\nm\r\n*1\r\n*2\r\n$1\r\nk\r\n$3\r\n0.5\r\n"
        );
        assert_eq!(
            enc(&r, Protocol::Resp3),
            b"%1\r\n$1\r\nm\r\n*1\r\n%1\r\n$1\r\nk\r\n,0.5\r\n"
        );
    }

    #[test]
    fn size_hint_covers_the_encoding() {
        for (r, _, _) in cases() {
            for proto in [Protocol::Resp2, Protocol::Resp3] {
                let n = enc(&r, proto).len();
                assert!(
                    r.size_hint() >= n,
                    "{r:?} {proto:?}: {} < {n}",
                    r.size_hint()
                );
            }
        }
        let big = Reply::Array(vec![Reply::bulk(vec![b'x'; 100_000]); 3]);
        let n = enc(&big, Protocol::Resp2).len();
        assert!(big.size_hint() >= n && big.size_hint() < n + 200);
    }

    #[test]
    fn encode_appends() {
        let mut out = BytesMut::from(&b"xx"[..]);
        Reply::ok().encode(Protocol::Resp2, &mut out);
        Reply::Int(7).encode(Protocol::Resp3, &mut out);
        assert_eq!(&out[..], b"xx+OK\r\n:7\r\n");
    }

    #[test]
    fn conversions() {
        assert_eq!(
            Reply::from(ArgError::Syntax),
            Reply::Error("ERR syntax error".into())
        );
        assert_eq!(
            Reply::from(ProtocolError("invalid bulk length".into())),
            Reply::Error("ERR Protocol error: invalid bulk length".into())
        );
        assert!(Reply::error("ERR x").is_error());
        assert_eq!(Protocol::default(), Protocol::Resp2);
    }

    #[test]
    fn double_formatting() {
        let cases: &[(f64, &str)] = &[
            (3.0, "3"),
            (-3.0, "-3"),
            (1.5, "1.5"),
            (-1.5, "-1.5"),
            (0.0, "0"),
            (-0.0, "-0"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
            (0.1, "0.1"),
            (0.001234, "0.001234"),
            (1e-7, "1e-7"),
            (1.2345e-5, "1.2345e-5"),
            (123.456, "123.456"),
            (1e15, "1000000000000000"),
            (4.0e18, "4000000000000000000"),
            (5.0e18, "5e+18"),
            (1e20, "1e+20"),
            (1.2345678901234567e20, "123456789012345670000"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (2.71, "2.71"),
        ];
        for (d, s) in cases {
            assert_eq!(format_double(*d), *s, "{d:e}");
        }
    }
}
