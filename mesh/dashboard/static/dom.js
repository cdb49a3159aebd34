// Small DOM and formatting helpers. Every text goes in through textContent (never innerHTML):
// service names, paths and headers come from the mesh's traffic and are shown as they are.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(element, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (key === "class") element.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

// h("td", {class: "num"}, "1.2/s") → <td class="num">1.2/s</td>
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function replace(parent, ...children) {
  parent.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

export function table(headers, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map((title) => h("th", {}, title)))),
    h("tbody", {}, rows));
}

export function empty(text) {
  return h("p", { class: "empty" }, text);
}

// -- numbers ---------------------------------------------------------------------------

export const isNum = (v) => typeof v === "number" && Number.isFinite(v);

export function rate(v) {
  if (!isNum(v)) return "–";
  return v >= 100 ? `${v.toFixed(0)}/s` : v >= 10 ? `${v.toFixed(1)}/s` : `${v.toFixed(2)}/s`;
}

export function percent(v) {
  return isNum(v) ? `${(v * 100).toFixed(v >= 0.9995 || v === 0 ? 0 : 1)}%` : "–";
}

export function ms(v) {
  if (!isNum(v)) return "–";
  return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`;
}

export function duration(seconds) {
  if (!isNum(seconds)) return "–";
  if (seconds <= 0) return "expired";
  if (seconds >= 86400) return `${Math.floor(seconds / 86400)}d ${Math.floor((seconds % 86400) / 3600)}h`;
  if (seconds >= 3600) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  if (seconds >= 60) return `${Math.floor(seconds / 60)}m ${Math.floor(seconds % 60)}s`;
  return `${Math.floor(seconds)}s`;
}

export function clock(unixSeconds) {
  if (!isNum(unixSeconds)) return "–";
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

// The level of a success rate, for colours: ok ≥ 99 %, warn ≥ 95 %, fail below; none without traffic.
export function successLevel(v) {
  if (!isNum(v)) return "none";
  return v >= 0.99 ? "ok" : v >= 0.95 ? "warn" : "fail";
}

export function badge(level, text) {
  return h("span", { class: ["badge", `lvl-${level}`] }, text ?? level);
}
