// The traffic map, by levels: one node per namespace; click a namespace to
// see its workloads, a workload to see its pods. Edges are connections
// (GET /api/v1/map), counted allowed / denied / mismatched, thicker with
// more connections. What matters first: on a big map only the edges with
// denials or mismatches, the top ones ranked in a list beside the drawing
// ("N more" for the rest), and a search that focuses a node and its edges.
// Nodes sit in fixed cells with their labels cut to the cell, so no label
// overlaps another; the full name is in the tooltip.

import * as api from "./api.js";
import { fill, fmtBytes, fmtCount, h, hashFor } from "./dom.js";

const CELL_W = 150;
const CELL_H = 78;
const COLS = 6;
const BAND_HEAD = 30;
const GAP = 14;
/** More edges than this: only denials and mismatches unless asked. */
const BUSY = 50;
/** Edges drawn and listed at first; "N more" adds as many again. */
const TOP = 30;
const LABEL_CHARS = 19;

export function mount(root, params, ctx) {
  const state = { params: { since: "1h", ...params }, answer: null, shown: Number(params.top) || TOP };
  const picker = h(
    "select",
    { name: "since", id: "map-since" },
    [["15m", "15 min"], ["1h", "1 hour"], ["6h", "6 hours"], ["24h", "24 hours"], ["7d", "7 days"], ["all", "all time"]].map(([v, l]) =>
      h("option", { value: v, selected: v === state.params.since }, l),
    ),
  );
  picker.addEventListener("change", () => go({ ...state.params, since: picker.value }));
  const only = h("input", { type: "checkbox", id: "map-only" });
  only.addEventListener("change", () => {
    state.params.only = only.checked ? "problems" : "all";
    ctx.setParams("map", state.params);
    show();
  });
  const search = h("input", { type: "search", id: "map-search", placeholder: "namespace or ns/workload", value: state.params.q || "", size: 24 });
  search.addEventListener("input", () => {
    state.params.q = search.value.trim();
    ctx.setParams("map", state.params);
    show();
  });
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") expandFor(search.value.trim());
  });
  const status = h("span", { class: "muted", id: "map-status" }, "loading…");
  const canvas = h("div", { class: "map", id: "map" }, h("p", { class: "muted" }, "Loading…"));
  const side = h("aside", { class: "map-edges", id: "map-edges" });
  fill(
    root,
    h(
      "section",
      { class: "toolbar" },
      h("label", {}, h("span", {}, "Since"), picker),
      h("label", {}, h("span", {}, "Find"), search),
      h("label", { class: "inline" }, only, h("span", {}, "only denials and mismatches")),
      h(
        "span",
        { class: "legend" },
        h("span", { class: "swatch allowed" }), "allowed ",
        h("span", { class: "swatch denied" }), "denied ",
        h("span", { class: "swatch mismatch" }), "mismatch (kernel disagrees with the policies)",
      ),
    ),
    h("div", { class: "statusline" }, crumbs(state.params), status),
    h("div", { class: "map-layout" }, canvas, side),
  );
  load();

  function go(next) {
    location.hash = hashFor("map", next);
  }

  /** Enter in the search: `ns` or `ns/workload` opens that level. */
  function expandFor(text) {
    if (!text || !state.answer) return;
    const [ns, workload] = text.split("/");
    if (!state.answer.nodes.has(ns) && !state.answer.nodes.has(text)) return;
    const next = { ...state.params, ns, q: text };
    if (workload && state.answer.nodes.get(text)?.kind === "workload") next.workload = workload;
    else delete next.workload;
    if (next.ns !== state.params.ns || next.workload !== state.params.workload) go(next);
  }

  async function load() {
    const p = state.params;
    const query = { since: p.since === "all" ? "" : p.since };
    if (p.ns && p.workload) Object.assign(query, { level: "pod", namespace: p.ns, workload: p.workload });
    else if (p.ns) Object.assign(query, { level: "workload", namespace: p.ns });
    const started = performance.now();
    let answer;
    try {
      answer = await api.get("map", query);
    } catch (e) {
      ctx.showError(e);
      fill(canvas, h("p", { class: "error-inline" }, e.message));
      fill(status, "failed");
      return;
    }
    const fetched = performance.now();
    state.answer = graph(answer.edges);
    state.timing = { query_ms: fetched - started, server_ms: answer.query_ms, truncated: answer.truncated };
    if (!("only" in p)) only.checked = state.answer.edges.length > BUSY;
    else only.checked = p.only === "problems";
    show();
  }

  function show() {
    const started = performance.now();
    const g = state.answer;
    if (!g) return;
    if (!g.edges.length) {
      fill(canvas, h("p", { class: "empty" }, "No traffic observed in this time range."));
      fill(side);
      fill(status, "no connections");
      return;
    }
    const q = (state.params.q || "").toLowerCase();
    const hits = new Set([...g.nodes.keys()].filter((id) => q && id.toLowerCase().includes(q)));
    let edges = g.edges;
    // With the toggle, problems first (the list answers "where are the
    // denials"); without it, the most connections first.
    if (only.checked) edges = edges.filter((e) => e.denied || e.mismatched).sort((a, b) => b.mismatched + b.denied - (a.mismatched + a.denied) || b.connections - a.connections);
    if (hits.size) edges = edges.filter((e) => hits.has(e.src) || hits.has(e.dst));
    const top = edges.slice(0, state.shown);
    const layout = place(g, top, state.params);
    fill(canvas, drawing(g, layout, top, hits, state.params));
    fill(side, edgeList(top, edges.length, state.params, () => {
      state.shown += TOP;
      state.params.top = String(state.shown);
      ctx.setParams("map", state.params);
      show();
    }));
    const focus = canvas.querySelector("g.node.hit");
    if (focus) focus.scrollIntoView({ block: "nearest", inline: "nearest" });
    const render = performance.now() - started;
    state.timing.render_ms = render;
    window.__mapTimings = { ...state.timing };
    fill(
      status,
      `${fmtCount(g.edges.length)} edges between ${fmtCount(g.nodes.size)} nodes`,
      only.checked ? ` · ${fmtCount(edges.length)} with denials or mismatches` : "",
      ` · data ${Math.round(state.timing.query_ms)} ms (query ${Math.round(state.timing.server_ms)} ms) · drawn in ${Math.round(render)} ms`,
      state.timing.truncated ? " · truncated at the row limit" : "",
    );
  }
}

