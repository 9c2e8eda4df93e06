// Lint: the cluster's NetworkPolicies against the best practices, most
// severe first, each finding with what is wrong and how to fix it. A
// severity filter lives in the URL.

import * as api from "./api.js";
import { fill, h, hashFor } from "./dom.js";

const SEVERITIES = ["error", "warning", "info"];

export function mount(root, params, ctx) {
  const shown = params.severity || "";
  const picker = h(
    "select",
    { name: "severity", id: "lint-severity" },
    h("option", { value: "", selected: !shown }, "all"),
    SEVERITIES.map((s) => h("option", { value: s, selected: s === shown }, s)),
  );
  picker.addEventListener("change", () => {
    location.hash = hashFor("lint", { severity: picker.value });
  });
  const summary = h("span", { class: "muted", id: "lint-summary" });
  const list = h("div", { class: "lint-list", id: "lint-list" }, h("p", { class: "muted" }, "Loading…"));
  fill(root, h("section", { class: "toolbar" }, h("label", {}, h("span", {}, "Severity"), picker), summary), list);
  load(list, summary, shown, ctx);
}

async function load(list, summary, shown, ctx) {
  let answer;
  try {
    answer = await api.get("lint");
  } catch (e) {
    ctx.showError(e);
    fill(list, h("p", { class: "error-inline" }, e.message));
    return;
  }
  const count = (s) => answer.findings.filter((f) => f.severity === s).length;
  const n = (k, word) => `${k} ${word}${k === 1 ? "" : "s"}`;
  fill(summary, `${n(count("error"), "error")} · ${n(count("warning"), "warning")} · ${n(count("info"), "note")} (generation ${answer.generation})`);
  const findings = answer.findings.filter((f) => !shown || f.severity === shown);
  if (!findings.length) {
    fill(list, h("p", { class: "empty" }, shown ? `No ${shown} findings.` : "No findings: the policies follow every practice checked."));
    return;
  }
  fill(
    list,
    findings.map((f) =>
      h(
        "article",
        { class: `finding sev-${f.severity}`, dataset: { rule: f.rule, severity: f.severity } },
        h(
          "header",
          {},
          h("span", { class: `badge sev-${f.severity}` }, f.severity),
          h("code", { class: "rule" }, f.rule),
          f.policy
            ? h("a", { href: hashFor("policies", {}), class: "where" }, `${f.namespace}/${f.policy}`)
            : h("span", { class: "where" }, `namespace ${f.namespace}`),
        ),
        h("p", { class: "message" }, f.message),
        h("p", { class: "fix" }, h("b", {}, "Fix: "), f.fix),
      ),
    ),
  );
}
