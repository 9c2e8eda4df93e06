// The traffic map: namespaces as columns, workloads as nodes, observed
// connections as edges coloured by verdict (allowed, denied, mismatch) with
// their flow counts. Clicking an edge opens those flows.

import * as api from "./api.js";
import { fill, fmtCount, h, hashFor } from "./dom.js";

const COL_W = 260;
const ROW_H = 84;
const TOP = 56;
/** External addresses shown one by one; the rest share one node. */
const MAX_EXTERNAL = 12;
const EXTERNAL = "external";

export function mount(root, params, ctx) {
  const since = params.since || "1h";
  const picker = h(
    "select",
    { name: "since", id: "map-since" },
    [["15m", "15 min"], ["1h", "1 hour"], ["6h", "6 hours"], ["24h", "24 hours"], ["7d", "7 days"], ["all", "all time"]].map(([v, l]) =>
      h("option", { value: v, selected: v === since }, l),
    ),
  );
  picker.addEventListener("change", () => {
    location.hash = hashFor("map", { since: picker.value });
  });
  const canvas = h("div", { class: "map", id: "map" }, h("p", { class: "muted" }, "Loading…"));
  fill(
    root,
    h(
      "section",
      { class: "toolbar" },
      h("label", {}, h("span", {}, "Since"), picker),
      h(
        "span",
        { class: "legend" },
        h("span", { class: "swatch allowed" }), "allowed ",
        h("span", { class: "swatch denied" }), "denied ",
        h("span", { class: "swatch mismatch" }), "mismatch (kernel disagrees with the policies)",
      ),
    ),
    canvas,
  );
  draw(canvas, since, ctx);
}

async function draw(canvas, since, ctx) {
  const where = [api.sinceClause(since), "NOT is_reply"].filter(Boolean).join(" AND ");
  const text = `SELECT
      src_namespace, COALESCE(src_workload, src_pod) AS src_name, src_ip,
      dst_namespace, COALESCE(dst_workload, dst_pod) AS dst_name, dst_ip,
      verdict, enforcement_mismatch, count(*) AS flows, sum(packets) AS packets
    FROM flows WHERE ${where}
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8`;
  let answer;
  try {
    answer = await api.sql(text);
  } catch (e) {
    ctx.showError(e);
    fill(canvas, h("p", { class: "error-inline" }, e.message));
    return;
  }
  const graph = build(answer.rows);
  if (!graph.edges.length) {
    fill(canvas, h("p", { class: "empty" }, "No traffic observed in this time range."));
    return;
  }
  fill(canvas, render(graph, since));
}

/** Rows → nodes (namespace/workload or external address) and edges per (src, dst, kind). */
function build(rows) {
  const externalTotals = new Map();
  for (const r of rows) {
    for (const side of ["src", "dst"]) {
      if (!r[`${side}_namespace`]) {
        const ip = r[`${side}_ip`];
        externalTotals.set(ip, (externalTotals.get(ip) || 0) + Number(r.flows));
      }
    }
  }
  const externalNode = externalGrouping(externalTotals);
  const end = (r, side) => {
    const ns = r[`${side}_namespace`];
    if (ns) return { ns, name: r[`${side}_name`], filter: `${ns}/${r[`${side}_name`]}` };
    const { name, filter } = externalNode(r[`${side}_ip`]);
    return { ns: EXTERNAL, name, filter };
  };
  const nodes = new Map();
  const edges = new Map();
  for (const r of rows) {
    const s = end(r, "src");
    const d = end(r, "dst");
    for (const n of [s, d]) nodes.set(`${n.ns}/${n.name}`, n);
    const kind = r.enforcement_mismatch ? "mismatch" : r.verdict;
    const key = `${s.ns}/${s.name}→${d.ns}/${d.name}→${kind}`;
    const e = edges.get(key) || { src: `${s.ns}/${s.name}`, dst: `${d.ns}/${d.name}`, from: s.filter, to: d.filter, kind, verdict: r.verdict, flows: 0, packets: 0 };
    e.flows += Number(r.flows);
    e.packets += Number(r.packets);
    edges.set(key, e);
  }
  return { nodes, edges: [...edges.values()] };
}

/** Few external addresses are shown one by one; many are grouped by IPv4
 * /24 (the flows page filters on such a prefix), the smallest groups and
 * IPv6 addresses beyond the limit sharing one "other addresses" node. */
function externalGrouping(totals) {
  const other = { name: "other addresses", filter: "" };
  if (totals.size <= MAX_EXTERNAL) return (ip) => ({ name: ip, filter: ip });
  const net = (ip) => (ip.includes(".") ? `${ip.split(".").slice(0, 3).join(".")}.0/24` : null);
  const groups = new Map();
  for (const [ip, n] of totals) {
    const g = net(ip);
    if (g) groups.set(g, (groups.get(g) || 0) + n);
  }
  const keep = new Set([...groups.entries()].sort((a, b) => b[1] - a[1]).slice(0, MAX_EXTERNAL - 1).map(([g]) => g));
  return (ip) => {
    const g = net(ip);
    return g && keep.has(g) ? { name: g, filter: g } : other;
  };
}

