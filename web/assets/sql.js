// The SQL console: read-only SQL against the collector, with ready-made
// questions. The query is kept in the URL so a result can be shared.

import * as api from "./api.js";
import { fill, fmtCount, h } from "./dom.js";

/** Rows rendered at most; the count says when there were more. */
const MAX_RENDERED = 2000;

export const PRESETS = [
  {
    name: "Top denied pairs",
    sql: `SELECT src_namespace, src_pod, dst_namespace, dst_pod, dst_port, protocol,
       count(*) AS flows, sum(packets) AS packets, max(time) AS last_seen
FROM flows
WHERE verdict = 'denied' AND NOT is_reply AND time > now() - INTERVAL '1 hour'
GROUP BY 1, 2, 3, 4, 5, 6
ORDER BY flows DESC
LIMIT 20`,
  },
  {
    name: "Enforcement mismatches",
    sql: `SELECT time, src_namespace, src_pod, dst_namespace, dst_pod, dst_ip, dst_port, protocol,
       verdict, kernel_fate, drop_reason, allowed_by, denied_by
FROM flows
WHERE enforcement_mismatch
ORDER BY time DESC
LIMIT 100`,
  },
  {
    name: "Traffic to external IPs",
    sql: `SELECT src_namespace, src_pod, dst_ip, dst_port, protocol, verdict,
       count(*) AS flows, sum(bytes) AS bytes
FROM flows
WHERE dst_namespace IS NULL AND NOT is_reply
GROUP BY 1, 2, 3, 4, 5, 6
ORDER BY bytes DESC
LIMIT 50`,
  },
  {
    name: "Top talkers by namespace pair",
    sql: `SELECT src_namespace, dst_namespace, verdict, count(*) AS flows, sum(bytes) AS bytes
FROM flows
WHERE time > now() - INTERVAL '1 hour'
GROUP BY 1, 2, 3
ORDER BY bytes DESC
LIMIT 20`,
  },
  {
    name: "Pods and their labels",
    sql: `SELECT namespace, name, ips, node, workload_kind, workload, labels FROM pods ORDER BY namespace, name`,
  },
];

export function mount(root, params, ctx) {
  const editor = h("textarea", { id: "sql-text", spellcheck: "false", rows: 8 }, params.q || PRESETS[0].sql);
  const output = h("div", { id: "sql-result" });
  const status = h("span", { class: "muted", id: "sql-status" });
  const run = async () => {
    const text = editor.value.trim();
    if (!text) return;
    ctx.setParams("sql", { q: text });
    fill(status, "running…");
    const started = performance.now();
    try {
      const answer = await api.sql(text);
      ctx.clearError();
      const ms = performance.now() - started;
      fill(
        status,
        `${fmtCount(answer.rows.length)} row${answer.rows.length === 1 ? "" : "s"} in ${ms.toFixed(0)} ms`,
        answer.truncated ? " — truncated by the server's row limit" : "",
      );
      fill(output, table(answer));
    } catch (e) {
      ctx.showError(e);
      fill(status, "failed");
      fill(output, h("pre", { class: "error-inline" }, e.message));
    }
  };
  editor.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      run();
    }
  });
  fill(
    root,
    h(
      "section",
      { class: "presets" },
      h("span", { class: "muted" }, "Ready-made: "),
      PRESETS.map((p) =>
        h("button", { type: "button", class: "preset", onclick: () => {
          editor.value = p.sql;
          run();
        } }, p.name)),
    ),
    editor,
    h(
      "div",
      { class: "statusline" },
      h("button", { type: "button", id: "sql-run", onclick: run }, "Run (Ctrl+Enter)"),
      status,
      h("span", { class: "muted" }, " Read-only: tables flows, pods, namespaces, policies."),
    ),
    output,
  );
  if (params.q) run();
}

function cell(v) {
  if (v === null || v === undefined) return h("span", { class: "null" }, "NULL");
  if (Array.isArray(v)) return v.join(", ");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function table(answer) {
  const rows = answer.rows.slice(0, MAX_RENDERED);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "grid", id: "sql-table" },
      h("thead", {}, h("tr", {}, answer.columns.map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, answer.columns.map((c) => h("td", {}, cell(r[c])))))),
    ),
    answer.rows.length > MAX_RENDERED
      ? h("p", { class: "muted" }, `Showing the first ${fmtCount(MAX_RENDERED)} of ${fmtCount(answer.rows.length)} rows.`)
      : null,
  );
}
