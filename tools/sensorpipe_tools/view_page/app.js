// The operations page: the board arrives as server-sent events whenever the warehouse
// commits; the chart of the chosen incident is fetched again with every new board.
"use strict";

const seen = {};           // alert id -> when this page first showed it (ms), for benchmarks
window.sensorpipeSeen = seen;
let board = null;
let selected = null;       // the chart's incident (alert id)
let pinned = false;        // chosen by a click; otherwise the chart follows the newest

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = text;  // text, never markup
  return node;
}

function fmt(x) {
  if (x === null || x === undefined) return "";
  const a = Math.abs(x);
  return a >= 100 ? x.toFixed(1) : a >= 1 ? x.toFixed(2) : x.toPrecision(3);
}

// How the reading is anomalous: above or below the expected range's middle, and by how many
// half-widths of the range (1 at its edge): "above 7.3".
function how(i) { return i.direction ? `${i.direction} ${fmt(i.strength)}` : ""; }

function how_title(i) {
  return i.direction
    ? `${i.direction} the expected range's middle by ${fmt(i.strength)} half-widths of the range`
    : "";
}

function age(from, to) {
  if (!from || !to) return "";
  const minutes = Math.max(0, Math.round((Date.parse(to) - Date.parse(from)) / 60000));
  return minutes < 60 ? `${minutes} min` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function clock(iso) { return iso ? iso.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, "") : ""; }

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function render(state) {
  board = state;
  const down = !state.warehouse || state.warehouse !== "ok";
  const status = document.getElementById("warehouse");
  status.textContent = down ? `warehouse ${state.warehouse}` : "live";
  status.className = down ? "status down" : "status";
  document.getElementById("as-of").textContent =
    state.as_of ? `as of ${clock(state.as_of)} UTC (newest reading)` : "no readings yet";

  fill(document.querySelector("#fleet tbody"), state.fleet.map((t) => {
    const tr = el("tr", { class: t.status, "data-device": t.device_id });
    tr.append(el("td", {}, t.device_id), el("td", {}, t.status),
      el("td", {}, clock(t.reported_until)), el("td", { class: "sev-critical" }, t.open.critical || ""),
      el("td", { class: "sev-major" }, t.open.major || ""), el("td", { class: "sev-minor" }, t.open.minor || ""));
    return tr;
  }));

  const now = Date.now();
  for (const i of [...state.open, ...state.closed]) if (!(i.alert_id in seen)) seen[i.alert_id] = now;
  document.getElementById("open-count").textContent = `(${state.open.length})`;
  fill(document.querySelector("#open tbody"), state.open.map((i) => {
    const tr = el("tr", { "data-alert-id": i.alert_id });
    if (i.alert_id === selected) tr.classList.add("selected");
    const outside = i.expected_low !== null && (i.value < i.expected_low || i.value > i.expected_high);
    const range = i.expected_low === null ? "learning" : `${fmt(i.expected_low)} .. ${fmt(i.expected_high)}`;
    tr.append(el("td", {}, i.device_id), el("td", {}, i.sensor),
      el("td", { class: `sev-${i.severity}` }, i.severity), el("td", {}, age(i.opened_at, state.as_of)),
      el("td", { class: outside ? "outside" : "" }, fmt(i.value)), el("td", {}, range),
      el("td", { title: how_title(i) }, how(i)), el("td", {}, fmt(i.score)));
    tr.addEventListener("click", () => { selected = i.alert_id; pinned = true; render(board); });
    return tr;
  }));
  fill(document.querySelector("#closed tbody"), state.closed.map((i) => {
    const tr = el("tr", { "data-alert-id": i.alert_id });
    if (i.alert_id === selected) tr.classList.add("selected");
    tr.append(el("td", {}, i.device_id), el("td", {}, i.sensor),
      el("td", { class: `sev-${i.severity}` }, i.severity), el("td", {}, clock(i.opened_at)),
      el("td", {}, clock(i.closed_at)));
    tr.addEventListener("click", () => { selected = i.alert_id; pinned = true; render(board); });
    return tr;
  }));

  const known = [...state.open, ...state.closed].some((i) => i.alert_id === selected);
  // Not chosen by a click (or gone): the newest open incident, else the one closed last.
  if (!pinned || !known) {
    pinned = false;
    selected = (state.open[0] || state.closed[0] || {}).alert_id || null;
  }
  if (selected) loadChart(selected);
  document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
}

async function loadChart(alertId) {
  const response = await fetch(`/series?alert_id=${encodeURIComponent(alertId)}`);
  if (!response.ok || alertId !== selected) return;
  draw(await response.json());
}

const NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function draw(series) {
  const chart = document.getElementById("chart");
  const i = series.incident;
  if (!i) { chart.replaceChildren(); return; }
  document.getElementById("chart-title").textContent =
    `${i.device_id} ${i.sensor}: ${i.severity} incident, ${i.status}`;
  const W = 760, H = 280, L = 56, R = 12, T = 12, B = 28;
  const t0 = Date.parse(series.first), t1 = Date.parse(series.last);
  const ws = series.windows;
  const values = ws.flatMap((w) => [w.min, w.max]).concat([i.value]);
  if (i.expected_low !== null) values.push(i.expected_low, i.expected_high);
  let lo = Math.min(...values), hi = Math.max(...values);
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = (v) => T + (H - T - B) * (hi - v) / (hi - lo);
  const parts = [svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    svg("text", { x: 4, y: T + 10 }, fmt(hi)), svg("text", { x: 4, y: H - B }, fmt(lo)),
    svg("text", { x: L, y: H - 8 }, clock(series.first)),
    svg("text", { x: W - R - 110, y: H - 8 }, clock(series.last))];
  const mid = (w) => (Date.parse(w.start) + Date.parse(w.end)) / 2;
  if (ws.length) {
    const upper = ws.map((w) => `${x(mid(w))},${y(w.max)}`);
    const lower = ws.slice().reverse().map((w) => `${x(mid(w))},${y(w.min)}`);
    parts.push(svg("polygon", { class: "band", points: upper.concat(lower).join(" ") }));
    parts.push(svg("polyline", { class: "mean", points: ws.map((w) => `${x(mid(w))},${y(w.mean)}`).join(" ") }));
  }
  if (i.expected_low !== null) {
    for (const v of [i.expected_low, i.expected_high]) {
      parts.push(svg("line", { class: "range", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    }
  }
  const at = Date.parse(i.last_event_time);
  parts.push(svg("line", { class: "incident", x1: x(at), x2: x(at), y1: T, y2: H - B }));
  for (const w of ws.filter((w) => w.anomalies > 0)) {
    parts.push(svg("circle", { class: "anomaly window", cx: x(mid(w)), cy: y(w.max), r: 3 }));
  }
  parts.push(svg("circle", { class: "anomaly reading", cx: x(at), cy: y(i.value), r: 5,
    "data-alert-id": i.alert_id }));
  chart.replaceChildren(...parts);
  chart.dataset.alertId = i.alert_id;
}

function connect() {
  const events = new EventSource("/events");
  events.onmessage = (message) => render(JSON.parse(message.data));
  // EventSource reconnects by itself after an error (the server's retry: 1000).
  events.onerror = () => {
    const status = document.getElementById("warehouse");
    status.textContent = "reconnecting to the view server";
    status.className = "status down";
  };
}

connect();