/** Where you are: all namespaces › namespace › workload, each a link up. */
function crumbs(p) {
  const up = (extra) => hashFor("map", { since: p.since, only: p.only, ...extra });
  return h(
    "nav",
    { class: "crumbs", id: "map-crumbs" },
    p.ns ? h("a", { href: up({}) }, "all namespaces") : h("b", {}, "all namespaces"),
    p.ns ? [" › ", p.workload ? h("a", { href: up({ ns: p.ns }) }, p.ns) : h("b", {}, p.ns)] : null,
    p.workload ? [" › ", h("b", {}, p.workload)] : null,
    " ",
  );
}

/** Edge rows → nodes (id → kind, namespace) and edges with their worst kind. */
function graph(rows) {
  const nodes = new Map();
  const edges = rows.map((r) => {
    for (const s of ["src", "dst"]) {
      if (!nodes.has(r[s])) nodes.set(r[s], { id: r[s], kind: r[`${s}_kind`] });
    }
    const e = {
      src: r.src,
      dst: r.dst,
      connections: Number(r.connections),
      allowed: Number(r.allowed),
      denied: Number(r.denied),
      mismatched: Number(r.mismatched),
      bytes: Number(r.bytes_sent || 0),
    };
    e.kind = e.mismatched ? "mismatch" : e.denied ? "denied" : "allowed";
    return e;
  });
  // The server's order: most connections first.
  return { nodes, edges };
}

const OUTSIDE = new Set(["network", "dns_name"]);

/** Bands of cells: the expanded workload's pods, the expanded namespace's
 * workloads, the other namespaces, then the addresses outside the cluster
 * that the drawn edges reach (there may be thousands). */
