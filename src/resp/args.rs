//! Typed access to a request's arguments.
//!
//! This module owns [`Args`], a cursor over one request (`Vec<Bytes>`, the
//! command name first) that pulls typed arguments off the front, and
//! [`ArgError`], whose [`ArgError::message`] is the exact Redis error text.
//! It also owns the strict number parsers that mirror Redis:
//! [`parse_i64`] (`string2ll`), [`parse_u64`] and [`parse_f64`]
//! (`string2ld`). The framing code reuses [`parse_i64`] for length headers.

use bytes::Bytes;

/// Why an argument could not be taken. [`ArgError::message`] gives the full
/// Redis error text, prefix word included.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// `ERR syntax error`
    #[error("ERR syntax error")]
    Syntax,
    /// `ERR value is not an integer or out of range`
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// `ERR value is not a valid float`
    #[error("ERR value is not a valid float")]
    NotFloat,
    /// An argument was required but the request ran out:
    /// `ERR wrong number of arguments for '<command>' command`
    #[error("ERR wrong number of arguments for '{command}' command")]
    Missing {
        /// Lowercased command name.
        command: String,
    },
    /// A textual argument was not valid UTF-8 (Redis itself never needs this:
    /// it is binary safe everywhere).
    #[error("ERR invalid argument: not valid UTF-8")]
    NotUtf8,
}

impl ArgError {
    /// The full error text for a `-` reply, e.g. `ERR syntax error`.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// Cursor over one request's arguments. The command name (first element) is
/// not yielded by the `next_*` methods.
#[derive(Debug, Clone)]
pub struct Args {
    parts: Vec<Bytes>,
    /// Index of the next argument to hand out.
    pos: usize,
    /// `parts.len()` at construction.
    argc: usize,
    name: String,
}

impl Args {
    /// Wrap a request. The command name is lowercased once, here.
    pub fn new(parts: Vec<Bytes>) -> Self {
        let name = parts
            .first()
            .map(|n| String::from_utf8_lossy(n).to_lowercase())
            .unwrap_or_default();
        let argc = parts.len();
        Args {
            parts,
            pos: 1.min(argc),
            argc,
            name,
        }
    }

    /// Lowercased command name (lossy UTF-8); empty for an empty request.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Argument count including the command name (Redis arity convention).
    pub fn len(&self) -> usize {
        self.argc
    }

    /// True when the request has no elements at all (not even a name).
    pub fn is_empty(&self) -> bool {
        self.argc == 0
    }

    /// Arguments not yet taken.
    pub fn remaining(&self) -> usize {
        self.parts.len().saturating_sub(self.pos)
    }

    fn missing(&self) -> ArgError {
        ArgError::Missing {
            command: self.name.clone(),
        }
    }

    /// Take the next argument as raw bytes.
    pub fn next_bytes(&mut self) -> Result<Bytes, ArgError> {
        // Cloned (a reference count), not taken: the whole request stays
        // readable for SLOWLOG ([`Args::all`]).
        match self.parts.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(b.clone())
            }
            None => Err(self.missing()),
        }
    }

    /// Take the next argument as UTF-8 text.
    pub fn next_string(&mut self) -> Result<String, ArgError> {
        let b = self.next_bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| ArgError::NotUtf8)
    }

    /// Take the next argument as a signed integer (Redis `string2ll` rules).
    pub fn next_i64(&mut self) -> Result<i64, ArgError> {
        let b = self.next_bytes()?;
        parse_i64(&b).ok_or(ArgError::NotInteger)
    }

    /// Take the next argument as an unsigned integer (same strictness as
    /// [`parse_i64`], `u64` range, no sign).
    pub fn next_u64(&mut self) -> Result<u64, ArgError> {
        let b = self.next_bytes()?;
        parse_u64(&b).ok_or(ArgError::NotInteger)
    }

    /// Take the next argument as a float (Redis `string2ld` rules).
    pub fn next_f64(&mut self) -> Result<f64, ArgError> {
        let b = self.next_bytes()?;
        parse_f64(&b).ok_or(ArgError::NotFloat)
    }

    /// The next argument uppercased (lossy UTF-8), without taking it. For
    /// option parsing (`EX`, `PX`, `NX`, ...).
    pub fn peek_upper(&self) -> Option<String> {
        self.parts
            .get(self.pos)
            .map(|b| String::from_utf8_lossy(b).to_uppercase())
    }

    /// Take every remaining argument.
    pub fn rest(&mut self) -> Vec<Bytes> {
        if self.pos >= self.parts.len() {
            return Vec::new();
        }
        let out = self.parts[self.pos..].to_vec();
        self.pos = self.parts.len();
        out
    }

    /// The whole request as received, command name first (whatever has
    /// been taken).
    pub fn all(&self) -> &[Bytes] {
        &self.parts
    }

    /// `ERR syntax error` if any argument is left over.
    pub fn finish(&self) -> Result<(), ArgError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(ArgError::Syntax)
        }
    }
}

#[cfg(test)]
use crate::num::MAX_FLOAT_LEN;
pub use crate::num::{parse_f64, parse_i64, parse_u64};

