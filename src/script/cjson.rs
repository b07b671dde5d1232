//! The `cjson` library Redis preloads (lua-cjson 2.1.0), written over
//! mlua values.
//!
//! This module owns JSON encoding and decoding with lua-cjson's
//! behaviour: numbers as `%.14g`, `/` escaped, an empty table as `{}`,
//! sparse arrays refused past a ratio, nesting capped at 1000, `null` as
//! the `cjson.null` light userdata, and its error texts. Each Lua function
//! answers `(result, nil)` or `(nil, message)`; the sandbox raises the
//! message at the caller's line. The configuration functions
//! (`encode_max_depth`, ...) change this state's settings, as in Redis.

use std::sync::{Arc, Mutex};

use mlua::{LightUserData, Lua, Table, Value, Variadic};

use crate::script::convert::format_g;

/// lua-cjson's settings (per Lua state, like Redis's).
#[derive(Debug, Clone)]
struct Config {
    sparse_convert: bool,
    sparse_ratio: i64,
    sparse_safe: i64,
    encode_max_depth: i64,
    decode_max_depth: i64,
    precision: usize,
    /// 0: refuse NaN/Inf, 1: write them, 2: write `null`.
    encode_invalid: u8,
    decode_invalid: bool,
    keep_buffer: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sparse_convert: false,
            sparse_ratio: 2,
            sparse_safe: 10,
            encode_max_depth: 1000,
            decode_max_depth: 1000,
            precision: 14,
            encode_invalid: 0,
            decode_invalid: true,
            keep_buffer: true,
        }
    }
}

type Out = (Value, Option<String>);
type Shared = Arc<Mutex<Config>>;

fn config(c: &Shared) -> Config {
    c.lock().map(|c| c.clone()).unwrap_or_default()
}

fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

/// JSON text of one Lua value.
fn encode(v: &Value, cfg: &Config) -> Result<Vec<u8>, String> {
    // Iterative (an explicit stack of open tables), so a script's nesting
    // never grows the thread's stack.
    enum Open {
        Array(Vec<Value>, usize),
        Object(Vec<(Value, Value)>, usize),
    }
    let mut out = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut next = Some(v.clone());
    loop {
        if let Some(v) = next.take() {
            match &v {
                Value::Table(t) => {
                    let depth = stack.len() as i64 + 1;
                    if depth > cfg.encode_max_depth {
                        return Err(format!("Cannot serialise, excessive nesting ({depth})"));
                    }
                    match array_length(t, &v, cfg)? {
                        Some(len) if len > 0 => {
                            let mut items = Vec::with_capacity(len);
                            for i in 1..=len {
                                items.push(t.raw_get::<Value>(i).map_err(|e| e.to_string())?);
                            }
                            out.push(b'[');
                            stack.push(Open::Array(items, 0));
                        }
                        _ => {
                            let mut pairs = Vec::new();
                            for pair in t.pairs::<Value, Value>() {
                                pairs.push(pair.map_err(|e| e.to_string())?);
                            }
                            out.push(b'{');
                            stack.push(Open::Object(pairs, 0));
                        }
                    }
                }
                other => append_scalar(other, cfg, &mut out)?,
            }
        }
        // Feed the innermost open table its next item, or close it.
        let Some(top) = stack.last_mut() else {
            return Ok(out);
        };
        match top {
            Open::Array(items, i) => {
                if *i == items.len() {
                    out.push(b']');
                    stack.pop();
                    continue;
                }
                if *i > 0 {
                    out.push(b',');
                }
                next = Some(std::mem::replace(&mut items[*i], Value::Nil));
                *i += 1;
            }
            Open::Object(pairs, i) => {
                if *i == pairs.len() {
                    out.push(b'}');
                    stack.pop();
                    continue;
                }
                if *i > 0 {
                    out.push(b',');
                }
                let (k, item) = std::mem::replace(&mut pairs[*i], (Value::Nil, Value::Nil));
                *i += 1;
                match &k {
                    Value::Number(n) => {
                        out.push(b'"');
                        append_number(*n, &k, cfg, &mut out)?;
                        out.extend_from_slice(b"\":");
                    }
                    Value::Integer(n) => {
                        out.push(b'"');
                        append_number(*n as f64, &k, cfg, &mut out)?;
                        out.extend_from_slice(b"\":");
                    }
                    Value::String(s) => {
                        append_string(&s.as_bytes(), &mut out);
                        out.push(b':');
                    }
                    other => return Err(cannot(other, "table key must be a number or string")),
                }
                next = Some(item);
            }
        }
    }
}

