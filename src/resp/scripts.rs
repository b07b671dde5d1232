//! What a router knows of scripts and functions: the bodies SCRIPT LOAD
//! stored in etcd (`scripts/<sha1>`, followed by a watch, so every router
//! runs what any router loaded), the bodies EVAL ran here (a bounded cache
//! of this router's own, as Redis's script cache is per server), and the
//! function libraries (`functions/<library>`, the raw code, followed the
//! same way and parsed here into their functions).
//!
//! The Lua VM that parses a library lives above this layer: the router
//! gives one as a [`LibraryParser`]. Scripts run on the shard leaders
//! (`shard::script`); nothing here runs one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use crate::meta::etcd::{Meta, PrefixState};
use crate::meta::MetaError;

/// A function library's functions, as FUNCTION LOAD found them.
#[derive(Debug, Clone, PartialEq)]
pub struct LibraryInfo {
    pub name: String,
    pub functions: Vec<FunctionInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionInfo {
    pub name: String,
    pub description: Option<String>,
    /// Redis's flags: `no-writes`, `allow-oom`, `allow-stale`,
    /// `no-cluster`, `allow-cross-slot-keys`.
    pub flags: Vec<String>,
}

/// Parses a library's code (`#!lua name=<lib>` and its
/// `redis.register_function` calls): an error is Redis's text.
pub trait LibraryParser: Send + Sync {
    fn parse(&self, code: &[u8]) -> Result<LibraryInfo, String>;
}

/// One loaded library.
#[derive(Debug, Clone)]
pub struct Library {
    pub info: LibraryInfo,
    pub code: Bytes,
    /// SHA1 of the code: the nodes' cache key.
    pub sha: String,
    /// etcd's mod revision of its record (for REPLACE and DELETE).
    pub revision: i64,
}

/// The libraries, as of the router's watch on `functions/`.
#[derive(Debug, Clone, Default)]
pub struct Libraries {
    /// Library name -> library.
    pub libs: BTreeMap<String, Library>,
    /// Function name -> library name.
    pub functions: HashMap<String, String>,
    /// Records that do not parse (name -> error): shown, never run.
    pub broken: BTreeMap<String, String>,
}

impl Libraries {
    fn build(st: &PrefixState, parser: &dyn LibraryParser, before: &Libraries) -> Libraries {
        let mut out = Libraries::default();
        for (name, (code, rev)) in &st.entries {
            let sha = sha1_hex(code);
            // A library whose code did not change is not parsed again.
            let info = match before.libs.get(name) {
                Some(l) if l.sha == sha => Ok(l.info.clone()),
                _ => parser.parse(code),
            };
            match info {
                Ok(info) => {
                    for f in &info.functions {
                        out.functions.insert(f.name.clone(), name.clone());
                    }
                    out.libs.insert(
                        name.clone(),
                        Library {
                            info,
                            code: Bytes::copy_from_slice(code),
                            sha,
                            revision: *rev,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(library = %name, "stored function library does not load: {e}");
                    out.broken.insert(name.clone(), e);
                }
            }
        }
        out
    }

    /// The library holding function `name`.
    pub fn function(&self, name: &str) -> Option<(&Library, &FunctionInfo)> {
        let lib = self.libs.get(self.functions.get(name)?)?;
        let f = lib.info.functions.iter().find(|f| f.name == name)?;
        Some((lib, f))
    }
}

/// SHA1 of `data`, lowercase hex (Redis's script names).
pub fn sha1_hex(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}

/// Most bodies EVAL leaves in one router's cache (the oldest go first).
pub const EVAL_CACHE: usize = 1000;

/// Largest script body or library SCRIPT LOAD / FUNCTION LOAD stores.
pub const MAX_STORED_CODE: usize = 4 * 1024 * 1024;

/// Most scripts SCRIPT LOAD may keep in etcd.
pub const MAX_STORED_SCRIPTS: usize = 10_000;

/// The router's scripts and functions.
pub struct Scripts {
    loaded: watch::Receiver<Arc<PrefixState>>,
    evaluated: Mutex<(HashMap<String, Bytes>, VecDeque<String>)>,
    pub libraries: watch::Receiver<Arc<Libraries>>,
    pub parser: Arc<dyn LibraryParser>,
    /// Tables' descriptors encoded for scripts, by (table id, revision).
    tables: Mutex<HashMap<(u64, i64), Bytes>>,
}

impl Scripts {
    /// Follow `scripts/` and `functions/` in etcd.
    pub async fn follow(meta: &Meta, parser: Arc<dyn LibraryParser>) -> Result<Scripts, MetaError> {
        let loaded = meta.follow("scripts/").await?;
        let mut records = meta.follow("functions/").await?;
        // Libraries are parsed (Lua runs) on blocking threads.
        let build =
            |state: Arc<PrefixState>, parser: Arc<dyn LibraryParser>, before: Arc<Libraries>| {
                tokio::task::spawn_blocking(move || {
                    Arc::new(Libraries::build(&state, parser.as_ref(), &before))
                })
            };
        let initial = records.borrow_and_update().clone();
        let first = build(initial, parser.clone(), Arc::default())
            .await
            .map_err(|e| {
                MetaError::Corrupt(format!("parsing the function libraries failed: {e}"))
            })?;
        let (tx, libraries) = watch::channel(first);
        let p = parser.clone();
        tokio::spawn(async move {
            while records.changed().await.is_ok() {
                let state = records.borrow_and_update().clone();
                let before = tx.borrow().clone();
                let Ok(next) = build(state, p.clone(), before).await else {
                    return;
                };
                if tx.send(next).is_err() {
                    return;
                }
            }
        });
        Ok(Scripts {
            loaded,
            evaluated: Mutex::new((HashMap::new(), VecDeque::new())),
            libraries,
            parser,
            tables: Mutex::new(HashMap::new()),
        })
    }

    /// Parse a library on a blocking thread (its body may run for up to
    /// the VM's load limit; an async thread must not wait on it).
    pub async fn parse(&self, code: Bytes) -> Result<LibraryInfo, String> {
        let parser = self.parser.clone();
        tokio::task::spawn_blocking(move || parser.parse(&code))
            .await
            .map_err(|e| format!("ERR the library parser failed: {e}"))?
    }

    /// The table's descriptor as scripts carry it (JSON, see
    /// `shard::command::ScriptCall::table`), encoded once per revision of
    /// the table's record.
    pub fn encoded_table(
        &self,
        table: &crate::cluster::routes::TableRoute,
    ) -> Result<Bytes, String> {
        let key = (table.desc.table_id, table.mod_revision);
        if let Some(b) = self.tables.lock().ok().and_then(|t| t.get(&key).cloned()) {
            return Ok(b);
        }
        let b = Bytes::from(
            serde_json::to_vec(&table.desc)
                .map_err(|e| format!("ERR cannot encode the table: {e}"))?,
        );
        if let Ok(mut t) = self.tables.lock() {
            // Old revisions are dropped wholesale; tables are few.
            if t.len() >= 1024 {
                t.clear();
            }
            t.insert(key, b.clone());
        }
        Ok(b)
    }

    /// The body named `sha` (lowercase hex), loaded anywhere or evaluated
    /// here.
    pub fn body(&self, sha: &str) -> Option<Bytes> {
        if let Some((body, _)) = self.loaded.borrow().entries.get(sha) {
            return Some(Bytes::copy_from_slice(body));
        }
        let e = self.evaluated.lock().ok()?;
        e.0.get(sha).cloned()
    }

    /// [`Scripts::body`], or on a miss the body SCRIPT LOAD stored in etcd
    /// (a script loaded through another router a moment ago, which this
    /// router's watch has not shown yet). `sha` must be 40 hex digits.
    pub async fn body_or_stored(&self, meta: &Meta, sha: &str) -> Result<Option<Bytes>, MetaError> {
        if let Some(b) = self.body(sha) {
            return Ok(Some(b));
        }
        if sha.len() != 40 || !sha.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let stored = meta.get_record(&format!("scripts/{sha}")).await?;
        Ok(stored.map(|(body, _)| {
            let body = Bytes::from(body);
            self.remember(sha, &body);
            body
        }))
    }

    /// The library holding function `name` and the function, from this
    /// router's copy, or on a miss from etcd's records read afresh (a
    /// library loaded through another router a moment ago).
    pub async fn function_or_stored(
        &self,
        meta: &Meta,
        name: &str,
    ) -> Result<Option<(Library, FunctionInfo)>, MetaError> {
        let found = |libs: &Libraries| libs.function(name).map(|(l, f)| (l.clone(), f.clone()));
        let current = self.libraries.borrow().clone();
        if let Some(hit) = found(&current) {
            return Ok(Some(hit));
        }
        let state = meta.load_prefix("functions/").await?;
        let parser = self.parser.clone();
        let fresh = tokio::task::spawn_blocking(move || {
            Libraries::build(&state, parser.as_ref(), &current)
        })
        .await
        .map_err(|e| MetaError::Corrupt(format!("parsing the function libraries failed: {e}")))?;
        Ok(found(&fresh))
    }

    /// Whether SCRIPT LOAD stored `sha` (as this router's watch shows).
    pub fn is_loaded(&self, sha: &str) -> bool {
        self.loaded.borrow().entries.contains_key(sha)
    }

    pub fn loaded_count(&self) -> usize {
        self.loaded.borrow().entries.len()
    }

    /// Remember a body EVAL ran here.
    pub fn remember(&self, sha: &str, body: &Bytes) {
        let Ok(mut e) = self.evaluated.lock() else {
            return;
        };
        let (map, order) = &mut *e;
        if map.insert(sha.to_string(), body.clone()).is_none() {
            order.push_back(sha.to_string());
            while order.len() > EVAL_CACHE {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }

    /// Forget the bodies EVAL ran here (SCRIPT FLUSH).
    pub fn forget_evaluated(&self) {
        if let Ok(mut e) = self.evaluated.lock() {
            e.0.clear();
            e.1.clear();
        }
    }

    /// Wait (a little) until this router's watch shows `scripts/` at
    /// etcd revision `rev` or later, so the next command here sees a change
    /// just made.
    pub async fn await_loaded(&self, rev: i64) {
        let mut rx = self.loaded.clone();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            rx.wait_for(|s| s.revision >= rev),
        )
        .await;
    }

    /// As [`Scripts::await_loaded`], for `functions/`: waits until the
    /// libraries show `check`.
    pub async fn await_libraries(&self, check: impl Fn(&Libraries) -> bool) {
        let mut rx = self.libraries.clone();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx.wait_for(|l| check(l)))
            .await;
    }
}

/// FUNCTION DUMP / RESTORE's payload, in Redis 7's format, so libraries
/// move between redis-server and shoal: per library the opcode 245 and the
/// code as an RDB string, then the RDB version (2 bytes, little-endian)
/// and a CRC-64 (Jones, little-endian) of everything before it.
pub mod payload {
    /// `RDB_OPCODE_FUNCTION2`.
    const OPCODE: u8 = 245;
    /// The RDB version Redis 7.0 writes; a newer one is refused, as Redis
    /// refuses it.
    const RDB_VERSION: u16 = 10;

    pub const ERR_BAD: &str = "ERR DUMP payload version or checksum are wrong";

    /// Redis's CRC-64 (Jones polynomial, reflected, no final xor).
    pub fn crc64(data: &[u8]) -> u64 {
        const POLY: u64 = 0x95ac_9329_ac4b_c9b5;
        let mut crc = 0u64;
        for &b in data {
            crc ^= b as u64;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    fn put_len(out: &mut Vec<u8>, len: usize) {
        if len < 1 << 6 {
            out.push(len as u8);
        } else if len < 1 << 14 {
            out.push(0x40 | (len >> 8) as u8);
            out.push(len as u8);
        } else if len <= u32::MAX as usize {
            out.push(0x80);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        } else {
            out.push(0x81);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }

    /// The payload of these libraries' codes (stored uncompressed).
    pub fn dump<'a>(codes: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        for code in codes {
            out.push(OPCODE);
            put_len(&mut out, code.len());
            out.extend_from_slice(code);
        }
        out.extend_from_slice(&RDB_VERSION.to_le_bytes());
        let crc = crc64(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// A cursor over the payload's body.
    struct Reader<'a> {
        buf: &'a [u8],
        at: usize,
    }

    impl Reader<'_> {
        fn byte(&mut self) -> Result<u8, String> {
            let b = *self.buf.get(self.at).ok_or("ERR payload is truncated")?;
            self.at += 1;
            Ok(b)
        }

        fn take(&mut self, n: usize) -> Result<&[u8], String> {
            let end = self
                .at
                .checked_add(n)
                .filter(|e| *e <= self.buf.len())
                .ok_or("ERR payload is truncated")?;
            let s = &self.buf[self.at..end];
            self.at = end;
            Ok(s)
        }

        /// An RDB length; `Err` for an encoded (special) value's marker
        /// handled by the caller: `Ok((len, special))`.
        fn len(&mut self) -> Result<(usize, bool), String> {
            let b = self.byte()?;
            Ok(match b >> 6 {
                0 => ((b & 0x3f) as usize, false),
                1 => ((((b & 0x3f) as usize) << 8) | self.byte()? as usize, false),
                2 if b == 0x80 => {
                    let v = self.take(4)?;
                    (u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize, false)
                }
                2 if b == 0x81 => {
                    let v = self.take(8)?;
                    let n = u64::from_be_bytes(v.try_into().expect("8 bytes"));
                    (
                        usize::try_from(n).map_err(|_| "ERR payload length too large")?,
                        false,
                    )
                }
                3 => ((b & 0x3f) as usize, true),
                _ => return Err("ERR payload has a bad length".into()),
            })
        }

        /// An RDB string: plain, or LZF-compressed as Redis writes it.
        fn string(&mut self) -> Result<Vec<u8>, String> {
            match self.len()? {
                (n, false) => Ok(self.take(n)?.to_vec()),
                // RDB_ENC_LZF
                (3, true) => {
                    let (clen, _) = self.len()?;
                    let (len, _) = self.len()?;
                    if len > super::MAX_STORED_CODE {
                        return Err("ERR payload library is too large".into());
                    }
                    let data = self.take(clen)?;
                    lzf_decompress(data, len)
                }
                _ => Err("ERR payload holds a value that is not a library's code".into()),
            }
        }
    }

    /// LZF decompression (liblzf's format, as Redis's RDB uses it).
    fn lzf_decompress(input: &[u8], len: usize) -> Result<Vec<u8>, String> {
        let bad = || "ERR payload's compressed library does not decompress".to_string();
        let mut out: Vec<u8> = Vec::with_capacity(len);
        let mut i = 0;
        while i < input.len() {
            let ctrl = input[i] as usize;
            i += 1;
            if ctrl < 32 {
                let n = ctrl + 1;
                let lit = input.get(i..i + n).ok_or_else(bad)?;
                out.extend_from_slice(lit);
                i += n;
            } else {
                let mut n = ctrl >> 5;
                if n == 7 {
                    n += *input.get(i).ok_or_else(bad)? as usize;
                    i += 1;
                }
                let back = ((ctrl & 0x1f) << 8) + *input.get(i).ok_or_else(bad)? as usize + 1;
                i += 1;
                let start = out.len().checked_sub(back).ok_or_else(bad)?;
                for k in 0..n + 2 {
                    let b = out[start + k];
                    out.push(b);
                }
            }
            if out.len() > len {
                return Err(bad());
            }
        }
        if out.len() != len {
            return Err(bad());
        }
        Ok(out)
    }

    /// The libraries' codes in a payload, checked.
    pub fn restore(payload: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        if payload.len() < 10 {
            return Err(ERR_BAD.into());
        }
        let (body, tail) = payload.split_at(payload.len() - 10);
        let version = u16::from_le_bytes([tail[0], tail[1]]);
        let crc = u64::from_le_bytes(tail[2..10].try_into().expect("8 bytes"));
        if version > RDB_VERSION || crc64(&payload[..payload.len() - 8]) != crc {
            return Err(ERR_BAD.into());
        }
        let mut r = Reader { buf: body, at: 0 };
        let mut codes = Vec::new();
        while r.at < body.len() {
            if r.byte()? != OPCODE {
                return Err("ERR given type is not a function".into());
            }
            codes.push(r.string()?);
        }
        Ok(codes)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn crc64_is_redis_s() {
            // Redis's own check value (crc64.c).
            assert_eq!(crc64(b"123456789"), 0xe9c6d914c4b8d9ca);
        }

        /// `FUNCTION DUMP` of redis-server 7.0.15 holding two libraries,
        /// the first LZF-compressed.
        const REDIS_DUMP: &[u8] = b"\xf5\xc3@V@[\x1f#!lua name=mylib\nredis.register_\x0bfunction('my@\x0b\x02', @\x06`\x12\x11keys, args) return`\x0c\x07[1] end)\xf5@B#!lua name=x\nredis.register_function('f', function() return 1 end)\n\x00\xe0\xf2\xb7K\xae\xc9\x12\x88";

        #[test]
        fn restores_redis_s_payload_and_round_trips() {
            let codes = restore(REDIS_DUMP).unwrap();
            assert_eq!(
                codes,
                vec![
                    b"#!lua name=mylib\nredis.register_function('myfunc', function(keys, args) return args[1] end)".to_vec(),
                    b"#!lua name=x\nredis.register_function('f', function() return 1 end)".to_vec(),
                ]
            );
            let again = dump(codes.iter().map(|c| c.as_slice()));
            assert_eq!(restore(&again).unwrap(), codes);
        }

        #[test]
        fn refuses_a_damaged_payload() {
            let mut p = REDIS_DUMP.to_vec();
            p[5] ^= 1;
            assert_eq!(restore(&p).unwrap_err(), ERR_BAD);
            assert_eq!(restore(b"short").unwrap_err(), ERR_BAD);
            // A newer RDB version.
            let mut v = dump([b"x".as_slice()]);
            let n = v.len();
            v[n - 10] = 11;
            let crc = crc64(&v[..n - 8]).to_le_bytes();
            v[n - 8..].copy_from_slice(&crc);
            assert_eq!(restore(&v).unwrap_err(), ERR_BAD);
        }
    }
}
