//! Property tests of request framing ([`RequestParser`], [`parse_request`]).
//!
//! * Hostile bytes: any input gives requests or an error with one of
//!   Redis's texts, never a panic; each call either consumes bytes, leaves
//!   an incomplete request untouched, or fails; what a call allocates is
//!   bounded by the bytes it was given, never by a length the client
//!   declared; and the outcome does not depend on how the bytes were split
//!   into reads.
//! * Valid streams (multibulk, inline, empty requests) parse to the same
//!   requests whole, split at every byte boundary, a byte at a time and in
//!   random pieces; a command packed by a real client (redis-rs) parses
//!   back to its arguments.
//! * Limits: a declared bulk or array over the limit is refused as soon as
//!   its header line is complete, before any of its data arrives; an inline
//!   line is refused once the buffer passes the limit without a newline.
//!
//! Case counts are fixed (see [`config`]); failures are not persisted
//! (`failure_persistence: None`): proptest prints the shrunk input, and a
//! bug it finds gets a named regression test. `PROPTEST_RNG_SEED` replays a
//! run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

use crate::testing::proptest_config as config;

// ---------------------------------------------------------------------------
// Allocation accounting: a global allocator for the test binary that, on a
// thread that asked for it, adds up the bytes requested. Other threads and
// other tests pay one thread-local read per allocation.

struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn note(bytes: usize) {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes)));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping touches only const-initialized thread-locals without
// destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Run `f`, returning its result and the bytes it allocated on this thread.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATED.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATED.with(Cell::get))
}

/// Most a parse call may allocate given `input` bytes: the requests it
/// returns (a `Bytes` handle per argument, the decoder's frames, inline
/// arguments copied out) are all proportional to the input.
fn allocation_budget(input: usize) -> usize {
    64 * input + 4096
}

#[test]
fn the_allocation_counter_counts() {
    let (v, n) = allocated_by(|| Vec::<u8>::with_capacity(1 << 20));
    assert!(n >= 1 << 20, "{n}");
    drop(v);
    let (_, n) = allocated_by(|| 1 + 1);
    assert_eq!(n, 0);
}

// ---------------------------------------------------------------------------
// Generators.

/// The error texts the parser may fail with (after `Protocol error: `).
fn known_error(e: &ProtocolError) -> bool {
    let m = e.0.as_str();
    [
        ERR_MULTIBULK_LEN,
        ERR_BULK_LEN,
        ERR_UNAUTH_MULTIBULK_LEN,
        ERR_UNAUTH_BULK_LEN,
        ERR_INLINE_TOO_BIG,
        ERR_UNBALANCED,
    ]
    .contains(&m)
        || m.strip_prefix("expected '$', got '")
            .and_then(|rest| rest.strip_suffix('\''))
            .is_some_and(|c| c.chars().count() == 1)
}

/// Limits to parse under: the defaults, tiny ones (so every limit is hit),
/// either of them before AUTH.
fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        any::<bool>().prop_map(|unauthenticated| Limits {
            unauthenticated,
            ..Limits::default()
        }),
        (0usize..64, 0usize..12, 0usize..64, any::<bool>()).prop_map(
            |(max_bulk_len, max_args, max_inline_len, unauthenticated)| Limits {
                max_bulk_len,
                max_args,
                max_inline_len,
                unauthenticated,
            }
        ),
    ]
}

/// Numbers that matter to the length headers: small ones, every limit and
/// its neighbour, the ends of i64 and beyond, and malformed ones.
fn number() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (-3i64..24).prop_map(|n| n.to_string().into_bytes()),
        prop::sample::select(vec![
            "10",
            "11",
            "1048576",
            "1048577",
            "16384",
            "16385",
            "536870912",
            "536870913",
            "9223372036854775807",
            "-9223372036854775808",
            "99999999999999999999",
            "00",
            "-0",
            "+1",
            " 1",
            "1.5",
            "",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// A piece of protocol-shaped text.
fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(vec![
            &b"*"[..], b"$", b"\r\n", b"\r", b"\n", b" ", b"\t", b"\"", b"'", b"\\", b"\\x", b"\0",
            b":", b"+", b"-", b"a", b"SET", b"*1\r\n", b"$3\r\n",
        ])
        .prop_map(<[u8]>::to_vec),
        2 => number(),
        1 => vec(any::<u8>(), 1..4),
    ]
}

