// "Why blocked": the policy engine's explanation of one connection — per
// direction the tier that decided (Admin, NetworkPolicy, Baseline), the walk
// through the cluster tiers with the rule that decided or passed and the
// nearest miss, the isolating NetworkPolicies, the rules checked and their
// nearest miss in words, the YAML of every policy involved, the flows seen
// for the pair, and its history: each flip of the verdict with the changes
// that caused it. When the policies allow it and the flows show it failed
// for another reason (nothing listening, routing, conntrack), that comes
// first: most "blocked" connections are not a policy problem.
// For a denial, "How to fix" lists the smallest verified changes that admit
// it, each with what else it would admit among the connections observed in
// the window, ready to copy into `kubectl apply -f -`.

import * as api from "./api.js";
import { fateBadge, fill, fmtBytes, fmtCount, fmtTime, h, hashFor, mismatchBadge, verdictBadge } from "./dom.js";

export function mount(root, params, ctx) {
  const result = h("div", { id: "why-result" });
  fill(root, h("section", { class: "toolbar" }, form(params)), result);
  if (params.from && params.to && params.port) {
    explain(result, params, ctx);
  } else {
    fill(result, h("p", { class: "muted" }, "Choose a source, a destination and a port, or click a flow on the Flows page."));
  }
  loadSuggestions();
}

function form(params) {
  const input = (name, placeholder, extra = {}) =>
    h("input", { name, value: params[name] || "", placeholder, list: extra.list, required: true, ...extra });
  const f = h(
    "form",
    { class: "filters", id: "why-form" },
    h("label", {}, h("span", {}, "From"), input("from", "namespace/pod or IP", { list: "endpoints", size: 24 })),
    h("label", {}, h("span", {}, "To"), input("to", "namespace/pod or IP", { list: "endpoints", size: 24 })),
    h("label", {}, h("span", {}, "Port"), input("port", "8080", { type: "number", min: 0, max: 65535, style: "width:6em" })),
    h("label", {}, h("span", {}, "To DNS name"), input("to_name", "optional: api.example.com", { required: false, size: 18 })),
    h(
      "label",
      {},
      h("span", {}, "Protocol"),
      h("select", { name: "protocol" }, ["TCP", "UDP", "SCTP", "ICMP", "ICMPv6"].map((p) => h("option", { selected: (params.protocol || "TCP") === p }, p))),
    ),
    h("button", { type: "submit" }, "Explain"),
    h("datalist", { id: "endpoints" }),
  );
  f.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = hashFor("why", Object.fromEntries(new FormData(f).entries()));
  });
  return f;
}

async function loadSuggestions() {
  try {
    const pods = await api.sql("SELECT namespace || '/' || name AS pod FROM pods ORDER BY 1");
    const list = document.getElementById("endpoints");
    if (list) fill(list, pods.rows.map((r) => h("option", { value: r.pod })));
  } catch {
    // Only suggestions: the form works without them.
  }
}

