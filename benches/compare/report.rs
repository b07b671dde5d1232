//! The results of one run and their three renderings: a plain-text table for
//! the terminal, Markdown (bench/results/latest.md), and an SVG bar chart of
//! p50/p99/p99.9 per system per workload, drawn by hand.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum System {
    Redis,
    Shoal,
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Redis => "redis",
            System::Shoal => "shoal",
            System::Etcd => "etcd",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            System::Redis => "#d62728",
            System::Shoal => "#1f77b4",
            System::Etcd => "#2ca02c",
        }
    }

    pub const ALL: [System; 3] = [System::Redis, System::Shoal, System::Etcd];
}

/// One system under one workload.
#[derive(Debug, Clone)]
pub struct Row {
    /// e.g. "SET", "GET -P 16", "READONLY GET".
    pub workload: String,
    /// "redis-benchmark" or "shoal-load" (ours).
    pub client: &'static str,
    pub system: System,
    /// What the system actually ran, when it differs from the workload name
    /// (e.g. etcd's serializable range for READONLY GET).
    pub variant: String,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// CPU seconds the system's server processes used during the row.
    pub server_cpu_s: f64,
    /// Wall seconds of the row (for CPU %).
    pub wall_s: f64,
    /// Our client's CPU use in % of one core (None for redis-benchmark).
    pub client_cpu_pct: Option<f64>,
    pub errors: u64,
}

/// A process's totals over the whole run.
#[derive(Debug, Clone)]
pub struct ProcRow {
    pub system: System,
    pub name: String,
    pub pid: u32,
    pub cpu_s: f64,
    pub hwm_mib: f64,
}

#[derive(Debug, Clone)]
pub struct ScaleRow {
    pub replicas: usize,
    pub idle_cpu_pct: f64,
    pub idle_secs: f64,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    /// From spawning the restarted node to every replica having a leader.
    pub startup_s: f64,
    /// TABLE.CREATE of the extra shards, seconds.
    pub create_s: f64,
}

/// One node of the 3-node, 3-replica idle probe.
#[derive(Debug, Clone)]
pub struct Scale3Row {
    pub node: u64,
    /// Replicas the node hosts (one of every group).
    pub replicas: usize,
    /// Of which it leads.
    pub leaders: usize,
    /// Of which hibernate at the end of the window.
    pub asleep: usize,
    pub idle_cpu_pct: f64,
    pub idle_secs: f64,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    /// The busiest thread names over the window, in % of a core.
    pub threads: String,
    /// TABLE.CREATE of every group but `default`, seconds.
    pub create_s: f64,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub wanted: String,
    pub measured: String,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub started: String,
    pub mode: String,
    pub machine: Vec<(String, String)>,
    pub settings: Vec<(String, String)>,
    pub rows: Vec<Row>,
    pub procs: Vec<ProcRow>,
    pub scale: Vec<ScaleRow>,
    pub scale3: Vec<Scale3Row>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    /// The metrics endpoints' cost (issue 20), when measured.
    pub metrics_cost: Option<crate::metrics_cost::MetricsCost>,
}

/// A workload as measured by one client: the unit the ratios compare in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub workload: String,
    pub client: &'static str,
}

impl Report {
    pub fn groups(&self) -> Vec<Group> {
        let mut out: Vec<Group> = Vec::new();
        for r in &self.rows {
            let g = Group {
                workload: r.workload.clone(),
                client: r.client,
            };
            if !out.contains(&g) {
                out.push(g);
            }
        }
        out
    }

    pub fn row(&self, g: &Group, s: System) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.workload == g.workload && r.client == g.client && r.system == s)
    }

    /// shoal's figure divided by `other`'s for the group, by `f`.
    pub fn ratio(&self, g: &Group, other: System, f: impl Fn(&Row) -> f64) -> Option<f64> {
        let a = f(self.row(g, System::Shoal)?);
        let b = f(self.row(g, other)?);
        (b > 0.0).then_some(a / b)
    }
}

fn fmt_ops(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.2}x"))
}

/// A table as header + rows of cells; rendered as text or Markdown.
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
    /// The first `left` columns are text (left-aligned); the rest numbers.
    left: usize,
}

