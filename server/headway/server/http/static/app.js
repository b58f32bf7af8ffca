// The Headway dashboard: the tenant's tasks, live, from the server's event stream.

import * as api from "./api.js";
import { h } from "./dom.js";
import { LOG_LEVELS, atRest, fractionOf, percent, taskState } from "./format.js";
import { logLine, taskCard, tick } from "./render.js";
import { Store, compareLog } from "./state.js";
import { timeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);
const store = new Store();
const EVENT_TYPES = ["snapshot", "created", "updated", "deleted", "logs", "synced", "heartbeat", "resync"];
const app = document.documentElement;

let session = null;
let can = new Set();
let source = null;
let retryTimer = null;
let retryDelay = 1000;

// ---------- notices ----------

let noticeTimer = null;
function notify(message) {
  const notice = $("notice");
  notice.textContent = message;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (notice.hidden = true), 8000);
}

// ---------- session ----------

async function start() {
  try {
    session = await api.getSession();
  } catch (error) {
    setConnection("offline");
    notify(`Cannot reach the server: ${error.message}`);
    scheduleReconnect();
    return;
  }
  if (!session) {
    showSignIn();
    return;
  }
  const principal = session.principal || {};
  can = new Set(principal.permissions || []);
  const who = $("who");
  who.hidden = false;
  who.querySelector(".who-name").textContent = `${principal.name || "anonymous"} · ${principal.role || ""}${
    principal.tenant ? ` · ${principal.tenant}` : ""
  }`;
  $("sign-out").hidden = !principal.name || principal.name === "anonymous";
  $("signin").hidden = true;
  connect();
  route();
}

function showSignIn() {
  closeStream();
  setConnection("offline");
  $("dashboard").hidden = true;
  $("task-page").hidden = true;
  $("who").hidden = true;
  $("signin").hidden = false;
  $("token").focus();
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("token");
  $("signin-error").textContent = "";
  try {
    await api.signIn(input.value.trim());
    input.value = "";
    await start();
  } catch (error) {
    $("signin-error").textContent =
      error.status === 401 || error.status === 403 ? "That token was not accepted." : error.message;
  }
});

$("sign-out").addEventListener("click", async () => {
  try {
    await api.signOut();
  } finally {
    store.reset();
    session = null;
    showSignIn();
  }
});

// ---------- the event stream ----------

function setConnection(state) {
  const node = $("connection");
  node.dataset.state = state;
  node.querySelector(".connection-text").textContent = {
    connecting: "Connecting…",
    connected: "Live",
    reconnecting: "Reconnecting…",
    offline: "Offline",
  }[state];
  node.title = state === "connected" ? `Live, at revision ${store.revision}` : "";
}

function closeStream() {
  clearTimeout(retryTimer);
  if (source) source.close();
  source = null;
}

function connect() {
  closeStream();
  // A new EventSource resumes where the last one stopped when it got that far;
  // otherwise it starts with a snapshot, and the tasks that the snapshot no
  // longer has (deleted meanwhile) are dropped at `synced`.
  const resume = store.synced ? store.resumeRevision : 0;
  if (!resume) store.beginSnapshot();
  setConnection(store.revision ? "reconnecting" : "connecting");
  source = new EventSource(api.eventsUrl(resume));
  source.addEventListener("open", () => {
    retryDelay = 1000;
    setConnection("connected");
  });
  for (const type of EVENT_TYPES) {
    source.addEventListener(type, (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      store.apply(type, data);
      if (type !== "heartbeat") setConnection("connected");
      publishStats();
    });
  }
  // Both a lost connection and the server's own `error` event arrive here.
  source.addEventListener("error", (message) => {
    if (message.data) {
      let status = {};
      try {
        status = JSON.parse(message.data);
      } catch {}
      // UNAVAILABLE (the server is going away): the indicator says it; the browser comes back.
      if (status.code !== 14) notify(`The event stream ended: ${status.message || message.data}`);
      return;
    }
    if (!navigator.onLine) setConnection("offline");
    if (source && source.readyState === EventSource.CLOSED) {
      // The browser gave up (an HTTP error, say a 401 or a 503): try again later.
      setConnection("offline");
      scheduleReconnect();
    } else {
      setConnection("reconnecting");
    }
  });
}