async function explain(result, params, ctx) {
  fill(result, h("p", { class: "muted" }, "Asking the policy engine…"));
  let answer;
  let policies;
  try {
    [answer, policies] = await Promise.all([
      api.get("explain", {
        from: params.from,
        to: params.to,
        to_name: params.to_name,
        port: params.port,
        protocol: params.protocol || "TCP",
        suggest: "true",
        since: params.since || "24h",
      }),
      api.get("policies"),
    ]);
  } catch (e) {
    ctx.showError(e);
    fill(result, h("p", { class: "error-inline" }, e.message));
    return;
  }
  const x = answer.explanation;
  const involved = new Set();
  for (const d of [x.egress, x.ingress]) {
    for (const p of d.isolated_by || []) involved.add(`${p.namespace}/${p.name}`);
    for (const r of d.allowed_by || []) involved.add(`${r.namespace}/${r.name}`);
  }
  const yaml = policies.policies.filter((p) => involved.has(`${p.namespace}/${p.name}`));
  // Cluster policies the walk met: the deciding and passing rules' and every
  // policy a tier consulted for this pod.
  const tierInvolved = new Set();
  for (const d of [x.egress, x.ingress]) {
    for (const r of [d.decided_by, d.passed_by]) if (r) tierInvolved.add(`${r.tier}/${r.policy}`);
    for (const step of d.tiers || []) if (step.rule) tierInvolved.add(`${step.tier}/${step.rule.policy}`);
  }
  const tierYaml = (policies.cluster_policies || []).filter((p) => tierInvolved.has(`${p.tier}/${p.name}`));
  fill(
    result,
    notPolicy(answer.not_policy),
    h(
      "section",
      { class: `verdict-card ${x.allowed ? "allowed" : "denied"}` },
      h("h2", {}, verdictBadge(x.allowed ? "allowed" : "denied"), " ", `${name(x.src)} → ${name(x.dst)} ${x.protocol} ${x.port}`),
      h("p", { class: "summary" }, x.summary),
      h("p", { class: "muted" }, `policy generation ${x.generation}`),
    ),
    h(
      "div",
      { class: "directions" },
      direction("Egress, at the source", x.egress, name(x.src)),
      direction("Ingress, at the destination", x.ingress, name(x.dst)),
    ),
    x.allowed ? null : fixes(answer),
    h(
      "section",
      {},
      h("h3", {}, `Policies involved (${yaml.length + tierYaml.length})`),
      tierYaml.map((p) =>
        h("details", { class: "yaml tier-yaml", open: true }, h("summary", {}, `${p.kind} ${p.name} (${p.tier} tier)`), h("pre", {}, p.yaml)),
      ),
      yaml.map((p) => h("details", { class: "yaml", open: true }, h("summary", {}, `${p.namespace}/${p.name}`), h("pre", {}, p.yaml))),
      yaml.length || tierYaml.length
        ? null
        : h("p", { class: "muted" }, "No policy applies to either end: nothing is isolated, everything is allowed."),
    ),
    history(params),
    h("section", {}, h("h3", {}, `Flows seen for this connection (${answer.flows.length})`), observed(answer.flows)),
  );
}

/** The collector's finding that an allowed connection failed for another reason, or nothing. */
function notPolicy(np) {
  if (!np) return null;
  const seen = [np.outcome, np.failure && np.failure.replaceAll("_", " "), np.drop_reason].filter(Boolean).join(", ");
  return h(
    "section",
    { class: "verdict-card not-policy", id: "why-not-policy" },
    h("h2", {}, "Not a policy problem"),
    h("p", { class: "summary" }, np.message),
    h("p", { class: "muted" }, `observed: ${seen}${np.time ? ` at ${fmtTime(np.time)}` : ""}`),
  );
}

/** The "History" section: filled when the blame answer arrives, so the
 * explanation does not wait for it. */
function history(params) {
  const body = h("div", { class: "muted" }, "Reading the recorded history…");
  const since = "7d";
  api
    .get("blame", { from: params.from, to: params.to, port: params.port, protocol: params.protocol || "TCP", since })
    .then((answer) => fill(body, timeline(answer, since)))
    // Part of the page only: say why here rather than in the error banner.
    .catch((e) => fill(body, h("p", { class: "error-inline" }, e.message)));
  return h("section", { id: "why-history" }, h("h3", {}, "History"), body);
}

function timeline(answer, since) {
  const now = h("p", {}, "Verdict now: ", verdictBadge(answer.verdict_now));
  if (!answer.changes.length) {
    return [now, h("p", { class: "no-change" }, `No change: the verdict has not flipped in the last ${since} of recorded history.`)];
  }
  return [
    now,
    h(
      "ol",
      { class: "timeline" },
      // Newest first, as a person reading "what broke this?" wants.
      [...answer.changes].reverse().map((c) =>
        h(
          "li",
          { class: `flip ${c.after}`, dataset: { generation: String(c.generation) } },
          h("div", { class: "flip-head" }, h("span", { class: "mono" }, fmtTime(c.time)), ` generation ${c.generation}: `, verdictBadge(c.before), " → ", verdictBadge(c.after)),
          h(
            "ul",
            { class: "causes" },
            c.causes.map((k) =>
              h("li", { class: "cause" }, h("b", {}, `${k.kind} ${k.namespace}/${k.name} ${k.change}`), h("div", { class: "detail" }, k.detail)),
            ),
          ),
        ),
      ),
    ),
  ];
}

