//! The live cluster console a router serves on its `--metrics-listen`
//! address: `GET /` is the page (`index.html`, `console.css`,
//! `console.js`, plain files compiled into the binary with
//! `include_str!`: no build step, nothing fetched from elsewhere) and `GET
//! /api/cluster` the JSON it polls every second.
//!
//! This module owns that JSON. It is made from one [`crate::status::gather`]
//! (what `shoal status` reads: etcd's records and every live node's status
//! over gRPC), at most once per [`FRESH`] however many pages poll: the
//! first request after that refreshes it, the others wait for it and share
//! it. Throughput and p99 per node, table and shard are the nodes' own
//! counts of the requests they served (`shard::served`, in their status),
//! made into rates from the difference between this reading and the
//! previous one; they cover every router's traffic. The slow commands are
//! this router's SLOWLOG. Nothing here runs unless a page polls.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::metrics::{Page, Pages};
use crate::resp::session::Shared;
use crate::shard::served::{ServedCounts, Tally};
use crate::status::ClusterStatus;

const INDEX_HTML: &str = include_str!("index.html");
const CONSOLE_CSS: &str = include_str!("console.css");
const CONSOLE_JS: &str = include_str!("console.js");

/// How long one reading of the cluster serves every page that polls.
pub const FRESH: Duration = Duration::from_millis(750);

/// Slow commands listed.
const SLOW_SHOWN: usize = 20;

/// A router's console: the last reading and the one before.
pub struct Console {
    shared: Arc<Shared>,
    /// The router's RESP address, shown on the page.
    at: String,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last answer (the JSON, or why there is none), and when.
    answer: Option<(Instant, StatusCode, Bytes)>,
    /// The nodes' served counts at the last reading.
    prev: Option<Reading>,
}

/// Each replica's served counts at one instant, by (node, group).
struct Reading {
    at: Instant,
    counts: HashMap<(u64, u64), ServedCounts>,
}

impl Console {
    pub fn new(shared: Arc<Shared>, at: String) -> Arc<Console> {
        Arc::new(Console {
            shared,
            at,
            state: Default::default(),
        })
    }

    /// The console's paths, for [`crate::metrics::serve_with`].
    pub fn pages(self: &Arc<Console>) -> Pages {
        let me = self.clone();
        Pages {
            paths: "GET /metrics, / (the console), /console.css, /console.js and /api/cluster",
            get: Arc::new(move |path: String| {
                let me = me.clone();
                Box::pin(async move { me.page(&path).await })
            }),
        }
    }

