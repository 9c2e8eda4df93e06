// What if: paste proposed policies (and policies to delete), see which of
// the connections observed in a window they would newly deny or allow,
// judged under the policies in force now and after the change.

import * as api from "./api.js";
import { fill, fmtCount, fmtTime, h, hashFor } from "./dom.js";

const WINDOWS = [["1h", "1 hour"], ["24h", "24 hours"], ["7d", "7 days"], ["30d", "30 days"]];

// The text survives a page switch (e.g. coming back from "Why blocked").
let draft = { yaml: "", delete: "" };

/** Opens this page with `yaml` in the editor (the advise page uses it). */
export function propose(yaml) {
  draft = { yaml, delete: "" };
  location.hash = hashFor("whatif", {});
}

export function mount(root, params, ctx) {
  const since = params.since || "24h";
  const text = h("textarea", {
    id: "whatif-yaml",
    rows: 14,
    spellcheck: "false",
    placeholder: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n…  (each replaces the same-named policy, or is added)",
  });
  text.value = draft.yaml;
  const deletes = h("input", { id: "whatif-delete", size: 40, placeholder: "namespace/name, … (policies to delete)" });
  deletes.value = draft.delete;
  const windowPick = h(
    "select",
    { id: "whatif-since", name: "since" },
    WINDOWS.map(([v, l]) => h("option", { value: v, selected: v === since }, l)),
  );
  const run = h("button", { type: "submit", id: "whatif-run" }, "Judge observed traffic");
  const result = h("div", { id: "whatif-result" });
  const form = h(
    "form",
    { class: "whatif-form" },
    h("label", { class: "block" }, h("span", {}, "Proposed policies (YAML)"), text),
    h(
      "section",
      { class: "toolbar" },
      h("label", {}, h("span", {}, "Delete"), deletes),
      h("label", {}, h("span", {}, "Traffic since"), windowPick),
      run,
    ),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    draft = { yaml: text.value, delete: deletes.value };
    ctx.setParams("whatif", { since: windowPick.value });
    judge(result, run, windowPick.value, ctx);
  });
  fill(root, form, result);
}

async function judge(result, run, since, ctx) {
  ctx.clearError();
  const body = {
    policies_yaml: draft.yaml,
    delete: draft.delete.split(/[\s,]+/).filter(Boolean),
    since,
  };
  run.disabled = true;
  fill(result, h("p", { class: "muted" }, "Judging…"));
  let answer;
  try {
    answer = await api.post("whatif", body);
  } catch (e) {
    ctx.showError(e);
    fill(result, h("p", { class: "error-inline", id: "whatif-error" }, e.message));
    return;
  } finally {
    run.disabled = false;
  }
  fill(result, render(answer));
}

/** The answer: a verdict line, then the flipped connections. */
export function render(answer) {
  const denied = answer.newly_denied;
  const allowed = answer.newly_allowed;
  const breaks = denied.length > 0;
  return [
    h(
      "div",
      { class: `verdict-card ${breaks ? "denied" : ""}`, id: "whatif-summary", dataset: { denied: denied.length, allowed: allowed.length } },
      h("h2", {}, breaks ? `Would break ${denied.length} observed connection${denied.length === 1 ? "" : "s"}` : "Breaks nothing observed"),
      h(
        "p",
        { class: "summary" },
        `${fmtCount(answer.connections_judged)} distinct connections observed since ${fmtTime(answer.since)} judged: `,
        `${denied.length} newly denied, ${allowed.length} newly allowed.`,
      ),
    ),
    section("Newly denied", "whatif-denied", denied, true),
    section("Newly allowed", "whatif-allowed", allowed, false),
  ];
}

function section(title, id, items, withReasons) {
  if (!items.length) return h("section", { id }, h("h3", {}, title), h("p", { class: "empty" }, "None."));
  return h(
    "section",
    { id },
    h("h3", {}, `${title} (${items.length})`),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "grid" },
        h(
          "thead",
          {},
          h("tr", {}, ["Source", "Destination", "Port", "Flows", "Last seen", withReasons ? "Denied by" : null].filter(Boolean).map((c) => h("th", {}, c))),
        ),
        h(
          "tbody",
          {},
          items.map((c) =>
            h(
              "tr",
              { class: "whatif-row", dataset: { src: c.src, dst: c.dst, port: c.port } },
              h("td", {}, c.src),
              h("td", {}, c.dst),
              h("td", {}, `${c.port}/${c.protocol}`),
              h("td", {}, fmtCount(c.flows)),
              h("td", {}, fmtTime(c.last_seen)),
              withReasons ? h("td", {}, (c.denied_by || []).map(denial)) : null,
            ),
          ),
        ),
      ),
    ),
  );
}

function denial(d) {
  const who = d.policies.length ? d.policies.join(", ") : d.decided_by ? d.decided_by.key : d.tier;
  return h("div", { class: "denial" }, h("b", {}, `${d.direction}: `), h("code", {}, who), h("div", { class: "muted" }, d.reason));
}
