// Browser tests of the dashboard in real headless Chromium (Debian's), run
// by cli/tests/dashboard.rs against a collector loaded with
// fixtures/cluster.yaml and fixtures/flows.yaml (plus BIG generated flows).
//
//   node dashboard.mjs BASE_URL SCREENSHOT_DIR BIG [FLOWGATE_BINARY GRPC_URL]
//
// With the binary and the gRPC address, a last step sends one more flow
// (`flowgate replay`) while the flows page is open and waits for it to
// appear without a reload.
//
// With FLOWGATE_TEST_CLUSTER_FILE (the collector's --cluster file, a copy),
// the History step edits a policy in it and watches the Why-blocked page
// name the edit.
//
// Each step prints its name; the first failure exits 1 with the reason.

import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, shots, bigText, flowgate, grpc] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node dashboard.mjs BASE_URL SCREENSHOT_DIR [BIG]");
  process.exit(2);
}
const big = Number(bigText || 0);
/** Flows in fixtures/flows.yaml; the big ones come on top. */
const FIXTURE_FLOWS = 12;
/** Connections among them: frontend → backend and its reply are one. */
const FIXTURE_CONNECTIONS = 11;
const BACKEND = "prod/backend-7d4b9c8f6-x2x9q";
const FRONTEND = "prod/frontend-5c9f7b8d4-k2x7p";
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.message));
page.setDefaultTimeout(15000);

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function step(name, body) {
  process.stdout.write(`- ${name} ... `);
  await body();
  console.log("ok");
}

async function shot(name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: false });
}

async function go(hash) {
  await page.goto(`${base}/${hash}`);
}

/** The flow rows in the DOM (only the visible ones exist). */
const rows = () => page.locator(".flow-row");

async function waitRowCount(n) {
  await page.waitForFunction((n) => document.querySelectorAll(".flow-row").length === n, n);
}

function rowWith(...texts) {
  let l = rows();
  for (const t of texts) l = l.filter({ hasText: t });
  return l;
}