#[cfg(test)]
mod tests {
    use super::*;

    fn args(parts: &[&str]) -> Args {
        Args::new(
            parts
                .iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
        )
    }

    #[test]
    fn cursor_basics() {
        let mut a = args(&["SeT", "k", "v", "ex", "10"]);
        assert_eq!(a.name(), "set");
        assert_eq!(a.len(), 5);
        assert!(!a.is_empty());
        assert_eq!(a.remaining(), 4);
        assert_eq!(a.next_bytes().unwrap(), Bytes::from_static(b"k"));
        assert_eq!(a.next_string().unwrap(), "v");
        assert_eq!(a.peek_upper().as_deref(), Some("EX"));
        assert_eq!(a.remaining(), 2);
        assert_eq!(a.finish(), Err(ArgError::Syntax));
        a.next_bytes().unwrap();
        assert_eq!(a.next_i64().unwrap(), 10);
        assert_eq!(a.peek_upper(), None);
        assert!(a.finish().is_ok());
        assert_eq!(a.len(), 5);
        assert_eq!(
            a.next_bytes().unwrap_err().message(),
            "ERR wrong number of arguments for 'set' command"
        );
    }

    #[test]
    fn rest_drains() {
        let mut a = args(&["del", "a", "b", "c"]);
        a.next_bytes().unwrap();
        assert_eq!(
            a.rest(),
            vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")]
        );
        assert_eq!(a.remaining(), 0);
        assert!(a.rest().is_empty());
        assert!(a.finish().is_ok());
        assert_eq!(a.len(), 4);
    }

    #[test]
    fn empty_request() {
        let mut a = Args::new(vec![]);
        assert_eq!(a.name(), "");
        assert_eq!(a.len(), 0);
        assert!(a.is_empty());
        assert_eq!(a.remaining(), 0);
        assert!(a.next_bytes().is_err());
        assert!(a.rest().is_empty());
        assert!(a.finish().is_ok());
    }

    #[test]
    fn lossy_name_and_utf8() {
        let mut a = Args::new(vec![
            Bytes::from_static(b"G\xffET"),
            Bytes::from_static(b"\xff"),
        ]);
        assert_eq!(a.name(), "g\u{fffd}et");
        assert_eq!(a.next_string(), Err(ArgError::NotUtf8));
    }

    #[test]
    fn error_messages() {
        assert_eq!(ArgError::Syntax.message(), "ERR syntax error");
        assert_eq!(
            ArgError::NotInteger.message(),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            ArgError::NotFloat.message(),
            "ERR value is not a valid float"
        );
        let mut a = args(&["incrby", "k", "x", "1.5x"]);
        a.next_bytes().unwrap();
        assert_eq!(a.next_i64(), Err(ArgError::NotInteger));
        assert_eq!(a.next_f64(), Err(ArgError::NotFloat));
    }

    #[test]
    fn i64_strictness() {
        let ok: &[(&str, i64)] = &[
            ("0", 0),
            ("1", 1),
            ("-1", -1),
            ("10", 10),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ];
        for (s, v) in ok {
            assert_eq!(parse_i64(s.as_bytes()), Some(*v), "{s}");
        }
        let bad = [
            "",
            "+1",
            " 1",
            "1 ",
            "01",
            "00",
            "-0",
            "-",
            "-01",
            "1a",
            "1.0",
            "9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999",
            "000000000000000000001",
            "0x10",
            "١",
        ];
        for s in bad {
            assert_eq!(parse_i64(s.as_bytes()), None, "{s:?}");
        }
    }

    #[test]
    fn u64_strictness() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        for s in ["", "-1", "+1", "01", "18446744073709551616", " 1", "-0"] {
            assert_eq!(parse_u64(s.as_bytes()), None, "{s:?}");
        }
        let mut a = args(&["setbit", "-1"]);
        assert_eq!(a.next_u64(), Err(ArgError::NotInteger));
    }

    #[test]
    fn f64_rules() {
        let ok: &[(&str, f64)] = &[
            ("0", 0.0),
            ("1.5", 1.5),
            ("-1.5", -1.5),
            ("+2", 2.0),
            ("1e3", 1000.0),
            ("1E-2", 0.01),
            ("2.5e+1", 25.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("007", 7.0),
            ("0e-999", 0.0),
            ("inf", f64::INFINITY),
            ("+inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("Infinity", f64::INFINITY),
            ("-INF", f64::NEG_INFINITY),
        ];
        for (s, v) in ok {
            assert_eq!(parse_f64(s.as_bytes()), Some(*v), "{s}");
        }
        let bad = [
            "", " 1", "1 ", "nan", "NaN", "-nan", "abc", "1e", "1e+", "e5", ".", "-", "1.5.2",
            "1,5", "1e400", "-1e400", "1e-400", "infx", "0x10", "1_0", "\t1",
        ];
        for s in bad {
            assert_eq!(parse_f64(s.as_bytes()), None, "{s:?}");
        }
        assert_eq!(parse_f64(&[b'1'; MAX_FLOAT_LEN + 1]), None);
        assert_eq!(parse_f64(b"\xff"), None);
    }
}
