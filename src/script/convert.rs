//! Conversions between replies and Lua values, as Redis 7.0's
//! `script_lua.c` does them.
//!
//! [`reply_to_lua`] turns what a command answered (`redis.call`) into the
//! Lua value a script sees, for the protocol the script chose with
//! `redis.setresp` (2 by default). [`lua_to_reply`] turns what a script
//! returns into the reply the client gets. [`command_arg`] turns one
//! `redis.call` argument into bytes. This module owns the shapes only: it
//! runs no script and raises no Lua error.

use bytes::Bytes;
use mlua::{Lua, Table, Value};

use crate::resp::reply::{format_double, Reply};

/// How deep a returned table may nest before the reply carries Redis's
/// "reached lua stack limit" error in its place (Redis runs out of Lua C
/// stack at about this depth; a table that contains itself hits it).
pub const MAX_REPLY_DEPTH: usize = 2_000;

/// The error a non-string, non-number `redis.call` argument raises.
pub const ARG_TYPE_ERROR: &str = "ERR Lua redis lib command arguments must be strings or integers";

/// A `{err = msg}` table, the shape of every error a script sees.
pub fn error_table(lua: &Lua, msg: &str) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 1)?;
    t.raw_set("err", lua.create_string(msg)?)?;
    Ok(t)
}

/// A command reply as the Lua value a script gets from `redis.call`.
///
/// RESP2 (the default): status → `{ok=s}`, error → `{err=s}`, integer →
/// number, bulk → string, nil → `false`, array → table; maps, sets and
/// pairs arrive flattened, doubles as strings and booleans as 1/0, as a
/// RESP2 client would see them. RESP3 (`redis.setresp(3)`): nil → `nil`,
/// map → `{map={k=v}}`, set → `{set={m=true}}`, double → `{double=d}`,
/// boolean → boolean, verbatim → `{verbatim_string={format=, string=}}`.
pub fn reply_to_lua(lua: &Lua, reply: &Reply, resp3: bool) -> mlua::Result<Value> {
    Ok(match reply {
        Reply::Status(s) => {
            let t = lua.create_table_with_capacity(0, 1)?;
            t.raw_set("ok", lua.create_string(s)?)?;
            Value::Table(t)
        }
        Reply::Error(s) => Value::Table(error_table(lua, s)?),
        Reply::Int(i) => Value::Number(*i as f64),
        Reply::Bulk(b) => Value::String(lua.create_string(b)?),
        Reply::Nil | Reply::NilArray => {
            if resp3 {
                Value::Nil
            } else {
                Value::Boolean(false)
            }
        }
        Reply::Array(items) | Reply::Push(items) | Reply::Many(items) => array(lua, items, resp3)?,
        Reply::Set(items) if resp3 => {
            let set = lua.create_table_with_capacity(0, items.len())?;
            for item in items {
                set.raw_set(reply_to_lua(lua, item, resp3)?, true)?;
            }
            wrap(lua, "set", Value::Table(set))?
        }
        Reply::Set(items) => array(lua, items, resp3)?,
        Reply::Map(pairs) if resp3 => {
            let map = lua.create_table_with_capacity(0, pairs.len())?;
            for (k, v) in pairs {
                let k = reply_to_lua(lua, k, resp3)?;
                if !k.is_nil() {
                    map.raw_set(k, reply_to_lua(lua, v, resp3)?)?;
                }
            }
            wrap(lua, "map", Value::Table(map))?
        }
        Reply::Pairs(pairs) if resp3 => {
            let t = lua.create_table_with_capacity(pairs.len(), 0)?;
            for (i, (k, v)) in pairs.iter().enumerate() {
                let pair = lua.create_table_with_capacity(2, 0)?;
                pair.raw_set(1, reply_to_lua(lua, k, resp3)?)?;
                pair.raw_set(2, reply_to_lua(lua, v, resp3)?)?;
                t.raw_set(i + 1, pair)?;
            }
            Value::Table(t)
        }
        Reply::Map(pairs) | Reply::Pairs(pairs) => {
            let t = lua.create_table_with_capacity(pairs.len() * 2, 0)?;
            for (i, (k, v)) in pairs.iter().enumerate() {
                t.raw_set(2 * i + 1, reply_to_lua(lua, k, resp3)?)?;
                t.raw_set(2 * i + 2, reply_to_lua(lua, v, resp3)?)?;
            }
            Value::Table(t)
        }
        Reply::Double(d) if resp3 => wrap(lua, "double", Value::Number(*d))?,
        Reply::Double(d) => Value::String(lua.create_string(format_double(*d))?),
        Reply::Bool(b) if resp3 => Value::Boolean(*b),
        Reply::Bool(b) => Value::Number(if *b { 1.0 } else { 0.0 }),
        Reply::Verbatim(s) if resp3 => {
            let v = lua.create_table_with_capacity(0, 2)?;
            v.raw_set("format", "txt")?;
            v.raw_set("string", lua.create_string(s)?)?;
            wrap(lua, "verbatim_string", Value::Table(v))?
        }
        Reply::Verbatim(s) => Value::String(lua.create_string(s)?),
    })
}

