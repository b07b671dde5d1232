//! The Prometheus endpoint of a router or node (`--metrics-listen`): `GET
//! /metrics` answers the text exposition format; a process may serve more
//! pages there ([`Pages`]: a router's console, `crate::console`); anything
//! else is 404.
//!
//! The registry is the `prometheus` crate's (TiKV maintains it); its process
//! collector gives the standard `process_*` metrics (CPU, RSS, open files).
//! What a process measures on its hot paths lives here as statics (the
//! fsync histogram, filled by the engine's writer thread); what it only
//! reports (a group's term, the connections) is read when scraped, by the
//! `render` closure the process hands to [`serve`]. A scrape costs nothing
//! between scrapes.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus::{Encoder, Histogram, HistogramOpts, Registry, TextEncoder};

/// A histogram of seconds, 50 µs doubling to about 1.6 s.
fn seconds_histogram(name: &str, help: &str) -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(name, help)
            .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 16).unwrap_or_default()),
    )
    .unwrap_or_else(|_| Histogram::with_opts(HistogramOpts::new("x", "x")).unwrap())
}

/// Seconds each WAL sync took (the engine's group commit).
pub static FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    seconds_histogram(
        "shoal_fsync_duration_seconds",
        "Time of each WAL sync of the node's group commit",
    )
});

/// Seconds a replica's state machine took to apply one batch of entries.
pub static APPLY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    seconds_histogram(
        "shoal_apply_duration_seconds",
        "Time a replica's state machine took to apply one batch of log entries",
    )
});

/// Seconds from proposing an entry on a leader to its applied result.
pub static COMMIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    seconds_histogram(
        "shoal_raft_commit_duration_seconds",
        "Time from proposing an entry on the leader to its result: replication to a majority, fsync and apply",
    )
});

/// Raft messages this node sent, by peer node and kind (append, vote,
/// snapshot).
pub static RAFT_SENT_MESSAGES: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "shoal_raft_sent_messages_total",
        "Raft messages sent, by peer node and kind",
        &["peer", "kind"],
    )
});

/// Bytes of the Raft messages above.
pub static RAFT_SENT_BYTES: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "shoal_raft_sent_bytes_total",
        "Bytes of Raft messages sent (encoded payloads), by peer node and kind",
        &["peer", "kind"],
    )
});

/// Snapshots this node's leaders sent and its replicas installed.
pub static SNAPSHOTS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "shoal_snapshots_total",
        "Snapshots built, deferred (asked for by the policy, not worth building yet: docs/ARCHITECTURE.md), sent (complete transfers) and installed, by event",
        &["event"],
    )
});

/// The node's LATENCY events (`fsync`, `raft-commit`): every second in
/// which one took at least a millisecond keeps its worst. Routers read
/// them through the node status and show those above their own
/// `latency-monitor-threshold` in LATENCY LATEST and HISTORY.
pub static NODE_EVENTS: LazyLock<LatencyEvents> = LazyLock::new(LatencyEvents::default);

/// Samples an event keeps (Redis's `LATENCY_TS_LEN`).
pub const LATENCY_SAMPLES: usize = 160;

/// One LATENCY event's samples: (unix seconds, ms), oldest first, one per
/// second (the worst), and the worst ever.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventLog {
    pub samples: std::collections::VecDeque<(u64, u64)>,
    pub max: u64,
}

impl EventLog {
    /// Add `ms` at `at` (seconds): the worst of a second is kept, and the
    /// newest [`LATENCY_SAMPLES`] seconds.
    pub fn add(&mut self, at: u64, ms: u64) {
        self.max = self.max.max(ms);
        match self.samples.back_mut() {
            Some((last, worst)) if *last == at => *worst = (*worst).max(ms),
            _ => {
                self.samples.push_back((at, ms));
                if self.samples.len() > LATENCY_SAMPLES {
                    self.samples.pop_front();
                }
            }
        }
    }
}

/// Named [`EventLog`]s.
#[derive(Debug, Default)]
pub struct LatencyEvents {
    events: std::sync::Mutex<std::collections::BTreeMap<String, EventLog>>,
}

impl LatencyEvents {
    /// Note `event` taking `ms` now.
    pub fn sample(&self, event: &str, ms: u64) {
        let now = unix_secs();
        if let Ok(mut events) = self.events.lock() {
            match events.get_mut(event) {
                Some(log) => log.add(now, ms),
                None => {
                    let mut log = EventLog::default();
                    log.add(now, ms);
                    events.insert(event.to_string(), log);
                }
            }
        }
    }

    /// A copy of every event.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, EventLog> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Drop the events named in `which` (all when empty): how many were.
    pub fn reset(&self, which: &[String]) -> usize {
        let Ok(mut events) = self.events.lock() else {
            return 0;
        };
        if which.is_empty() {
            let n = events.len();
            events.clear();
            return n;
        }
        which.iter().filter(|w| events.remove(*w).is_some()).count()
    }
}

