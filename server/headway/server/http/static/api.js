// The server's JSON API (canonical proto3 JSON) with the session's CSRF token.

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && body.message) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.code = body && body.code;
    const info = ((body && body.details) || []).find((d) => d && d.reason);
    this.reason = info ? info.reason : "";
  }
}

let csrfToken = "";

async function request(method, path, { body, query } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: text };
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data || {};
}

function remember(session) {
  csrfToken = (session && session.csrfToken) || "";
  return session;
}

// The signed-in principal and CSRF token; null when the server wants a sign-in (401).
export async function getSession() {
  try {
    return remember(await request("GET", "/v1/session"));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return null;
    throw error;
  }
}

export async function signIn(token) {
  return remember(await request("POST", "/v1/session", { body: { token } }));
}

export async function signOut() {
  await request("DELETE", "/v1/session");
  csrfToken = "";
}

const path = (id) => `/v1/tasks/${encodeURIComponent(id)}`;

export const getTask = (id) => request("GET", path(id));
export const cancelTask = (id, reason) => request("POST", `${path(id)}:cancel`, { body: { reason } });
export const dismissTask = (id) => request("DELETE", path(id));

export function listLogs(id, { minLevel, stepKey, text, pageSize, pageToken } = {}) {
  return request("GET", `${path(id)}/logs`, {
    query: { minLevel, stepKey, text, pageSize, pageToken },
  });
}

// The event stream; after `lastEventId` when resuming (EventSource's own
// reconnections send it as the Last-Event-ID header by themselves). The page
// shows each task's latest state, so a tab that falls behind (in the
// background, say) asks to be brought up to date by a conflated batch rather
// than be cut off and replay every change.
export function eventsUrl(lastEventId = 0) {
  const resume = lastEventId ? `&lastEventId=${lastEventId}` : "";
  return `/v1/events?includeLogs=true&slowConsumer=conflate${resume}`;
}
