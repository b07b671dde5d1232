//! MONITOR: connections that receive every command this router receives,
//! one line each in Redis's format
//! (`+1339518083.107412 [0 127.0.0.1:60866] "keys" "*"`).
//!
//! This module owns the list of monitors and the lines. The command path
//! pays one relaxed atomic load while no monitor is connected. Lines are
//! built once per command, when it is read off the socket (before it runs),
//! and queued to each monitor. A monitor's queue is bounded in bytes by
//! `shoal-max-output-len`: a monitor that falls that far behind is
//! disconnected (with a log line), so a slow monitor never makes the router
//! buffer without limit. As in Redis, unknown commands and `ADMIN` commands
//! (CONFIG, CLIENT, MONITOR, SLOWLOG, LATENCY...) are not shown, and the
//! arguments of AUTH (and HELLO's after AUTH) are shown as `(redacted)`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::spec::flag;

/// One monitor's end of the feed.
pub struct Subscriber {
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes queued and not yet taken by the monitor's connection.
    pending: Arc<AtomicUsize>,
}

/// The monitor's connection side.
pub struct Feed {
    pub rx: mpsc::UnboundedReceiver<Bytes>,
    pending: Arc<AtomicUsize>,
    /// Set when the router cut the feed because the monitor fell behind.
    pub dropped: Arc<AtomicBool>,
}

impl Feed {
    /// A line was taken off the queue.
    pub fn taken(&self, line: &Bytes) {
        self.pending.fetch_sub(line.len(), Ordering::Relaxed);
    }
}

/// The connected monitors.
#[derive(Default)]
pub struct Monitors {
    count: AtomicUsize,
    subs: Mutex<Vec<(u64, Subscriber, Arc<AtomicBool>)>>,
}

impl Monitors {
    /// Whether any monitor is connected (one relaxed load).
    pub fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Start feeding client `id`.
    pub fn subscribe(&self, id: u64) -> Feed {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        if let Ok(mut subs) = self.subs.lock() {
            subs.retain(|(i, _, _)| *i != id);
            subs.push((
                id,
                Subscriber {
                    tx,
                    pending: pending.clone(),
                },
                dropped.clone(),
            ));
            self.count.store(subs.len(), Ordering::Relaxed);
        }
        Feed {
            rx,
            pending,
            dropped,
        }
    }

    /// Stop feeding client `id` (it disconnected or left with RESET).
    pub fn unsubscribe(&self, id: u64) {
        if let Ok(mut subs) = self.subs.lock() {
            subs.retain(|(i, _, _)| *i != id);
            self.count.store(subs.len(), Ordering::Relaxed);
        }
    }

    /// A request received from client `peer` with table index `db`: queue
    /// its line to every monitor, dropping those over `limit` bytes behind.
    pub fn feed(&self, db: u32, peer: &str, parts: &[Bytes], limit: usize) {
        let Some(line) = monitor_line(db, peer, parts) else {
            return;
        };
        let Ok(mut subs) = self.subs.lock() else {
            return;
        };
        subs.retain(|(id, s, dropped)| {
            let queued = s.pending.fetch_add(line.len(), Ordering::Relaxed) + line.len();
            if queued > limit {
                tracing::warn!(
                    client = id,
                    queued,
                    "disconnecting MONITOR client: it fell more than shoal-max-output-len behind"
                );
                dropped.store(true, Ordering::Relaxed);
                return false;
            }
            s.tx.send(line.clone()).is_ok()
        });
        self.count.store(subs.len(), Ordering::Relaxed);
    }
}

/// The line of a request, or `None` for one monitors do not show.
pub fn monitor_line(db: u32, peer: &str, parts: &[Bytes]) -> Option<Bytes> {
    let name = String::from_utf8_lossy(parts.first()?).to_ascii_lowercase();
    let spec = super::commands::lookup(&name)?;
    if spec.has(flag::ADMIN) {
        return None;
    }
    // AUTH: every argument; HELLO: the two after AUTH (as Redis 7 redacts).
    let hello_auth = (spec.name == "hello")
        .then(|| parts.iter().position(|a| a.eq_ignore_ascii_case(b"auth")))
        .flatten();
    let redact = |j: usize| {
        j > 0 && (spec.name == "auth" || hello_auth.is_some_and(|at| j == at + 1 || j == at + 2))
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = format!(
        "+{}.{:06} [{db} {peer}] ",
        now.as_secs(),
        now.subsec_micros()
    )
    .into_bytes();
    for (j, a) in parts.iter().enumerate() {
        if j > 0 {
            out.push(b' ');
        }
        if redact(j) {
            out.extend_from_slice(b"\"(redacted)\"");
        } else {
            repr(a, &mut out);
        }
    }
    out.extend_from_slice(b"\r\n");
    Some(Bytes::from(out))
}

/// Redis's `sdscatrepr`: quoted, with `\\`, `\"`, `\n`, `\r`, `\t`, `\a`,
/// `\b` escaped and other unprintable bytes as `\xHH`.
pub fn repr(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &c in s {
        match c {
            b'\\' | b'"' => {
                out.push(b'\\');
                out.push(c);
            }
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(c),
            _ => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_redis_lines() {
        let parts = [
            Bytes::from("SET"),
            Bytes::from("k"),
            Bytes::from("a\"b\\\n\x01"),
        ];
        let line = monitor_line(3, "127.0.0.1:5000", &parts).unwrap();
        let s = String::from_utf8(line.to_vec()).unwrap();
        let (stamp, rest) = s.split_once(' ').unwrap();
        assert!(stamp.starts_with('+'));
        let (secs, micros) = stamp[1..].split_once('.').unwrap();
        assert!(secs.parse::<u64>().unwrap() > 1_600_000_000);
        assert_eq!(micros.len(), 6);
        assert_eq!(
            rest,
            "[3 127.0.0.1:5000] \"SET\" \"k\" \"a\\\"b\\\\\\n\\x01\"\r\n"
        );
        let auth = monitor_line(0, "p", &[Bytes::from("auth"), Bytes::from("secret")]).unwrap();
        assert!(auth.ends_with(b"\"auth\" \"(redacted)\"\r\n"));
        let hello = [
            &b"HELLO"[..],
            b"3",
            b"AUTH",
            b"default",
            b"pw",
            b"SETNAME",
            b"n",
        ]
        .map(Bytes::from_static);
        let hello = monitor_line(0, "p", &hello).unwrap();
        assert!(
            hello.ends_with(
                b"\"HELLO\" \"3\" \"AUTH\" \"(redacted)\" \"(redacted)\" \"SETNAME\" \"n\"\r\n"
            ),
            "{hello:?}"
        );
        assert!(monitor_line(0, "p", &[Bytes::from("config"), Bytes::from("get")]).is_none());
        assert!(monitor_line(0, "p", &[Bytes::from("nosuchcommand")]).is_none());
    }

    #[test]
    fn a_monitor_too_far_behind_is_cut_off() {
        let m = Monitors::default();
        let mut feed = m.subscribe(1);
        assert!(m.active());
        let parts = [Bytes::from("get"), Bytes::from("k")];
        for _ in 0..10 {
            m.feed(0, "p", &parts, 1000);
        }
        assert!(m.active());
        let line = feed.rx.try_recv().unwrap();
        feed.taken(&line);
        // Lines of ~40 bytes: past 1000 queued bytes the feed is cut.
        for _ in 0..100 {
            m.feed(0, "p", &parts, 1000);
        }
        assert!(!m.active());
        assert!(feed.dropped.load(Ordering::Relaxed));
    }
}