fn cannot(v: &Value, reason: &str) -> String {
    format!("Cannot serialise {}: {reason}", v.type_name())
}

fn append_scalar(v: &Value, cfg: &Config, out: &mut Vec<u8>) -> Result<(), String> {
    match v {
        Value::String(s) => append_string(&s.as_bytes(), out),
        Value::Number(n) => append_number(*n, v, cfg, out)?,
        Value::Integer(i) => append_number(*i as f64, v, cfg, out)?,
        Value::Boolean(true) => out.extend_from_slice(b"true"),
        Value::Boolean(false) => out.extend_from_slice(b"false"),
        Value::Nil => out.extend_from_slice(b"null"),
        Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
        other => return Err(cannot(other, "type not supported")),
    }
    Ok(())
}

/// lua-cjson's `lua_array_length`: `Some(max key)` when every key is a
/// positive integer and the array is not too sparse; `None` for objects.
fn array_length(t: &Table, v: &Value, cfg: &Config) -> Result<Option<usize>, String> {
    let mut max = 0f64;
    let mut items = 0i64;
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| e.to_string())?;
        let k = match k {
            Value::Number(n) => n,
            Value::Integer(i) => i as f64,
            _ => return Ok(None),
        };
        if k.floor() != k || k < 1.0 {
            return Ok(None);
        }
        max = max.max(k);
        items += 1;
    }
    let max = max as i64;
    if cfg.sparse_ratio > 0 && max > items * cfg.sparse_ratio && max > cfg.sparse_safe {
        if !cfg.sparse_convert {
            return Err(cannot(v, "excessively sparse array"));
        }
        return Ok(None);
    }
    Ok(Some(max as usize))
}

fn append_number(n: f64, v: &Value, cfg: &Config, out: &mut Vec<u8>) -> Result<(), String> {
    match cfg.encode_invalid {
        0 if !n.is_finite() => return Err(cannot(v, "must not be NaN or Inf")),
        1 if n.is_nan() => {
            out.extend_from_slice(b"nan");
            return Ok(());
        }
        2 if !n.is_finite() => {
            out.extend_from_slice(b"null");
            return Ok(());
        }
        _ => {}
    }
    out.extend_from_slice(format_g(n, cfg.precision).as_bytes());
    Ok(())
}

fn append_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\x08' => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\x0c' => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

/// lua-cjson's tokens (names as its errors print them).
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    Str(Vec<u8>),
    Num(f64),
    Bool(bool),
    Null,
    Colon,
    Comma,
    End,
    Error(&'static str),
}

impl Tok {
    fn name(&self) -> &'static str {
        match self {
            Tok::ObjBegin => "T_OBJ_BEGIN",
            Tok::ObjEnd => "T_OBJ_END",
            Tok::ArrBegin => "T_ARR_BEGIN",
            Tok::ArrEnd => "T_ARR_END",
            Tok::Str(_) => "T_STRING",
            Tok::Num(_) => "T_NUMBER",
            Tok::Bool(_) => "T_BOOLEAN",
            Tok::Null => "T_NULL",
            Tok::Colon => "T_COLON",
            Tok::Comma => "T_COMMA",
            Tok::End => "T_END",
            Tok::Error(e) => e,
        }
    }
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    depth: i64,
    cfg: &'a Config,
}