function scheduleReconnect() {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => {
    retryDelay = Math.min(retryDelay * 2, 30000);
    closeStream();
    start();
  }, retryDelay);
}

window.addEventListener("offline", () => setConnection("offline"));
window.addEventListener("online", () => {
  if (source && source.readyState === EventSource.OPEN) setConnection("connected");
  else if (session) setConnection("reconnecting");
});

// Counters a tester (or a curious operator) can read from the page.
function publishStats() {
  const { events, applied, duplicates, resyncs } = store.stats;
  Object.assign(app.dataset, {
    events: String(events),
    applied: String(applied),
    duplicates: String(duplicates),
    resyncs: String(resyncs),
    revision: String(store.revision),
    synced: String(store.synced),
  });
}

// ---------- rendering ----------

let scheduled = false;
store.subscribe(() => {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    render();
  });
});

const filters = { kind: "", state: "", label: "", text: "" };

function matches(task) {
  if (filters.kind && task.kind !== filters.kind) return false;
  if (filters.state === "stalled") {
    if (!task.stalled) return false;
  } else if (filters.state && taskState(task) !== filters.state) return false;
  if (filters.label) {
    const [key, ...rest] = filters.label.split(":");
    const value = rest.join(":").trim();
    const labels = task.labels || {};
    if (!(key.trim() in labels)) return false;
    if (rest.length && value && labels[key.trim()] !== value) return false;
  }
  if (filters.text) {
    const text = filters.text.toLowerCase();
    const haystack = [task.displayName, task.id, task.kind, task.message, ...Object.values(task.labels || {})]
      .join("\n")
      .toLowerCase();
    if (!haystack.includes(text)) return false;
  }
  return true;
}

const actions = {
  cancel: (task) => openCancel(task),
  dismiss: async (task) => {
    try {
      await api.dismissTask(task.id);
    } catch (error) {
      notify(`Could not dismiss “${task.displayName || task.id}”: ${error.message}`);
    }
  },
};

// Keeps focus and opened <details> across a re-render of the cards.
function rememberUi(root) {
  const active = document.activeElement;
  const card = active && active.closest && active.closest("[data-task-id]");
  const open = new Set([...root.querySelectorAll("details[open]")].map((d) => d.closest("[data-task-id]").dataset.taskId));
  return {
    open,
    focus: card && root.contains(card) ? { id: card.dataset.taskId, cls: active.className } : null,
  };
}

function restoreUi(root, memory) {
  for (const id of memory.open) {
    const details = root.querySelector(`[data-task-id="${CSS.escape(id)}"] details`);
    if (details) details.open = true;
  }
  if (memory.focus) {
    const card = root.querySelector(`[data-task-id="${CSS.escape(memory.focus.id)}"]`);
    const target = card && [...card.querySelectorAll("a, button, summary")].find((n) => n.className === memory.focus.cls);
    if (target) target.focus({ preventScroll: true });
  }
}

function byRecent(a, b) {
  const rank = (t) => ({ running: 0, pending: 1, failed: 2 }[taskState(t)] ?? 3);
  return rank(a) - rank(b) || String(b.createTime || "").localeCompare(String(a.createTime || ""));
}

function renderDashboard() {
  renderSummary();
  renderKinds();
  const root = $("tasks");
  const memory = rememberUi(root);
  // A parent is shown when it or any of its descendants matches.
  const shown = new Map();
  const visible = (task) => {
    if (shown.has(task.id)) return shown.get(task.id);
    shown.set(task.id, false);
    const result = matches(task) || store.children(task.id).some(visible);
    shown.set(task.id, result);
    return result;
  };
  const build = (task) => {
    const card = taskCard(task, { can, logs: store.logs.get(task.id) || [], actions });
    const holder = card.querySelector(".children");
    const kids = store.children(task.id).filter(visible).sort(byRecent);
    if (kids.length) {
      holder.append(h("p", { class: "children-title" }, `${kids.length} child task${kids.length > 1 ? "s" : ""}`));
      holder.append(...kids.map(build));
    } else holder.remove();
    return card;
  };
  const top = store.children("").filter(visible).sort(byRecent);
  root.replaceChildren(...top.map(build));
  $("empty").hidden = top.length > 0 || !store.synced;
  $("empty").textContent = store.tasks.size ? "No tasks match." : "No tasks yet. Start an agent and it appears here.";
  restoreUi(root, memory);
}

