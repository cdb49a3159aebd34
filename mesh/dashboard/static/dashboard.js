// mesh dashboard: topics arrive over server-sent events (/api/events) and each view draws
// itself from them. A view is an entry of VIEWS: its topics, and how it draws; a new view
// (traces, say) is one more entry, fed by a topic or a stream of its own like the tap.

import { h, replace, table, empty, rate, percent, ms, duration, clock, successLevel, badge, isNum } from "./dom.js";
import { renderGraph } from "./graph.js";
import { lineChart } from "./chart.js";

const state = { link: null, status: null, stats: null, history: null, routes: null, faults: null, check: null };
const received = {}; // topic → the browser's clock when it arrived (server clocks may differ)
let streamUp = false;

// -- views ---------------------------------------------------------------------------------

const VIEWS = [
  { id: "graph", title: "Graph", topics: ["status", "stats", "faults", "check"], draw: drawGraph },
  { id: "services", title: "Services", topics: ["status", "stats", "history"], draw: drawServices },
  { id: "routes", title: "Routes & policies", topics: ["routes"], draw: drawRoutes },
  { id: "tap", title: "Tap", topics: ["status"], mount: mountTap, draw: drawTapOptions, leave: stopTap },
  { id: "check", title: "Check", topics: ["check"], draw: drawCheck },
  { id: "faults", title: "Faults", topics: ["faults"], draw: drawFaults },
];

function route() {
  const [, id = "graph", arg = ""] = location.hash.split("/");
  const view = VIEWS.find((v) => v.id === id) || VIEWS[0];
  return { view, arg: decodeURIComponent(arg) };
}

let current = null;

function show() {
  const { view, arg } = route();
  if (current && current.view !== view && current.view.leave) current.view.leave();
  const mounted = current && current.view === view;
  current = { view, arg };
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.view === view.id);
  const main = document.getElementById("main");
  if (!mounted) {
    main.dataset.view = view.id;
    replace(main);
    if (view.mount) view.mount(main);
  }
  view.draw(main, arg);
}

function redraw(topic) {
  if (current && current.view.topics.includes(topic)) current.view.draw(document.getElementById("main"), current.arg);
}

// -- shared bits ------------------------------------------------------------------------------

const serverNow = (topic) => {
  const value = state[topic];
  const at = value && value.time;
  return isNum(at) ? at + (Date.now() - received[topic]) / 1000 : Date.now() / 1000;
};

function serviceRows() {
  const rows = (state.stats && state.stats.rows) || [];
  const all = new Map();
  for (const row of rows) if (row.version === null) all.set(row.service, row);
  return { rows, all };
}

function serviceNames() {
  const names = new Set(Object.keys((state.status && state.status.endpoints) || {}));
  for (const row of (state.stats && state.stats.rows) || []) names.add(row.service);
  return [...names].sort();
}

function worstHealth(endpoints) {
  const order = ["fail", "warn", "ok"];
  for (const level of order) if ((endpoints || []).some((e) => e.health === level)) return level;
  return "none";
}

function loading(main, what) {
  replace(main, empty(`waiting for ${what} from the controller…`));
}

function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

function updated(topic) {
  const value = state[topic];
  return h("span", { class: "muted" }, value && isNum(value.time) ? `updated ${clock(value.time)}` : "");
}

// -- graph ------------------------------------------------------------------------------------

