// factory-gateway status page: follows /events (Server-Sent Events) and draws the gateway, its
// devices, the points of the devices that are open, and the last commands. Plain JavaScript,
// no library: the page must work on an edge box with no internet.
"use strict";

const OPEN_ALL_BELOW = 300; // points: a plant this small shows every device open at first
const KEY = "factory-gateway.open";

const state = {
  open: null, // Set of device ids, or null until the first event decides
  devices: new Map(), // id -> {row, panel, names, units, values, trend: {t, v}}
  source: null,
  lastEvent: 0,
  lastDevices: [],
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function text(value) {
  if (value === null || value === undefined) return "—";
  if (Array.isArray(value)) return "[" + value.map(text).join(", ") + "]";
  return String(value);
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 1) return "now";
  if (seconds < 120) return Math.round(seconds) + " s ago";
  if (seconds < 7200) return Math.round(seconds / 60) + " min ago";
  return Math.round(seconds / 3600) + " h ago";
}

function duration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1048576).toFixed(1) + " MiB";
}

function localTime(iso) {
  const date = new Date(iso);
  return isNaN(date) ? iso : date.toLocaleTimeString([], {hour12: false}) +
    "." + String(date.getMilliseconds()).padStart(3, "0");
}

// -- the connection ---------------------------------------------------------------------------

function openSet(devices) {
  if (state.open !== null) return state.open;
  const saved = localStorage.getItem(KEY);
  if (saved !== null) {
    state.open = new Set(JSON.parse(saved));
  } else {
    const total = devices.reduce((sum, d) => sum + d.points, 0);
    state.open = new Set(total < OPEN_ALL_BELOW ? devices.map((d) => d.id) : []);
  }
  return state.open;
}

function connect() {
  if (state.source) state.source.close();
  const open = state.open === null ? "" : [...state.open].join(",");
  const url = "events?open=" + encodeURIComponent(open);
  const source = new EventSource(url);
  state.source = source;
  // A new stream sends every open device's points and trend again.
  for (const device of state.devices.values()) {
    device.fresh = true;
  }
  source.onmessage = (message) => {
    state.lastEvent = Date.now();
    const event = JSON.parse(message.data);
    const first = state.open === null;
    render(event);
    setLink(true);
    if (first) connect(); // now the page knows which devices are open
  };
  source.onerror = () => setLink(false);
}

function setLink(live) {
  const link = document.getElementById("link");
  link.className = "link " + (live ? "live" : "lost");
  link.textContent = live ? "live" : "connection to the gateway lost: reconnecting…";
}

// -- drawing ------------------------------------------------------------------------------------

// An event carries the summary (gateway, devices, commands) once a second, and the open
// devices' changed points and new trend rows as they come.
function render(event) {
  if (event.gateway) renderGateway(event.gateway);
  if (event.devices) {
    state.lastDevices = event.devices;
    renderDevices(event.devices, openSet(event.devices));
  }
  for (const [id, points] of Object.entries(event.points || {})) renderPoints(id, points);
  for (const [id, trend] of Object.entries(event.trends || {})) addTrend(id, trend);
  for (const id of Object.keys(event.trends || {})) drawTrends(id);
  if (event.commands) renderCommands(event.commands);
}

function fact(name, value, attrs) {
  return el("div", attrs, el("dt", null, name), el("dd", null, value));
}

