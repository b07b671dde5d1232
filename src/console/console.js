// The shoal console: polls /api/cluster every second and draws the map,
// the throughput and the slow commands. Plain DOM, no library; every text
// from the cluster goes in through textContent (never parsed as HTML).
"use strict";

const history = [];
let polls = 0;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, String(v));
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return e;
}

function ops(t) {
  if (!t || t.ops === null || t.ops === undefined) return "–";
  if (t.ops === 0) return "0";
  return t.ops < 10 ? t.ops.toFixed(1) : Math.round(t.ops).toString();
}

function ms(v) {
  if (v === null || v === undefined) return "–";
  if (v < 1) return Math.round(v * 1000) + " µs";
  return (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " ms";
}

function figures(t) {
  return el("span", { class: "figure" }, ops(t) + " req/s · p99 " + ms(t && t.p99_ms));
}

function nodeClass(n) {
  if (!n.live) return "down";
  if (n.state !== "active") return n.state;
  return null;
}

function cell(r) {
  const short = { leader: "L", follower: "F" };
  const kind = r.learner && r.role !== "leader" ? "learner" : r.role;
  const td = el("td", { "data-role": kind },
    el("span", { class: "role " + kind, title: r.role }, short[kind] || kind));
  if (r.moving === "in") td.append(" →");
  if (r.moving === "out") td.append(" ←");
  if (r.lag) td.append(el("span", { class: "lag", title: "log entries behind the leader" }, "lag " + r.lag));
  if (r.hibernating) td.append(el("span", { class: "sub", title: "hibernating" }, " zz"));
  if (r.stopped) td.append(el("span", { class: "lag", title: "its Raft stopped: " + r.stopped }, " stopped"));
  return td;
}

function drawMap(d) {
  const map = document.getElementById("map");
  const nodes = d.nodes;
  const head = el("tr", {}, el("th", {}, "shard"));
  for (const n of nodes) {
    const state = !n.live ? "down" : n.state !== "active" ? n.state : n.answered ? "" : "not answering";
    head.append(el("th", { class: ["node", nodeClass(n)].filter(Boolean).join(" "), "data-node": n.id,
      "data-ops": n.throughput.ops === null ? "" : n.throughput.ops },
      el("b", {}, "node " + n.id), state ? " (" + state + ")" : "",
      el("div", { class: "addr" }, n.addr),
      el("div", {}, figures(n.throughput)),
      n.leaders === null ? null : el("div", { class: "sub" }, "leads " + n.leaders + " of " + n.replicas)));
  }
  const rows = [el("thead", {}, head)];
  const body = el("tbody");
  for (const t of d.tables) {
    body.append(el("tr", { class: "table", "data-table": t.name },
      el("th", { colSpan: nodes.length + 1 },
        "table " + t.name + " ",
        el("span", { class: "muted" }, "db " + t.db + ", " + t.state + ", " + t.shards.length + " shards × " + t.replicas + " replicas · "),
        figures(t.throughput))));
    for (const s of t.shards) {
      const tr = el("tr", { class: "shard", "data-table": t.name, "data-group": s.group,
        "data-leader": s.leader === null ? "" : s.leader });
      tr.append(el("td", { class: "shard" },
        "shard " + s.shard + " · group " + s.group,
        s.leader === null ? el("span", { class: "nolead" }, " no leader") : null,
        el("div", { class: "sub" }, "slots " + s.slots[0] + "-" + s.slots[1] + " · ", figures(s.throughput)),
        s.moving ? el("div", { class: "sub" }, "moving " + (s.moving.from === null ? "" : s.moving.from + " ") +
          "→ " + s.moving.to + " (" + s.moving.reason + ", " + Math.round(s.moving.age_ms / 1000) + " s)") : null));
      for (const n of nodes) {
        const r = s.replicas[String(n.id)];
        const td = r ? cell(r) : el("td");
        td.setAttribute("data-node", n.id);
        const c = nodeClass(n);
        if (c) td.classList.add(c);
        tr.append(td);
      }
      body.append(tr);
    }
  }
  if (d.orphans.length) {
    body.append(el("tr", { class: "table" }, el("th", { colSpan: nodes.length + 1 },
      "orphaned replicas ", el("span", { class: "muted" }, "(no readable record in etcd names them: kept, never deleted; see shoal status)"))));
    for (const o of d.orphans) {
      const tr = el("tr", { class: "orphan", "data-group": o.group },
        el("td", { class: "shard" }, "group " + o.group + " (table " + o.table + ", shard " + o.shard + ")"));
      for (const n of nodes) {
        tr.append(n.id === o.node
          ? el("td", { "data-node": n.id, "data-role": "orphaned", title: o.why },
              el("span", { class: "role orphaned" }, "orphan " + o.role))
          : el("td", { "data-node": n.id }));
      }
      body.append(tr);
    }
  }
  rows.push(body);
  map.replaceChildren(...rows);

  const moves = document.getElementById("moves");
  moves.replaceChildren(...(d.moves.length
    ? [el("b", {}, "moves in progress: " + d.moves.length), ...d.moves.map(m => el("div", { class: "sub" }, m))]
    : []));
  document.getElementById("problems").replaceChildren(...d.problems.map(p => el("li", {}, p)));
}

function drawSlowlog(d) {
  const s = d.slowlog;
  document.getElementById("slow-threshold").textContent =
    s.slower_than_us < 0 ? "off" : "commands of " + s.slower_than_us + " µs or more, " + s.len + " kept";
  const body = document.querySelector("#slowlog tbody");
  const rows = s.entries.map(e => el("tr", {},
    el("td", {}, new Date(e.time * 1000).toLocaleTimeString()),
    el("td", { class: "figure" }, ms(e.micros / 1000)),
    el("td", { class: "cmd" }, e.command.join(" ")),
    el("td", {}, e.client + (e.name ? " " + e.name : ""))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 4, class: "muted" }, "none")));
  body.replaceChildren(...rows);
}

function drawSpark() {
  const line = document.querySelector("#spark polyline");
  const max = Math.max(1, ...history);
  const pts = history.map((v, i) => (180 - (history.length - 1 - i)) + "," + (27 - 25 * v / max).toFixed(1));
  line.setAttribute("points", pts.join(" "));
}

function draw(d) {
  document.getElementById("cluster-name").textContent = d.cluster ? "· cluster " + d.cluster : "";
  document.getElementById("router").textContent = d.router;
  const total = document.getElementById("total-ops");
  total.textContent = ops(d.throughput);
  total.setAttribute("data-ops", d.throughput.ops === null ? "" : d.throughput.ops);
  total.setAttribute("data-time", d.time_ms);
  total.setAttribute("data-interval", d.interval_s === null ? "" : d.interval_s);
  document.getElementById("total-p99").textContent = ms(d.throughput.p99_ms);
  if (d.throughput.ops !== null) {
    history.push(d.throughput.ops);
    if (history.length > 180) history.shift();
    drawSpark();
  }
  drawMap(d);
  drawSlowlog(d);
  document.getElementById("updated").textContent = "updated " + new Date(d.time_ms).toLocaleTimeString();
}

async function poll() {
  const error = document.getElementById("error");
  try {
    const r = await fetch("/api/cluster", { cache: "no-store" });
    const d = await r.json();
    if (!r.ok) throw new Error(d.error || r.statusText);
    draw(d);
    error.hidden = true;
  } catch (e) {
    error.textContent = "cannot read the cluster from this router: " + e.message + " (retrying every second)";
    error.hidden = false;
  }
  polls += 1;
  document.body.setAttribute("data-polls", polls);
  setTimeout(poll, 1000);
}

poll();