/** "How to fix": the suggestions, best (smallest blast radius) first. */
function fixes(answer) {
  const list = answer.suggestions || [];
  const window = answer.since ? ` since ${fmtTime(answer.since)}` : "";
  const head = h("h3", {}, `How to fix (${list.length})`);
  if (!list.length) {
    const why = answer.none && answer.none.message ? answer.none.message : "No NetworkPolicy change admits this connection.";
    return h("section", { id: "fixes" }, head, h("p", { class: "error-inline" }, why));
  }
  return h(
    "section",
    { id: "fixes" },
    head,
    h(
      "p",
      { class: "muted" },
      `Each change was re-judged by the policy engine and admits this connection. Ranked by what else it would admit among the ${answer.connections_judged ?? 0} connections observed${window}.`,
    ),
    list.map((s, i) => suggestion(s, i)),
  );
}

function suggestion(s, i) {
  const admits = s.also_admits || [];
  const denies = s.also_denies || [];
  const pre = h("pre", {}, s.yaml);
  const copy = h("button", { type: "button", class: "copy" }, "Copy YAML");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(s.yaml);
    } catch {
      // No clipboard permission (plain HTTP): select the text for Ctrl-C.
      const range = document.createRange();
      range.selectNodeContents(pre);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      copy.textContent = "Selected: press Ctrl-C";
      return;
    }
    copy.textContent = "Copied";
  });
  return h(
    "div",
    { class: `suggestion${i === 0 ? " best" : ""}` },
    h("h4", {}, `${i + 1}. ${s.summary}`),
    h(
      "p",
      { class: admits.length ? "also-admits" : "also-admits none" },
      admits.length ? `Also admits ${admits.length} other observed connection${admits.length === 1 ? "" : "s"}:` : "Also admits no other observed connection.",
    ),
    admits.length ? h("ul", { class: "others" }, admits.map((c) => h("li", { class: "mono" }, other(c)))) : null,
    denies.length
      ? h(
          "div",
          { class: "also-denies" },
          h("p", {}, h("b", {}, `Newly denies ${denies.length} observed connection${denies.length === 1 ? "" : "s"}`), ` (it isolates ${s.newly_isolates.join(", ")}):`),
          h("ul", { class: "others" }, denies.map((c) => h("li", { class: "mono" }, other(c)))),
        )
      : null,
    h("div", { class: "yaml-actions" }, copy),
    pre,
  );
}

function other(c) {
  return `${c.src} → ${c.dst} ${c.protocol}${c.protocol.startsWith("ICMP") ? "" : ` ${c.port}`}`;
}

function name(end) {
  if (!end) return "?";
  return end.namespace && end.pod ? `${end.namespace}/${end.pod}` : end.ip;
}

function direction(title, d, who) {
  const state = !d.applicable ? "not applicable" : d.allowed ? "allowed" : "denied";
  return h(
    "section",
    { class: `direction ${state.replace(" ", "-")}` },
    h("h3", {}, title, " ", h("span", { class: `badge ${state.replace(" ", "-")}` }, state)),
    h("p", {}, d.reason),
    d.applicable ? tierLine(d) : null,
    d.tiers && d.tiers.length ? h("ol", { class: "tier-walk" }, d.tiers.map(tierStep)) : null,
    d.isolated_by && d.isolated_by.length
      ? h("p", {}, h("b", {}, `Isolating policies (select ${who}): `), d.isolated_by.map((p) => `${p.namespace}/${p.name}`).join(", "))
      : null,
    d.allowed_by && d.allowed_by.length
      ? h("p", {}, h("b", {}, "Admitted by: "), d.allowed_by.map((r) => `${r.namespace}/${r.name} rule ${r.rule_index ?? r.rule ?? "?"}`).join(", "))
      : null,
    d.misses && d.misses.length ? h("div", { class: "misses" }, d.misses.map(miss)) : null,
  );
}

