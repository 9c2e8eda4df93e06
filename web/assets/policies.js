// Every policy in force: first the cluster tiers (AdminNetworkPolicy,
// BaselineAdminNetworkPolicy, ClusterNetworkPolicy) in evaluation order, with
// how many connections each rule decided; then every NetworkPolicy: what it
// selects, its rules, and how many connections it allowed or denied in the
// chosen time range (each count opens them). Built for a thousand policies: search, a namespace filter, sorting (by
// denials first), only the rows in view in the DOM, and the selected pods
// as a count that opens the policy's detail beside the list. All of it in
// the URL.

import * as api from "./api.js";
import { fill, fmtCount, h, hashFor } from "./dom.js";

const ROW_HEIGHT = 58;
const OVERSCAN = 8;
const SORTS = [
  ["denied", "most denials"],
  ["allowed", "most allowed"],
  ["name", "namespace/name"],
  ["pods", "most pods"],
];

export function mount(root, params, ctx) {
  const state = { params: { since: "1h", sort: "denied", ...params }, all: [], shown: [], allowed: new Map(), denied: new Map() };
  const select = (name, id, options, value) =>
    h("select", { name, id }, options.map(([v, l]) => h("option", { value: v, selected: v === value }, l)));
  const picker = select("since", "policies-since", [["15m", "15 min"], ["1h", "1 hour"], ["6h", "6 hours"], ["24h", "24 hours"], ["7d", "7 days"], ["all", "all time"]], state.params.since);
  picker.addEventListener("change", () => {
    location.hash = hashFor("policies", { ...state.params, since: picker.value });
  });
  const search = h("input", { type: "search", id: "policies-search", placeholder: "name, namespace or pod", value: state.params.q || "", size: 24 });
  search.addEventListener("input", () => update({ q: search.value.trim() }));
  const nsSelect = select("ns", "policies-namespace", [["", "all namespaces"]], "");
  nsSelect.addEventListener("change", () => update({ ns: nsSelect.value }));
  const sort = select("sort", "policies-sort", SORTS, state.params.sort);
  sort.addEventListener("change", () => update({ sort: sort.value }));
  const status = h("span", { class: "muted", id: "policies-status" }, "loading…");
  const body = h("div", { class: "vt-body", id: "policy-list" });
  const spacer = h("div", { class: "vt-spacer" });
  body.append(spacer);
  body.addEventListener("scroll", () => renderRows());
  window.addEventListener("resize", renderRows);
  const tierSection = h("div", { id: "cluster-policies-slot" });
  const detail = h("aside", { class: "policy-detail", id: "policy-detail" }, h("p", { class: "muted" }, "Click a policy's pods to see them here."));
  fill(
    root,
    h(
      "section",
      { class: "toolbar" },
      h("label", {}, h("span", {}, "Connections since"), picker),
      h("label", {}, h("span", {}, "Find"), search),
      h("label", {}, h("span", {}, "Namespace"), nsSelect),
      h("label", {}, h("span", {}, "Sort by"), sort),
    ),
    tierSection,
    h("div", { class: "statusline" }, status),
    h("div", { class: "policy-layout" }, h("div", { class: "vt", role: "list", "aria-label": "policies" }, body), detail),
  );
  load();
  return () => window.removeEventListener("resize", renderRows);

  function update(change) {
    Object.assign(state.params, change);
    ctx.setParams("policies", state.params);
    apply();
  }

  async function load() {
    let policies;
    let decidedCounts;
    try {
      [policies, state.allowed, state.denied, decidedCounts] = await Promise.all([
        api.get("policies"),
        counts("allowed_by", state.params.since),
        counts("denied_by", state.params.since),
        counts("decided_by", state.params.since),
      ]);
    } catch (e) {
      ctx.showError(e);
      fill(spacer, h("p", { class: "error-inline" }, e.message));
      fill(status, "failed");
      return;
    }
    const tiers = policies.cluster_policies || [];
    fill(tierSection, tiers.length ? clusterPolicies(tiers, decidedCounts, policies.policies.length) : null);
    state.all = policies.policies.map((p) => {
      const id = `${p.namespace}/${p.name}`;
      return { ...p, id, allowed: state.allowed.get(id) || 0, denied: state.denied.get(id) || 0, text: [id, p.pod_selector, ...p.selected_pods].join(" ").toLowerCase() };
    });
    const namespaces = [...new Set(state.all.map((p) => p.namespace))].sort();
    fill(nsSelect, h("option", { value: "" }, "all namespaces"), namespaces.map((n) => h("option", { value: n, selected: n === state.params.ns }, n)));
    apply();
  }

  function apply() {
    const { q = "", ns = "", sort: by } = state.params;
    const needle = q.toLowerCase();
    let shown = state.all.filter((p) => (!ns || p.namespace === ns) && (!needle || p.text.includes(needle)));
    const byName = (a, b) => a.id.localeCompare(b.id);
    const order = {
      denied: (a, b) => b.denied - a.denied || byName(a, b),
      allowed: (a, b) => b.allowed - a.allowed || byName(a, b),
      pods: (a, b) => b.selected_pods.length - a.selected_pods.length || byName(a, b),
      name: byName,
    }[by] || byName;
    shown = shown.sort(order);
    state.shown = shown;
    const total = state.all.length;
    if (!total) {
      fill(status, "no NetworkPolicies");
      fill(spacer, h("p", { class: "empty" }, tierSection.childElementCount ? "No NetworkPolicies." : "No NetworkPolicies and no cluster policies: every pod accepts and sends everything."));
      spacer.style.height = "";
      return;
    }
    fill(status, shown.length === total ? `${fmtCount(total)} policies` : `${fmtCount(shown.length)} of ${fmtCount(total)} policies`);
    body.scrollTop = 0;
    renderRows();
    showDetail();
  }

  function renderRows() {
    const rows = state.shown;
    spacer.style.height = `${rows.length * ROW_HEIGHT}px`;
    const first = Math.max(0, Math.floor(body.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((body.scrollTop + body.clientHeight) / ROW_HEIGHT) + OVERSCAN);
    const nodes = [];
    for (let i = first; i < last; i++) nodes.push(row(rows[i], i));
    spacer.replaceChildren(...nodes);
    if (!rows.length && state.all.length) spacer.replaceChildren(h("div", { class: "empty" }, "No policy matches."));
  }

  function row(p, i) {
    const since = state.params.since;
    const link = (verdict, n) =>
      n
        ? h("a", { href: hashFor("flows", { policy: p.id, verdict, since }), class: `count ${verdict}` }, `${fmtCount(n)} ${verdict}`)
        : h("span", { class: "count muted" }, `0 ${verdict}`);
    const pods = p.selected_pods.length;
    return h(
      "article",
      {
        class: `vt-row policy-row${state.params.open === p.id ? " open" : ""}`,
        role: "listitem",
        style: `top:${i * ROW_HEIGHT}px;height:${ROW_HEIGHT}px`,
        dataset: { policy: p.id, denied: String(p.denied), allowed: String(p.allowed) },
      },
      h("div", { class: "policy-name" }, h("b", {}, p.id), h("span", { class: "types" }, ` ${p.policy_types.join(" + ")}`)),
      h(
        "div",
        { class: "policy-line" },
        h("code", { title: p.pod_selector || "{}" }, p.pod_selector || "{}"),
        h("button", { type: "button", class: "pods", onclick: () => update({ open: p.id }) }, `${fmtCount(pods)} pod${pods === 1 ? "" : "s"} ▸`),
        h("span", { class: "muted" }, `${p.ingress_rules} ingress, ${p.egress_rules} egress rule${p.egress_rules === 1 ? "" : "s"}`),
        h("span", { class: "counts" }, link("allowed", p.allowed), " · ", link("denied", p.denied)),
      ),
    );
  }

  function showDetail() {
    for (const r of spacer.querySelectorAll(".policy-row")) r.classList.toggle("open", r.dataset.policy === state.params.open);
    const p = state.all.find((x) => x.id === state.params.open);
    if (!p) return;
    const pods = p.selected_pods.length;
    fill(
      detail,
      h("h3", {}, p.id),
      h("p", {}, h("b", {}, "Selects: "), h("code", {}, p.pod_selector || "{}"), ` in ${p.namespace} — ${pods} pod${pods === 1 ? "" : "s"}`),
      h("div", { class: "pod-chips" }, pods ? p.selected_pods.map((pod) => h("span", { class: "chip" }, pod)) : h("span", { class: "muted" }, "none running")),
      h("p", {}, `${fmtCount(p.allowed)} allowed and ${fmtCount(p.denied)} denied connections`),
      h("details", { class: "yaml" }, h("summary", {}, "YAML"), h("pre", {}, p.yaml)),
      h("button", { type: "button", onclick: () => {
        update({ open: "" });
        fill(detail, h("p", { class: "muted" }, "Click a policy's pods to see them here."));
      } }, "Close"),
    );
  }
}

/** Connections per policy (or cluster rule) named in `column`: allowed_by,
 * denied_by or decided_by. */
async function counts(column, since) {
  const where = api.sinceClause(since);
  const answer = await api.sql(
    `SELECT policy, count(*) AS connections FROM (SELECT unnest(${column}) AS policy FROM connections${where ? ` WHERE ${where}` : ""}) GROUP BY policy`,
  );
  return new Map(answer.rows.map((r) => [r.policy, Number(r.connections)]));
}

/** The cluster tiers, few and decided first: every card whole. */
function clusterPolicies(tiers, decidedCounts, networkPolicies) {
  return h(
    "section",
    { class: "tiers", id: "cluster-policies" },
    h("h2", {}, `Cluster policies (${tiers.length}), in evaluation order`),
    h(
      "p",
      { class: "muted" },
      "Admin tier rules decide before any NetworkPolicy (Pass hands over to them); Baseline rules only where no NetworkPolicy isolates the pod.",
    ),
    tiers.map((p) => clusterPolicy(p, decidedCounts)),
    h("h2", {}, `NetworkPolicies (${fmtCount(networkPolicies)})`),
  );
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function clusterPolicy(p, decidedCounts) {
  const rules = (direction, list) =>
    list.map((r) => {
      const n = decidedCounts.get(r.key) || 0;
      return h(
        "li",
        { class: "tier-rule", dataset: { rule: r.key } },
        h("span", { class: `badge action-${r.action.toLowerCase()}` }, r.action),
        ` ${direction} rule `,
        h("code", {}, r.label),
        h("span", { class: "muted" }, ` — decided ${plural(n, "connection")}`),
      );
    });
  const decidedTotal = [...p.ingress, ...p.egress].reduce((sum, r) => sum + (decidedCounts.get(r.key) || 0), 0);
  return h(
    "article",
    { class: "cluster-policy", dataset: { policy: `${p.tier}/${p.name}` } },
    h(
      "header",
      {},
      h("h3", {}, p.name),
      h("span", { class: `badge tier-${p.tier}` }, `${p.tier} tier`),
      h("span", { class: "types" }, p.kind, p.priority === null || p.priority === undefined ? " (no priority: after every Baseline priority)" : ` · priority ${p.priority}`),
      h("span", { class: "counts" }, `${plural(decidedTotal, "connection")} decided`),
    ),
    h(
      "p",
      {},
      h("b", {}, "Applies to: "),
      h("code", {}, p.subject),
      ` — ${plural(p.selected_pods.length, "pod")}: `,
      p.selected_pods.length ? p.selected_pods.map((pod) => h("span", { class: "chip" }, pod)) : h("span", { class: "muted" }, "none running"),
    ),
    h("ul", { class: "tier-rules" }, rules("ingress", p.ingress), rules("egress", p.egress)),
    h("details", { class: "yaml" }, h("summary", {}, "YAML"), h("pre", {}, p.yaml)),
  );
}