/// Bytes a hostile or broken client might send.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..200),
        vec(token(), 0..48).prop_map(|t| t.concat()),
        // A length header (of the array or of its first bulk), then tokens.
        (
            prop::sample::select(vec![&b"*"[..], b"*1\r\n$", b"*3\r\n$1\r\na\r\n$"]),
            number(),
            vec(token(), 0..16)
        )
            .prop_map(|(head, n, rest)| [
                head.to_vec(),
                n,
                b"\r\n".to_vec(),
                rest.concat()
            ]
            .concat()),
        // A valid stream with a few bytes overwritten, inserted or cut.
        (
            stream(),
            vec((any::<Index>(), any::<u8>(), 0u8..3), 1..4),
            any::<Index>()
        )
            .prop_map(|((wire, _), edits, cut)| {
                let mut w = wire;
                for (at, byte, how) in edits {
                    if w.is_empty() {
                        w.push(byte);
                        continue;
                    }
                    let i = at.index(w.len());
                    match how {
                        0 => w[i] = byte,
                        1 => w.insert(i, byte),
                        _ => {
                            w.remove(i);
                        }
                    }
                }
                let keep = cut.index(w.len() + 1);
                w.truncate(keep.max(w.len() * 3 / 4));
                w
            }),
    ]
}

/// One client request as it may be written.
#[derive(Debug, Clone)]
enum Req {
    Multibulk(Vec<Vec<u8>>),
    /// Arguments written as an inline line: (args, separator, CRLF or LF).
    Inline(Vec<Vec<u8>>, &'static str, bool),
    /// `*0\r\n`
    EmptyArray,
    /// `*-1\r\n`
    NullArray,
    /// A line of blanks only.
    Blank(&'static str),
}

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..12),
        1 => prop::sample::select(vec![&b"SET"[..], b"GET", b"k", b"\r\n", b"*3", b"$1", b"\"", b"'", b"a b"])
            .prop_map(<[u8]>::to_vec),
    ]
}

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        6 => vec(arg(), 1..6).prop_map(Req::Multibulk),
        4 => (
            vec(arg(), 1..6),
            prop::sample::select(vec![" ", "  ", "\t", " \t "]),
            any::<bool>()
        )
            .prop_map(|(a, sep, crlf)| Req::Inline(a, sep, crlf)),
        1 => Just(Req::EmptyArray),
        1 => Just(Req::NullArray),
        1 => prop::sample::select(vec!["\r\n", "\n", "   \r\n", "\t\n"]).prop_map(Req::Blank),
    ]
}

/// An argument as `sdssplitargs` reads it back: bare when it is plain
/// printable text, otherwise double-quoted with escapes.
fn inline_arg(a: &[u8], first: bool) -> Vec<u8> {
    let plain = !a.is_empty()
        && a
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\'')
        // A line starting with `*` is a multibulk header.
        && !(first && a[0] == b'*');
    if plain {
        return a.to_vec();
    }
    let mut out = vec![b'"'];
    for &b in a {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.push(b'"');
    out
}

fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
    let mut w = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        w.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        w.extend_from_slice(a);
        w.extend_from_slice(b"\r\n");
    }
    w
}

impl Req {
    fn wire(&self) -> Vec<u8> {
        match self {
            Req::Multibulk(args) => multibulk(args),
            Req::Inline(args, sep, crlf) => {
                let parts: Vec<Vec<u8>> = args
                    .iter()
                    .enumerate()
                    .map(|(i, a)| inline_arg(a, i == 0))
                    .collect();
                let mut line = parts.join(sep.as_bytes());
                line.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                line
            }
            Req::EmptyArray => b"*0\r\n".to_vec(),
            Req::NullArray => b"*-1\r\n".to_vec(),
            Req::Blank(s) => s.as_bytes().to_vec(),
        }
    }