try {
  await step("the flows page lists every flow, newest first, with verdicts and policies", async () => {
    await go("#/flows?since=1h");
    await page.waitForFunction((n) => document.querySelectorAll(".flow-row").length >= n, Math.min(FIXTURE_CONNECTIONS, 40));
    const denied = rowWith("dev/tool", BACKEND);
    await denied.first().waitFor();
    check((await denied.count()) === 1, `expected one dev/tool → backend row, got ${await denied.count()}`);
    const text = await denied.innerText();
    check(/denied/.test(text), `the dev/tool → backend row has no denied badge: ${text}`);
    check(text.includes("prod/allow-same-namespace"), `the denied row does not name the isolating policy: ${text}`);
    check(text.includes("dropped (NETFILTER_DROP)"), `the denied row does not show the kernel drop: ${text}`);
    const mismatch = rowWith("dev/tool", "shop/cart-0");
    const mText = await mismatch.innerText();
    check(/mismatch/.test(mText) && /denied/.test(mText) && /forwarded/.test(mText), `the delivered-but-denied flow is not flagged: ${mText}`);
    const allowed = await rowWith(FRONTEND, BACKEND, "8080/TCP").first().innerText();
    check(/allowed/.test(allowed) && !/mismatch/.test(allowed), `frontend → backend should be allowed, no mismatch: ${allowed}`);
    // Newest first: the last flow of the fixture (1 min ago) on top; the
    // generated flows are older.
    const first = await rows().first().innerText();
    check(first.includes("198.51.100.10") && first.includes(FRONTEND), `newest flow not first: ${first}`);
    await shot("flows");
  });

  await step("the flows page counts connections; observations on request", async () => {
    const count = async (hash) => {
      await page.goto("about:blank");
      await go(hash);
      await page.waitForFunction(() => / \d[\d,]* (connection|observation)s? /.test(document.querySelector("#flows-status").textContent + " "));
      return page.locator("#flows-status").innerText();
    };
    const recent = "since=15m";
    const connections = await count(`#/flows?${recent}`);
    check(connections.includes(`${FIXTURE_CONNECTIONS} connections`), `connections: ${connections}`);
    const observations = await count(`#/flows?${recent}&show=observations`);
    check(observations.includes(`${FIXTURE_FLOWS} observations`), `observations: ${observations}`);
    await waitRowCount(FIXTURE_FLOWS);
    check((await rowWith("(reply)").count()) === 1, "the reply is not its own observation row");
  });

  await step("a banner names the probe that reported losses in the window", async () => {
    // cli/tests/dashboard.rs sent one batch from node-loss reporting losses.
    const banner = page.locator("#losses");
    await banner.waitFor({ state: "visible" });
    const text = await banner.innerText();
    // The window is the page's (the flows step before left since=15m in the URL).
    check(/Probes reported losses in the last \d+[smhd]/.test(text), `the banner does not say the window: ${text}`);
    check(text.includes("node-loss: 42 ringbuf lost events") && text.includes("node-loss: 3 flow table evictions"), `the banner does not name the losses: ${text}`);
    check(!text.includes("node-a"), `a node without losses is in the banner: ${text}`);
  });

  await step("a filter narrows the table and lands in the URL", async () => {
    await go("#/flows?since=1h");
    await rows().first().waitFor();
    await page.selectOption("#flow-filters select[name=verdict]", "denied");
    await page.waitForFunction(() => location.hash.includes("verdict=denied"));
    await waitRowCount(5);
    const verdicts = await rows().evaluateAll((els) => els.map((e) => e.classList.contains("denied")));
    check(verdicts.every(Boolean), "a row that is not denied survived the verdict filter");
    await page.fill("#flow-filters input[name=namespace]", "dev");
    await page.click("#flow-filters button[type=submit]");
    await page.waitForFunction(() => location.hash.includes("namespace=dev"));
    await waitRowCount(3);
    const ends = await rows().allInnerTexts();
    check(ends.every((t) => t.includes("dev/tool")), `a row without dev/tool: ${ends.join(" | ")}`);
    // The URL is the view: opening it elsewhere shows the same rows.
    const shared = page.url();
    await page.goto("about:blank");
    await page.goto(shared);
    await waitRowCount(3);
    check((await page.inputValue("#flow-filters input[name=namespace]")) === "dev", "the shared URL lost the namespace filter");
    await shot("flows-filtered");
  });

  await step("clicking a denied flow explains it: isolating policy, nearest miss, YAML", async () => {
    await go("#/flows?since=1h&verdict=denied");
    const row = rowWith("dev/tool", BACKEND);
    await row.first().click();
    await page.waitForFunction(() => location.hash.startsWith("#/why?"));
    const card = page.locator(".verdict-card");
    await card.waitFor();
    const summary = await card.innerText();
    check(summary.includes("denied") && summary.includes(`dev/tool → ${BACKEND} TCP 8080`), `wrong verdict card: ${summary}`);
    const ingress = await page.locator(".direction", { hasText: "Ingress, at the destination" }).innerText();
    check(ingress.includes("Isolating policies") && ingress.includes("prod/allow-same-namespace"), `no isolating policy: ${ingress}`);
    const nearest = await page.locator(".nearest").first().innerText();
    check(nearest.includes("Nearest miss: rule 0"), `no nearest miss: ${nearest}`);
    check(nearest.includes("dev/tool is in namespace `dev`, but this peer (no namespaceSelector) selects only pods in `prod`"), `the nearest miss is not in words: ${nearest}`);
    const yaml = await page.locator("details.yaml:not(.tier-yaml)").first().innerText();
    check(yaml.includes("allow-same-namespace") && yaml.includes("podSelector"), `the policy YAML is missing: ${yaml}`);
    const observed = await page.locator("table.grid tbody tr").count();
    check(observed === 1, `expected the one observed flow of this pair, got ${observed}`);
    await shot("why-blocked");
  });

  await step("a denied connection comes with verified fixes: summary, what else each admits, YAML to copy", async () => {
    await go(`#/why?from=dev/tool&to=${encodeURIComponent(BACKEND)}&port=8080&protocol=TCP`);
    await page.locator("#fixes").waitFor();
    const head = await page.locator("#fixes h3").innerText();
    check(/How to fix \([1-9]\d*\)/.test(head), `no suggestions: ${head}`);
    const intro = await page.locator("#fixes > p.muted").innerText();
    check(/among the \d+ connections observed since/.test(intro), `the window and the judged count are not said: ${intro}`);
    const first = page.locator(".suggestion").first();
    const text = await first.innerText();
    check(text.includes("widen prod/allow-same-namespace ingress rule 0: add the peer pods app=tool in namespace dev"), `first fix: ${text}`);
    // Only dev/tool → backend was observed from dev/tool into prod.
    check(text.includes("Also admits no other observed connection."), `blast radius not shown: ${text}`);
    const yaml = await first.locator("pre").innerText();
    check(yaml.includes("kubernetes.io/metadata.name: dev") && yaml.includes("app: tool") && !yaml.includes("10.244.2.20"), `peer not by namespace and labels: ${yaml}`);
    check(!yaml.includes("pod-template-hash") && yaml.startsWith("apiVersion: networking.k8s.io/v1"), `not applyable YAML: ${yaml}`);
    await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: new URL(base).origin });
    await first.locator("button.copy").click();
    await page.waitForFunction(() => document.querySelector(".suggestion button.copy").textContent === "Copied");
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    check(copied.trim() === yaml.trim(), `the clipboard holds something else: ${copied}`);
    await shot("why-fixes");
    // An allowed connection has nothing to fix.
    await go(`#/why?from=${encodeURIComponent(FRONTEND)}&to=${encodeURIComponent(BACKEND)}&port=8080&protocol=TCP`);
    await page.locator(".verdict-card.allowed").waitFor();
    check((await page.locator("#fixes").count()) === 0, "an allowed connection shows fixes");
  });

  await step("the explanation is reachable directly from a source, destination and port", async () => {
    await go("#/why");
    await page.fill("#why-form input[name=from]", FRONTEND);
    await page.fill("#why-form input[name=to]", "shop/cart-0");
    await page.fill("#why-form input[name=port]", "9000");
    await page.click("#why-form button[type=submit]");
    await page.locator(".verdict-card").waitFor();
    const nearest = await page.locator(".miss").first().innerText();
    check(nearest.includes("TCP 9000 is not in [TCP 8000-8100]"), `endPort miss not explained: ${nearest}`);
    check(page.url().includes("port=9000"), "the form's question is not in the URL");
  });

  await step("Why blocked names the cluster tier that decided, its rule and the walk", async () => {
    await go(`#/why?from=shop%2Fcart-0&to=${encodeURIComponent(BACKEND)}&port=5432&protocol=TCP`);
    const card = page.locator(".verdict-card");
    await card.waitFor();
    check((await card.innerText()).includes("denied"), `shop → prod 5432 is not denied: ${await card.innerText()}`);
    const ingress = page.locator(".direction", { hasText: "Ingress, at the destination" });
    const decision = await ingress.locator(".tier-decision").innerText();
    check(
      decision.includes("Admin tier") && decision.includes("Deny") && decision.includes("AdminNetworkPolicy `guard-prod` (priority 10) ingress rule `deny-shop-db`"),
      `the deciding tier rule is not named: ${decision}`,
    );
    const admin = await ingress.locator('.tier-step[data-tier="admin"]').innerText();
    check(admin.includes("deny-shop-db"), `the admin step does not say which rule decided: ${admin}`);
    const baseline = await ingress.locator('.tier-step[data-tier="baseline"]').getAttribute("data-outcome");
    // No Baseline policy selects the backend for ingress, so that step says so (rather than "not reached").
    check(baseline === "no_policies", `the baseline step for the backend's ingress: ${baseline}`);
    const yaml = await page.locator("details.tier-yaml").first().innerText();
    check(yaml.includes("AdminNetworkPolicy guard-prod") && yaml.includes("deny-shop-db"), `the cluster policy YAML is missing: ${yaml}`);
    await shot("why-blocked-tier");

    // Passed on: dev → prod is handed to the NetworkPolicies by a Pass rule.
    await go(`#/why?from=dev%2Ftool&to=${encodeURIComponent(BACKEND)}&port=8080&protocol=TCP`);
    await page.locator(".verdict-card").waitFor();
    const passed = await page.locator(".direction", { hasText: "Ingress, at the destination" }).locator(".tier-decision").innerText();
    check(
      passed.includes("NetworkPolicy") && passed.includes("passed on by AdminNetworkPolicy `guard-prod` (priority 10) ingress rule `pass-dev`"),
      `the Pass rule is not named: ${passed}`,
    );
  });

  await step("an allowed connection refused for want of a listener is said first not to be a policy problem", async () => {
    await go(`#/why?from=${encodeURIComponent(FRONTEND)}&to=${encodeURIComponent(BACKEND)}&port=9090&protocol=TCP`);
    const card = page.locator("#why-not-policy");
    await card.waitFor();
    const first = await page.locator("#why-result > section").first().getAttribute("id");
    check(first === "why-not-policy", `the first finding is ${first}, not the not-a-policy-problem card`);
    const text = await card.innerText();
    check(
      text.includes("Not a policy problem") && text.includes("nothing listens on port 9090") && text.includes("refused"),
      `the card does not say why: ${text}`,
    );
    const verdict = await page.locator(".verdict-card.allowed").innerText();
    check(verdict.includes("allowed"), `the policies' verdict is not shown after it: ${verdict}`);
    // A denied connection gets no such card: the policies are the problem.
    await go(`#/why?from=dev%2Ftool&to=${encodeURIComponent(BACKEND)}&port=8080&protocol=TCP`);
    await page.locator(".verdict-card.denied").waitFor();
    check((await page.locator("#why-not-policy").count()) === 0, "a denied connection is said not to be a policy problem");
    await shot("why-not-policy");
  });

  await step("the SQL console runs a query and shows the result", async () => {
    await go("#/sql");
    await page.fill("#sql-text", "SELECT count(*) AS n, sum(CASE WHEN enforcement_mismatch THEN 1 ELSE 0 END) AS mismatches FROM flows");
    await page.click("#sql-run");
    await page.locator("#sql-table tbody tr").first().waitFor();
    const cells = await page.locator("#sql-table tbody tr td").allInnerTexts();
    check(cells[0] === String(FIXTURE_FLOWS + big) && cells[1] === "1", `count and mismatches: ${cells}`);
    await page.click("text=Top denied pairs");
    await page.waitForFunction(() => document.querySelectorAll("#sql-table tbody tr").length === 5);
    await shot("sql");
  });

  await step("an API error is shown to the person", async () => {
    await go("#/sql");
    await page.fill("#sql-text", "SELECT nope FROM flows");
    await page.click("#sql-run");
    const banner = page.locator("#error");
    await banner.waitFor({ state: "visible" });
    const text = await banner.innerText();
    check(text.includes("HTTP 400") && text.includes("nope"), `the error banner does not say what went wrong: ${text}`);
    await go("#/sql");
    await page.fill("#sql-text", "DROP TABLE flows");
    await page.click("#sql-run");
    await page.waitForFunction(() => document.querySelector("#error-text").textContent.includes("HTTP 400"));
    await go("#/flows?port=99999");
    await page.waitForFunction(() => !document.querySelector("#error").hidden);
    const portError = await page.locator("#error-text").innerText();
    check(portError.includes("port") && portError.includes("99999"), `bad filter error: ${portError}`);
  });

  await step("the map draws namespaces, connections coloured by verdict, and opens a namespace", async () => {
    await go("#/map?since=1h");
    await page.locator("g.edge").first().waitFor();
    const kinds = await page.locator("g.edge").evaluateAll((els) => els.map((e) => `${e.dataset.src} → ${e.dataset.dst} ${e.dataset.kind} ${e.dataset.connections}`));
    // Connections, not observations: frontend → backend and its reply are
    // one; the TCP and UDP ones two. An edge takes its worst kind.
    const want = [
      "dev → prod denied 1",
      "dev → shop mismatch 1",
      "prod → dev denied 1",
      "prod → prod allowed 3",
      "prod → shop denied 2",
      "prod → 198.51.100.0/24 denied 2",
      "prod → 203.0.113.0/24 allowed 1",
    ];
    if (big) want.push(`prod → 192.0.2.0/24 allowed ${big}`);
    check(JSON.stringify(kinds.sort()) === JSON.stringify(want.sort()), `edges:\n${kinds.join("\n")}`);
    check(!(await page.isChecked("#map-only")), "a small map shows every edge at first");
    const stroke = await page
      .locator('g.edge[data-kind="denied"] .edge-line')
      .first()
      .evaluate((e) => getComputedStyle(e).stroke);
    check(stroke !== "none" && stroke !== "", "denied edges have no colour");
    await page.locator('g.node[data-node="prod"]').click();
    await page.waitForFunction(() => location.hash.includes("ns=prod"));
    await page.locator('g.node[data-kind="workload"]').first().waitFor();
    const inProd = await page.locator("g.edge").evaluateAll((els) => els.map((e) => `${e.dataset.src} → ${e.dataset.dst} ${e.dataset.kind}`));
    check(inProd.includes("prod/frontend → prod/backend allowed") && inProd.includes("dev → prod/backend denied"), `prod's workloads:\n${inProd.join("\n")}`);
    await shot("map");
    // Clicking an edge opens its flows.
    await page.locator('li.edge-item[data-kind="mismatch"] a').click();
    await page.waitForFunction(() => location.hash.startsWith("#/flows?") && location.hash.includes("mismatch=true"));
    await waitRowCount(1);
    const only = await rows().first().innerText();
    check(only.includes("dev/tool") && only.includes("shop/cart-0"), `edge filter shows the wrong flow: ${only}`);
  });

  await step("the policies page lists each policy with its pods and connection counts", async () => {
    await go("#/policies?since=1h&sort=name");
    const card = page.locator('.policy-row[data-policy="prod/allow-same-namespace"]');
    await card.waitFor();
    check((await page.locator(".policy-row").count()) === 4, "expected 4 policies");
    const text = await card.innerText();
    check(text.includes("3 pods"), `selected pods: ${text}`);
    check(text.includes("3 allowed") && text.includes("1 denied"), `connection counts: ${text}`);
    await card.locator("button.pods").click();
    const detail = await page.locator("#policy-detail").innerText();
    check(detail.includes(FRONTEND.split("/")[1]) && detail.includes(BACKEND.split("/")[1]), `selected pods: ${detail}`);
    const tiers = await page.locator("article.cluster-policy").evaluateAll((els) => els.map((e) => e.dataset.policy));
    check(JSON.stringify(tiers) === JSON.stringify(["admin/guard-prod", "baseline/baseline-shop-egress"]), `cluster policies, in evaluation order: ${tiers}`);
    const guard = await page.locator('article.cluster-policy[data-policy="admin/guard-prod"]').innerText();
    check(guard.includes("AdminNetworkPolicy") && guard.includes("priority 10") && guard.includes("admin tier"), `the admin policy card: ${guard}`);
    check(guard.includes(FRONTEND) && guard.includes(BACKEND) && guard.includes("3 pods"), `the pods guard-prod applies to: ${guard}`);
    check(guard.includes("Deny") && guard.includes("deny-shop-db") && guard.includes("Pass") && guard.includes("pass-dev"), `the rules and actions: ${guard}`);
    const baseline = await page.locator('article.cluster-policy[data-policy="baseline/baseline-shop-egress"]').innerText();
    check(baseline.includes("baseline tier") && baseline.includes("shop/cart-0") && baseline.includes("deny-docs"), `the baseline policy card: ${baseline}`);
    await shot("policies");
    await card.locator("a.count.denied").click();
    await page.waitForFunction(() => location.hash.includes("policy=prod%2Fallow-same-namespace"));
    await rows().first().waitFor();
    const listed = await rows().allInnerTexts();
    check(listed.every((t) => t.includes("prod/allow-same-namespace")), `policy filter: ${listed.join(" | ")}`);
  });

  await step("the lint page lists findings with their fix, and filters by severity in the URL", async () => {
    await go("#/lint");
    const dns = page.locator('article.finding[data-rule="egress-without-dns"]');
    await dns.first().waitFor();
    const text = await dns.first().innerText();
    check(text.includes("prod/my-app-egress") && /error/.test(text) && text.includes("Fix:") && text.includes("kube-dns"), `egress-without-dns: ${text}`);
    const deny = await page.locator('article.finding[data-rule="namespace-without-default-deny"]').allInnerTexts();
    check(deny.some((t) => t.includes("namespace shop") && t.includes("egress")), `shop has no default-deny egress: ${deny.join(" | ")}`);
    // Every rule of the fixture admitted one of its flows: none is "never hit".
    const neverHit = await page.locator('article.finding[data-rule="rule-never-hit"]').allInnerTexts();
    check(neverHit.length === 0, `rules the fixture's flows went through are reported as never hit: ${neverHit.join(" | ")}`);
    await shot("lint");
    await page.selectOption("#lint-severity", "error");
    await page.waitForFunction(() => location.hash.includes("severity=error"));
    await page.locator("article.finding.sev-error").first().waitFor();
    const others = await page.locator("article.finding.sev-warning, article.finding.sev-info").count();
    check(others === 0, `the error filter left ${others} warnings and notes`);
  });

  await step("the what-if page shows what a pasted policy would break among observed connections", async () => {
    await go("#/whatif?since=1h");
    // shop's port range narrowed to 8000-8049: prod/frontend -> shop/cart:8050 breaks.
    await page.fill(
      "#whatif-yaml",
      [
        "apiVersion: networking.k8s.io/v1",
        "kind: NetworkPolicy",
        "metadata: {name: allow-prod-port-range, namespace: shop}",
        "spec:",
        "  podSelector: {}",
        "  policyTypes: [Ingress]",
        "  ingress:",
        "    - from: [{namespaceSelector: {matchLabels: {env: prod}}}]",
        "      ports: [{protocol: TCP, port: 8000, endPort: 8049}]",
      ].join("\n"),
    );
    await page.click("#whatif-run");
    const summary = page.locator("#whatif-summary");
    await summary.waitFor();
    check((await summary.getAttribute("data-denied")) === "1", `newly denied: ${await summary.innerText()}`);
    check((await summary.getAttribute("data-allowed")) === "0", `newly allowed: ${await summary.innerText()}`);
    const row = page.locator("#whatif-denied .whatif-row");
    const text = await row.first().innerText();
    check(text.includes(FRONTEND) && text.includes("shop/cart-0") && text.includes("8050/TCP"), `the broken connection: ${text}`);
    check(text.includes("shop/allow-prod-port-range"), `the denying policy is not named: ${text}`);
    await shot("whatif");
    // A policy that does not exist cannot be deleted: the error names it.
    await page.fill("#whatif-yaml", "");
    await page.fill("#whatif-delete", "shop/nope");
    await page.click("#whatif-run");
    const error = page.locator("#whatif-error");
    await error.waitFor();
    check((await error.innerText()).includes("shop/nope"), `error: ${await error.innerText()}`);
    await page.fill("#whatif-delete", "");
  });

  await step("the advise page writes policies per namespace whose proof breaks nothing, and opens them in What if", async () => {
    await go("#/advise?since=1h");
    await page.click('button.advise-ns[data-namespace="prod"]');
    const proof = page.locator('#advise-proof[data-namespace="prod"]');
    await proof.waitFor();
    check((await proof.getAttribute("data-denied")) === "0", `the advice breaks something: ${await proof.innerText()}`);
    const yaml = await page.locator("#advise-yaml").innerText();
    check(yaml.includes("name: default-deny") && yaml.includes("kubernetes.io/metadata.name: prod"), `advice: ${yaml}`);
    check(yaml.includes("cidr: 203.0.113.10/32") && !yaml.includes("pod-template-hash"), `advice: ${yaml}`);
    await shot("advise");
    await page.click("#advise-try");
    await page.waitForFunction(() => location.hash.startsWith("#/whatif"));
    check((await page.inputValue("#whatif-yaml")).includes("default-deny"), "the advice is not in the what-if editor");
    await page.click("#whatif-run");
    const summary = page.locator("#whatif-summary");
    await summary.waitFor();
    check((await summary.getAttribute("data-denied")) === "0", `applied, the advice breaks: ${await summary.innerText()}`);
  });

  const clusterFile = process.env.FLOWGATE_TEST_CLUSTER_FILE;
  if (clusterFile) {
    await step("the Why-blocked page's History names the policy edit that broke a connection", async () => {
      const why = `#/why?from=${encodeURIComponent(FRONTEND)}&to=${encodeURIComponent(BACKEND)}&port=8080&protocol=TCP`;
      await go(why);
      const history = page.locator("#why-history");
      await history.locator(".no-change").waitFor();
      check((await history.innerText()).includes("allowed"), "the verdict now is not shown");
      // The edit: prod's pods now accept only the backend.
      const before = readFileSync(clusterFile, "utf8");
      const from = "ingress: [{from: [{podSelector: {}}]}]";
      check(before.includes(from), "the fixture's allow-same-namespace rule changed: update this test");
      writeFileSync(clusterFile, before.replace(from, "ingress: [{from: [{podSelector: {matchLabels: {app: backend}}}]}]"));
      // The collector checks its file every 200 ms; reload until it has.
      // The page asks for the explanation and the history at once, so one
      // load can get the history after the edit and the explanation from
      // before it: reload until both show it.
      const card = page.locator(".verdict-card:not(.not-policy)");
      const deadline = Date.now() + 20000;
      for (;;) {
        await go("#/flows");
        await go(why);
        await history.locator(".timeline, .no-change").first().waitFor();
        await card.waitFor();
        if ((await history.locator(".timeline .flip").count()) > 0 && (await card.innerText()).includes("denied")) break;
        check(Date.now() < deadline, `the edit never reached both the History section and the explanation: ${await card.innerText()}`);
        await page.waitForTimeout(200);
      }
      const flip = await history.locator(".timeline .flip").first().innerText();
      check(/allowed\s*→\s*denied/.test(flip), `the flip is not allowed → denied: ${flip}`);
      check(flip.includes("NetworkPolicy prod/allow-same-namespace modified"), `the cause is not named: ${flip}`);
      check(flip.includes("ingress rule 0 lost the peer podSelector {} (all)") && flip.includes("gained the peer podSelector app=backend"), `the rule-level difference is not in words: ${flip}`);
      const verdict = await card.innerText();
      check(verdict.includes("denied"), `the explanation does not judge under the edited policy: ${verdict}`);
      await history.scrollIntoViewIfNeeded();
      await shot("why-history");
    });
  }

  if (big) {
    await step(`${big.toLocaleString("en-US")} more flows scroll without putting them all in the page`, async () => {
      await go("#/flows?since=1h&limit=50000");
      // Each generated flow is its own connection.
      const total = FIXTURE_CONNECTIONS + big;
      await page.waitForFunction((t) => document.querySelector("#flows-status").textContent.includes(`${t.toLocaleString("en-US")} connections`), total, { timeout: 60000 });
      const inDom = await rows().count();
      check(inDom > 10 && inDom < 150, `expected only the visible rows in the DOM, got ${inDom}`);
      // Scroll to the end: the oldest rows are rendered, still only a window.
      const started = Date.now();
      await page.locator("#flows-body").evaluate((b) => (b.scrollTop = b.scrollHeight));
      await page.waitForFunction((t) => {
        const tops = [...document.querySelectorAll(".flow-row")].map((r) => parseInt(r.style.top, 10));
        return Math.max(...tops) === (t - 1) * 30;
      }, total);
      const elapsed = Date.now() - started;
      check(elapsed < 2000, `scrolling to the end took ${elapsed} ms`);
      check((await rows().count()) < 150, "scrolling grew the DOM");
      console.log(`(scroll to row ${total} rendered in ${elapsed} ms) `);
    });
  }

  if (flowgate && grpc) {
    await step("a flow sent while the page is open appears without a reload", async () => {
      // The last 15 minutes leave out the 20,000 generated flows (30 min
      // old): each refresh merges a few flows into connections, not 20,000.
      await go("#/flows?since=15m");
      await rows().first().waitFor();
      await page.evaluate(() => (window.__notReloaded = true));
      check((await rowWith("203.0.113.99").count()) === 0, "the new flow is there before it was sent");
      const dir = mkdtempSync(join(tmpdir(), "flowgate-live-"));
      const file = join(dir, "live.yaml");
      writeFileSync(file, "- {src: 10.244.2.20, dst: 203.0.113.99, src_port: 48000, dst_port: 7777, node: node-b, packets: 4, bytes: 400}\n");
      execFileSync(flowgate, ["replay", file, "--collector", grpc], { stdio: "pipe" });
      await rowWith("203.0.113.99", "7777/TCP").first().waitFor({ timeout: 10000 });
      check(await page.evaluate(() => window.__notReloaded === true), "the page reloaded");
      const top = await rows().first().innerText();
      check(top.includes("203.0.113.99") && top.includes("dev/tool"), `the new flow is not on top: ${top}`);
    });
  }

  check(pageErrors.length === 0, `JavaScript errors on the page:\n${pageErrors.join("\n")}`);
  console.log(`screenshots in ${shots}`);
} catch (e) {
  console.log("FAILED");
  console.error(e.message);
  await page.screenshot({ path: join(shots, "failure.png") }).catch(() => {});
  await browser.close();
  process.exit(1);
}
await browser.close();