function place(g, edges, p) {
  const reached = new Set(edges.flatMap((e) => [e.src, e.dst]));
  const bands = [
    { key: "pods", title: p.workload ? `pods of ${p.ns}/${p.workload} (click the band title to close)` : "", members: [] },
    { key: "workloads", title: p.ns ? `workloads of namespace ${p.ns} (click a workload for its pods)` : "", members: [] },
    { key: "namespaces", title: "namespaces (click one for its workloads)", members: [] },
    { key: "outside", title: "outside the cluster: by DNS name where known, else by /24", members: [] },
  ];
  const band = { pod: bands[0], workload: bands[1], namespace: bands[2] };
  for (const n of g.nodes.values()) {
    if (!OUTSIDE.has(n.kind)) band[n.kind].members.push(n);
    else if (reached.has(n.id)) bands[3].members.push(n);
  }
  const pos = new Map();
  const boxes = [];
  let y = GAP;
  for (const b of bands) {
    if (!b.members.length) continue;
    b.members.sort((a, c) => a.id.localeCompare(c.id));
    const rows = Math.ceil(b.members.length / COLS);
    boxes.push({ ...b, y, height: BAND_HEAD + rows * CELL_H });
    b.members.forEach((n, i) => {
      pos.set(n.id, { x: GAP + (i % COLS) * CELL_W + CELL_W / 2, y: y + BAND_HEAD + Math.floor(i / COLS) * CELL_H + CELL_H / 2 - 8 });
    });
    y += BAND_HEAD + rows * CELL_H + GAP;
  }
  return { pos, boxes, width: 2 * GAP + COLS * CELL_W, height: y };
}

function shortLabel(n) {
  let text = n.id;
  if (n.kind === "workload" || n.kind === "pod") text = text.slice(text.indexOf("/") + 1);
  return text.length > LABEL_CHARS ? `${text.slice(0, LABEL_CHARS - 1)}…` : text;
}