impl Parser<'_> {
    /// The byte at `i`, with the end (and a NUL: lua-cjson reads a C
    /// string) as 0.
    fn at(&self, i: usize) -> u8 {
        self.data.get(i).copied().unwrap_or(0)
    }

    /// The next token and the index it starts at (for errors).
    fn next(&mut self) -> (Tok, usize) {
        while matches!(self.at(self.pos), b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
        let start = self.pos;
        let c = self.at(self.pos);
        let single = match c {
            0 => return (Tok::End, start),
            b'{' => Some(Tok::ObjBegin),
            b'}' => Some(Tok::ObjEnd),
            b'[' => Some(Tok::ArrBegin),
            b']' => Some(Tok::ArrEnd),
            b':' => Some(Tok::Colon),
            b',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(t) = single {
            self.pos += 1;
            return (t, start);
        }
        let rest = &self.data[self.pos..];
        match c {
            b'"' => self.string(),
            b'-' | b'0'..=b'9' => {
                if !self.cfg.decode_invalid && self.invalid_number() {
                    return (Tok::Error("invalid number"), self.pos);
                }
                self.number()
            }
            b'f' | b'i' | b'I' | b'n' | b'N' | b't' | b'+' => {
                if rest.starts_with(b"true") {
                    self.pos += 4;
                    (Tok::Bool(true), start)
                } else if rest.starts_with(b"false") {
                    self.pos += 5;
                    (Tok::Bool(false), start)
                } else if rest.starts_with(b"null") {
                    self.pos += 4;
                    (Tok::Null, start)
                } else if self.cfg.decode_invalid && self.invalid_number() {
                    self.number()
                } else {
                    (Tok::Error("invalid token"), self.pos)
                }
            }
            _ => (Tok::Error("invalid token"), self.pos),
        }
    }

    /// lua-cjson's `json_is_invalid_number`: `+`, hex, leading zeros,
    /// inf and nan.
    fn invalid_number(&self) -> bool {
        let mut p = self.pos;
        if self.at(p) == b'+' {
            return true;
        }
        if self.at(p) == b'-' {
            p += 1;
        }
        if self.at(p) == b'0' {
            let c2 = self.at(p + 1);
            return (c2 | 0x20) == b'x' || c2.is_ascii_digit();
        }
        if self.at(p) <= b'9' {
            return false;
        }
        let word: Vec<u8> = (0..3)
            .map(|i| self.at(p + i).to_ascii_lowercase())
            .collect();
        word == b"inf" || word == b"nan"
    }

    /// C's `strtod` over the input: decimal, hex, inf, infinity, nan.
    fn number(&mut self) -> (Tok, usize) {
        let start = self.pos;
        let mut p = start;
        let mut neg = false;
        if matches!(self.at(p), b'+' | b'-') {
            neg = self.at(p) == b'-';
            p += 1;
        }
        let lower = |i: usize| self.at(i).to_ascii_lowercase();
        let value;
        if lower(p) == b'i' && lower(p + 1) == b'n' && lower(p + 2) == b'f' {
            p += 3;
            let tail = b"inity";
            if (0..5).all(|i| lower(p + i) == tail[i]) {
                p += 5;
            }
            value = f64::INFINITY;
        } else if lower(p) == b'n' && lower(p + 1) == b'a' && lower(p + 2) == b'n' {
            p += 3;
            value = f64::NAN;
        } else if self.at(p) == b'0' && lower(p + 1) == b'x' && self.at(p + 2).is_ascii_hexdigit() {
            p += 2;
            let mut v = 0f64;
            while self.at(p).is_ascii_hexdigit() {
                v = v * 16.0 + f64::from((self.at(p) as char).to_digit(16).unwrap_or(0));
                p += 1;
            }
            value = v;
        } else {
            let digits_start = p;
            while self.at(p).is_ascii_digit() {
                p += 1;
            }
            let mut any = p > digits_start;
            if self.at(p) == b'.' {
                let q = p + 1;
                let mut r = q;
                while self.at(r).is_ascii_digit() {
                    r += 1;
                }
                if r > q || any {
                    any = any || r > q;
                    p = r;
                }
            }
            if !any {
                return (Tok::Error("invalid number"), start);
            }
            if matches!(self.at(p), b'e' | b'E') {
                let mut q = p + 1;
                if matches!(self.at(q), b'+' | b'-') {
                    q += 1;
                }
                if self.at(q).is_ascii_digit() {
                    while self.at(q).is_ascii_digit() {
                        q += 1;
                    }
                    p = q;
                }
            }
            let text = std::str::from_utf8(&self.data[digits_start..p]).unwrap_or("0");
            value = text.parse::<f64>().unwrap_or(0.0);
        }
        self.pos = p;
        (Tok::Num(if neg { -value } else { value }), start)
    }

    fn string(&mut self) -> (Tok, usize) {
        let start = self.pos;
        self.pos += 1;
        let mut s = Vec::new();
        loop {
            let c = self.at(self.pos);
            match c {
                b'"' => break,
                0 => return (Tok::Error("unexpected end of string"), self.pos),
                b'\\' => {
                    let e = self.at(self.pos + 1);
                    let ch = match e {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 8,
                        b't' => b'\t',
                        b'n' => b'\n',
                        b'f' => 12,
                        b'r' => b'\r',
                        b'u' => {
                            match self.unicode_escape() {
                                Some((cp, len)) => {
                                    let mut buf = [0u8; 4];
                                    match char::from_u32(cp) {
                                        Some(ch) => {
                                            s.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes())
                                        }
                                        None => {
                                            // A lone low surrogate: cjson
                                            // writes its 3 UTF-8 bytes.
                                            s.push(0xE0 | (cp >> 12) as u8);
                                            s.push(0x80 | ((cp >> 6) & 0x3F) as u8);
                                            s.push(0x80 | (cp & 0x3F) as u8);
                                        }
                                    }
                                    self.pos += len;
                                    continue;
                                }
                                None => {
                                    return (Tok::Error("invalid unicode escape code"), self.pos)
                                }
                            }
                        }
                        _ => return (Tok::Error("invalid escape code"), self.pos),
                    };
                    s.push(ch);
                    self.pos += 2;
                }
                c => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
        self.pos += 1;
        (Tok::Str(s), start)
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let mut v = 0;
        for i in 0..4 {
            v = v * 16 + (self.at(at + i) as char).to_digit(16)?;
        }
        Some(v)
    }

    /// `\uXXXX` (and a surrogate pair): the code point and escape length.
    fn unicode_escape(&self) -> Option<(u32, usize)> {
        let cp = self.hex4(self.pos + 2)?;
        if cp & 0xF800 != 0xD800 {
            return Some((cp, 6));
        }
        if cp & 0x400 != 0 {
            return None;
        }
        if self.at(self.pos + 6) != b'\\' || self.at(self.pos + 7) != b'u' {
            return None;
        }
        let low = self.hex4(self.pos + 8)?;
        if low & 0xFC00 != 0xDC00 {
            return None;
        }
        Some(((((cp & 0x3FF) << 10) | (low & 0x3FF)) + 0x10000, 12))
    }

    fn error(&self, expected: &str, tok: &Tok, index: usize) -> String {
        format!(
            "Expected {expected} but found {} at character {}",
            tok.name(),
            index + 1
        )
    }

    fn descend(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > self.cfg.decode_max_depth {
            return Err(format!(
                "Found too many nested data structures ({}) at character {}",
                self.depth, self.pos
            ));
        }
        Ok(())
    }

    /// The value starting with `tok`. Iterative (an explicit stack of
    /// open containers), so deep input never grows the thread's stack.
    fn value(&mut self, lua: &Lua, tok: Tok, index: usize) -> Result<Value, String> {
        enum Open {
            Array(Table, usize),
            Object(Table, Vec<u8>),
        }
        let lua_err = |e: mlua::Error| e.to_string();
        let mut stack: Vec<Open> = Vec::new();
        let (mut tok, mut index) = (tok, index);
        loop {
            // Parse one value (opening a container pushes it and reads its
            // first token).
            let mut v = match tok {
                Tok::Str(s) => Value::String(lua.create_string(s).map_err(lua_err)?),
                Tok::Num(n) => Value::Number(n),
                Tok::Bool(b) => Value::Boolean(b),
                Tok::Null => null(),
                Tok::ObjBegin => {
                    self.descend()?;
                    let t = lua.create_table().map_err(lua_err)?;
                    let (first, fi) = self.next();
                    if first == Tok::ObjEnd {
                        self.depth -= 1;
                        Value::Table(t)
                    } else {
                        let key = self.object_key(first, fi)?;
                        stack.push(Open::Object(t, key));
                        (tok, index) = self.next();
                        continue;
                    }
                }
                Tok::ArrBegin => {
                    self.descend()?;
                    let t = lua.create_table().map_err(lua_err)?;
                    let (first, fi) = self.next();
                    if first == Tok::ArrEnd {
                        self.depth -= 1;
                        Value::Table(t)
                    } else {
                        stack.push(Open::Array(t, 1));
                        (tok, index) = (first, fi);
                        continue;
                    }
                }
                other => return Err(self.error("value", &other, index)),
            };
            // Store it in the innermost container; close finished ones.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(v);
                };
                let (sep, si) = self.next();
                match top {
                    Open::Array(t, i) => {
                        t.raw_set(*i, v).map_err(lua_err)?;
                        *i += 1;
                        if sep == Tok::ArrEnd {
                            let Some(Open::Array(t, _)) = stack.pop() else {
                                unreachable!()
                            };
                            self.depth -= 1;
                            v = Value::Table(t);
                            continue;
                        }
                        if sep != Tok::Comma {
                            return Err(self.error("comma or array end", &sep, si));
                        }
                        (tok, index) = self.next();
                    }
                    Open::Object(t, key) => {
                        let k = lua.create_string(&key[..]).map_err(lua_err)?;
                        t.raw_set(k, v).map_err(lua_err)?;
                        if sep == Tok::ObjEnd {
                            let Some(Open::Object(t, _)) = stack.pop() else {
                                unreachable!()
                            };
                            self.depth -= 1;
                            v = Value::Table(t);
                            continue;
                        }
                        if sep != Tok::Comma {
                            return Err(self.error("comma or object end", &sep, si));
                        }
                        let (kt, ki) = self.next();
                        *key = self.object_key(kt, ki)?;
                        (tok, index) = self.next();
                    }
                }
                break;
            }
        }
    }

    /// An object key and its colon; the caller reads the value next.
    fn object_key(&mut self, tok: Tok, index: usize) -> Result<Vec<u8>, String> {
        let Tok::Str(key) = tok else {
            return Err(self.error("object key string", &tok, index));
        };
        let (colon, ci) = self.next();
        if colon != Tok::Colon {
            return Err(self.error("colon", &colon, ci));
        }
        Ok(key)
    }
}