const SUMMARY = [
  ["pending", "Queued"],
  ["running", "Running"],
  ["succeeded", "Complete"],
  ["failed", "Error"],
  ["cancelled", "Cancelled"],
  ["stalled", "Stalled"],
];

function renderSummary() {
  const counts = Object.fromEntries(SUMMARY.map(([key]) => [key, 0]));
  for (const task of store.tasks.values()) {
    counts[taskState(task)] = (counts[taskState(task)] || 0) + 1;
    if (task.stalled) counts.stalled += 1;
  }
  $("summary").replaceChildren(
    ...SUMMARY.map(([key, label]) =>
      h(
        "button",
        {
          type: "button",
          class: `stat stat-${key}`,
          "aria-pressed": filters.state === key ? "true" : "false",
          "aria-label": `${counts[key]} ${label}: show only these`,
          dataset: { state: key, count: String(counts[key]) },
          onclick: () => {
            filters.state = filters.state === key ? "" : key;
            $("filter-state").value = filters.state;
            render();
          },
        },
        h("span", { class: "stat-count" }, String(counts[key])),
        h("span", { class: "stat-label" }, label),
      ),
    ),
  );
}

function renderKinds() {
  const select = $("filter-kind");
  const kinds = [...new Set([...store.tasks.values()].map((t) => t.kind).filter(Boolean))].sort();
  const current = [...select.options].slice(1).map((o) => o.value);
  if (kinds.join("\n") === current.join("\n")) return;
  const value = select.value;
  select.replaceChildren(h("option", { value: "" }, "All kinds"), ...kinds.map((k) => h("option", { value: k }, k)));
  select.value = kinds.includes(value) ? value : "";
}

for (const [id, key] of [
  ["filter-kind", "kind"],
  ["filter-state", "state"],
  ["filter-label", "label"],
  ["filter-text", "text"],
]) {
  $(id).addEventListener("input", (event) => {
    filters[key] = event.target.value.trim();
    render();
  });
}
$("filters").addEventListener("submit", (event) => event.preventDefault());

// ---------- cancel dialog ----------

let cancelling = null;
function openCancel(task) {
  cancelling = task;
  $("cancel-what").textContent = `Ask the agent running “${task.displayName || task.id}” to stop.`;
  $("cancel-reason").value = "";
  $("cancel-error").textContent = "";
  $("cancel-dialog").showModal();
  $("cancel-reason").focus();
}
$("cancel-close").addEventListener("click", () => $("cancel-dialog").close());
$("cancel-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const reason = $("cancel-reason").value.trim();
  if (!reason) {
    $("cancel-error").textContent = "Please give a reason.";
    return;
  }
  const button = $("cancel-confirm");
  button.disabled = true;
  try {
    await api.cancelTask(cancelling.id, reason);
    $("cancel-dialog").close();
  } catch (error) {
    $("cancel-error").textContent = `The server refused: ${error.message}`;
  } finally {
    button.disabled = false;
  }
});

// ---------- the task page ----------

const logView = { id: null, query: null, keys: new Set(), nextPageToken: "", loading: 0 };

