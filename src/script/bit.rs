//! The `bit` library Redis preloads (LuaBitOp 1.0): 32-bit operations on
//! Lua numbers.
//!
//! This module owns the operations and their argument checks. Each Lua
//! function answers `(result, nil)` or `(nil, message)`; the sandbox
//! (`prelude.lua`) raises the message at the caller's line, as
//! `luaL_error` does in Redis.

use mlua::{Lua, Table, Value, Variadic};

type Out = (Value, Option<String>);

/// LuaBitOp's `barg`: the number rounded to an integer (ties to even, as
/// its 2^52+2^51 addition does) and wrapped to 32 bits.
pub fn to_bits(n: f64) -> u32 {
    if !n.is_finite() {
        return 0;
    }
    let r = n.round_ties_even();
    r.rem_euclid(4_294_967_296.0) as u32
}

/// Argument `i` (0-based) of `name`, with `luaL_checknumber`'s errors.
fn arg(args: &[Value], i: usize, name: &str) -> Result<u32, String> {
    let n = match args.get(i) {
        Some(Value::Number(n)) => *n,
        Some(Value::Integer(n)) => *n as f64,
        Some(Value::String(s)) => s
            .to_str()
            .ok()
            .and_then(|s| parse_lua_number(&s))
            .ok_or_else(|| expected(i, name, "string"))?,
        other => {
            return Err(expected(
                i,
                name,
                other.map_or("no value", |v| v.type_name()),
            ))
        }
    };
    Ok(to_bits(n))
}

fn expected(i: usize, name: &str, got: &str) -> String {
    format!(
        "bad argument #{} to '{name}' (number expected, got {got})",
        i + 1
    )
}

/// Lua 5.1's string-to-number coercion (decimal or `0x` hex, blanks around).
pub fn parse_lua_number(s: &str) -> Option<f64> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        let v = u64::from_str_radix(hex, 16).ok()? as f64;
        return Some(if neg { -v } else { v });
    }
    if body.is_empty() || body.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    t.parse::<f64>().ok()
}

fn ret(b: u32) -> Out {
    (Value::Number(f64::from(b as i32)), None)
}

fn unary(
    name: &'static str,
    op: fn(u32) -> u32,
) -> impl Fn(&Lua, Variadic<Value>) -> mlua::Result<Out> {
    move |_, args| Ok(arg(&args, 0, name).map_or_else(|e| (Value::Nil, Some(e)), |x| ret(op(x))))
}

fn fold(
    name: &'static str,
    op: fn(u32, u32) -> u32,
) -> impl Fn(&Lua, Variadic<Value>) -> mlua::Result<Out> {
    move |_, args| {
        let mut acc = match arg(&args, 0, name) {
            Ok(x) => x,
            Err(e) => return Ok((Value::Nil, Some(e))),
        };
        for i in 1..args.len() {
            match arg(&args, i, name) {
                Ok(x) => acc = op(acc, x),
                Err(e) => return Ok((Value::Nil, Some(e))),
            }
        }
        Ok(ret(acc))
    }
}

fn shift(
    name: &'static str,
    op: fn(u32, u32) -> u32,
) -> impl Fn(&Lua, Variadic<Value>) -> mlua::Result<Out> {
    move |_, args| {
        let r = arg(&args, 0, name).and_then(|x| Ok(op(x, arg(&args, 1, name)? & 31)));
        Ok(r.map_or_else(|e| (Value::Nil, Some(e)), ret))
    }
}

/// `bit.tohex(x [, n])`: the low `|n|` hex digits (8 by default),
/// upper case when `n` is negative.
fn tohex(args: &[Value]) -> Result<String, String> {
    let x = arg(args, 0, "tohex")?;
    let n = match args.get(1) {
        None | Some(Value::Nil) => 8,
        Some(_) => arg(args, 1, "tohex")? as i32,
    };
    let (upper, n) = if n < 0 {
        (true, n.unsigned_abs())
    } else {
        (false, n as u32)
    };
    let n = n.min(8) as usize;
    let s = if upper {
        format!("{x:08X}")
    } else {
        format!("{x:08x}")
    };
    Ok(s[8 - n..].to_string())
}

/// The library as a table of raw functions for the sandbox to wrap.
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("tobit", lua.create_function(unary("tobit", |x| x))?)?;
    t.set("bnot", lua.create_function(unary("bnot", |x| !x))?)?;
    t.set(
        "bswap",
        lua.create_function(unary("bswap", u32::swap_bytes))?,
    )?;
    t.set("band", lua.create_function(fold("band", |a, b| a & b))?)?;
    t.set("bor", lua.create_function(fold("bor", |a, b| a | b))?)?;
    t.set("bxor", lua.create_function(fold("bxor", |a, b| a ^ b))?)?;
    t.set(
        "lshift",
        lua.create_function(shift("lshift", |x, n| x << n))?,
    )?;
    t.set(
        "rshift",
        lua.create_function(shift("rshift", |x, n| x >> n))?,
    )?;
    t.set(
        "arshift",
        lua.create_function(shift("arshift", |x, n| ((x as i32) >> n) as u32))?,
    )?;
    t.set("rol", lua.create_function(shift("rol", u32::rotate_left))?)?;
    t.set("ror", lua.create_function(shift("ror", u32::rotate_right))?)?;
    t.set(
        "tohex",
        lua.create_function(|lua, args: Variadic<Value>| {
            Ok(match tohex(&args) {
                Ok(s) => (Value::String(lua.create_string(s)?), None),
                Err(e) => (Value::Nil, Some(e)),
            })
        })?,
    )?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        assert_eq!(to_bits(4294967297.5), 2);
        assert_eq!(to_bits(-1.0), u32::MAX);
        assert_eq!(to_bits(2.5), 2);
        assert_eq!(
            tohex(&[Value::Number(-1.0), Value::Number(-4.0)]).unwrap(),
            "FFFF"
        );
        assert_eq!(tohex(&[Value::Number(255.0)]).unwrap(), "000000ff");
        assert_eq!(parse_lua_number(" 12 "), Some(12.0));
        assert_eq!(parse_lua_number("0x10"), Some(16.0));
        assert_eq!(parse_lua_number("x"), None);
    }
}