function drawGraph(main) {
  if (!state.status || !state.stats) return loading(main, "the mesh's status and metrics");
  const { all } = serviceRows();
  const edges = state.stats.edges || [];
  const kinds = new Map();
  for (const name of serviceNames()) kinds.set(name, "service");
  for (const name of state.status.gateways || []) if (!kinds.has(name)) kinds.set(name, "gateway");
  for (const e of edges) {
    if (!kinds.has(e.src)) kinds.set(e.src, "client");
    if (!kinds.has(e.dst)) kinds.set(e.dst, e.dst === "egress" ? "egress" : "service");
  }
  const nodes = [...kinds].map(([name, kind]) => {
    const row = all.get(name) || {};
    return { name, kind, rps: row.rps, success_rate: row.success_rate, instances: row.instances ?? 0 };
  });
  const totalRps = [...all.values()].reduce((sum, r) => sum + (isNum(r.rps) ? r.rps : 0), 0);
  const requests = [...all.values()].reduce((sum, r) => sum + (r.requests || 0), 0);
  const failures = [...all.values()].reduce((sum, r) => sum + (isNum(r.requests) && isNum(r.success_rate) ? r.requests * (1 - r.success_rate) : 0), 0);
  const endpoints = Object.values(state.status.endpoints || {}).flat();
  const faults = (state.faults && state.faults.faults) || [];
  const checkReport = state.check && state.check.report;
  const checkFailed = checkReport ? checkReport.categories.flatMap((c) => c.checks).filter((c) => c.status === "fail").length : null;
  const tile = (label, value, level, href) => h("a", { class: ["tile", level && `lvl-${level}`], href: href || "#/graph" },
    h("span", { class: "tile-value" }, value), h("span", { class: "tile-label" }, label));
  replace(main,
    h("div", { class: "tiles" },
      tile("services", String(serviceNames().length), null, "#/services"),
      tile("endpoints", `${endpoints.filter((e) => e.health === "ok").length}/${endpoints.length} healthy`, worstHealth(endpoints), "#/services"),
      tile("requests/s (inbound)", rate(totalRps), null, "#/services"),
      tile("success (inbound, last minute)", requests ? percent(1 - failures / requests) : "–", requests ? successLevel(1 - failures / requests) : null, "#/services"),
      tile("faults in force", String(faults.length), faults.length ? "warn" : null, "#/faults"),
      tile("mesh check", checkFailed === null ? "…" : checkFailed ? `${checkFailed} failed` : "passing", checkFailed === null ? null : checkFailed ? "fail" : "ok", "#/check")),
    section("Service graph",
      h("p", { class: "muted" }, "Edges: requests per second, success rate and p99 latency over the last minute, as the caller's proxy saw them; the padlock is mutual TLS. ", updated("stats")),
      nodes.length ? h("div", { class: "graph-box" }, renderGraph(nodes, edges, (name) => { location.hash = `#/services/${encodeURIComponent(name)}`; }))
        : empty("no services yet: start some with `mesh up mesh.toml` or `mesh inject`"),
      unreachableNote(state.stats.unreachable)));
}

function unreachableNote(unreachable) {
  if (!unreachable || !unreachable.length) return null;
  return h("ul", { class: "notes" }, unreachable.map((u) =>
    h("li", { class: "lvl-warn" }, `unreachable: ${u.service} ${u.instance} (${u.admin || "no admin port"}): ${u.error}`)));
}

// -- services ---------------------------------------------------------------------------------

const VERSION_CLASSES = ["c0", "c1", "c2", "c3", "c4", "c5"];

function drawServices(main, selected) {
  if (!state.status || !state.stats) return loading(main, "the mesh's status and metrics");
  const names = serviceNames();
  const name = names.includes(selected) ? selected : names[0];
  const { rows, all } = serviceRows();
  const endpoints = state.status.endpoints || {};
  const list = h("nav", { class: "service-list", "aria-label": "services" }, names.map((n) =>
    h("a", { href: `#/services/${encodeURIComponent(n)}`, class: n === name ? "active" : null, "data-service": n },
      h("span", { class: ["dot", `lvl-${worstHealth(endpoints[n])}`] }),
      h("span", { class: "name" }, n),
      h("span", { class: "num" }, rate(all.get(n) && all.get(n).rps)))));
  if (!name) return replace(main, empty("no services yet"));
  const mine = rows.filter((r) => r.service === name);
  const versions = mine.filter((r) => r.version !== null).map((r) => r.version);
  const golden = table(["VERSION", "MESHED", "SUCCESS", "RPS", "P50", "P95", "P99", "TCP"], mine.map((r) =>
    h("tr", { "data-version": r.version ?? "all" },
      h("td", {}, r.version === null ? "all versions" : r.version),
      h("td", { class: "num" }, r.meshed),
      h("td", { class: ["num", `lvl-${successLevel(r.success_rate)}`], "data-metric": "success" }, percent(r.success_rate)),
      h("td", { class: "num", "data-metric": "rps" }, rate(r.rps)),
      h("td", { class: "num" }, ms(r.p50_ms)), h("td", { class: "num" }, ms(r.p95_ms)),
      h("td", { class: "num", "data-metric": "p99" }, ms(r.p99_ms)),
      h("td", { class: "num" }, r.tcp_connections ?? "–"))), { class: "golden" });
  const edges = (state.stats.edges || []).filter((e) => e.src === name || e.dst === name);
  const edgeTable = edges.length ? table(["FROM", "TO", "RPS", "SUCCESS", "P99", "MTLS"], edges.map((e) =>
    h("tr", {}, h("td", {}, e.src), h("td", {}, e.dst), h("td", { class: "num" }, rate(e.rps)),
      h("td", { class: ["num", `lvl-${successLevel(e.success_rate)}`] }, percent(e.success_rate)),
      h("td", { class: "num" }, ms(e.latency_ms && e.latency_ms.p99)), h("td", {}, e.mtls ? "yes" : "no")))) : empty("no calls from or to it in the last minute");
  const now = Date.now() / 1000;
  const endpointTable = table(["ADDRESS", "VERSION", "HEALTH", "CERTIFICATE", "CONFIG", "SOURCE", "IDENTITY"], (endpoints[name] || []).map((e) =>
    h("tr", { class: "endpoint-row", "data-address": e.address },
      h("td", {}, e.address), h("td", {}, e.version || "–"),
      h("td", {}, badge(e.health, e.health), " ", h("span", { class: "muted" }, e.reason)),
      h("td", { title: isNum(e.cert_expiry) ? `expires ${new Date(e.cert_expiry * 1000).toISOString()}` : "" },
        isNum(e.cert_expiry) ? `expires in ${duration(e.cert_expiry - now)}` : "–"),
      h("td", {}, e.config), h("td", {}, e.source), h("td", { class: "mono" }, e.identity))));
  replace(main,
    h("div", { class: "split" }, list,
      h("div", { class: "detail" },
        section(`${name}: golden metrics (last minute)`, h("p", { class: "muted" }, "Inbound traffic the service's own proxies served, per version label. ", updated("stats")), golden),
        section(`${name}: the last ${Math.round(((state.history && state.history.keep_seconds) || 900) / 60)} minutes`,
          h("p", { class: "muted" }, "A point every 10 seconds, each covering those 10 seconds, since the dashboard started."), charts(name, versions)),
        section(`${name}: endpoints`, endpointTable),
        section(`${name}: callers and callees`, edgeTable))));
}