impl Table {
    fn text(&self) -> String {
        let n = self.head.len();
        let mut w = vec![0; n];
        for r in std::iter::once(&self.head).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |r: &Vec<String>| {
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let pad = w[i] - c.chars().count();
                    if i < self.left {
                        format!("{c}{}", " ".repeat(pad))
                    } else {
                        format!("{}{c}", " ".repeat(pad))
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        };
        let mut out = line(&self.head) + "\n";
        out += &(w
            .iter()
            .map(|x| "-".repeat(*x))
            .collect::<Vec<_>>()
            .join("  ")
            + "\n");
        for r in &self.rows {
            out += &(line(r) + "\n");
        }
        out
    }

    fn markdown(&self) -> String {
        let esc = |c: &String| c.replace('|', "\\|");
        let mut out = format!(
            "| {} |\n|{}|\n",
            self.head.iter().map(esc).collect::<Vec<_>>().join(" | "),
            self.head
                .iter()
                .enumerate()
                .map(|(i, _)| if i < self.left { "---" } else { "---:" })
                .collect::<Vec<_>>()
                .join("|")
        );
        for r in &self.rows {
            out += &format!(
                "| {} |\n",
                r.iter().map(esc).collect::<Vec<_>>().join(" | ")
            );
        }
        out
    }
}

impl Report {
    fn results_table(&self) -> Table {
        let head = [
            "workload",
            "client",
            "system",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "shoal/redis",
            "shoal/etcd",
            "server CPU s",
            "ops per CPU s",
            "client CPU %",
            "errors",
        ];
        let mut rows = Vec::new();
        for g in self.groups() {
            for s in System::ALL {
                let Some(r) = self.row(&g, s) else { continue };
                let (vs_redis, vs_etcd) = if s == System::Shoal {
                    (
                        fmt_ratio(self.ratio(&g, System::Redis, |r| r.ops_per_sec)),
                        fmt_ratio(self.ratio(&g, System::Etcd, |r| r.ops_per_sec)),
                    )
                } else {
                    (String::new(), String::new())
                };
                let system = if r.variant.is_empty() {
                    s.name().to_string()
                } else {
                    format!("{} ({})", s.name(), r.variant)
                };
                rows.push(vec![
                    g.workload.clone(),
                    g.client.to_string(),
                    system,
                    fmt_ops(r.ops_per_sec),
                    fmt_ms(r.p50_ms),
                    fmt_ms(r.p99_ms),
                    fmt_ms(r.p999_ms),
                    vs_redis,
                    vs_etcd,
                    format!("{:.1}", r.server_cpu_s),
                    if r.server_cpu_s > 0.0 {
                        fmt_ops(r.ops_per_sec * r.wall_s / r.server_cpu_s)
                    } else {
                        "—".into()
                    },
                    r.client_cpu_pct.map_or("—".into(), |c| format!("{c:.0}")),
                    r.errors.to_string(),
                ]);
            }
        }
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows,
            left: 3,
        }
    }

