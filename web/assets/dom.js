// Small helpers to build DOM nodes and format flow fields.

/** h("div", {class: "x", onclick: f}, child, "text", [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElementNS(
    SVG_TAGS.has(tag) ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml",
    tag,
  );
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

const SVG_TAGS = new Set(["svg", "g", "path", "circle", "rect", "text", "title", "defs", "marker", "line"]);

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** "2026-11-25T05:21:08.396614102Z" → local time, with the date if not today. */
export function fmtTime(text) {
  if (!text) return "";
  const d = new Date(String(text).replace(/(\.\d{3})\d*/, "$1"));
  if (Number.isNaN(d.getTime())) return String(text);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

export function fmtBytes(n) {
  const v = Number(n);
  if (!Number.isFinite(v)) return "";
  if (v < 1024) return `${v} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let x = v / 1024;
  let i = 0;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${x.toFixed(x < 10 ? 1 : 0)} ${units[i]}`;
}

export function fmtCount(n) {
  const v = Number(n);
  return Number.isFinite(v) ? v.toLocaleString("en-US") : "";
}

/** `ns/pod` for a pod end, the IP otherwise. `side` is "src" or "dst". */
export function endName(row, side) {
  const ns = row[`${side}_namespace`];
  const pod = row[`${side}_pod`];
  return ns && pod ? `${ns}/${pod}` : row[`${side}_ip`];
}

/** The list columns arrive as JSON arrays (or, from some encoders, text). */
export function list(v) {
  if (Array.isArray(v)) return v;
  if (typeof v === "string" && v.startsWith("[")) {
    try {
      return JSON.parse(v);
    } catch {
      return [v];
    }
  }
  return v ? [v] : [];
}

export function verdictBadge(verdict) {
  const v = verdict || "unknown";
  return h("span", { class: `badge ${v}` }, v);
}

export function mismatchBadge(row) {
  if (!row.enforcement_mismatch) return null;
  const title =
    row.verdict === "denied"
      ? "the policies deny this flow but the kernel delivered it: the CNI does not enforce them"
      : "the policies allow this flow but the kernel dropped it: another firewall, or a CNI bug";
  return h("span", { class: "badge mismatch", title }, "mismatch");
}

export function fateBadge(row) {
  const fate = row.kernel_fate || "";
  return h(
    "span",
    { class: `fate ${fate}`, title: row.drop_reason || "" },
    fate === "dropped" && row.drop_reason ? `dropped (${row.drop_reason})` : fate,
  );
}

/** The flow's connection as an explanation query: replies are judged as
 * the connection they answer, so their ends and port are swapped. */
export function explainParams(row) {
  const reply = row.is_reply === true;
  return {
    from: endName(row, reply ? "dst" : "src"),
    to: endName(row, reply ? "src" : "dst"),
    port: String(reply ? row.src_port : row.dst_port),
    protocol: row.protocol,
    // The name the server was resolved from: domainNames rules read it.
    to_name: (reply ? row.src_dns_name : row.dst_dns_name) || undefined,
  };
}

export function hashFor(page, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const qs = q.toString();
  return `#/${page}${qs ? "?" + qs : ""}`;
}