function render(graph, since) {
  const namespaces = [...new Set([...graph.nodes.values()].map((n) => n.ns))].sort((a, b) =>
    a === EXTERNAL ? 1 : b === EXTERNAL ? -1 : a.localeCompare(b),
  );
  const pos = new Map();
  let rowsMax = 0;
  namespaces.forEach((ns, col) => {
    const members = [...graph.nodes.values()].filter((n) => n.ns === ns).sort((a, b) => a.name.localeCompare(b.name));
    rowsMax = Math.max(rowsMax, members.length);
    members.forEach((n, row) => pos.set(`${n.ns}/${n.name}`, { x: col * COL_W + COL_W / 2, y: TOP + row * ROW_H + ROW_H / 2 }));
  });
  const width = Math.max(namespaces.length * COL_W, 600);
  const height = TOP + rowsMax * ROW_H + 30;
  const maxFlows = Math.max(...graph.edges.map((e) => e.flows));

  // Several edges between the same two nodes (allowed and denied) are bent
  // apart so each stays visible and clickable.
  const pairCount = new Map();
  const edgeNodes = graph.edges.map((e) => {
    const pair = [e.src, e.dst].sort().join("|");
    const nth = pairCount.get(pair) || 0;
    pairCount.set(pair, nth + 1);
    const a = pos.get(e.src);
    const b = pos.get(e.dst);
    const bend = 40 + nth * 28;
    let d;
    let mid;
    if (e.src === e.dst) {
      d = `M ${a.x + 14} ${a.y - 8} C ${a.x + 70 + nth * 20} ${a.y - 50}, ${a.x + 70 + nth * 20} ${a.y + 50}, ${a.x + 14} ${a.y + 8}`;
      mid = { x: a.x + 58 + nth * 15, y: a.y };
    } else {
      const mx = (a.x + b.x) / 2;
      const my = (a.y + b.y) / 2;
      const dx = b.x - a.x;
      const dy = b.y - a.y;
      const len = Math.hypot(dx, dy) || 1;
      const cx = mx - (dy / len) * bend;
      const cy = my + (dx / len) * bend;
      d = `M ${a.x} ${a.y} Q ${cx} ${cy} ${b.x} ${b.y}`;
      mid = { x: (a.x + 2 * cx + b.x) / 4, y: (a.y + 2 * cy + b.y) / 4 };
    }
    const widthPx = 1.5 + 4 * Math.log1p(e.flows) / Math.log1p(maxFlows);
    const filters = { from: e.from, to: e.to, since, verdict: e.verdict, mismatch: e.kind === "mismatch" ? "true" : "" };
    const title = `${e.src} → ${e.dst}: ${fmtCount(e.flows)} ${e.kind} flow${e.flows === 1 ? "" : "s"}, ${fmtCount(e.packets)} packets — click to see them`;
    const open = () => {
      location.hash = hashFor("flows", filters);
    };
    return h(
      "g",
      { class: `edge ${e.kind}`, dataset: { src: e.src, dst: e.dst, kind: e.kind, flows: String(e.flows) }, onclick: open },
      h("title", {}, title),
      h("path", { class: "edge-hit", d }),
      h("path", { class: "edge-line", d, "stroke-width": widthPx.toFixed(1), "marker-end": `url(#arrow-${e.kind})` }),
      h("text", { class: "edge-label", x: mid.x, y: mid.y }, fmtCount(e.flows)),
    );
  });

  const columns = namespaces.map((ns, col) =>
    h(
      "g",
      { class: "ns" },
      h("rect", { x: col * COL_W + 8, y: 8, width: COL_W - 16, height: height - 16, rx: 10 }),
      h("text", { class: "ns-label", x: col * COL_W + COL_W / 2, y: 32 }, ns === EXTERNAL ? "outside the cluster" : `namespace ${ns}`),
    ),
  );
  const nodes = [...graph.nodes.values()].map((n) => {
    const p = pos.get(`${n.ns}/${n.name}`);
    return h(
      "g",
      { class: `node${n.ns === EXTERNAL ? " external" : ""}`, dataset: { node: `${n.ns}/${n.name}` } },
      h("circle", { cx: p.x, cy: p.y, r: 12 }),
      h("text", { x: p.x, y: p.y + 27 }, n.name),
    );
  });
  const markers = ["allowed", "denied", "mismatch"].map((k) =>
    h(
      "marker",
      { id: `arrow-${k}`, viewBox: "0 0 10 10", refX: 22, refY: 5, markerWidth: 10, markerHeight: 10, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
      h("path", { d: "M 0 0 L 10 5 L 0 10 z", class: `arrowhead ${k}` }),
    ),
  );
  return h(
    "svg",
    { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "traffic map" },
    h("defs", {}, markers),
    columns,
    h("g", { class: "edges" }, edgeNodes),
    nodes,
  );
}