    fn procs_table(&self) -> Table {
        let head = [
            "system",
            "process",
            "pid",
            "CPU s (whole run)",
            "peak RSS MiB",
        ];
        let rows = self
            .procs
            .iter()
            .map(|p| {
                vec![
                    p.system.name().to_string(),
                    p.name.clone(),
                    p.pid.to_string(),
                    format!("{:.1}", p.cpu_s),
                    format!("{:.1}", p.hwm_mib),
                ]
            })
            .collect();
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows,
            left: 2,
        }
    }

    fn scale_table(&self) -> Table {
        let head = [
            "replicas on the node",
            "idle CPU % of a core",
            "RSS MiB",
            "peak RSS MiB",
            "restart to all leaders s",
            "TABLE.CREATE s",
        ];
        let rows = self
            .scale
            .iter()
            .map(|s| {
                vec![
                    s.replicas.to_string(),
                    format!("{:.1} (over {:.0} s)", s.idle_cpu_pct, s.idle_secs),
                    format!("{:.0}", s.rss_mib),
                    format!("{:.0}", s.hwm_mib),
                    format!("{:.1}", s.startup_s),
                    format!("{:.1}", s.create_s),
                ]
            })
            .collect();
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows,
            left: 0,
        }
    }

    fn scale3_table(&self) -> Table {
        let head = [
            "node",
            "replicas (leading, asleep)",
            "idle CPU % of a core",
            "RSS MiB",
            "peak RSS MiB",
            "busiest threads, % of a core",
            "TABLE.CREATE s",
        ];
        let rows = self
            .scale3
            .iter()
            .map(|s| {
                vec![
                    format!("node-{}", s.node),
                    format!("{} ({}, {})", s.replicas, s.leaders, s.asleep),
                    format!("{:.1} (over {:.0} s)", s.idle_cpu_pct, s.idle_secs),
                    format!("{:.0}", s.rss_mib),
                    format!("{:.0}", s.hwm_mib),
                    s.threads.clone(),
                    format!("{:.1}", s.create_s),
                ]
            })
            .collect();
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows,
            left: 2,
        }
    }

    fn metrics_cost_table(&self) -> Option<Table> {
        let m = self.metrics_cost.as_ref()?;
        let list = |v: &[f64]| v.iter().map(|x| fmt_ops(*x)).collect::<Vec<_>>().join(", ");
        let head = ["workload", "ops/s not scraped", "ops/s scraped 1/s", "cost"];
        let rows = m
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.workload.clone(),
                    list(&r.off),
                    list(&r.on),
                    format!("{:.1} %", r.cost_pct()),
                ]
            })
            .collect();
        Some(Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows,
            left: 1,
        })
    }

    fn metrics_cost_line(&self) -> Option<String> {
        let m = self.metrics_cost.as_ref()?;
        Some(format!(
            "redis-benchmark -c {} against a cluster whose {} processes serve /metrics, rounds alternating; one scrape of all {} endpoints costs {:.2} ms of CPU ({} bytes): at one a second, {:.2} % of one core.",
            self.settings
                .iter()
                .find(|(k, _)| k.starts_with("clients"))
                .map_or("50", |(_, v)| v.as_str()),
            m.endpoints,
            m.endpoints,
            m.cpu_ms_per_scrape,
            m.bytes_per_scrape,
            m.cpu_ms_per_scrape / 10.0,
        ))
    }

    fn targets_table(&self) -> Table {
        let head = ["target", "wanted", "measured", "status"];
        let rows = self
            .targets
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.wanted.clone(),
                    t.measured.clone(),
                    match t.met {
                        Some(true) => "met".into(),
                        Some(false) => "NOT met".into(),
                        None => "not measured".into(),
                    },
                ]
            })
            .collect();
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows,
            left: 4,
        }
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n== results ({}, {}) ==", self.mode, self.started);
        out += &self.results_table().text();
        let _ = writeln!(out, "\n== server processes ==");
        out += &self.procs_table().text();
        if !self.scale.is_empty() {
            let _ = writeln!(out, "\n== scale probe: one node, idle 1-replica shards ==");
            out += &self.scale_table().text();
        }
        if !self.scale3.is_empty() {
            let _ = writeln!(
                out,
                "\n== scale probe: three nodes, idle 3-replica groups =="
            );
            out += &self.scale3_table().text();
        }
        if let (Some(t), Some(line)) = (self.metrics_cost_table(), self.metrics_cost_line()) {
            let _ = writeln!(out, "\n== metrics endpoint cost ==\n{line}");
            out += &t.text();
        }
        let _ = writeln!(out, "\n== targets ==");
        out += &self.targets_table().text();
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# bench/compare results\n");
        let _ = writeln!(
            out,
            "Run {} ({} mode). Generated by `bench/compare`; do not edit by hand.\n",
            self.started, self.mode
        );
        let _ = writeln!(out, "## Machine\n");
        for (k, v) in &self.machine {
            let _ = writeln!(out, "* {k}: {v}");
        }
        let _ = writeln!(out, "\n## Settings\n");
        for (k, v) in &self.settings {
            let _ = writeln!(out, "* {k}: {v}");
        }
        let _ = writeln!(out, "\n## Results\n");
        let _ = writeln!(
            out,
            "Latencies in milliseconds. *server CPU s*: CPU seconds of the system's server processes during the row (redis-benchmark: the measured run, not its calibration; our client: warm-up included); *ops per CPU s*: ops/s × the row's wall time ÷ that, i.e. how much work one server CPU second buys. *errors*: error replies (redis-benchmark prints at most one a second, so there it is a lower bound). *client CPU %*: our load client's CPU, in % of one core (a client near 100 % is itself the limit).\n"
        );
        out += &self.results_table().markdown();
        let _ = writeln!(out, "\n![latency percentiles](latest.svg)\n");
        let _ = writeln!(out, "## Server processes (whole run)\n");
        out += &self.procs_table().markdown();
        if !self.scale.is_empty() {
            let _ = writeln!(out, "\n## Scale probe: one node, idle 1-replica shards\n");
            out += &self.scale_table().markdown();
        }
        if !self.scale3.is_empty() {
            let _ = writeln!(
                out,
                "\n## Scale probe: three nodes, idle 3-replica groups\n"
            );
            out += &self.scale3_table().markdown();
        }
        if let (Some(t), Some(line)) = (self.metrics_cost_table(), self.metrics_cost_line()) {
            let _ = writeln!(out, "\n## Metrics endpoint cost\n\n{line}\n");
            out += &t.markdown();
        }
        let _ = writeln!(out, "\n## Targets\n");
        out += &self.targets_table().markdown();
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(out, "* {n}");
            }
        }
        out
    }

    /// Three panels (p50, p99, p99.9), each a bar group per workload and
    /// client with one bar per system, on a log scale.
    pub fn svg(&self) -> String {
        let groups = self.groups();
        let panel_h = 230.0;
        let top = 60.0;
        let left = 70.0;
        let group_w = 112.0;
        let bar_w = 26.0;
        let width = left + group_w * groups.len().max(1) as f64 + 30.0;
        let label_h = 50.0;
        let height = top + 3.0 * (panel_h + label_h) + 20.0;
        let values: Vec<f64> = self
            .rows
            .iter()
            .flat_map(|r| [r.p50_ms, r.p99_ms, r.p999_ms])
            .filter(|v| *v > 0.0)
            .collect();
        let lo = values
            .iter()
            .cloned()
            .fold(f64::INFINITY, f64::min)
            .min(1.0);
        let hi = values.iter().cloned().fold(0.0, f64::max).max(1.0);
        let lo_exp = lo.log10().floor();
        let hi_exp = hi.log10().ceil().max(lo_exp + 1.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{left}" y="22" font-size="15" font-weight="bold">Latency percentiles, ms (log scale), 50 clients, 64 B values — {}</text>"#,
            xml(&self.started)
        );
        for (i, sys) in System::ALL.iter().enumerate() {
            let x = left + i as f64 * 90.0;
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="34" width="12" height="12" fill="{}"/><text x="{}" y="44">{}</text>"#,
                sys.colour(),
                x + 16.0,
                sys.name()
            );
        }
        type Pick = fn(&Row) -> f64;
        let pcts: [(&str, Pick); 3] = [
            ("p50", |r| r.p50_ms),
            ("p99", |r| r.p99_ms),
            ("p99.9", |r| r.p999_ms),
        ];
        for (pi, (pname, f)) in pcts.iter().enumerate() {
            let y0 = top + pi as f64 * (panel_h + label_h);
            let y_of = |v: f64| {
                let t = (v.max(10f64.powf(lo_exp)).log10() - lo_exp) / (hi_exp - lo_exp);
                y0 + panel_h - t * panel_h
            };
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold" text-anchor="end">{pname}</text>"#,
                width - 24.0,
                y0 + 14.0
            );
            let mut e = lo_exp;
            while e <= hi_exp {
                let v = 10f64.powf(e);
                let y = y_of(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{left}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                    width - 20.0,
                    left - 4.0,
                    y + 4.0,
                    fmt_ms(v)
                );
                e += 1.0;
            }
            let _ = writeln!(
                s,
                r#"<line x1="{left}" x2="{left}" y1="{y0:.1}" y2="{:.1}" stroke="black"/>"#,
                y0 + panel_h
            );
            for (gi, g) in groups.iter().enumerate() {
                let gx = left + gi as f64 * group_w + 10.0;
                for (si, sys) in System::ALL.iter().enumerate() {
                    let Some(r) = self.row(g, *sys) else { continue };
                    let v = f(r);
                    let x = gx + si as f64 * (bar_w + 3.0);
                    let y = y_of(v);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x:.1}" y="{y:.1}" width="{bar_w}" height="{:.1}" fill="{}"><title>{} {} ({}) {pname}: {} ms</title></rect>"#,
                        (y0 + panel_h - y).max(0.5),
                        sys.colour(),
                        sys.name(),
                        xml(&g.workload),
                        g.client,
                        fmt_ms(v)
                    );
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                        x + bar_w / 2.0,
                        y - 3.0,
                        fmt_ms(v)
                    );
                }
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666">{}</text>"##,
                    gx + 1.5 * (bar_w + 3.0),
                    y0 + panel_h + 16.0,
                    xml(&g.workload),
                    gx + 1.5 * (bar_w + 3.0),
                    y0 + panel_h + 30.0,
                    g.client
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
