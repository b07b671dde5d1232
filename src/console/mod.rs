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
//! previous one, each node's counts over that node's own interval between
//! its two reads of them (a node that answers one poll late has counted
//! for longer than the console waited); they cover every router's
//! traffic. The slow commands are this router's SLOWLOG. Nothing here runs
//! unless a page polls.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::metrics::{Page, Pages};
use crate::resp::session::Shared;
use crate::shard::served::{CountedAt, ServedCounts, Tally};
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

/// Each replica's served counts at one reading, by (node, group), and
/// when each node read them.
struct Reading {
    /// When the console asked.
    at: Instant,
    counts: HashMap<(u64, u64), ServedCounts>,
    counted_at: HashMap<u64, CountedAt>,
}

impl Reading {
    /// The served counts `st` carries, as asked at `st.asked_at`.
    fn of(st: &ClusterStatus) -> Reading {
        Reading {
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
            counted_at: st
                .statuses
                .iter()
                .map(|(n, s)| (*n, s.counted_at))
                .collect(),
        }
    }
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
        let reading = Reading::of(&st);
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
                                    "stopped": g.and_then(|g| g.stopped.clone()),
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
    /// Seconds between the console's two asks; `None` on the first.
    interval: Option<f64>,
    total: Load,
    nodes: HashMap<u64, Load>,
    groups: HashMap<u64, Load>,
    tables: HashMap<String, Load>,
}

/// What some replicas served between two readings: the requests per
/// second (each node's count over its own interval, summed) and their
/// times.
#[derive(Default, Clone)]
struct Load {
    ops: f64,
    tally: Tally,
}

impl Rates {
    fn new(st: &ClusterStatus, now: &Reading, prev: Option<&Reading>) -> Rates {
        let mut r = Rates {
            interval: prev.map(|p| now.at.duration_since(p.at).as_secs_f64()),
            total: Load::default(),
            nodes: HashMap::new(),
            groups: HashMap::new(),
            tables: HashMap::new(),
        };
        let (Some(prev), Some(asked)) = (prev, r.interval) else {
            return r;
        };
        for (node, s) in &st.statuses {
            // The node's own interval; the console's for a node that does
            // not say when it counted.
            let secs = prev
                .counted_at
                .get(node)
                .and_then(|before| s.counted_at.secs_since(before))
                .unwrap_or(asked);
            if secs <= 0.0 {
                continue;
            }
            for g in &s.groups {
                // A replica new since the last reading: its counts cover an
                // unknown time, so they wait for the next.
                let Some(before) = prev.counts.get(&(*node, g.group_id)) else {
                    continue;
                };
                let mut delta = Tally::default();
                delta.add_delta(&g.served, before);
                let ops = delta.requests as f64 / secs;
                for l in [
                    &mut r.total,
                    r.nodes.entry(*node).or_default(),
                    r.groups.entry(g.group_id).or_default(),
                    r.tables.entry(g.table.clone()).or_default(),
                ] {
                    l.ops += ops;
                    l.tally.add(&delta);
                }
            }
        }
        r
    }

    /// `{ops, p99_ms}` of `l` (`null`s without two readings; no p99
    /// without a request).
    fn json(&self, l: Option<&Load>) -> Value {
        if !self.interval.is_some_and(|s| s > 0.0) {
            return json!({"ops": null, "p99_ms": null});
        }
        let l = l.cloned().unwrap_or_default();
        json!({
            "ops": l.ops,
            "p99_ms": l.tally.percentile_us(99.0).map(|us| us as f64 / 1000.0),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::status::NodeStatus;

    /// A node's status with `requests` served by each of `groups`, counted
    /// `us` after the start of the node with boot id `boot`.
    fn node(id: u64, groups: &[u64], requests: u64, boot: u64, us: u64) -> NodeStatus {
        let groups: Vec<Value> = groups
            .iter()
            .map(|g| {
                json!({
                    "group_id": g, "table": "default", "shard": 0, "role": "leader",
                    "leader": id, "term": 1, "last_log_index": 1, "applied_index": 1,
                    "replication": [],
                    "served": {"requests": requests, "hist": [[40, requests]]},
                })
            })
            .collect();
        serde_json::from_value(json!({
            "node_id": id,
            "groups": groups,
            "counted_at": {"boot": boot, "us": us},
        }))
        .unwrap()
    }

    fn status(nodes: Vec<NodeStatus>) -> ClusterStatus {
        ClusterStatus {
            members: BTreeMap::new(),
            live: Default::default(),
            statuses: nodes.into_iter().map(|n| (n.node_id, n)).collect(),
            asked_at: Instant::now(),
            asked_ms: 0,
            record: Ok(None),
            tables: vec![],
            unreadable: BTreeMap::new(),
            tombstones: Ok(BTreeMap::new()),
            moves: vec![],
        }
    }

    fn reading(st: &ClusterStatus, at: Instant) -> Reading {
        Reading {
            at,
            ..Reading::of(st)
        }
    }

    #[test]
    fn each_nodes_counts_are_a_rate_over_its_own_interval() {
        let t0 = Instant::now();
        // Every node serves 1,000 requests a second on each of its groups.
        // The console asks one second apart; node 1 reads its counters at
        // once both times, node 2 at once the first time and 0.6 s late
        // the second (1.6 s of counts), node 3 restarted 0.5 s before the
        // second reading, and node 4 does not say when it counted.
        let first = status(vec![
            node(1, &[10, 11], 5_000, 100, 2_000_000),
            node(2, &[10, 12], 5_000, 200, 2_000_000),
            node(3, &[12], 5_000, 300, 9_000_000),
            node(4, &[13], 5_000, 0, 0),
        ]);
        let second = status(vec![
            node(1, &[10, 11], 6_000, 100, 3_000_000),
            node(2, &[10, 12], 6_600, 200, 3_600_000),
            node(3, &[12], 500, 301, 500_000),
            node(4, &[13], 6_000, 0, 0),
        ]);
        let (before, now) = (
            reading(&first, t0),
            reading(&second, t0 + Duration::from_secs(1)),
        );
        let r = Rates::new(&second, &now, Some(&before));
        let ops = |l: Option<&Load>| l.unwrap().ops;
        for n in 1..=4 {
            let groups = second.statuses[&n].groups.len() as f64;
            let got = ops(r.nodes.get(&n));
            assert!((got - 1_000.0 * groups).abs() < 1e-6, "node {n}: {got}");
        }
        assert!((ops(r.groups.get(&10)) - 2_000.0).abs() < 1e-6);
        assert!((ops(Some(&r.total)) - 6_000.0).abs() < 1e-6);
        assert!((ops(r.tables.get("default")) - 6_000.0).abs() < 1e-6);
        assert_eq!(r.total.tally.requests, 2 * 1_000 + 2 * 1_600 + 500 + 1_000);
        assert_eq!(r.json(Some(&r.total))["ops"], 6_000.0);
        // The first reading has no rates.
        let r = Rates::new(&first, &before, None);
        assert_eq!(r.json(Some(&r.total))["ops"], Value::Null);
    }
}