function charts(name, versions) {
  const history = state.history && state.history.series && state.history.series[name];
  if (!history) return empty("collecting: a point every 10 seconds while the dashboard runs");
  const keys = versions.length ? versions : [""];
  const lines = (index) => keys.map((version, i) => ({
    name: version || "all versions",
    cls: VERSION_CLASSES[i % VERSION_CLASSES.length],
    points: (history[version] || []).map((p) => [p[0], p[index]]),
  }));
  const end = Math.max(...Object.values(history).flat().map((p) => p[0]));
  const start = end - ((state.history && state.history.keep_seconds) || 900);
  const legend = h("div", { class: "legend" }, keys.map((v, i) => h("span", { class: ["key", VERSION_CLASSES[i % VERSION_CLASSES.length]] }, v || "all versions")));
  return h("div", {}, legend, h("div", { class: "charts" },
    lineChart(lines(1), { title: "requests per second", format: (v) => rate(v), start, end }),
    lineChart(lines(2), { title: "success rate", format: (v) => percent(v), min: 0, max: 1, start, end }),
    lineChart(lines(3), { title: "p99 latency", format: (v) => ms(v), start, end })));
}

// -- routes and policies ------------------------------------------------------------------------

function describeMatch(match) {
  const parts = Object.entries(match || {}).filter(([k]) => k !== "headers").map(([k, v]) => `${k.replace("path_", "")}=${v}`);
  for (const [k, v] of Object.entries((match && match.headers) || {})) parts.push(`${k}: ${v}`);
  return parts.join(", ") || "*";
}

function describeSplit(split) {
  return (split || []).map((t) => `${Object.entries(t.labels).map(([k, v]) => `${k}=${v}`).join(",")} ${t.weight}%`).join(" / ") || "every endpoint";
}

