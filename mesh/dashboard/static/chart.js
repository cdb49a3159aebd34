// A small line chart in SVG: one line per series over the last minutes, gaps where there was no data.

import { svg, h, clock, isNum } from "./dom.js";

const W = 380;
const H = 150;
const M = { left: 54, right: 10, top: 10, bottom: 22 };

// series: [{name, cls, points: [[t, value], …]}]; options: {title, format, min, max, start, end}
export function lineChart(series, options) {
  const { title, format, start, end } = options;
  const values = series.flatMap((s) => s.points.map((p) => p[1]).filter(isNum));
  let lo = options.min ?? Math.min(0, ...values);
  let hi = options.max ?? Math.max(...values, lo + 1e-9);
  if (options.max === undefined) hi = hi <= 0 ? 1 : hi * 1.1;
  if (options.min === undefined && values.length && Math.min(...values) > 0.9 && options.max === 1) lo = 0.9;
  const x = (t) => M.left + ((t - start) / Math.max(1, end - start)) * (W - M.left - M.right);
  const y = (v) => M.top + (1 - (v - lo) / Math.max(1e-9, hi - lo)) * (H - M.top - M.bottom);
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  for (const frac of [0, 0.5, 1]) {
    const v = lo + (hi - lo) * frac;
    root.append(svg("line", { class: "grid", x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }),
      svg("text", { class: "axis", x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  root.append(svg("text", { class: "axis", x: M.left, y: H - 6 }, clock(start)),
    svg("text", { class: "axis", x: W - M.right, y: H - 6, "text-anchor": "end" }, "now"));
  for (const s of series) {
    let d = "";
    let pen = "M";
    for (const [t, v] of s.points) {
      if (!isNum(v) || t < start) { pen = "M"; continue; }
      d += `${pen}${x(t).toFixed(1)} ${y(Math.min(hi, Math.max(lo, v))).toFixed(1)} `;
      pen = "L";
    }
    if (d) root.append(svg("path", { class: ["line", s.cls], d }, svg("title", {}, s.name)));
    const last = [...s.points].reverse().find((p) => isNum(p[1]));
    if (last && last[0] >= start) root.append(svg("circle", { class: ["dot", s.cls], cx: x(last[0]), cy: y(Math.min(hi, Math.max(lo, last[1]))), r: 2.5 }));
  }
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), root);
}