/// Decode JSON text into Lua values.
fn decode(lua: &Lua, data: &[u8], cfg: &Config) -> Result<Value, String> {
    if data.len() >= 2 && (data[0] == 0 || data[1] == 0) {
        return Err("JSON parser does not support UTF-16 or UTF-32".into());
    }
    let mut p = Parser {
        data,
        pos: 0,
        depth: 0,
        cfg,
    };
    let (tok, index) = p.next();
    let v = p.value(lua, tok, index)?;
    let (tok, index) = p.next();
    if tok != Tok::End {
        return Err(p.error("the end", &tok, index));
    }
    Ok(v)
}

fn done(r: Result<Value, String>) -> mlua::Result<Out> {
    Ok(match r {
        Ok(v) => (v, None),
        Err(e) => (Value::Nil, Some(e)),
    })
}

/// An integer setting: `(current)` or a new value within `lo..=hi`.
fn int_option(
    name: &str,
    args: &[Value],
    lo: i64,
    hi: i64,
    slot: &mut i64,
) -> Result<Value, String> {
    if args.len() > 1 {
        return Err(format!(
            "bad argument #2 to '{name}' (found too many arguments)"
        ));
    }
    match args.first() {
        None | Some(Value::Nil) => {}
        Some(Value::Number(n)) if (lo as f64..=hi as f64).contains(n) => *slot = *n as i64,
        Some(Value::Integer(n)) if (lo..=hi).contains(n) => *slot = *n,
        Some(_) => {
            return Err(format!(
                "bad argument #1 to '{name}' (expected integer between {lo} and {hi})"
            ))
        }
    }
    Ok(Value::Number(*slot as f64))
}

