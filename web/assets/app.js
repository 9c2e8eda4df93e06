// The dashboard shell: hash routing (`#/page?filters`, so every view can be
// shared as a link), the error banner, and the policy generation badge.

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

document.getElementById("error-close").addEventListener("click", clearError);
window.addEventListener("hashchange", route);
route();
showGeneration();