fn array(lua: &Lua, items: &[Reply], resp3: bool) -> mlua::Result<Value> {
    let t = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, item) in items.iter().enumerate() {
        // A RESP3 null inside an array leaves a hole, as in Redis.
        t.raw_set(i + 1, reply_to_lua(lua, item, resp3)?)?;
    }
    Ok(Value::Table(t))
}

fn wrap(lua: &Lua, key: &str, v: Value) -> mlua::Result<Value> {
    let t = lua.create_table_with_capacity(0, 1)?;
    t.raw_set(key, v)?;
    Ok(Value::Table(t))
}

/// What a script returned, as the reply its client gets.
///
/// `resp3` is the script's own protocol (`redis.setresp(3)`): it decides
/// only how booleans come back (`true`/`false` as RESP3 booleans, or 1 and
/// nil under RESP2). Everything else has one shape; the client's protocol
/// is applied when the reply is encoded.
pub fn lua_to_reply(v: &Value, resp3: bool) -> Reply {
    to_reply(v, resp3, 0)
}

fn to_reply(v: &Value, resp3: bool, depth: usize) -> Reply {
    match v {
        Value::String(s) => Reply::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Boolean(b) if resp3 => Reply::Bool(*b),
        Value::Boolean(true) => Reply::Int(1),
        Value::Boolean(false) => Reply::Nil,
        Value::Number(n) => Reply::Int(c_long_long(*n)),
        Value::Integer(i) => Reply::Int(*i),
        Value::Table(t) if depth >= MAX_REPLY_DEPTH => {
            let _ = t;
            Reply::Error("ERR reached lua stack limit".into())
        }
        Value::Table(t) => table_reply(t, resp3, depth),
        _ => Reply::Nil,
    }
}