const TIER_NAMES = { admin: "Admin tier", networkpolicy: "NetworkPolicy", baseline: "Baseline tier", default: "default (nothing isolates)", not_applicable: "not applicable" };

function ruleName(r) {
  const priority = r.priority === undefined || r.priority === null ? "" : ` (priority ${r.priority})`;
  const rule = r.rule_name ? `rule \`${r.rule_name}\`` : `rule ${r.rule_index}`;
  return `${r.kind} \`${r.policy}\`${priority} ${r.direction} ${rule}`;
}

// Which tier decided, and the rule that decided or passed it on.
function tierLine(d) {
  return h(
    "p",
    { class: "tier-decision", dataset: { tier: d.tier } },
    h("b", {}, "Decided by: "),
    h("span", { class: `badge tier-${d.tier}` }, TIER_NAMES[d.tier] || d.tier),
    d.decided_by ? [" — ", h("span", { class: `badge action-${d.decided_by.action.toLowerCase()}` }, d.decided_by.action), " ", ruleName(d.decided_by)] : null,
    d.passed_by ? h("span", { class: "passed" }, ` — passed on by ${ruleName(d.passed_by)}`) : null,
  );
}

// One tier of the walk: what it did, its rule, and its nearest miss.
function tierStep(step) {
  const n = step.nearest;
  return h(
    "li",
    { class: `tier-step outcome-${step.outcome}`, dataset: { tier: step.tier, outcome: step.outcome } },
    h("b", {}, `${TIER_NAMES[step.tier] || step.tier}: `),
    step.text,
    n
      ? h(
          "div",
          { class: "tier-nearest" },
          h("b", {}, `Nearest miss: ${ruleName(n.rule)}`),
          h("span", { class: "muted" }, ` — peer ${n.peer_matched ? "matches" : "does not match"}, port ${n.port_matched ? "matches" : "does not match"}`),
          h("ul", {}, (n.reasons || []).map((r) => h("li", {}, r))),
        )
      : null,
  );
}

function miss(m) {
  const n = m.nearest;
  return h(
    "div",
    { class: "miss" },
    h("h4", {}, `${m.policy.namespace}/${m.policy.name}`),
    n
      ? h(
          "div",
          { class: "nearest" },
          h("b", {}, `Nearest miss: rule ${n.rule_index}`),
          h(
            "span",
            { class: "muted" },
            ` — peer ${n.peer_matched ? "matches" : "does not match"}, port ${n.port_matched ? "matches" : "does not match"}`,
          ),
          h("ul", {}, (n.reasons || []).map((r) => h("li", {}, r))),
        )
      : null,
    h("p", { class: "miss-text" }, m.explanation),
  );
}

function observed(flows) {
  if (!flows.length) return h("p", { class: "muted" }, "No flows observed for this pair and port yet.");
  return h(
    "table",
    { class: "grid" },
    h("thead", {}, h("tr", {}, ["Time", "Node", "From", "To", "Packets", "Bytes", "Kernel", "Verdict", ""].map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      flows.map((r) =>
        h(
          "tr",
          {},
          h("td", { class: "mono" }, fmtTime(r.time)),
          h("td", {}, r.node),
          h("td", { class: "mono" }, `${r.src_ip}:${r.src_port}`),
          h("td", { class: "mono" }, `${r.dst_ip}:${r.dst_port}`),
          h("td", { class: "num" }, fmtCount(r.packets)),
          h("td", { class: "num" }, fmtBytes(r.bytes)),
          h("td", {}, fateBadge(r)),
          h("td", {}, verdictBadge(r.verdict)),
          h("td", {}, mismatchBadge(r)),
        ),
      ),
    ),
  );
}
