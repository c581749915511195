// The REST client: JSON in and out, the CSRF header on every write, one error type.
// The CSRF token lives only in memory (never in storage): a reloaded page gets it
// back from GET /api/v1/auth/me.

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

const session = { csrf: null, user: null, onUnauthorized: null };

export function setSession(user) {
  session.user = user;
  session.csrf = user ? user.csrf_token || null : null;
}

export function currentUser() {
  return session.user;
}

export function csrfToken() {
  return session.csrf;
}

/** Called on any 401 except from the login call itself. */
export function onUnauthorized(fn) {
  session.onUnauthorized = fn;
}

const WRITES = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/**
 * Call the API. Resolves to the parsed JSON (or null for 204); rejects with ApiError
 * carrying the server's {code, message, details}.
 */
export async function api(path, { method = "GET", body, headers = {}, quiet401 = false } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (WRITES.has(method) && session.csrf) init.headers["X-CSRF-Token"] = session.csrf;
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network", `The server could not be reached (${err.message}); check that it is running.`, null);
  }
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const err = (data && data.error) || {};
    const error = new ApiError(
      response.status,
      err.code || "error",
      err.message || `${method} ${path} failed with HTTP ${response.status}`,
      err.details ?? null,
    );
    if (response.status === 401 && !quiet401 && session.onUnauthorized) session.onUnauthorized();
    throw error;
  }
  return data;
}

/** Build a query string from an object, skipping empty values; arrays repeat the key. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => q.append(key, v));
    else q.append(key, String(value));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export function jobPath(jobId) {
  return jobId.split("/").map(encodeURIComponent).join("/");
}