fn table_reply(t: &Table, resp3: bool, depth: usize) -> Reply {
    let field = |k: &str| t.raw_get::<Value>(k).unwrap_or(Value::Nil);
    if let Value::String(e) = field("err") {
        let msg = e.to_string_lossy();
        return Reply::Error(msg.trim_end_matches(['\r', '\n']).to_string());
    }
    if let Value::String(s) = field("ok") {
        return Reply::Status(s.to_string_lossy().replace(['\r', '\n'], " "));
    }
    if let Value::Number(d) = field("double") {
        return Reply::Double(d);
    }
    if let Value::Integer(d) = field("double") {
        return Reply::Double(d as f64);
    }
    if let Value::String(s) = field("big_number") {
        // Reply has no big-number variant: RESP2 clients see the same
        // bulk string Redis sends them; RESP3 clients get `$` for `(`.
        let digits = s.to_string_lossy().replace(['\r', '\n'], " ");
        return Reply::Bulk(Bytes::from(digits));
    }
    if let Value::Table(v) = field("verbatim_string") {
        if let (Ok(Value::String(_)), Ok(Value::String(s))) =
            (v.raw_get::<Value>("format"), v.raw_get::<Value>("string"))
        {
            return Reply::Verbatim(s.to_string_lossy());
        }
    }
    if let Value::Table(m) = field("map") {
        let mut pairs = Vec::new();
        for (k, v) in m.pairs::<Value, Value>().flatten() {
            pairs.push((
                to_reply(&k, resp3, depth + 1),
                to_reply(&v, resp3, depth + 1),
            ));
        }
        return Reply::Map(pairs);
    }
    if let Value::Table(s) = field("set") {
        let mut items = Vec::new();
        for (k, _) in s.pairs::<Value, Value>().flatten() {
            items.push(to_reply(&k, resp3, depth + 1));
        }
        return Reply::Set(items);
    }
    let mut items = Vec::new();
    for i in 1.. {
        match t.raw_get::<Value>(i) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(v) => items.push(to_reply(&v, resp3, depth + 1)),
        }
    }
    Reply::Array(items)
}

/// C's `(long long)` cast of a double as x86-64 does it: truncation toward
/// zero, and `i64::MIN` for NaN and values out of range (where Rust's `as`
/// would saturate).
pub fn c_long_long(n: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if !(-LIMIT..LIMIT).contains(&n) {
        i64::MIN
    } else {
        n as i64
    }
}

/// One `redis.call` argument as command bytes: strings as they are,
/// numbers as C's `%.17g` (Redis 7.0 prints them so); anything else is
/// `None` ([`ARG_TYPE_ERROR`]).
pub fn command_arg(v: &Value) -> Option<Bytes> {
    match v {
        Value::String(s) => Some(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Number(n) => Some(Bytes::from(format_g17(*n))),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        _ => None,
    }
}

/// C's `printf("%.17g", d)`.
pub fn format_g17(d: f64) -> String {
    format_g(d, 17)
}

/// C's `printf("%.<precision>g", d)` (precision ≥ 1).
pub fn format_g(d: f64, precision: usize) -> String {
    if d.is_nan() {
        return if d.is_sign_negative() { "-nan" } else { "nan" }.to_string();
    }
    if d.is_infinite() {
        return if d < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    let p = precision.max(1);
    // `{:.*e}` rounds to p significant digits: "d.ddddde<exp>".
    let sci = format!("{:.*e}", p - 1, d);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= p as i32 {
        let m = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{:.*}", decimals, d)).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g17_matches_printf() {
        let cases: &[(f64, &str)] = &[
            (0.1, "0.10000000000000001"),
            (1e20, "1e+20"),
            (3.0, "3"),
            (-0.0, "-0"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (9007199254740992.0, "9007199254740992"),
            (1.5, "1.5"),
            (1e-5, "1.0000000000000001e-05"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
        ];
        for (d, want) in cases {
            assert_eq!(format_g17(*d), *want, "{d:e}");
        }
        assert_eq!(format_g(0.1, 14), "0.1");
        assert_eq!(format_g(1e15, 14), "1e+15");
        assert_eq!(format_g(123.0, 14), "123");
        assert_eq!(format_g(1.0 / 3.0, 14), "0.33333333333333");
    }

    #[test]
    fn long_long_cast() {
        assert_eq!(c_long_long(3.99), 3);
        assert_eq!(c_long_long(-3.99), -3);
        assert_eq!(c_long_long(1e300), i64::MIN);
        assert_eq!(c_long_long(-1e300), i64::MIN);
        assert_eq!(c_long_long(f64::NAN), i64::MIN);
        assert_eq!(c_long_long(-9.223_372_036_854_776e18), i64::MIN);
    }
}
