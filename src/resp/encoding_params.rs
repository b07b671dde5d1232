//! Redis's encoding parameters (`hash-max-listpack-entries`,
//! `set-max-intset-entries`, `list-max-listpack-size`, ...), which CONFIG
//! SET accepts and CONFIG GET reads back, router-wide, as kvrocks does: so
//! tools and test suites that tune them keep running. shoal stores every
//! type the same way whatever they say, so they change nothing else.
//! Values start at Redis's defaults and are checked as Redis 7 checks them
//! (integers or memory sizes, within Redis's range, with its error texts);
//! the old `*-ziplist-*` names are aliases that read and write the same
//! value as their `*-listpack-*` names.

use std::sync::atomic::{AtomicI64, Ordering};

/// How a parameter's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An integer (Redis's `string2ll`: no sign but `-`, no leading zero)
    /// within the range.
    Int { min: i64, max: i64 },
    /// A memory size (`64`, `1k`, `1kb`, ...) up to `i64::MAX`.
    Memory,
}

/// One parameter: its name, its older alias, how it reads, its default.
struct Param {
    name: &'static str,
    alias: Option<&'static str>,
    kind: Kind,
    default: i64,
}

const COUNT: Kind = Kind::Int {
    min: 0,
    max: i64::MAX,
};
const INT32: Kind = Kind::Int {
    min: i32::MIN as i64,
    max: i32::MAX as i64,
};
const DEPTH: Kind = Kind::Int {
    min: 0,
    max: i32::MAX as i64,
};

const fn param(name: &'static str, alias: Option<&'static str>, kind: Kind, default: i64) -> Param {
    Param {
        name,
        alias,
        kind,
        default,
    }
}

/// Every encoding parameter, with Redis 7's defaults (the `set-max-listpack-*`
/// pair is Redis 7.2's).
static PARAMS: &[Param] = &[
    param(
        "hash-max-listpack-entries",
        Some("hash-max-ziplist-entries"),
        COUNT,
        512,
    ),
    param(
        "hash-max-listpack-value",
        Some("hash-max-ziplist-value"),
        Kind::Memory,
        64,
    ),
    param("list-compress-depth", None, DEPTH, 0),
    param(
        "list-max-listpack-size",
        Some("list-max-ziplist-size"),
        INT32,
        -2,
    ),
    param("set-max-intset-entries", None, COUNT, 512),
    param("set-max-listpack-entries", None, COUNT, 128),
    param("set-max-listpack-value", None, Kind::Memory, 64),
    param("stream-node-max-bytes", None, Kind::Memory, 4096),
    param("stream-node-max-entries", None, COUNT, 100),
    param(
        "zset-max-listpack-entries",
        Some("zset-max-ziplist-entries"),
        COUNT,
        128,
    ),
    param(
        "zset-max-listpack-value",
        Some("zset-max-ziplist-value"),
        Kind::Memory,
        64,
    ),
];

/// The current values of the encoding parameters.
#[derive(Debug)]
pub struct EncodingParams {
    values: Vec<AtomicI64>,
}

impl Default for EncodingParams {
    fn default() -> Self {
        EncodingParams {
            values: PARAMS.iter().map(|p| AtomicI64::new(p.default)).collect(),
        }
    }
}

/// A checked value, ready to store with [`EncodingParams::store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    index: usize,
    value: i64,
}

impl EncodingParams {
    /// Every name (aliases too) with its current value, as CONFIG GET
    /// shows them.
    pub fn all(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (p, v) in PARAMS.iter().zip(&self.values) {
            let v = v.load(Ordering::Relaxed).to_string();
            out.push((p.name, v.clone()));
            if let Some(alias) = p.alias {
                out.push((alias, v));
            }
        }
        out
    }