    async fn page(&self, path: &str) -> Option<Page> {
        let file = |content_type, body: &'static str| {
            Some(Page {
                status: StatusCode::OK,
                content_type,
                body: Bytes::from_static(body.as_bytes()),
            })
        };
        match path {
            "/" | "/index.html" => file("text/html; charset=utf-8", INDEX_HTML),
            "/console.css" => file("text/css; charset=utf-8", CONSOLE_CSS),
            "/console.js" => file("text/javascript; charset=utf-8", CONSOLE_JS),
            "/api/cluster" => Some(self.cluster().await),
            _ => None,
        }
    }

    /// The JSON of `/api/cluster`: the reading of the last [`FRESH`], or
    /// a new one; 503 with `{"error": why}` when the cluster cannot be
    /// read (the page shows it and polls again).
    async fn cluster(&self) -> Page {
        let mut state = self.state.lock().await;
        if let Some((at, status, body)) = &state.answer {
            if at.elapsed() < FRESH {
                return json_page(*status, body.clone());
            }
        }
        let gathered = tokio::time::timeout(
            Duration::from_secs(5),
            crate::status::gather(&self.shared.meta, &self.shared.client),
        )
        .await;
        let read = match gathered {
            Ok(Ok(st)) => Ok(st),
            Ok(Err(e)) => Err(format!("cannot read the cluster's state: {e}")),
            Err(_) => Err("reading the cluster's state took over 5 s".to_string()),
        };
        let st = match read {
            Ok(st) => st,
            Err(why) => {
                // Said to every poll of the next FRESH too: a cluster that
                // cannot be read is not asked again at once for each.
                let body = Bytes::from(json!({ "error": why }).to_string());
                let status = StatusCode::SERVICE_UNAVAILABLE;
                state.answer = Some((Instant::now(), status, body.clone()));
                return json_page(status, body);
            }
        };
        let reading = Reading {
            at: st.asked_at,
            counts: st
                .statuses
                .iter()
                .flat_map(|(n, s)| {
                    s.groups
                        .iter()
                        .map(|g| ((*n, g.group_id), g.served.clone()))
                })
                .collect(),
        };
        let value = self.render(&st, &reading, state.prev.as_ref());
        let json = Bytes::from(value.to_string());
        state.prev = Some(reading);
        state.answer = Some((Instant::now(), StatusCode::OK, json.clone()));
        json_page(StatusCode::OK, json)
    }

    fn render(&self, st: &ClusterStatus, now: &Reading, prev: Option<&Reading>) -> Value {
        let rates = Rates::new(st, now, prev);
        let nodes: Vec<Value> = st
            .members
            .iter()
            .map(|(id, m)| {
                let status = st.statuses.get(id);
                let leaders =
                    status.map(|s| s.groups.iter().filter(|g| g.role == "leader").count());
                json!({
                    "id": id,
                    "addr": m.rpc_addr,
                    "state": m.state.as_str(),
                    "live": st.live.contains(id),
                    "answered": status.is_some(),
                    "replicas": status.map(|s| s.groups.len()),
                    "leaders": leaders,
                    "throughput": rates.json(rates.nodes.get(id)),
                })
            })
            .collect();
        let tables: Vec<Value> = st
            .tables
            .iter()
            .map(|t| {
                let shards: Vec<Value> = t
                    .shards
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let replicas = st.replicas(s);
                        let head = replicas
                            .iter()
                            .find_map(|(_, g)| g.filter(|g| g.role == "leader"))
                            .map(|g| g.last_log_index);
                        let cells: BTreeMap<String, Value> = replicas
                            .iter()
                            .map(|(n, g)| {
                                let role = match g {
                                    Some(g) => g.role.clone(),
                                    None if st.statuses.contains_key(n) => "absent".into(),
                                    None => "unreachable".into(),
                                };
                                let moving = s.moving.as_ref().and_then(|m| {
                                    if m.to == *n {
                                        Some("in")
                                    } else if m.from == Some(*n) {
                                        Some("out")
                                    } else {
                                        None
                                    }
                                });
                                let cell = json!({
                                    "role": role,
                                    "learner": s.learners.contains(n),
                                    "lag": head.zip(*g).map(|(h, g)| h.saturating_sub(g.last_log_index)),
                                    "hibernating": g.is_some_and(|g| g.hibernating),
                                    "moving": moving,
                                });
                                (n.to_string(), cell)
                            })
                            .collect();
                        json!({
                            "shard": i,
                            "group": s.group_id,
                            "slots": s.slots,
                            "leader": st.leader(s),
                            "replicas": cells,
                            "moving": s.moving.as_ref().map(|m| json!({
                                "to": m.to,
                                "from": m.from,
                                "reason": m.reason,
                                "age_ms": crate::clock::now_ms().saturating_sub(m.started_at),
                            })),
                            "throughput": rates.json(rates.groups.get(&s.group_id)),
                        })
                    })
                    .collect();
                json!({
                    "name": t.name,
                    "db": t.db_index,
                    "state": t.state.as_str(),
                    "replicas": t.replicas,
                    "shards": shards,
                    "throughput": rates.json(rates.tables.get(&t.name)),
                })
            })
            .collect();
        let orphans: Vec<Value> = st
            .orphans()
            .into_iter()
            .map(|(n, g)| {
                json!({
                    "node": n,
                    "group": g.group_id,
                    "table": g.table,
                    "shard": g.shard,
                    "role": g.role,
                    "why": g.orphaned,
                })
            })
            .collect();
        let mut problems: Vec<String> = st
            .unreadable
            .iter()
            .map(|(t, e)| format!("the record of table '{t}' is unreadable: {e}"))
            .collect();
        match &st.record {
            Ok(Some(_)) => {}
            Ok(None) => problems.push("the cluster record is missing from etcd".into()),
            Err(e) => problems.push(format!("the cluster record is unreadable: {e}")),
        }
        if let Err(e) = &st.tombstones {
            problems.push(format!("the tombstones are unreadable: {e}"));
        }
        let slow = &self.shared.views.slowlog;
        let slowlog: Vec<Value> = slow
            .recent(SLOW_SHOWN)
            .into_iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "time": e.time,
                    "micros": e.micros,
                    "command": e.argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>(),
                    "client": e.peer,
                    "name": e.name,
                })
            })
            .collect();
        json!({
            "router": self.at,
            "cluster": st.record.as_ref().ok().and_then(|r| r.as_ref()).map(|r| r.name.clone()),
            "time_ms": st.asked_ms,
            "interval_s": rates.interval,
            "throughput": rates.json(Some(&rates.total)),
            "nodes": nodes,
            "tables": tables,
            "orphans": orphans,
            "moves": st.moves,
            "problems": problems,
            "slowlog": {
                "slower_than_us": slow.slower_than.load(std::sync::atomic::Ordering::Relaxed),
                "len": slow.len(),
                "entries": slowlog,
            },
        })
    }
}

/// Requests served between two readings, summed per node, group, table
/// and over the cluster.
struct Rates {
    /// Seconds between the readings; `None` on the first.
    interval: Option<f64>,
    total: Tally,
    nodes: HashMap<u64, Tally>,
    groups: HashMap<u64, Tally>,
    tables: HashMap<String, Tally>,
}

impl Rates {
    fn new(st: &ClusterStatus, now: &Reading, prev: Option<&Reading>) -> Rates {
        let mut r = Rates {
            interval: prev.map(|p| now.at.duration_since(p.at).as_secs_f64()),
            total: Tally::default(),
            nodes: HashMap::new(),
            groups: HashMap::new(),
            tables: HashMap::new(),
        };
        let Some(prev) = prev else { return r };
        for (node, s) in &st.statuses {
            for g in &s.groups {
                // A replica new since the last reading: its counts cover an
                // unknown time, so they wait for the next.
                let Some(before) = prev.counts.get(&(*node, g.group_id)) else {
                    continue;
                };
                for t in [
                    &mut r.total,
                    r.nodes.entry(*node).or_default(),
                    r.groups.entry(g.group_id).or_default(),
                    r.tables.entry(g.table.clone()).or_default(),
                ] {
                    t.add_delta(&g.served, before);
                }
            }
        }
        r
    }

    /// `{ops, p99_ms}` of `t` (`null`s without two readings; no p99
    /// without a request).
    fn json(&self, t: Option<&Tally>) -> Value {
        let Some(secs) = self.interval.filter(|s| *s > 0.0) else {
            return json!({"ops": null, "p99_ms": null});
        };
        let t = t.cloned().unwrap_or_default();
        json!({
            "ops": t.requests as f64 / secs,
            "p99_ms": t.percentile_us(99.0).map(|us| us as f64 / 1000.0),
        })
    }
}

fn json_page(status: StatusCode, body: Bytes) -> Page {
    Page {
        status,
        content_type: "application/json",
        body,
    }
}