function renderGateway(g) {
  document.getElementById("gateway-id").textContent = g.id;
  document.getElementById("version").textContent = "v" + g.version;
  document.title = g.id + " · factory-gateway";
  const broker = g.broker;
  let since = " since " + localTime(broker.since);
  if (broker.held) since += " (held: " + broker.held + ")";
  if (broker.reconnects) since += `, ${broker.reconnects} reconnects`;
  const reload = g.map.reload;
  const facts = [
    fact(broker.url ? "Broker " + broker.url : "Broker", el("span", null,
      el("span", {class: "badge " + (broker.connected ? "good" : "bad")},
        broker.connected ? "✔ connected" : "✖ NOT CONNECTED"), since),
      {id: "broker", "data-connected": broker.connected}),
    fact("Delivered", g.delivered.toLocaleString(), {id: "delivered"}),
    fact("Dropped", g.dropped.toLocaleString() + (g.dropped ? " (" +
      Object.entries(g.dropped_by_reason).map(([r, n]) => r + " " + n).join(", ") + ")" : ""),
      {id: "dropped"}),
    fact("Buffer", g.buffer.records.toLocaleString() + " records, " + bytes(g.buffer.bytes) +
      (g.buffer.records ? ", oldest " + duration(g.buffer.oldest_s) : ""), {id: "buffer"}),
    fact("Uptime", duration(g.uptime_s), {id: "uptime", "data-seconds": g.uptime_s}),
    fact("Map", g.map.files.join(", ") || "—"),
    fact("Last reload", reload === null ? "none since start" :
      localTime(reload.at) + " " + reload.outcome + (reload.reason ? ": " + reload.reason : "")),
  ];
  document.getElementById("gateway").replaceChildren(...facts);
}

function renderDevices(devices, open) {
  const body = document.querySelector("#devices tbody");
  const bad = devices.filter((d) => !d.ok).length;
  document.getElementById("device-count").textContent =
    `${devices.length} devices, ${bad ? bad + " not OK" : "all OK"}`;
  const seen = new Set();
  for (const d of devices) {
    seen.add(d.id);
    let device = state.devices.get(d.id);
    if (!device) {
      device = {row: el("tr", {class: "device", tabindex: "0", "data-device": d.id}), panel: null,
        names: null, units: null, values: [], trend: null, fresh: true};
      device.row.addEventListener("click", () => toggle(d.id));
      device.row.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(d.id); }
      });
      state.devices.set(d.id, device);
    }
    const isOpen = open.has(d.id);
    device.row.className = "device" + (d.ok ? "" : " bad") + (isOpen ? " open" : "");
    device.row.setAttribute("data-ok", d.ok);
    device.row.setAttribute("aria-expanded", isOpen);
    const stateText = d.ok ? "✔ OK" : "✖ " + (d.state === "connected" ? "STALLED" : "BAD");
    device.row.replaceChildren(
      el("td", null, el("span", {class: "badge " + (d.ok ? "good" : "bad")}, stateText)),
      el("td", {class: "id"}, d.id),
      el("td", {class: "nowrap"}, d.protocol),
      el("td", {class: "nowrap"}, d.line),
      el("td", {class: "reason"}, d.reason || ""),
      el("td", {class: "num"}, age(d.last_good_age_s)),
      el("td", {class: "num"}, d.read_ms === null || d.read_ms === undefined ? "—" : d.read_ms + " ms"),
      el("td", {class: "num", title: d.last_error || ""}, d.errors ?? "—"),
      el("td", {class: "num"}, d.points),
    );
    body.append(device.row); // keeps the gateway's order
    if (isOpen) {
      if (!device.panel) device.panel = pointsPanel(d.id);
      body.append(device.panel);
    } else if (device.panel) {
      device.panel.remove();
      device.panel = null;
    }
  }
  for (const [id, device] of state.devices) {
    if (!seen.has(id)) {
      device.row.remove();
      if (device.panel) device.panel.remove();
      state.devices.delete(id);
    }
  }
}

function toggle(id) {
  const open = state.open;
  if (open.has(id)) open.delete(id); else open.add(id);
  localStorage.setItem(KEY, JSON.stringify([...open]));
  const device = state.devices.get(id);
  device.names = null; // the new stream sends its points again
  device.trend = null;
  if (device.panel) { device.panel.remove(); device.panel = null; }
  renderDevices(state.lastDevices, open); // at once; the new stream fills the points
  connect();
}

function pointsPanel(id) {
  const table = el("table", {class: "points", "data-device": id},
    el("thead", null, el("tr", null,
      el("th", {scope: "col"}, "Point"), el("th", {scope: "col"}, "Value"),
      el("th", {scope: "col"}, "Unit"), el("th", {scope: "col"}, "Quality"),
      el("th", {scope: "col"}, "Source time"), el("th", {scope: "col"}, "Trend"))),
    el("tbody"));
  return el("tr", {class: "points", "data-device": id}, el("td", {colspan: "9"}, table));
}

