// The dashboard shell: hash routing (`#/page?filters`, so every view can be
// shared as a link), the error banner, the loss banner (probes that lost
// flows in the window, so an empty view is not mistaken for no traffic),
// and the policy generation badge.

import * as api from "./api.js";
import { fill, h } from "./dom.js";
import * as flows from "./flows.js";
import * as why from "./why.js";
import * as map from "./map.js";
import * as policies from "./policies.js";
import * as lint from "./lint.js";
import * as sql from "./sql.js";
import * as whatif from "./whatif.js";
import * as advise from "./advise.js";

const PAGES = { flows, why, map, policies, lint, whatif, advise, sql };

let unmount = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [page, query = ""] = raw.split("?");
  return { page: PAGES[page] ? page : "flows", params: Object.fromEntries(new URLSearchParams(query)) };
}

/** Shows an error to the person; never swallowed. */
export function showError(err) {
  const box = document.getElementById("error");
  document.getElementById("error-text").textContent = err && err.message ? err.message : String(err);
  box.hidden = false;
  console.error(err);
}

export function clearError() {
  document.getElementById("error").hidden = true;
}

/** Changes the URL's filters without reloading the page or adding history. */
export function setParams(page, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const qs = q.toString();
  history.replaceState(null, "", `#/${page}${qs ? "?" + qs : ""}`);
}

function route() {
  const { page, params } = parseHash();
  if (unmount) unmount();
  unmount = null;
  clearError();
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
  const root = document.getElementById("page");
  fill(root);
  root.dataset.page = page;
  try {
    unmount = PAGES[page].mount(root, params, { showError, clearError, setParams }) || null;
  } catch (e) {
    showError(e);
  }
}

async function showGeneration() {
  try {
    const p = await api.get("policies");
    fill(
      document.getElementById("generation"),
      h("span", { title: "policy snapshot generation the newest flows are judged under" }, `policies: ${p.policies.length} · generation ${p.generation}`),
    );
  } catch (e) {
    showError(e);
  }
}

/** How often the loss banner asks again. */
const LOSSES_EVERY_MS = 15000;

/** The window of the current view (`since` in the hash), as the API takes it. */
function lossWindow() {
  const since = parseHash().params.since || "1h";
  return since === "all" ? { since: "0", label: "since the collector started" } : { since, label: `in the last ${since}` };
}

async function showLosses() {
  const { since, label } = lossWindow();
  const box = document.getElementById("losses");
  try {
    const answer = await api.get("losses", { since });
    if (!answer.total) {
      box.hidden = true;
      return;
    }
    const parts = answer.losses.map((l) => `${l.node}: ${l.count} ${l.kind.replaceAll("_", " ")}`);
    fill(
      box,
      h("strong", {}, `Probes reported losses ${label}`),
      ` — some flows are missing from what you see. ${parts.join("; ")}. `,
      h("span", { class: "muted" }, "See flowgate_collector_probe_losses_total on /metrics."),
    );
    box.hidden = false;
  } catch (e) {
    showError(e);
  }
}

document.getElementById("error-close").addEventListener("click", clearError);
window.addEventListener("hashchange", () => {
  route();
  showLosses();
});
route();
showGeneration();
showLosses();
setInterval(showLosses, LOSSES_EVERY_MS);
