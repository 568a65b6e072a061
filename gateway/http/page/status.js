// factory-gateway status page: follows /events (Server-Sent Events) and draws the gateway, its
// devices, the points of the devices that are open, and the last commands. Plain JavaScript,
// no library: the page must work on an edge box with no internet.
"use strict";

const OPEN_ALL_BELOW = 300; // points: a plant this small shows every device open at first
const MAX_OPEN = 50; // devices open at once (opening one more closes the first opened)
const KEY = "factory-gateway.open";
const SVG = "http://www.w3.org/2000/svg";

const state = {
  open: null, // Set of device ids, or null until the first event decides
  devices: new Map(), // id -> {row, cells, panel, points, trend}
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

function setText(node, value) {
  if (node.textContent !== value) node.textContent = value; // keeps a selection where nothing changed
}

function text(value) {
  if (value === null || value === undefined) return "—";
  if (Array.isArray(value)) return "[" + value.map(text).join(", ") + "]";
  if (typeof value === "number" && !Number.isInteger(value)) {
    return String(Number(value.toPrecision(7))); // 26.200000000000003 -> 26.2
  }
  if (value === "") return '""';
  return String(value);
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
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

// The browser's local time; the date too when it is not today.
function localTime(iso) {
  const date = new Date(iso);
  if (isNaN(date)) return iso;
  const time = date.toLocaleTimeString([], {hour12: false}) + "." +
    String(date.getMilliseconds()).padStart(3, "0");
  const today = new Date().toDateString() === date.toDateString();
  return today ? time : date.toLocaleDateString() + " " + time;
}

// -- the connection ---------------------------------------------------------------------------

function savedOpen() {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY));
    return Array.isArray(saved) ? saved : null;
  } catch (error) {
    return null; // unreadable: as if nothing was saved
  }
}

function decideOpen(devices) {
  const saved = savedOpen();
  if (saved !== null) {
    const known = new Set(devices.map((d) => d.id));
    state.open = new Set(saved.filter((id) => known.has(id)));
  } else {
    const total = devices.reduce((sum, d) => sum + d.points, 0);
    state.open = new Set(total < OPEN_ALL_BELOW ? devices.map((d) => d.id) : []);
  }
}

function streamUrl() {
  const ids = state.lastDevices.map((d) => d.id);
  const all = ids.length > 0 && ids.every((id) => state.open.has(id)); // ask for "*"
  const open = all ? "*" : [...state.open].join(",");
  return "events?open=" + encodeURIComponent(open);
}

function connect() {
  if (state.source) state.source.close();
  const source = new EventSource(state.open === null ? "events?open=" : streamUrl());
  state.source = source;
  source.onmessage = (message) => {
    state.lastEvent = Date.now();
    const event = JSON.parse(message.data);
    const first = state.open === null;
    if (first && event.devices) decideOpen(event.devices);
    render(event);
    setLink(true);
    if (first && state.open !== null) connect(); // now the page knows which devices are open
  };
  source.onerror = () => setLink(false);
}

function setLink(live) {
  const link = document.getElementById("link");
  link.className = "link " + (live ? "live" : "lost");
  link.textContent = live ? "live" :
    "connection to the gateway lost: reconnecting… (the values below are the last received)";
  document.body.classList.toggle("offline", !live);
}

// -- drawing ------------------------------------------------------------------------------------

// An event carries the summary (gateway, devices, commands) once a second, and the open
// devices' changed points and new trend rows as they come.
function render(event) {
  if (event.notice) document.getElementById("notice").textContent = event.notice;
  if (event.gateway) renderGateway(event.gateway);
  if (event.devices) {
    state.lastDevices = event.devices;
    renderDevices(event.devices);
  }
  for (const [id, points] of Object.entries(event.points || {})) renderPoints(id, points);
  for (const [id, trend] of Object.entries(event.trends || {})) {
    addTrend(id, trend);
    drawTrends(id);
  }
  if (event.commands) renderCommands(event.commands);
}

function fact(name, value, attrs) {
  return el("div", attrs, el("dt", null, name), el("dd", null, value));
}

function renderGateway(g) {
  setText(document.getElementById("gateway-id"), g.id);
  setText(document.getElementById("version"), "v" + g.version);
  document.title = g.id + " · factory-gateway";
  const broker = g.broker;
  let since = " since " + localTime(broker.since);
  if (broker.held) since += " (held: " + broker.held + ")";
  if (broker.reconnects) since += `, ${plural(broker.reconnects, "reconnect")}`;
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
    fact("Buffer", plural(g.buffer.records, "record") + ", " + bytes(g.buffer.bytes) +
      (g.buffer.records ? ", oldest " + duration(g.buffer.oldest_s) : ""), {id: "buffer"}),
    fact("Uptime", duration(g.uptime_s), {id: "uptime", "data-seconds": g.uptime_s}),
    fact("Map", g.map.files.join(", ") || "—", {class: "wide"}),
    fact("Last reload", reload === null ? "none since start" :
      localTime(reload.at) + " " + reload.outcome + (reload.reason ? ": " + reload.reason : ""),
      {class: "wide"}),
  ];
  document.getElementById("gateway").replaceChildren(...facts);
}

function deviceRow(id) {
  const cells = {};
  for (const name of ["state", "id", "protocol", "line", "reason", "age", "read", "errors",
    "points"]) {
    const numeric = ["age", "read", "errors", "points"].includes(name);
    cells[name] = el("td", {class: numeric ? "num" : name});
  }
  cells.badge = el("span", {class: "badge"});
  cells.state.append(cells.badge);
  const row = el("tr", {class: "device", tabindex: "0", "data-device": id},
    ...["state", "id", "protocol", "line", "reason", "age", "read", "errors", "points"]
      .map((name) => cells[name]));
  row.addEventListener("click", () => {
    if (!window.getSelection().toString()) toggle(id); // selecting a reason is not a click
  });
  row.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(id); }
  });
  return {row, cells, panel: null, points: null, trend: null};
}

