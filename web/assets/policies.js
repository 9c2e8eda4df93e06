// Every NetworkPolicy: what it selects, its rules, and how many flows it
// allowed or denied in the chosen time range (each count opens those flows).

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

async function load(list, since, ctx) {
  let policies;
  let allowed;
  let denied;
  try {
    [policies, allowed, denied] = await Promise.all([api.get("policies"), counts("allowed_by", since), counts("denied_by", since)]);
  } catch (e) {
    ctx.showError(e);
    fill(list, h("p", { class: "error-inline" }, e.message));
    return;
  }
  if (!policies.policies.length) {
    fill(list, h("p", { class: "empty" }, "No NetworkPolicies: every pod accepts and sends everything."));
    return;
  }
  const flowsLink = (id, verdict, n) =>
    n
      ? h("a", { href: hashFor("flows", { policy: id, verdict, since }), class: `count ${verdict}` }, `${fmtCount(n)} ${verdict}`)
      : h("span", { class: "count muted" }, `0 ${verdict}`);
  fill(
    list,
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