    fn expected(&self) -> Vec<Bytes> {
        match self {
            Req::Multibulk(args) | Req::Inline(args, ..) => {
                args.iter().map(|a| Bytes::copy_from_slice(a)).collect()
            }
            Req::EmptyArray | Req::NullArray | Req::Blank(_) => Vec::new(),
        }
    }
}

/// A pipelined stream of valid requests and what it parses to.
fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<Vec<Bytes>>)> {
    vec(req(), 1..6).prop_map(|reqs| {
        let wire = reqs.iter().flat_map(Req::wire).collect();
        (wire, reqs.iter().map(Req::expected).collect())
    })
}

// ---------------------------------------------------------------------------
// Drivers.

/// What parsing yields, up to the first incomplete request or error.
type Outcome = Vec<Result<Vec<Bytes>, ProtocolError>>;

/// Parse everything `buf` holds, checking on every call that the parser
/// behaves: an incomplete request leaves the buffer as it was, a request
/// consumes at least one byte, an error is one of Redis's texts, and no
/// call allocates more than the input's size warrants.
fn drain_checked(
    parser: &mut RequestParser,
    buf: &mut BytesMut,
    limits: &Limits,
    out: &mut Outcome,
) -> Result<(), TestCaseError> {
    if matches!(out.last(), Some(Err(_))) {
        return Ok(());
    }
    loop {
        let before = buf.clone();
        let (r, bytes) = allocated_by(|| parser.parse(buf, limits));
        prop_assert!(
            bytes <= allocation_budget(before.len()),
            "a parse of {} bytes allocated {bytes}",
            before.len()
        );
        match r {
            Ok(None) => {
                prop_assert_eq!(&*buf, &*before, "an incomplete request was consumed");
                return Ok(());
            }
            Ok(Some(req)) => {
                prop_assert!(buf.len() < before.len(), "a request consumed nothing");
                out.push(Ok(req));
            }
            Err(e) => {
                prop_assert!(known_error(&e), "unexpected error {:?}", e);
                out.push(Err(e));
                return Ok(());
            }
        }
    }
}

/// Parse `input` fed in pieces ending at `cuts` (sorted offsets), with one
/// parser as a connection does: the outcome and what is left unparsed.
fn feed(
    input: &[u8],
    cuts: &[usize],
    limits: &Limits,
) -> Result<(Outcome, BytesMut), TestCaseError> {
    let mut parser = RequestParser::default();
    let mut buf = BytesMut::new();
    let mut out = Outcome::new();
    let mut at = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        let end = end.clamp(at, input.len());
        buf.extend_from_slice(&input[at..end]);
        at = end;
        drain_checked(&mut parser, &mut buf, limits, &mut out)?;
    }
    Ok((out, buf))
}