function renderDevices(devices) {
  const body = document.querySelector("#devices tbody");
  const bad = devices.filter((d) => !d.ok).length;
  setText(document.getElementById("device-count"),
    `${plural(devices.length, "device")}, ${bad ? bad + " not OK" : "all OK"}`);
  const seen = new Set();
  let before = body.firstChild;
  for (const d of devices) {
    seen.add(d.id);
    let device = state.devices.get(d.id);
    if (!device) {
      device = deviceRow(d.id);
      state.devices.set(d.id, device);
    }
    const isOpen = state.open !== null && state.open.has(d.id);
    device.row.className = "device" + (d.ok ? "" : " bad") + (isOpen ? " open" : "");
    device.row.setAttribute("data-ok", d.ok);
    device.row.setAttribute("aria-expanded", isOpen);
    const c = device.cells;
    c.badge.className = "badge " + (d.ok ? "good" : "bad");
    setText(c.badge, d.ok ? "✔ OK" : "✖ " + (d.state === "connected" ? "STALLED" : "BAD"));
    setText(c.id, d.id);
    setText(c.protocol, d.protocol);
    setText(c.line, d.line);
    setText(c.reason, d.reason || "");
    setText(c.age, age(d.last_good_age_s));
    setText(c.read, d.read_ms === null || d.read_ms === undefined ? "—" : d.read_ms + " ms");
    setText(c.errors, String(d.errors ?? "—"));
    c.errors.title = d.last_error || "";
    setText(c.points, String(d.points));
    // In the gateway's order, each open device's points right below it.
    if (before !== device.row) body.insertBefore(device.row, before);
    before = device.row.nextSibling;
    if (isOpen) {
      if (!device.panel) device.panel = pointsPanel(d.id);
      if (before !== device.panel) body.insertBefore(device.panel, before);
      before = device.panel.nextSibling;
    } else if (device.panel) {
      device.panel.remove();
      device.panel = null;
      device.points = null;
    }
  }
  for (const [id, device] of state.devices) {
    if (!seen.has(id)) {
      device.row.remove();
      if (device.panel) device.panel.remove();
      state.devices.delete(id);
      state.open.delete(id);
    }
  }
}

function toggle(id) {
  const open = state.open;
  if (open.has(id)) {
    open.delete(id);
  } else {
    open.add(id);
    if (open.size > MAX_OPEN) open.delete(open.values().next().value); // the first opened
  }
  try {
    localStorage.setItem(KEY, JSON.stringify([...open]));
  } catch (error) {
    // private browsing: the choice lasts as long as the page
  }
  for (const device of state.devices.values()) { // the new stream sends the open ones again
    if (device.panel) { device.panel.remove(); device.panel = null; device.points = null; }
  }
  renderDevices(state.lastDevices);
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
  if (points.names) {
    device.slots = points.slots;
    device.trend = {t: [], v: []};
    device.points = points.names.map((name, i) => {
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
    device.panel.querySelector("tbody").replaceChildren(...device.points.map((c) => c.row));
  }
  if (!device.points) return;
  for (const [i, value, quality, ts, reason] of points.rows || []) {
    const cells = device.points[i];
    cells.value.textContent = text(value);
    cells.value.title = JSON.stringify(value); // the value exactly as the broker got it
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

// A sparkline per numeric point: a gap where the point had no good value, its span in words.
function drawTrends(id) {
  const device = state.devices.get(id);
  if (!device || !device.trend || !device.points) return;
  const {t, v} = device.trend;
  if (t.length < 2) return;
  const t0 = t[0], span = Math.max(t[t.length - 1] - t0, 1);
  device.points.forEach((cells, i) => {
    let lo = Infinity, hi = -Infinity, count = 0;
    for (let k = 0; k < t.length; k++) {
      const value = v[k][i];
      if (value !== null) { lo = Math.min(lo, value); hi = Math.max(hi, value); count++; }
    }
    if (count < 2) { cells.trend.replaceChildren(); return; }
    const range = hi - lo || 1;
    let d = "", pen = "M", values = [];
    for (let k = 0; k < t.length; k++) {
      const value = v[k][i];
      if (value === null) { pen = "M"; continue; } // a gap: the next value starts anew
      const x = ((t[k] - t0) / span * 118 + 1).toFixed(1);
      const y = (hi === lo ? 13 : 23 - (value - lo) / range * 20).toFixed(1); // flat: midway
      d += `${pen}${x},${y} `;
      pen = "L";
      values.push(value);
    }
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "trend");
    svg.setAttribute("viewBox", "0 0 120 26");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const words = `last ${duration(span / 1000)}: ${text(lo)} to ${text(hi)}`;
    svg.setAttribute("aria-label", "trend of the " + words);
    const title = document.createElementNS(SVG, "title");
    title.textContent = words;
    const line = document.createElementNS(SVG, "path");
    line.setAttribute("d", d.trim());
    line.setAttribute("data-values", JSON.stringify(values));
    svg.append(title, line);
    cells.trend.replaceChildren(svg, el("span", {class: "span"}, `${text(lo)} – ${text(hi)}`));
  });
}

function renderCommands(commands) {
  const body = document.querySelector("#commands tbody");
  if (!commands.length) return;
  body.replaceChildren(...commands.map((c) => el("tr", {"data-outcome": c.outcome},
    el("td", {title: c.at}, localTime(c.at)), el("td", null, c.id ?? "—"),
    el("td", null, c.device ?? "—"), el("td", null, c.point ?? "—"),
    el("td", null, text(c.requested)),
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