    /// Check `value` for the parameter `name` (lowercase): `None` when
    /// `name` is not an encoding parameter, else the update or Redis's
    /// CONFIG SET error (`ERR` included).
    pub fn check(name: &str, value: &[u8]) -> Option<Result<Update, String>> {
        let index = PARAMS
            .iter()
            .position(|p| p.name == name || p.alias == Some(name))?;
        let fail = |why: String| {
            Err(format!(
                "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
            ))
        };
        let (min, max) = match PARAMS[index].kind {
            Kind::Int { min, max } => (min, max),
            Kind::Memory => (0, i64::MAX),
        };
        let parsed = match PARAMS[index].kind {
            Kind::Int { .. } => match crate::resp::args::parse_i64(value) {
                Some(v) => v as i128,
                None => return Some(fail("argument couldn't be parsed into an integer".into())),
            },
            Kind::Memory => match memory(value) {
                Some(v) => v,
                None => return Some(fail("argument must be a memory value".into())),
            },
        };
        if parsed < min as i128 || parsed > max as i128 {
            return Some(fail(format!(
                "argument must be between {min} and {max} inclusive"
            )));
        }
        Some(Ok(Update {
            index,
            value: parsed as i64,
        }))
    }

    pub fn store(&self, u: Update) {
        self.values[u.index].store(u.value, Ordering::Relaxed);
    }
}

/// A memory size as Redis's `memtoull` reads it: digits, then an optional
/// unit (`b`, `k`/`m`/`g` powers of 1000, `kb`/`mb`/`gb` powers of 1024,
/// any case); digits past `u64` saturate, as `strtoull` does.
fn memory(s: &[u8]) -> Option<i128> {
    let s = std::str::from_utf8(s).ok()?.to_ascii_lowercase();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let scale: i128 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    if number.is_empty() {
        return None;
    }
    let n = number.parse::<u64>().unwrap_or(u64::MAX) as i128;
    Some(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &EncodingParams, name: &str, v: &str) -> Result<(), String> {
        let u = EncodingParams::check(name, v.as_bytes()).expect("a parameter")?;
        p.store(u);
        Ok(())
    }

    fn get(p: &EncodingParams, name: &str) -> String {
        p.all().into_iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn defaults_aliases_and_checks() {
        let p = EncodingParams::default();
        assert_eq!(get(&p, "hash-max-ziplist-entries"), "512");
        assert_eq!(get(&p, "list-max-listpack-size"), "-2");
        set(&p, "hash-max-ziplist-entries", "7").unwrap();
        assert_eq!(get(&p, "hash-max-listpack-entries"), "7");
        set(&p, "hash-max-listpack-value", "1kb").unwrap();
        assert_eq!(get(&p, "hash-max-ziplist-value"), "1024");
        set(&p, "list-max-listpack-size", "-5").unwrap();
        assert_eq!(get(&p, "list-max-ziplist-size"), "-5");
        let err = |name: &str, v: &str| set(&p, name, v).unwrap_err();
        assert_eq!(
            err("set-max-intset-entries", "abc"),
            "ERR CONFIG SET failed (possibly related to argument 'set-max-intset-entries') - argument couldn't be parsed into an integer"
        );
        assert!(err("set-max-intset-entries", "012").ends_with("parsed into an integer"));
        assert!(err("set-max-intset-entries", "-1")
            .ends_with("argument must be between 0 and 9223372036854775807 inclusive"));
        assert!(err("list-max-listpack-size", "99999999999")
            .ends_with("argument must be between -2147483648 and 2147483647 inclusive"));
        assert!(err("list-compress-depth", "-1").ends_with("between 0 and 2147483647 inclusive"));
        assert!(err("hash-max-listpack-value", "-1").ends_with("argument must be a memory value"));
        assert!(err("hash-max-listpack-value", "0x10").ends_with("must be a memory value"));
        assert!(err("hash-max-listpack-value", "99999999999999999999")
            .ends_with("between 0 and 9223372036854775807 inclusive"));
        assert_eq!(
            get(&p, "set-max-intset-entries"),
            "512",
            "unchanged by errors"
        );
        assert!(EncodingParams::check("maxmemory", b"1").is_none());
    }
}
