// The service graph: services in columns by how far they are from the callers that start
// traffic (gateways, clients), an arrow per edge with its rate, success rate, p99 and mTLS.

import { svg, rate, percent, ms, successLevel, isNum } from "./dom.js";

const NODE_W = 168;
const NODE_H = 54;
const COL_GAP = 150;
const ROW_GAP = 34;
const PAD = 24;

// Columns: a service sits one column right of its furthest caller (cycles are cut where they close).
export function layout(nodeNames, edges) {
  const callers = new Map(nodeNames.map((n) => [n, []]));
  for (const e of edges) if (callers.has(e.dst) && callers.has(e.src) && e.src !== e.dst) callers.get(e.dst).push(e.src);
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (name) => {
    if (depth.has(name)) return depth.get(name);
    if (visiting.has(name)) return 0;
    visiting.add(name);
    const d = Math.max(-1, ...callers.get(name).map(depthOf)) + 1;
    visiting.delete(name);
    depth.set(name, d);
    return d;
  };
  nodeNames.forEach(depthOf);
  const columns = [];
  for (const name of [...nodeNames].sort()) {
    const d = depth.get(name);
    (columns[d] ||= []).push(name);
  }
  const tallest = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP;
  const positions = new Map();
  columns.forEach((column, d) => {
    if (!column) return;
    const used = column.length * NODE_H + (column.length - 1) * ROW_GAP;
    column.forEach((name, i) => {
      positions.set(name, { x: PAD + d * (NODE_W + COL_GAP), y: (height - used) / 2 + i * (NODE_H + ROW_GAP) });
    });
  });
  const width = PAD * 2 + columns.length * NODE_W + Math.max(0, columns.length - 1) * COL_GAP;
  return { positions, width: Math.max(width, 320), height };
}

function lock(x, y) {
  // A padlock, drawn: emoji fonts are not everywhere.
  return svg("g", { class: "lock", transform: `translate(${x},${y})` },
    svg("title", {}, "mutual TLS, SPIFFE identities checked on both sides"),
    svg("path", { d: "M2 5 V3.2 a3 3 0 0 1 6 0 V5", fill: "none", "stroke-width": 1.4 }),
    svg("rect", { x: 0.5, y: 5, width: 9, height: 7, rx: 1.5 }));
}

// nodes: [{name, rps, success_rate, kind}], edges: the stats topic's edges.
export function renderGraph(nodes, edges, onSelect) {
  const names = nodes.map((n) => n.name);
  const { positions, width, height } = layout(names, edges);
  const root = svg("svg", { class: "graph", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "service graph" },
    svg("defs", {},
      ["ok", "warn", "fail", "none"].map((level) =>
        svg("marker", { id: `arrow-${level}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
          svg("path", { d: "M0 0 L10 5 L0 10 z", class: `arrow lvl-${level}` })))));
  const maxRps = Math.max(0.001, ...edges.map((e) => (isNum(e.rps) ? e.rps : 0)));
  for (const e of edges) {
    const a = positions.get(e.src);
    const b = positions.get(e.dst);
    if (!a || !b) continue;
    const level = e.requests > 0 ? successLevel(e.success_rate) : "none";
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x - 2, y2 = b.y + NODE_H / 2;
    const back = x2 <= x1;
    const bend = back ? 80 : Math.max(40, (x2 - x1) / 2);
    const d = back
      ? `M${a.x + NODE_W / 2} ${a.y + NODE_H} C${a.x + NODE_W / 2} ${a.y + NODE_H + bend}, ${b.x + NODE_W / 2} ${b.y + NODE_H + bend}, ${b.x + NODE_W / 2} ${b.y + NODE_H + 2}`
      : `M${x1} ${y1} C${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`;
    const widthPx = 1.5 + 3.5 * Math.sqrt((isNum(e.rps) ? e.rps : 0) / maxRps);
    const mx = back ? (a.x + b.x) / 2 + NODE_W / 2 : (x1 + x2) / 2;
    const my = back ? Math.max(a.y, b.y) + NODE_H + bend * 0.75 : (y1 + y2) / 2;
    const first = `${rate(e.rps)} · ${percent(e.success_rate)}`;
    const second = `p99 ${ms(e.latency_ms && e.latency_ms.p99)}`;
    const labelWidth = Math.max(first.length, second.length + (e.mtls ? 3 : 0)) * 6.3 + 12;
    root.append(svg("g", { class: ["edge", `lvl-${level}`], "data-src": e.src, "data-dst": e.dst },
      svg("title", {}, `${e.src} → ${e.dst}\n${e.requests} requests in the last minute\n${e.mtls ? "mTLS" : "plain (leaves the mesh)"}`),
      svg("path", { d, "stroke-width": widthPx.toFixed(1), "marker-end": `url(#arrow-${level})` }),
      svg("g", { class: "edge-label", transform: `translate(${(mx - labelWidth / 2).toFixed(1)},${(my - 16).toFixed(1)})` },
        svg("rect", { width: labelWidth.toFixed(1), height: 32, rx: 7 }),
        svg("text", { x: 6, y: 13, class: "edge-text" }, svg("tspan", { class: "edge-rps" }, rate(e.rps)), ` · ${percent(e.success_rate)}`),
        svg("text", { x: 6, y: 26, class: "edge-text" }, second),
        e.mtls ? lock(labelWidth - 16, 17) : null)));
  }
  for (const node of nodes) {
    const p = positions.get(node.name);
    const level = node.kind === "service" ? (isNum(node.rps) && node.rps > 0 ? successLevel(node.success_rate) : "none") : "none";
    const g = svg("g", { class: ["node", `kind-${node.kind}`, `lvl-${level}`], "data-service": node.name, transform: `translate(${p.x},${p.y})`, tabindex: node.kind === "service" ? 0 : null },
      svg("title", {}, node.kind === "service" ? `${node.name}: open its metrics and endpoints` : `${node.name} (${node.kind})`),
      svg("rect", { width: NODE_W, height: NODE_H, rx: 8 }),
      svg("rect", { class: "node-bar", width: 5, height: NODE_H, rx: 2 }),
      svg("text", { x: 14, y: 21, class: "node-name" }, node.name),
      svg("text", { x: 14, y: 40, class: "node-stats" },
        node.kind === "service" ? `${rate(node.rps)} · ${percent(node.success_rate)} · ${node.instances} inst.` : node.kind));
    if (node.kind === "service") {
      g.addEventListener("click", () => onSelect(node.name));
      g.addEventListener("keydown", (ev) => { if (ev.key === "Enter") onSelect(node.name); });
    }
    root.append(g);
  }
  return root;
}