function currentTaskId() {
  const match = window.location.hash.match(/^#\/tasks\/(.+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

function renderTaskPage(id) {
  const task = store.tasks.get(id);
  const holder = $("task-card");
  if (!task) {
    holder.replaceChildren(h("p", { class: "empty" }, store.synced ? "This task does not exist (any more)." : "Loading…"));
    $("timeline").replaceChildren();
    return;
  }
  const memory = rememberUi(holder);
  holder.replaceChildren(taskCard(task, { can, actions, full: true }));
  restoreUi(holder, memory);
  document.title = `${task.displayName || task.id} · Headway`;
  $("timeline").replaceChildren(timeline(task));
  const kids = store.children(id);
  $("children-panel").hidden = !kids.length;
  $("children").replaceChildren(
    ...kids.map((kid) =>
      h(
        "li",
        { dataset: { taskId: kid.id } },
        h("a", { href: `#/tasks/${encodeURIComponent(kid.id)}` }, kid.displayName || kid.id),
        ` — ${taskState(kid)}, ${percent(fractionOf(kid) ?? 0)}`,
      ),
    ),
  );
  const steps = $("log-step");
  const keys = (task.steps || []).map((s) => s.key);
  if ([...steps.options].slice(1).map((o) => o.value).join("\n") !== keys.join("\n")) {
    const value = steps.value;
    steps.replaceChildren(
      h("option", { value: "" }, "All steps"),
      ...(task.steps || []).map((s) => h("option", { value: s.key }, s.displayName || s.key)),
    );
    steps.value = keys.includes(value) ? value : "";
  }
}

function logQuery() {
  return {
    text: $("log-text").value.trim(),
    minLevel: $("log-level").value,
    stepKey: $("log-step").value,
  };
}

function logMatches(entry, query) {
  if (query.stepKey && entry.stepKey !== query.stepKey) return false;
  if (query.minLevel && LOG_LEVELS.indexOf(entry.level || "LOG_LEVEL_INFO") < LOG_LEVELS.indexOf(query.minLevel))
    return false;
  if (query.text && !(entry.message || "").toLowerCase().includes(query.text.toLowerCase())) return false;
  return true;
}

function showLogs(entries) {
  const view = $("log-view");
  for (const entry of entries) {
    const key = `${entry.revision}:${entry.index || 0}`;
    if (logView.keys.has(key)) continue;
    logView.keys.add(key);
    view.append(logLine(entry));
  }
  $("log-empty").hidden = view.children.length > 0;
  $("log-more").hidden = !logView.nextPageToken;
}

async function loadLogs(more = false) {
  const id = logView.id;
  const query = more ? logView.query : logQuery();
  const ticket = ++logView.loading;
  if (!more) {
    logView.query = query;
    logView.keys.clear();
    logView.nextPageToken = "";
  }
  try {
    const page = await api.listLogs(id, { ...query, pageSize: 200, pageToken: more ? logView.nextPageToken : "" });
    if (ticket !== logView.loading || id !== logView.id) return;
    if (!more) $("log-view").replaceChildren();
    logView.nextPageToken = page.nextPageToken || "";
    showLogs(page.entries || []);
    $("log-view").dataset.loaded = "true";
  } catch (error) {
    if (ticket === logView.loading) notify(`Could not load the logs: ${error.message}`);
  }
}

let searchTimer = null;
$("log-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  loadLogs();
});
$("log-text").addEventListener("input", () => {
  clearTimeout(searchTimer);
  $("log-view").dataset.loaded = "false";
  searchTimer = setTimeout(() => loadLogs(), 250);
});
for (const id of ["log-level", "log-step"]) {
  $(id).addEventListener("change", () => {
    $("log-view").dataset.loaded = "false";
    loadLogs();
  });
}
$("log-more").addEventListener("click", () => loadLogs(true));

store.subscribe((change) => {
  // Live lines join the view once every older page is shown.
  if (change.kind !== "logs" || change.id !== logView.id || logView.nextPageToken || !logView.query) return;
  const lines = change.entries.filter((e) => logMatches(e, logView.query)).sort(compareLog);
  showLogs(lines);
});

// ---------- routing ----------

function route() {
  if (!session) return;
  const id = currentTaskId();
  $("dashboard").hidden = id !== null;
  $("task-page").hidden = id === null;
  if (id !== null && id !== logView.id) {
    logView.id = id;
    $("log-text").value = "";
    $("log-level").value = "";
    $("log-step").value = "";
    $("log-view").replaceChildren();
    loadLogs();
    $("main").focus({ preventScroll: true });
  } else if (id === null) {
    logView.id = null;
    document.title = "Headway";
  }
  render();
}

function render() {
  if (!session) return;
  const id = currentTaskId();
  if (id === null) renderDashboard();
  else renderTaskPage(id);
}

window.addEventListener("hashchange", route);

// Counting down (ETA) and up (elapsed) between changes, and running steps reaching to now.
setInterval(() => {
  tick(document.body);
  const id = currentTaskId();
  const task = id && store.tasks.get(id);
  if (task && !atRest(task)) $("timeline").replaceChildren(timeline(task));
}, 1000);

publishStats();
start();
