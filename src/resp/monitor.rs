//! MONITOR: connections that receive every command this router receives,
//! one line each in Redis's format
//! (`+1339518083.107412 [0 127.0.0.1:60866] "keys" "*"`).
//!
//! This module owns the list of monitors and their feeds (the lines are
//! made by `cmd_views::monitor_line`, which knows the command table). The command path
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

    /// The line of a request (`cmd_views::monitor_line`): queue it to
    /// every monitor, dropping those over `limit` bytes behind.
    pub fn feed(&self, line: Bytes, limit: usize) {
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
    fn a_monitor_too_far_behind_is_cut_off() {
        let m = Monitors::default();
        let mut feed = m.subscribe(1);
        assert!(m.active());
        let line = Bytes::from(format!(
            "+1.000000 [0 p] \"get\" \"{}\"\r\n",
            "k".repeat(14)
        ));
        for _ in 0..10 {
            m.feed(line.clone(), 1000);
        }
        assert!(m.active());
        let line = feed.rx.try_recv().unwrap();
        feed.taken(&line);
        // Lines of ~40 bytes: past 1000 queued bytes the feed is cut.
        for _ in 0..100 {
            m.feed(line.clone(), 1000);
        }
        assert!(!m.active());
        assert!(feed.dropped.load(Ordering::Relaxed));
    }
}