fn bool_option(name: &str, args: &[Value], slot: &mut bool) -> Result<Value, String> {
    if args.len() > 1 {
        return Err(format!(
            "bad argument #2 to '{name}' (found too many arguments)"
        ));
    }
    match args.first() {
        None | Some(Value::Nil) => {}
        Some(Value::Boolean(b)) => *slot = *b,
        Some(Value::String(s)) if s.as_bytes().as_ref() == b"on" => *slot = true,
        Some(Value::String(s)) if s.as_bytes().as_ref() == b"off" => *slot = false,
        Some(v) => {
            let shown = match v {
                Value::String(s) => s.to_string_lossy(),
                other => other.type_name().to_string(),
            };
            return Err(format!(
                "bad argument #1 to '{name}' (invalid option '{shown}')"
            ));
        }
    }
    Ok(Value::Boolean(*slot))
}

/// The library as a table of raw functions for the sandbox to wrap, plus
/// `null`, `_NAME` and `_VERSION`.
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let shared: Shared = Arc::new(Mutex::new(Config::default()));
    let t = lua.create_table()?;
    t.set("_NAME", "cjson")?;
    t.set("_VERSION", "2.1.0")?;
    t.set("null", null())?;
    let c = shared.clone();
    t.set(
        "encode",
        lua.create_function(move |lua, args: Variadic<Value>| {
            if args.len() != 1 {
                return done(Err(
                    "bad argument #1 to 'encode' (expected 1 argument)".into()
                ));
            }
            let cfg = config(&c);
            done(encode(&args[0], &cfg).and_then(|b| {
                lua.create_string(b)
                    .map(Value::String)
                    .map_err(|e| e.to_string())
            }))
        })?,
    )?;
    let c = shared.clone();
    t.set(
        "decode",
        lua.create_function(move |lua, args: Variadic<Value>| {
            if args.len() != 1 {
                return done(Err(
                    "bad argument #1 to 'decode' (expected 1 argument)".into()
                ));
            }
            let text = match &args[0] {
                Value::String(s) => s.as_bytes().to_vec(),
                Value::Number(n) => format_g(*n, 14).into_bytes(),
                Value::Integer(n) => n.to_string().into_bytes(),
                other => {
                    return done(Err(format!(
                        "bad argument #1 to 'decode' (string expected, got {})",
                        other.type_name()
                    )))
                }
            };
            let cfg = config(&c);
            done(decode(lua, &text, &cfg))
        })?,
    )?;
    type Setter = fn(&str, &[Value], &mut Config) -> Result<Value, String>;
    let options: [(&str, Setter); 6] = [
        ("encode_max_depth", |n, a, c| {
            int_option(n, a, 1, i32::MAX.into(), &mut c.encode_max_depth)
        }),
        ("decode_max_depth", |n, a, c| {
            int_option(n, a, 1, i32::MAX.into(), &mut c.decode_max_depth)
        }),
        ("encode_number_precision", |n, a, c| {
            let mut p = c.precision as i64;
            let r = int_option(n, a, 1, 14, &mut p);
            c.precision = p as usize;
            r
        }),
        ("encode_keep_buffer", |n, a, c| {
            bool_option(n, a, &mut c.keep_buffer)
        }),
        ("decode_invalid_numbers", |n, a, c| {
            bool_option(n, a, &mut c.decode_invalid)
        }),
        ("encode_invalid_numbers", |n, a, c| {
            if let Some(Value::String(s)) = a.first() {
                if s.as_bytes().as_ref() == b"null" {
                    c.encode_invalid = 2;
                    return Ok(Value::Nil);
                }
            }
            let mut b = c.encode_invalid == 1;
            let r = bool_option(n, a, &mut b);
            if !a.is_empty() {
                c.encode_invalid = u8::from(b);
            }
            if c.encode_invalid == 2 {
                return Ok(Value::Nil);
            }
            r
        }),
    ];
    for (name, set) in options {
        let c = shared.clone();
        t.set(
            name,
            lua.create_function(move |lua, args: Variadic<Value>| {
                let mut cfg = c.lock().map_err(|_| mlua::Error::runtime("cjson config"))?;
                match set(name, &args, &mut cfg) {
                    Ok(Value::Nil) => Ok((Value::String(lua.create_string("null")?), None)),
                    Ok(v) => Ok((v, None)),
                    Err(e) => Ok((Value::Nil, Some(e))),
                }
            })?,
        )?;
    }
    let c = shared;
    t.set(
        "encode_sparse_array",
        lua.create_function(move |_, args: Variadic<Value>| {
            let mut cfg = c.lock().map_err(|_| mlua::Error::runtime("cjson config"))?;
            let r = (|| -> Result<(), String> {
                let mut convert = cfg.sparse_convert;
                bool_option(
                    "encode_sparse_array",
                    &args[..args.len().min(1)],
                    &mut convert,
                )?;
                cfg.sparse_convert = convert;
                if args.len() > 1 {
                    int_option(
                        "encode_sparse_array",
                        &args[1..2],
                        0,
                        i32::MAX.into(),
                        &mut cfg.sparse_ratio,
                    )?;
                }
                if args.len() > 2 {
                    int_option(
                        "encode_sparse_array",
                        &args[2..3],
                        0,
                        i32::MAX.into(),
                        &mut cfg.sparse_safe,
                    )?;
                }
                Ok(())
            })();
            Ok(match r {
                Ok(()) => (
                    Value::Boolean(cfg.sparse_convert),
                    None,
                    cfg.sparse_ratio,
                    cfg.sparse_safe,
                ),
                Err(e) => (Value::Nil, Some(e), 0, 0),
            })
        })?,
    )?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors() {
        let lua = Lua::new();
        let cfg = Config::default();
        let err = |s: &str| decode(&lua, s.as_bytes(), &cfg).unwrap_err();
        assert_eq!(
            err("[1,2"),
            "Expected comma or array end but found T_END at character 5"
        );
        assert_eq!(
            err("{\"a\":1,}"),
            "Expected object key string but found T_OBJ_END at character 8"
        );
        assert_eq!(
            err("[\"\\x\"]"),
            "Expected value but found invalid escape code at character 3"
        );
        assert_eq!(err(""), "Expected value but found T_END at character 1");
        assert_eq!(
            err("[1] x"),
            "Expected the end but found invalid token at character 5"
        );
    }

    #[test]
    fn strings_escape_like_cjson() {
        let mut out = Vec::new();
        append_string(b"a/b\"\\\x01\x7f\x80", &mut out);
        assert_eq!(out, b"\"a\\/b\\\"\\\\\\u0001\\u007f\x80\"");
    }
}
