// The live flows table: newest first, refreshed without reloading, filters
// in the URL, and only the rows in view in the DOM so that tens of
// thousands of flows scroll smoothly. It lists connections (one row per
// connection and minute: both observation points and the replies folded)
// unless the person asks for every observation.

import * as api from "./api.js";
import {
  endName, explainParams, fateBadge, fill, fmtBytes, fmtCount, fmtTime, h, hashFor, list,
  mismatchBadge, verdictBadge,
} from "./dom.js";

const ROW_HEIGHT = 30;
/** Extra rows rendered above and below the visible ones. */
const OVERSCAN = 12;
const REFRESH_MS = 2000;
/** What a row is: `show=connections` (the default) or `show=observations`. */
const SHOW = { connections: { path: "connections", noun: "connection" }, observations: { path: "flows", noun: "observation" } };
const FILTERS = ["namespace", "pod", "from", "to", "policy", "verdict", "port", "mismatch", "since", "until", "limit"];
const COLUMNS = ["Time", "Source", "Destination", "Port", "Packets", "Bytes", "Kernel", "Verdict", "Policies", ""];

export function mount(root, params, ctx) {
  const state = { params: { since: "1h", limit: "1000", ...params }, rows: [], timer: null, live: true, stopped: false, busy: false };
  const status = h("span", { class: "muted", id: "flows-status" }, "loading…");
  const liveButton = h("button", { type: "button", id: "live-toggle", onclick: toggleLive }, "Pause");
  const body = h("div", { class: "vt-body", id: "flows-body" });
  const spacer = h("div", { class: "vt-spacer" });
  body.append(spacer);
  body.addEventListener("scroll", () => renderRows());
  window.addEventListener("resize", renderRows);

  const form = filterForm(state.params, (next) => {
    state.params = next;
    ctx.setParams("flows", next);
    state.rows = [];
    body.scrollTop = 0;
    refresh();
  });

  fill(
    root,
    h("section", { class: "toolbar" }, form),
    chips(),
    h("div", { class: "statusline" }, status, liveButton),
    h(
      "div",
      { class: "vt", role: "table", "aria-label": "flows" },
      h("div", { class: "vt-head flow-grid", role: "row" }, COLUMNS.map((c) => h("div", { role: "columnheader" }, c))),
      body,
    ),
  );

  function chips() {
    // Filters that come from other pages (map edges, policies) and have no
    // form field: shown so the person knows the table is narrowed.
    const extra = ["from", "to", "policy"].filter((k) => state.params[k]);
    if (!extra.length) return null;
    return h(
      "div",
      { class: "chips" },
      extra.map((k) =>
        h("span", { class: "chip" }, `${k}: ${state.params[k]} `,
          h("button", { type: "button", "aria-label": `remove ${k}`, onclick: () => {
            const next = { ...state.params };
            delete next[k];
            location.hash = hashFor("flows", next);
          } }, "×"))),
    );
  }

  function toggleLive() {
    state.live = !state.live;
    liveButton.textContent = state.live ? "Pause" : "Resume";
    if (state.live) refresh();
    else clearTimeout(state.timer);
    showStatus();
  }

  function showStatus(extra = "") {
    const n = state.rows.length;
    fill(
      status,
      h("span", { class: state.live ? "live on" : "live" }, state.live ? "● live" : "❚❚ paused"),
      ` · ${fmtCount(n)} ${show(state.params).noun}${n === 1 ? "" : "s"}`,
      n >= Number(state.params.limit || 0) ? ` (newest ${fmtCount(n)}; raise the limit or narrow the filters for more)` : "",
      extra,
    );
  }

  async function refresh() {
    clearTimeout(state.timer);
    if (state.stopped || state.busy) return;
    state.busy = true;
    const started = performance.now();
    let wait = REFRESH_MS;
    try {
      const what = show(state.params);
      const answer = await api.get(what.path, query(state.params));
      if (state.stopped) return;
      state.rows = answer[what.path];
      ctx.clearError();
      renderRows(true);
      showStatus(` · updated ${new Date().toLocaleTimeString()}`);
      // A slow answer (a big limit) makes the next refresh wait longer.
      wait = Math.max(REFRESH_MS, 3 * (performance.now() - started));
    } catch (e) {
      ctx.showError(e);
      showStatus(" · refresh failed");
      wait = 5000;
    } finally {
      state.busy = false;
    }
    if (state.live && !state.stopped) state.timer = setTimeout(refresh, wait);
  }

  function renderRows() {
    const rows = state.rows;
    spacer.style.height = `${rows.length * ROW_HEIGHT}px`;
    const first = Math.max(0, Math.floor(body.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((body.scrollTop + body.clientHeight) / ROW_HEIGHT) + OVERSCAN);
    const nodes = [];
    for (let i = first; i < last; i++) nodes.push(rowNode(rows[i], i));
    spacer.replaceChildren(...nodes);
    if (!rows.length) spacer.replaceChildren(h("div", { class: "empty" }, "No flows match these filters in this time range."));
  }

  refresh();
  return () => {
    state.stopped = true;
    clearTimeout(state.timer);
    window.removeEventListener("resize", renderRows);
  };
}

function show(params) {
  return SHOW[params.show] || SHOW.connections;
}

function query(params) {
  const q = {};
  for (const k of FILTERS) if (params[k]) q[k] = params[k];
  if (q.since === "all") delete q.since;
  return q;
}

function rowNode(r, i) {
  const policies = r.verdict === "denied" ? list(r.denied_by) : list(r.allowed_by);
  const port = r.protocol === "ICMP" || r.protocol === "ICMPv6" ? `${r.protocol} ${r.dst_port}` : `${r.dst_port}/${r.protocol}`;
  return h(
    "a",
    {
      class: `vt-row flow-grid flow-row ${r.verdict}${r.enforcement_mismatch ? " mismatched" : ""}`,
      role: "row",
      style: `top:${i * ROW_HEIGHT}px`,
      href: hashFor("why", explainParams(r)),
      title: "Why? Open the policy explanation of this connection",
    },
    h("div", { class: "mono" }, fmtTime(r.time)),
    h("div", { class: "end", title: r.src_ip }, endName(r, "src"), r.is_reply ? h("span", { class: "muted" }, " (reply)") : null),
    h("div", { class: "end", title: r.dst_ip }, endName(r, "dst")),
    h("div", { class: "mono" }, port),
    h("div", { class: "num", title: r.packets_delivered === undefined ? "" : `${fmtCount(r.packets_delivered)} delivered, ${fmtCount(r.reply_packets)} in replies` }, fmtCount(r.packets ?? r.packets_sent)),
    h("div", { class: "num" }, fmtBytes(r.bytes ?? r.bytes_sent)),
    h("div", {}, fateBadge(r)),
    h("div", {}, verdictBadge(r.verdict)),
    h("div", { class: "policies", title: policies.join(", ") }, policies.join(", ")),
    h("div", {}, mismatchBadge(r)),
  );
}

function filterForm(params, apply) {
  const field = (name, label, input) => h("label", {}, h("span", {}, label), input);
  const text = (name, placeholder) => h("input", { name, value: params[name] || "", placeholder, size: 14 });
  const select = (name, options) =>
    h("select", { name }, options.map(([v, l]) => h("option", { value: v, selected: (params[name] || "") === v }, l)));
  const form = h(
    "form",
    { class: "filters", id: "flow-filters" },
    field("namespace", "Namespace", text("namespace", "any")),
    field("pod", "Pod", text("pod", "ns/pod or name")),
    field("verdict", "Verdict", select("verdict", [["", "any"], ["allowed", "allowed"], ["denied", "denied"]])),
    field("port", "Port", h("input", { name: "port", value: params.port || "", placeholder: "any", type: "number", min: 0, max: 65535, style: "width:6em" })),
    field("mismatch", "Mismatch", select("mismatch", [["", "any"], ["true", "only mismatches"], ["false", "no mismatch"]])),
    field("since", "Since", select("since", [["5m", "5 min"], ["15m", "15 min"], ["1h", "1 hour"], ["6h", "6 hours"], ["24h", "24 hours"], ["7d", "7 days"], ["all", "all time"]])),
    field("until", "Until", text("until", "now (or 10m ago: 10m)")),
    field("show", "Rows are", select("show", [["connections", "connections"], ["observations", "observations"]])),
    field("limit", "Rows", select("limit", [["1000", "1,000"], ["10000", "10,000"], ["50000", "50,000"]])),
    h("button", { type: "submit" }, "Apply"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = { ...params };
    for (const [k, v] of new FormData(form).entries()) {
      if (String(v).trim()) next[k] = String(v).trim();
      else delete next[k];
    }
    apply(next);
  });
  // Selects apply at once: fewer clicks.
  for (const s of form.querySelectorAll("select")) s.addEventListener("change", () => form.requestSubmit());
  return form;
}
