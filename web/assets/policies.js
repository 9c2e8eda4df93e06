// Every policy in force: first the cluster tiers (AdminNetworkPolicy,
// BaselineAdminNetworkPolicy, ClusterNetworkPolicy) in evaluation order, with
// how many flows each rule decided; then every NetworkPolicy: what it
// selects, its rules, and how many flows it allowed or denied in the chosen
// time range (each count opens those flows).

import * as api from "./api.js";
import { fill, fmtCount, h, hashFor } from "./dom.js";

export function mount(root, params, ctx) {
  const since = params.since || "1h";
  const picker = h(
    "select",
    { name: "since", id: "policies-since" },
    [["15m", "15 min"], ["1h", "1 hour"], ["6h", "6 hours"], ["24h", "24 hours"], ["7d", "7 days"], ["all", "all time"]].map(([v, l]) =>
      h("option", { value: v, selected: v === since }, l),
    ),
  );
  picker.addEventListener("change", () => {
    location.hash = hashFor("policies", { since: picker.value });
  });
  const list = h("div", { class: "policy-list", id: "policy-list" }, h("p", { class: "muted" }, "Loading…"));
  fill(root, h("section", { class: "toolbar" }, h("label", {}, h("span", {}, "Flows since"), picker)), list);
  load(list, since, ctx);
}

async function counts(column, since) {
  const where = [api.sinceClause(since), "NOT is_reply"].filter(Boolean).join(" AND ");
  const answer = await api.sql(
    `SELECT policy, count(*) AS flows FROM (SELECT unnest(${column}) AS policy FROM flows WHERE ${where}) GROUP BY policy`,
  );
  return new Map(answer.rows.map((r) => [r.policy, Number(r.flows)]));
}

// Flows each cluster-tier rule decided, by its `tier/policy/direction/rule` key.
async function decided(since) {
  const where = [api.sinceClause(since), "NOT is_reply"].filter(Boolean).join(" AND ");
  const answer = await api.sql(`SELECT rule, count(*) AS flows FROM (SELECT unnest(decided_by) AS rule FROM flows WHERE ${where}) GROUP BY rule`);
  return new Map(answer.rows.map((r) => [r.rule, Number(r.flows)]));
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
        h("span", { class: "muted" }, ` — decided ${plural(n, "flow")}`),
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
      h("span", { class: "counts" }, `${plural(decidedTotal, "flow")} decided`),
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

async function load(list, since, ctx) {
  let policies;
  let allowed;
  let denied;
  let decidedCounts;
  try {
    [policies, allowed, denied, decidedCounts] = await Promise.all([
      api.get("policies"),
      counts("allowed_by", since),
      counts("denied_by", since),
      decided(since),
    ]);
  } catch (e) {
    ctx.showError(e);
    fill(list, h("p", { class: "error-inline" }, e.message));
    return;
  }
  const tiers = policies.cluster_policies || [];
  if (!policies.policies.length && !tiers.length) {
    fill(list, h("p", { class: "empty" }, "No NetworkPolicies and no cluster policies: every pod accepts and sends everything."));
    return;
  }
  const tierSection = tiers.length
    ? h(
        "section",
        { class: "tiers", id: "cluster-policies" },
        h("h2", {}, `Cluster policies (${tiers.length}), in evaluation order`),
        h(
          "p",
          { class: "muted" },
          "Admin tier rules decide before any NetworkPolicy (Pass hands over to them); Baseline rules only where no NetworkPolicy isolates the pod.",
        ),
        tiers.map((p) => clusterPolicy(p, decidedCounts)),
      )
    : null;
  const flowsLink = (id, verdict, n) =>
    n
      ? h("a", { href: hashFor("flows", { policy: id, verdict, since }), class: `count ${verdict}` }, `${fmtCount(n)} ${verdict}`)
      : h("span", { class: "count muted" }, `0 ${verdict}`);
  fill(
    list,
    tierSection,
    tiers.length ? h("h2", {}, `NetworkPolicies (${policies.policies.length})`) : null,
    policies.policies.map((p) => {
      const id = `${p.namespace}/${p.name}`;
      return h(
        "article",
        { class: "policy", dataset: { policy: id } },
        h(
          "header",
          {},
          h("h3", {}, id),
          h("span", { class: "types" }, p.policy_types.join(" + ")),
          h("span", { class: "counts" }, flowsLink(id, "allowed", allowed.get(id) || 0), " · ", flowsLink(id, "denied", denied.get(id) || 0)),
        ),
        h(
          "p",
          {},
          h("b", {}, "Selects: "),
          h("code", {}, p.pod_selector || "{}"),
          ` in ${p.namespace} — ${p.selected_pods.length} pod${p.selected_pods.length === 1 ? "" : "s"}: `,
          p.selected_pods.length ? p.selected_pods.map((pod) => h("span", { class: "chip" }, pod)) : h("span", { class: "muted" }, "none running"),
        ),
        h("p", { class: "muted" }, `${p.ingress_rules} ingress rule${p.ingress_rules === 1 ? "" : "s"}, ${p.egress_rules} egress rule${p.egress_rules === 1 ? "" : "s"}`),
        h("details", { class: "yaml" }, h("summary", {}, "YAML"), h("pre", {}, p.yaml)),
      );
    }),
  );
}