function describeFault(fault) {
  return Object.entries(fault || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–";
}

function drawRoutes(main) {
  const r = state.routes;
  if (!r) return loading(main, "the config in force");
  const services = Object.entries(r.services || {});
  const routeTables = services.length ? services.map(([service, routes]) => h("div", { class: "route-service" },
    h("h3", {}, service, h("span", { class: "muted" }, " · first match wins")),
    table(["ROUTE", "MATCH", "SPLIT", "TIMEOUT", "RETRIES", "FAULT", "REQUESTS", "SUCCESS", "P50", "P99"], routes.map((row) =>
      h("tr", { class: "route-row", "data-route": row.name },
        h("td", {}, row.name), h("td", { class: "mono" }, describeMatch(row.route.match)), h("td", {}, describeSplit(row.route.split)),
        h("td", {}, row.route.timeout || "10s"), h("td", {}, String((row.route.retries || {}).attempts ?? 2)),
        h("td", {}, describeFault(row.route.fault)), h("td", { class: "num" }, String(row.requests)),
        h("td", { class: ["num", `lvl-${successLevel(row.success_rate)}`] }, percent(row.success_rate)),
        h("td", { class: "num" }, ms(row.p50_ms)), h("td", { class: "num" }, ms(row.p99_ms)))))))
    : [empty("no routes: requests to a service are balanced over all its endpoints")];
  const policies = r.policies || [];
  const policyTable = policies.length ? table(["SERVICE", "ALLOW", "DENY", "RATE LIMIT"], policies.map((p) =>
    h("tr", { class: "policy-row" }, h("td", {}, p.service),
      h("td", {}, p.allow === undefined || p.allow === null ? `(authz_default: ${r.authz_default})` : p.allow.join(", ") || "nobody"),
      h("td", {}, (p.deny || []).join(", ") || "–"),
      h("td", {}, p.rate_limit ? Object.entries(p.rate_limit).map(([k, v]) => `${k}=${v}`).join(", ") : "–"))))
    : empty(`no policies: every meshed caller may call every service (authz_default = ${r.authz_default})`);
  replace(main,
    section(`Routes in force (config version ${r.config_version})`, h("p", { class: "muted" }, "Per-route requests, success and latency count every caller's proxy since it started."), routeTables),
    section("Policies", h("p", { class: "muted" }, `Enforced by each callee's proxy, by the caller's verified identity. authz_default = ${r.authz_default}.`), policyTable),
    r.unreachable && r.unreachable.length ? h("ul", { class: "notes" }, r.unreachable.map((u) => h("li", { class: "lvl-warn" }, `unreachable: ${u}`))) : null);
}

// -- tap ------------------------------------------------------------------------------------------

const TAP_ROWS = 300;
const tap = { source: null, count: 0 };

function mountTap(main) {
  const field = (label, input) => h("label", {}, h("span", {}, label), input);
  const form = h("form", { id: "tap-form", class: "tap-form", onsubmit: (ev) => { ev.preventDefault(); startTap(); } },
    field("service", h("select", { name: "service" }, h("option", { value: "" }, "any"))),
    field("direction", h("select", { name: "direction" }, ["", "outbound", "inbound"].map((d) => h("option", { value: d }, d || "any")))),
    field("method", h("input", { name: "method", placeholder: "GET", size: 7 })),
    field("path prefix", h("input", { name: "path", placeholder: "/", size: 14 })),
    field("authority", h("input", { name: "authority", placeholder: "reviews", size: 12 })),
    h("button", { type: "submit" }, "Apply"),
    h("button", { type: "button", id: "tap-toggle", onclick: () => (tap.source ? stopTap() : startTap()) }, "Pause"),
    h("button", { type: "button", onclick: () => { replace(document.getElementById("tap-body")); tap.count = 0; } }, "Clear"));
  replace(main,
    section("Live requests", h("p", { class: "muted" }, "Every proxy's requests as they happen (a call between two services shows twice: out at the caller, in at the callee). Query values are redacted by the proxies."),
      form, h("p", { class: "muted" }, h("span", { id: "tap-state" }), " ", h("span", { id: "tap-proxies" })),
      h("ul", { id: "tap-notes", class: "notes" }),
      h("table", { class: "tap" },
        h("thead", {}, h("tr", {}, ["TIME", "PROXY", "FROM", "TO", "METHOD", "AUTHORITY / PATH", "STATUS", "LATENCY", "MTLS"].map((t) => h("th", {}, t)))),
        h("tbody", { id: "tap-body" }))));
  startTap();
}

function drawTapOptions() {
  const select = document.querySelector("#tap-form select[name=service]");
  if (!select) return;
  const have = [...select.options].map((o) => o.value);
  for (const name of serviceNames()) if (!have.includes(name)) select.append(h("option", { value: name }, name));
}

function tapState(text) {
  const el = document.getElementById("tap-state");
  if (el) el.textContent = text;
}

function tapNote(text, level) {
  const notes = document.getElementById("tap-notes");
  if (!notes) return;
  notes.prepend(h("li", { class: `lvl-${level}` }, `${clock(Date.now() / 1000)} ${text}`));
  while (notes.children.length > 6) notes.lastChild.remove();
}

function startTap() {
  stopTap();
  const form = document.getElementById("tap-form");
  const query = new URLSearchParams();
  for (const [key, value] of new FormData(form)) if (String(value).trim()) query.set(key, key === "method" ? String(value).trim().toUpperCase() : String(value).trim());
  const path = query.get("path");
  if (path && !path.startsWith("/")) return tapState("the path prefix must start with /");
  tap.source = new EventSource(`/api/tap?${query}`);
  document.getElementById("tap-toggle").textContent = "Pause";
  tapState(`tapping ${query.toString() ? query.toString().replaceAll("&", ", ") : "everything"}…`);
  tap.source.addEventListener("request", (ev) => addTapRow(JSON.parse(ev.data)));
  const proxies = new Map();
  const showProxies = () => { document.getElementById("tap-proxies").textContent = proxies.size ? `· tapping ${proxies.size} proxies: ${[...proxies.values()].sort().join(", ")}` : ""; };
  tap.source.addEventListener("tapping", (ev) => { const d = JSON.parse(ev.data); proxies.set(d.admin, d.service); showProxies(); });
  tap.source.addEventListener("unreachable", (ev) => { proxies.delete(JSON.parse(ev.data).admin); showProxies(); });
  tap.source.addEventListener("unreachable", (ev) => { const d = JSON.parse(ev.data); tapNote(`cannot tap ${d.service} (${d.admin}): ${d.error}`, "warn"); });
  tap.source.addEventListener("waiting", (ev) => tapNote(JSON.parse(ev.data).message, "none"));
  tap.source.addEventListener("dropped", (ev) => { const d = JSON.parse(ev.data); tapNote(`${d.count} events dropped by ${d.proxy || d.instance || "a proxy"} (too many: narrow the filter)`, "warn"); });
  tap.source.addEventListener("failed", (ev) => { const d = JSON.parse(ev.data); tapNote(`${d.error}${d.hint ? ` (${d.hint})` : ""}`, "fail"); });
  tap.source.onerror = () => tapState(tap.source && tap.source.readyState === EventSource.CLOSED ? "the tap was refused (check the filter)" : "reconnecting the tap…");
}

function stopTap() {
  if (tap.source) tap.source.close();
  tap.source = null;
  const toggle = document.getElementById("tap-toggle");
  if (toggle) toggle.textContent = "Resume";
  tapState("paused");
}

function addTapRow(e) {
  const body = document.getElementById("tap-body");
  if (!body) return;
  tap.count += 1;
  tapState(`${tap.count} requests seen`);
  const failed = e.mesh_error || e.status === 0 || e.status >= 500 || (e.grpc_status !== null && e.grpc_status !== undefined && e.grpc_status !== 0);
  const level = failed ? "fail" : e.status >= 400 ? "warn" : "ok";
  const status = `${e.status || "–"}${e.grpc_status !== null && e.grpc_status !== undefined ? ` grpc=${e.grpc_status}` : ""}${e.mesh_error ? ` ${e.mesh_error}` : ""}`;
  body.prepend(h("tr", { class: "tap-row" },
    h("td", { class: "mono" }, new Date(e.timestamp * 1000).toLocaleTimeString([], { hour12: false }) + `.${String(Math.floor((e.timestamp % 1) * 1000)).padStart(3, "0")}`),
    h("td", {}, `${e.proxy} ${e.direction === "inbound" ? "in" : "out"}`),
    h("td", {}, e.src_service || "–"), h("td", {}, e.dst_service || e.authority || e.dst_address || "–"),
    h("td", {}, e.method), h("td", { class: "mono path" }, `${e.authority}${e.path}`),
    h("td", { class: ["num", `lvl-${level}`] }, status), h("td", { class: "num" }, ms(e.latency_ms)),
    h("td", {}, e.tls ? "yes" : "no")));
  while (body.children.length > TAP_ROWS) body.lastChild.remove();
}

// -- check -------------------------------------------------------------------------------------------

function drawCheck(main) {
  const c = state.check;
  if (!c) return loading(main, "`mesh check --proxy` (it runs every minute; the first run takes a few seconds)");
  if (c.error) return replace(main, section("mesh check", h("p", { class: "lvl-fail" }, c.error), c.hint ? h("p", { class: "hint" }, c.hint) : null));
  const checks = c.report.categories.flatMap((cat) => cat.checks);
  const count = (status) => checks.filter((x) => x.status === status).length;
  replace(main, section("mesh check --proxy",
    h("p", { class: "muted" }, `ran at ${clock(c.ran_at)} in ${c.seconds}s; again every minute. `,
      badge(c.report.success ? "ok" : "fail", c.report.success ? "passing" : "failing"),
      ` ${count("ok")} ok · ${count("warn")} warnings · ${count("fail")} failed`),
    c.report.categories.map((cat) => h("div", { class: "check-category" }, h("h3", {}, cat.name),
      table(["", "CHECK", "RESULT"], cat.checks.map((x) => h("tr", { class: "check-row", "data-status": x.status },
        h("td", {}, badge(x.status === "ok" ? "ok" : x.status === "warn" ? "warn" : x.status === "fail" ? "fail" : "none", x.status)),
        h("td", {}, x.description),
        h("td", {}, x.message, x.hint ? h("div", { class: "hint" }, `hint: ${x.hint}`) : null))))))));
}

// -- faults ------------------------------------------------------------------------------------------

function drawFaults(main) {
  const f = state.faults;
  if (!f) return loading(main, "the faults in force");
  const now = serverNow("faults");
  const rows = (f.faults || []).map((x) => h("tr", { class: "fault-row", "data-service": x.service },
    h("td", {}, x.service), h("td", {}, x.source === "config" ? `route ${x.route}` : "mesh fault"),
    h("td", {}, isNum(x.delay_seconds) ? `${ms(x.delay_seconds * 1000)} for ${x.delay_percent}%` : "–"),
    h("td", {}, isNum(x.abort_status) ? `${x.abort_status} for ${x.abort_percent}%` : "–"),
    h("td", {}, isNum(x.expires_at) ? `in ${duration(x.expires_at - now)} (${clock(x.expires_at)})` : "while the config says so")));
  replace(main, section("Faults in force",
    h("p", { class: "muted" }, "Every caller's proxy applies them to its calls of the service. `mesh fault SERVICE --delay 200ms --for 5m` adds one for a while; routes can carry one in mesh.toml."),
    rows.length ? table(["SERVICE", "FROM", "DELAY", "ABORT", "EXPIRES"], rows) : empty("no faults in force")));
}

// -- header: connection state, theme -------------------------------------------------------------------

function drawHeader() {
  const pill = document.getElementById("link-state");
  const link = state.link;
  let text = "live", level = "ok";
  if (!streamUp) [text, level] = ["dashboard unreachable: reconnecting…", "fail"];
  else if (link && !link.connected) [text, level] = [`controller unreachable: ${link.error}`, "fail"];
  else if (link && link.error) [text, level] = [`controller: ${link.error}`, "warn"];
  else if (!state.status) [text, level] = ["connecting…", "warn"];
  pill.textContent = text;
  pill.title = text;
  pill.className = `pill lvl-${level}`;
  const c = state.status && state.status.controller;
  document.getElementById("controller").textContent = c ? `${c.trust_domain} · controller ${c.address} · mesh ${c.version}` : "";
}

const THEMES = ["auto", "light", "dark"];
const dark = window.matchMedia("(prefers-color-scheme: dark)");

function applyTheme() {
  const chosen = localStorage.getItem("mesh-dashboard-theme") || "auto";
  document.documentElement.dataset.theme = chosen === "auto" ? (dark.matches ? "dark" : "light") : chosen;
  document.getElementById("theme").textContent = `theme: ${chosen}`;
}

// -- start ---------------------------------------------------------------------------------------------

function connect() {
  const events = new EventSource("/api/events");
  events.onopen = () => { streamUp = true; drawHeader(); };
  events.onerror = () => { streamUp = false; drawHeader(); };
  for (const topic of Object.keys(state)) {
    events.addEventListener(topic, (ev) => {
      state[topic] = JSON.parse(ev.data);
      received[topic] = Date.now();
      drawHeader();
      redraw(topic);
    });
  }
}

function start() {
  replace(document.getElementById("nav"), VIEWS.map((v) => h("a", { href: `#/${v.id}`, "data-view": v.id }, v.title)));
  document.getElementById("theme").addEventListener("click", () => {
    const chosen = localStorage.getItem("mesh-dashboard-theme") || "auto";
    localStorage.setItem("mesh-dashboard-theme", THEMES[(THEMES.indexOf(chosen) + 1) % THEMES.length]);
    applyTheme();
  });
  dark.addEventListener("change", applyTheme);
  applyTheme();
  window.addEventListener("hashchange", show);
  // Countdowns (faults, certificates) move between updates too.
  setInterval(() => { if (current && ["faults"].includes(current.view.id)) current.view.draw(document.getElementById("main"), current.arg); }, 1000);
  show();
  drawHeader();
  connect();
}

start();
