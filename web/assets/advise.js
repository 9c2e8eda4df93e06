// Advise: for each namespace, least-privilege NetworkPolicies written from
// the traffic observed there, with the what-if of applying them as proof.

import * as api from "./api.js";
import { fill, h, hashFor } from "./dom.js";
import * as whatif from "./whatif.js";

export function mount(root, params, ctx) {
  const since = params.since || "7d";
  const list = h("div", { id: "advise-namespaces", class: "ns-list" }, h("p", { class: "muted" }, "Loading…"));
  const result = h("div", { id: "advise-result" });
  fill(
    root,
    h("p", { class: "muted" }, `Policies that make a namespace default-deny both ways and allow exactly what was observed in the last ${since} (DNS to kube-dns kept).`),
    list,
    result,
  );
  namespaces(list, result, since, ctx);
}

async function namespaces(list, result, since, ctx) {
  let rows;
  try {
    rows = (await api.sql("SELECT name FROM namespaces ORDER BY name")).rows;
  } catch (e) {
    ctx.showError(e);
    fill(list, h("p", { class: "error-inline" }, e.message));
    return;
  }
  if (!rows.length) {
    fill(list, h("p", { class: "empty" }, "No namespaces known yet."));
    return;
  }
  fill(
    list,
    rows.map((r) =>
      h(
        "button",
        {
          type: "button",
          class: "advise-ns",
          dataset: { namespace: r.name },
          onclick: () => {
            ctx.setParams("advise", { since, namespace: r.name });
            advise(result, r.name, since, ctx);
          },
        },
        `Advise ${r.name}`,
      ),
    ),
  );
  const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("namespace");
  if (wanted) advise(result, wanted, since, ctx);
}

async function advise(result, namespace, since, ctx) {
  ctx.clearError();
  fill(result, h("p", { class: "muted" }, `Writing policies for ${namespace}…`));
  let a;
  try {
    a = await api.get("advise", { namespace, since });
  } catch (e) {
    ctx.showError(e);
    fill(result, h("p", { class: "error-inline" }, e.message));
    return;
  }
  const p = a.proof;
  const safe = p.newly_denied.length === 0;
  fill(
    result,
    h(
      "div",
      { class: `verdict-card ${safe ? "" : "denied"}`, id: "advise-proof", dataset: { namespace, denied: p.newly_denied.length } },
      h("h2", {}, `${a.policies.length} policies for ${namespace}`),
      h(
        "p",
        { class: "summary" },
        `Admits the ${a.admitted} observed connections of ${namespace} allowed now; ${a.left_denied} denied now stay denied. `,
        `Proof: applied, they newly deny ${p.newly_denied.length} and newly allow ${p.newly_allowed.length} of the ${p.connections_judged} distinct connections observed.`,
      ),
      a.notes.map((n) => h("p", { class: "muted" }, `Note: ${n}`)),
      h(
        "button",
        { type: "button", id: "advise-try", onclick: () => whatif.propose(a.yaml) },
        "Open in What if",
      ),
      " ",
      h("a", { href: hashFor("policies", {}) }, "Policies in force"),
    ),
    h("pre", { class: "advice-yaml", id: "advise-yaml" }, a.yaml),
  );
}
