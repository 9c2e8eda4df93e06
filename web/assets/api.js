// Calls to the collector's API. Every failure becomes an ApiError that says
// what was asked and what the server answered, so the page can show it.

export class ApiError extends Error {
  constructor(what, status, message) {
    super(status ? `${what}: HTTP ${status}: ${message}` : `${what}: ${message}`);
    this.status = status;
  }
}

// The API token lives in sessionStorage: it is gone when the tab closes.
const TOKEN_KEY = "flowgate-api-token";
let asking = null;

/** Shows the token dialog; resolves to the token, or null if cancelled. */
function askToken(message) {
  // Many requests may fail at once: they share one dialog.
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  if (!dialog) return Promise.resolve(null);
  asking = new Promise((resolve) => {
    document.getElementById("token-message").textContent = message;
    const input = document.getElementById("token-input");
    input.value = "";
    const cancel = document.getElementById("token-cancel");
    const done = (value) => {
      cancel.onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      asking = null;
      resolve(value);
    };
    cancel.onclick = () => done(null);
    dialog.onclose = () => done(dialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null);
    dialog.showModal();
  });
  return asking;
}

async function send(what, path, options) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { ...(options && options.headers) };
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    return await fetch(path, { ...options, headers });
  } catch (e) {
    throw new ApiError(what, 0, `the collector cannot be reached (${e.message})`);
  }
}

async function request(what, path, options) {
  let response = await send(what, path, options);
  if (response.status === 401) {
    // The API wants a token: ask once, keep it for the session, retry.
    let message = "The collector asks for an API token.";
    try {
      message = (await response.json()).error || message;
    } catch {
      // Keep the generic message.
    }
    const token = await askToken(message);
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      response = await send(what, path, options);
    } else {
      throw new ApiError(what, 401, `${message} (no token given)`);
    }
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: keep the text for the message below.
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : text.trim() || response.statusText;
    throw new ApiError(what, response.status, message);
  }
  if (body === null) throw new ApiError(what, response.status, "the answer is not JSON");
  return body;
}

/** GET /api/v1/<path> with query parameters (empty values are left out). */
export function get(path, params = {}) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") query.set(k, v);
  }
  const qs = query.toString();
  return request(`GET ${path}`, `/api/v1/${path}${qs ? "?" + qs : ""}`);
}

/** POST /api/v1/<path> with a JSON body. */
export function post(path, body) {
  return request(`POST ${path}`, `/api/v1/${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

/** Runs read-only SQL; resolves to {columns, rows, truncated}. */
export function sql(text) {
  return request("SQL", "/api/v1/query", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sql: text }),
  });
}

/** A SQL string literal. */
export function lit(s) {
  return `'${String(s).replaceAll("'", "''")}'`;
}

const UNITS = { s: 1, m: 60, h: 3600, d: 86400 };

/** `1h` → a SQL predicate on `time` for the last hour ("" for all time). */
export function sinceClause(since) {
  const m = /^(\d+)([smhd])$/.exec(since || "");
  if (!m) return "";
  const seconds = Number(m[1]) * UNITS[m[2]];
  return `time >= now() - INTERVAL '${seconds} seconds'`;
}