/// Now, in Unix seconds.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Note a node-side event of `d` (in LATENCY when at least 1 ms).
pub fn node_event(event: &str, d: std::time::Duration) {
    let ms = d.as_millis() as u64;
    if ms >= 1 {
        NODE_EVENTS.sample(event, ms);
    }
}

/// One collector, ready to register.
pub type Boxed = Box<dyn prometheus::core::Collector>;

/// An integer gauge at `v`. The names are constants of this crate: a bad
/// one is a bug, found by the first scrape in the tests.
pub fn gauge(name: &str, help: &str, v: u64) -> Boxed {
    let g = prometheus::IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    g.set(v as i64);
    Box::new(g)
}

/// A counter at `v`, a total the process keeps elsewhere.
pub fn counter(name: &str, help: &str, v: u64) -> Boxed {
    let c =
        prometheus::IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    c.inc_by(v);
    Box::new(c)
}

/// Integer gauges with `labels`.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::IntGaugeVec {
    prometheus::IntGaugeVec::new(prometheus::Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

/// Integer counters with `labels`.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
    prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

/// A registry with the process collector and `extra` registered.
pub fn registry(extra: Vec<Boxed>) -> Registry {
    let r = Registry::new();
    let _ = r.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ));
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let _ = r.register(gauge(
            "shoal_runtime_worker_threads",
            "Threads of the process's async runtime (--worker-threads)",
            runtime.metrics().num_workers() as u64,
        ));
    }
    for c in extra {
        if let Err(e) = r.register(c) {
            tracing::warn!("metrics: {e}");
        }
    }
    r
}

/// The text exposition of `registry`.
pub fn text(registry: &Registry) -> String {
    text_with(registry, Vec::new())
}

/// The text exposition of `registry` and of `extra` families built by hand
/// (histograms whose buckets were counted elsewhere).
pub fn text_with(registry: &Registry, extra: Vec<prometheus::proto::MetricFamily>) -> String {
    let mut families = registry.gather();
    families.extend(extra);
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// One series of a histogram counted elsewhere.
pub struct HistogramSeries {
    /// The value of the family's one label.
    pub label: String,
    /// Cumulative counts at upper bounds (seconds), ascending; +Inf is
    /// added by the encoder.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    /// Sum of the observations, seconds.
    pub sum: f64,
}

/// A histogram family, one series per [`HistogramSeries`].
pub fn histogram_family(
    name: &str,
    help: &str,
    label: &str,
    series: Vec<HistogramSeries>,
) -> prometheus::proto::MetricFamily {
    use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
    let mut fam = MetricFamily::default();
    fam.set_name(name.to_string());
    fam.set_help(help.to_string());
    fam.set_field_type(MetricType::HISTOGRAM);
    for s in series {
        let mut h = Histogram::default();
        h.set_sample_count(s.count);
        h.set_sample_sum(s.sum);
        h.set_bucket(
            s.buckets
                .into_iter()
                .map(|(le, n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(le);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        let mut pair = LabelPair::default();
        pair.set_name(label.to_string());
        pair.set_value(s.label);
        let mut m = Metric::from_label(vec![pair]);
        m.set_histogram(h);
        fam.mut_metric().push(m);
    }
    fam
}

/// A page served beside `/metrics`.
pub struct Page {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

/// The pages a process serves beside `/metrics`: the answer for a GET of a
/// path, `None` for a path it does not know (404).
pub struct Pages {
    /// The paths, for the 404 message.
    pub paths: &'static str,
    pub get: Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Option<Page>> + Send + Sync>,
}

/// Serve `GET /metrics` on `addr` with what `render` makes at each scrape,
/// until the process ends. Binds before returning, so a bad address is
/// an error at start.
pub async fn serve(
    addr: &str,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> anyhow::Result<std::net::SocketAddr> {
    serve_with(addr, render, None).await
}

/// [`serve`], and `pages` beside `/metrics`.
pub async fn serve_with(
    addr: &str,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    pages: Option<Pages>,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let pages = pages.map(Arc::new);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let render = render.clone();
            let pages = pages.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| {
                        let render = render.clone();
                        let pages = pages.clone();
                        let (method, path) = (req.method().clone(), req.uri().path().to_string());
                        async move { Ok::<_, Infallible>(answer(method, &path, &*render, pages).await) }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
                // A client that stalls is dropped after a while.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
            });
        }
    });
    Ok(bound)
}

fn reply(status: StatusCode, ctype: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    // What is served here changes from one request to the next.
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

async fn answer(
    method: hyper::Method,
    path: &str,
    render: &(dyn Fn() -> String + Send + Sync),
    pages: Option<Arc<Pages>>,
) -> Response<Full<Bytes>> {
    if method == hyper::Method::GET {
        if path == "/metrics" {
            return reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                Bytes::from(render()),
            );
        }
        if let Some(pages) = &pages {
            if let Some(p) = (pages.get)(path.to_string()).await {
                return reply(p.status, p.content_type, p.body);
            }
        }
    }
    let served = pages.as_ref().map_or("GET /metrics", |p| p.paths);
    reply(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        Bytes::from(format!(
            "not found: {method} {path}; this address serves {served}\n"
        )),
    )
}