/// Random cut points of an input of `len` bytes.
fn cuts_of(len: usize, picks: &[Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = picks.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

fn ok_all(expected: &[Vec<Bytes>]) -> Outcome {
    expected.iter().cloned().map(Ok).collect()
}

// ---------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(config(1024))]

    /// Any bytes: requests or a known error, never a panic, bounded
    /// allocation; and the same outcome whatever the read boundaries.
    #[test]
    fn hostile_bytes_parse_or_fail_the_same_in_any_pieces(
        input in hostile_bytes(),
        limits in limits(),
        picks in vec(any::<Index>(), 0..12),
    ) {
        let (whole, rest) = feed(&input, &[], &limits)?;
        let (pieces, rest_pieces) = feed(&input, &cuts_of(input.len(), &picks), &limits)?;
        prop_assert_eq!(&pieces, &whole);
        if !matches!(whole.last(), Some(Err(_))) {
            prop_assert_eq!(rest_pieces, rest);
        }
        let (bytewise, _) = feed(&input, &(1..input.len()).collect::<Vec<_>>(), &limits)?;
        prop_assert_eq!(bytewise, whole);
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// A valid pipelined stream parses to its requests whole, split in two
    /// at every byte boundary, a byte at a time and in random pieces, and
    /// nothing is left over.
    #[test]
    fn valid_streams_parse_the_same_at_any_boundary(
        (wire, expected) in stream(),
        unauthenticated in any::<bool>(),
        picks in vec(any::<Index>(), 1..16),
    ) {
        let limits = Limits { unauthenticated, ..Limits::default() };
        let expected = ok_all(&expected);
        let (got, rest) = feed(&wire, &[], &limits)?;
        prop_assert_eq!(&got, &expected);
        prop_assert!(rest.is_empty());
        for cut in 0..=wire.len() {
            let (got, rest) = feed(&wire, &[cut], &limits)?;
            prop_assert_eq!(&got, &expected, "split at {}", cut);
            prop_assert!(rest.is_empty());
        }
        let (got, _) = feed(&wire, &(1..wire.len()).collect::<Vec<_>>(), &limits)?;
        prop_assert_eq!(&got, &expected, "a byte at a time");
        let (got, _) = feed(&wire, &cuts_of(wire.len(), &picks), &limits)?;
        prop_assert_eq!(&got, &expected, "random pieces");
    }

    /// A command as a real client (redis-rs) packs it parses back to its
    /// arguments, with `parse_request` and with a parser fed in pieces.
    #[test]
    fn a_packed_command_round_trips(
        args in vec(vec(any::<u8>(), 0..64), 1..12),
        picks in vec(any::<Index>(), 0..8),
    ) {
        let wire = redis::pack_command(&args);
        let expected: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        let mut buf = BytesMut::from(&wire[..]);
        prop_assert_eq!(
            parse_request(&mut buf, &Limits::default()),
            Ok(Some(expected.clone()))
        );
        prop_assert!(buf.is_empty());
        let (got, _) = feed(&wire, &cuts_of(wire.len(), &picks), &Limits::default())?;
        prop_assert_eq!(got, vec![Ok(expected)]);
    }

    /// The inline form round-trips too: arguments written bare or quoted
    /// with escapes are read back as they were.
    #[test]
    fn an_inline_command_round_trips(
        args in vec(vec(any::<u8>(), 0..24), 1..8),
        sep in prop::sample::select(vec![" ", "\t", "   "]),
        crlf in any::<bool>(),
    ) {
        let r = Req::Inline(args.clone(), sep, crlf);
        let mut buf = BytesMut::from(&r.wire()[..]);
        prop_assert_eq!(
            parse_request(&mut buf, &Limits::default()),
            Ok(Some(r.expected()))
        );
        prop_assert!(buf.is_empty());
    }

    /// A bulk declared over the limit is refused as soon as its header line
    /// is complete: no byte of its data is waited for. At or under the
    /// limit the parser waits, holding nothing for the declared size.
    #[test]
    fn a_bulk_over_the_limit_fails_at_its_header(
        before in vec(vec(any::<u8>(), 0..8), 0..4),
        extra_args in 0usize..3,
        max_bulk_len in 0usize..100_000,
        over in prop_oneof![1u64..4, 1u64..1_000_000, Just(i64::MAX as u64)],
        unauthenticated in any::<bool>(),
    ) {
        let limits = Limits {
            max_bulk_len,
            unauthenticated,
            ..Limits::default()
        };
        let cap = if unauthenticated { max_bulk_len.min(UNAUTH_MAX_BULK_LEN) } else { max_bulk_len };
        prop_assume!(before.iter().all(|a| a.len() <= cap));
        let count = before.len() + 1 + extra_args;
        let mut head = format!("*{count}\r\n").into_bytes();
        for a in &before {
            head.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            head.extend_from_slice(a);
            head.extend_from_slice(b"\r\n");
        }
        let declared = (cap as u64).saturating_add(over).min(i64::MAX as u64);
        let header = format!("${declared}\r\n").into_bytes();
        let want = if declared as usize > max_bulk_len { ERR_BULK_LEN } else { ERR_UNAUTH_BULK_LEN };
        // Up to the last byte of the header line: waiting.
        let mut wire = head.clone();
        wire.extend_from_slice(&header[..header.len() - 1]);
        let (got, rest) = feed(&wire, &(1..wire.len()).collect::<Vec<_>>(), &limits)?;
        prop_assert_eq!(got, Outcome::new());
        prop_assert_eq!(rest.len(), wire.len());
        // Its LF: refused.
        wire.push(b'\n');
        let (got, _) = feed(&wire, &[wire.len() - 1], &limits)?;
        prop_assert_eq!(got, vec![Err(ProtocolError::new(want))]);
        let (got, _) = feed(&wire, &[], &limits)?;
        prop_assert_eq!(got, vec![Err(ProtocolError::new(want))]);

        // Exactly at the limit: incomplete (waiting for the data).
        let mut wire = head;
        wire.extend_from_slice(format!("${cap}\r\n").as_bytes());
        let (got, rest) = feed(&wire, &[], &limits)?;
        prop_assert_eq!(got, Outcome::new());
        prop_assert_eq!(rest.len(), wire.len());
    }

    /// An array declared over the limit is refused at its header line.
    #[test]
    fn an_array_over_the_limit_fails_at_its_header(
        max_args in 0usize..2_000_000,
        over in prop_oneof![1u64..4, 1u64..1_000_000, Just(i64::MAX as u64)],
        unauthenticated in any::<bool>(),
    ) {
        let limits = Limits { max_args, unauthenticated, ..Limits::default() };
        let cap = if unauthenticated { max_args.min(UNAUTH_MAX_ARGS) } else { max_args };
        let declared = (cap as u64).saturating_add(over).min(i64::MAX as u64);
        let want = if declared as usize > max_args { ERR_MULTIBULK_LEN } else { ERR_UNAUTH_MULTIBULK_LEN };
        let wire = format!("*{declared}\r\n").into_bytes();
        let (got, rest) = feed(&wire[..wire.len() - 1], &[], &limits)?;
        prop_assert_eq!(got, Outcome::new());
        prop_assert_eq!(rest.len(), wire.len() - 1);
        let (got, _) = feed(&wire, &[wire.len() - 1], &limits)?;
        prop_assert_eq!(got, vec![Err(ProtocolError::new(want))]);
        // At the limit (and non-zero): waiting for the arguments.
        if cap > 0 {
            let wire = format!("*{cap}\r\n").into_bytes();
            let (got, rest) = feed(&wire, &[], &limits)?;
            prop_assert_eq!(got, Outcome::new());
            prop_assert_eq!(rest.len(), wire.len());
        }
    }

    /// An inline line without a newline is refused once the buffer passes
    /// `max_inline_len`, and not before.
    #[test]
    fn an_inline_line_over_the_limit_fails_once_past_it(
        max_inline_len in 0usize..300,
        filler in prop::sample::select(vec![b'a', b' ', b'"', b'\t', b'x']),
        picks in vec(any::<Index>(), 0..6),
    ) {
        let limits = Limits { max_inline_len, ..Limits::default() };
        // Exactly the limit: waiting for the newline.
        let mut line = b"G".repeat(max_inline_len.min(1));
        line.resize(max_inline_len, filler);
        let (got, rest) = feed(&line, &cuts_of(line.len(), &picks), &limits)?;
        prop_assert_eq!(got, Outcome::new(), "{} bytes, limit {}", line.len(), max_inline_len);
        prop_assert_eq!(rest.len(), line.len());
        // One more byte: refused.
        line.push(filler);
        let (got, _) = feed(&line, &cuts_of(line.len(), &picks), &limits)?;
        prop_assert_eq!(got, vec![Err(ProtocolError::new(ERR_INLINE_TOO_BIG))]);
    }
}