function renderPoints(id, points) {
  const device = state.devices.get(id);
  if (!device || !device.panel) return;
  const body = device.panel.querySelector("tbody");
  if (points.names) {
    device.names = points.names;
    device.units = points.units;
    device.slots = points.slots;
    device.trend = {t: [], v: []};
    device.cells = points.names.map((name, i) => {
      const cells = {
        value: el("td", {class: "value"}, "—"),
        quality: el("td", {class: "quality"}, "no value yet"),
        ts: el("td", {class: "ts"}, ""),
        trend: el("td", {class: "trend"}),
      };
      cells.row = el("tr", {"data-device": id, "data-point": name},
        el("th", {scope: "row"}, name), cells.value, el("td", null, points.units[i] || ""),
        cells.quality, cells.ts, cells.trend);
      return cells;
    });
    body.replaceChildren(...device.cells.map((c) => c.row));
  }
  if (!device.cells) return;
  for (const [i, value, quality, ts, reason] of points.rows || []) {
    const cells = device.cells[i];
    cells.value.textContent = text(value);
    cells.value.setAttribute("data-value", JSON.stringify(value));
    cells.quality.replaceChildren(el("span", {class: "badge " + quality},
      (quality === "good" ? "✔ " : quality === "bad" ? "✖ " : "? ") + quality),
      reason ? " " + reason : "");
    cells.row.className = quality;
    cells.ts.textContent = localTime(ts);
    cells.ts.setAttribute("data-ts", ts);
    cells.ts.title = ts;
  }
}

function addTrend(id, trend) {
  const device = state.devices.get(id);
  if (!device || !device.trend) return;
  const t = device.trend;
  t.t.push(...trend.t);
  t.v.push(...trend.v);
  const extra = t.t.length - (device.slots || 300);
  if (extra > 0) { t.t.splice(0, extra); t.v.splice(0, extra); }
}

function drawTrends(id) {
  const device = state.devices.get(id);
  if (!device || !device.trend || !device.cells) return;
  const {t, v} = device.trend;
  if (t.length < 2) return;
  const t0 = t[0], span = Math.max(t[t.length - 1] - t0, 1);
  device.cells.forEach((cells, i) => {
    const series = [];
    for (let k = 0; k < t.length; k++) {
      const value = v[k][i];
      if (value !== null) series.push([t[k], value]);
    }
    if (series.length < 2) { cells.trend.replaceChildren(); return; }
    let lo = Infinity, hi = -Infinity;
    for (const [, value] of series) { lo = Math.min(lo, value); hi = Math.max(hi, value); }
    const range = hi - lo || 1;
    const points = series.map(([when, value]) =>
      ((when - t0) / span * 128 + 1).toFixed(1) + "," + (24 - (value - lo) / range * 22).toFixed(1));
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "trend");
    svg.setAttribute("viewBox", "0 0 130 26");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `trend of the last ${Math.round(span / 1000)} s: ${lo} to ${hi}`);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("data-values", JSON.stringify(series.map(([, value]) => value)));
    svg.append(line);
    cells.trend.replaceChildren(svg);
  });
}

function renderCommands(commands) {
  const body = document.querySelector("#commands tbody");
  if (!commands.length) return;
  body.replaceChildren(...commands.map((c) => el("tr", {"data-outcome": c.outcome},
    el("td", {title: c.at}, localTime(c.at)), el("td", null, c.device ?? "—"),
    el("td", null, c.point ?? "—"), el("td", null, text(c.requested)),
    el("td", null, el("span", {class: "badge " + (c.outcome === "written" ? "good" : "bad")},
      c.outcome)),
    el("td", null, c.error ? c.error : text(c.value)))));
}

// A stream that went silent (a proxy holding it, a suspended tab) is opened again.
setInterval(() => {
  if (state.lastEvent && Date.now() - state.lastEvent > 10000) {
    setLink(false);
    state.lastEvent = Date.now();
    connect();
  }
}, 2000);

connect();