function drawing(g, layout, edges, hits, p) {
  const { pos, boxes, width, height } = layout;
  const max = Math.max(1, ...edges.map((e) => e.connections));
  const bandNodes = boxes.map((b) =>
    h(
      "g",
      { class: `band ${b.key}`, dataset: { band: b.key } },
      h("rect", { x: GAP / 2, y: b.y - GAP / 2, width: width - GAP, height: b.height + GAP / 2, rx: 10 }),
      h(
        "text",
        {
          class: "band-label",
          x: GAP,
          y: b.y + 12,
          onclick: b.key === "pods" ? () => (location.hash = hashFor("map", { ...p, workload: "" })) : b.key === "workloads" ? () => (location.hash = hashFor("map", { ...p, ns: "", workload: "" })) : null,
        },
        b.title,
      ),
    ),
  );
  const pairs = new Map();
  const lines = edges.map((e) => {
    const pair = [e.src, e.dst].sort().join("|");
    const nth = pairs.get(pair) || 0;
    pairs.set(pair, nth + 1);
    const d = curve(pos.get(e.src), pos.get(e.dst), nth, e.src === e.dst);
    const widthPx = 1.5 + (6.5 * Math.log1p(e.connections)) / Math.log1p(max);
    const lit = hits.size && (hits.has(e.src) || hits.has(e.dst));
    return h(
      "g",
      { class: `edge ${e.kind}${lit ? " lit" : ""}`, dataset: { src: e.src, dst: e.dst, kind: e.kind, connections: String(e.connections) }, onclick: () => (location.hash = flowsLink(e, p)) },
      h("title", {}, edgeTitle(e)),
      h("path", { class: "edge-hit", d }),
      h("path", { class: "edge-line", d, "stroke-width": widthPx.toFixed(1), "marker-end": `url(#arrow-${e.kind})` }),
    );
  });
  const nodes = [...g.nodes.values()].filter((n) => pos.has(n.id)).map((n) => {
    const at = pos.get(n.id);
    const expand = nodeAction(n, p);
    return h(
      "g",
      { class: `node ${n.kind}${hits.has(n.id) ? " hit" : ""}${expand ? " expandable" : ""}`, dataset: { node: n.id, kind: n.kind }, onclick: expand },
      h("title", {}, `${n.kind.replace("_", " ")} ${n.id}${expand ? " — click to open" : ""}`),
      h("circle", { cx: at.x, cy: at.y, r: n.kind === "namespace" ? 14 : 11 }),
      h("text", { x: at.x, y: at.y + 28 }, shortLabel(n)),
    );
  });
  const markers = ["allowed", "denied", "mismatch"].map((k) =>
    h(
      "marker",
      { id: `arrow-${k}`, viewBox: "0 0 10 10", refX: 24, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
      h("path", { d: "M 0 0 L 10 5 L 0 10 z", class: `arrowhead ${k}` }),
    ),
  );
  return h(
    "svg",
    { class: hits.size ? "searching" : "", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "traffic map" },
    h("defs", {}, markers),
    bandNodes,
    h("g", { class: "edges" }, lines),
    nodes,
  );
}

/** Clicking a namespace opens its workloads; a workload, its pods. */
function nodeAction(n, p) {
  if (n.kind === "namespace") return () => (location.hash = hashFor("map", { since: p.since, only: p.only, ns: n.id }));
  if (n.kind === "workload") {
    const [ns, workload] = n.id.split("/");
    return () => (location.hash = hashFor("map", { since: p.since, only: p.only, ns, workload }));
  }
  return null;
}

function curve(a, b, nth, self) {
  if (self) {
    const r = 26 + nth * 8;
    return `M ${a.x - 8} ${a.y - 12} C ${a.x - r} ${a.y - 2.4 * r}, ${a.x + r} ${a.y - 2.4 * r}, ${a.x + 8} ${a.y - 12}`;
  }
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  const len = Math.hypot(dx, dy) || 1;
  // Bent to one side by direction, so a→b and b→a stay apart.
  const bend = Math.min(60, 18 + len / 8) + nth * 14;
  const cx = (a.x + b.x) / 2 - (dy / len) * bend;
  const cy = (a.y + b.y) / 2 + (dx / len) * bend;
  return `M ${a.x} ${a.y} Q ${cx} ${cy} ${b.x} ${b.y}`;
}

function edgeTitle(e) {
  return `${e.src} → ${e.dst}: ${fmtCount(e.connections)} connection${e.connections === 1 ? "" : "s"} (${fmtCount(e.allowed)} allowed, ${fmtCount(e.denied)} denied, ${fmtCount(e.mismatched)} mismatched), ${fmtBytes(e.bytes)} sent — click to see them`;
}

/** The flows page filtered to an edge's connections, the worst kind first. */
function flowsLink(e, p) {
  return hashFor("flows", {
    from: e.src,
    to: e.dst,
    since: p.since,
    verdict: e.kind === "denied" ? "denied" : "",
    mismatch: e.kind === "mismatch" ? "true" : "",
  });
}

function edgeList(edges, total, p, more) {
  if (!edges.length) return h("p", { class: "empty" }, "No edge matches.");
  const count = (n, kind) => (n ? h("span", { class: `count ${kind}` }, `${fmtCount(n)} ${kind}`) : null);
  return [
    h("h3", {}, `Top ${fmtCount(edges.length)} of ${fmtCount(total)} edges`),
    h(
      "ol",
      { class: "edge-list" },
      edges.map((e) =>
        h(
          "li",
          { class: `edge-item ${e.kind}`, dataset: { src: e.src, dst: e.dst, kind: e.kind } },
          h("a", { href: flowsLink(e, p), title: edgeTitle(e) }, h("span", { class: "ends" }, `${e.src} → ${e.dst}`)),
          h("span", { class: "counts" }, `${fmtCount(e.connections)} conn. `, count(e.denied, "denied"), " ", count(e.mismatched, "mismatched")),
        ),
      ),
    ),
    total > edges.length ? h("button", { type: "button", id: "map-more", onclick: more }, `${fmtCount(total - edges.length)} more`) : null,
  ];
}
