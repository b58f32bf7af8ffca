// The task card, as shown on the dashboard and at the top of a task page.

import { criteriaCount, criteriaList } from "./criteria.js";
import { h, safeHref } from "./dom.js";
import {
  atRest,
  basisName,
  formatDuration,
  formatNumber,
  formatTime,
  fractionOf,
  logLevel,
  millis,
  percent,
  stepState,
  taskState,
  unitsText,
} from "./format.js";

export const CARD_LOG_LINES = 3;

// A progress bar; `fraction` null draws an indeterminate (striped) bar.
export function progressBar(fraction, label, small = false) {
  const known = fraction !== null;
  return h(
    "div",
    {
      class: `bar${small ? " bar-small" : ""}${known ? "" : " bar-indeterminate"}`,
      role: "progressbar",
      "aria-label": label,
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": known ? String(Math.floor(fraction * 100)) : null,
    },
    h("div", { class: "bar-fill", style: `width: ${known ? fraction * 100 : 100}%` }),
  );
}

export function stateBadge(state, kind = "task") {
  return h("span", { class: `badge badge-${state}`, "data-kind": kind }, state.toUpperCase());
}

// The clock line: elapsed time and the ETA, both refreshed each second by `tick()`.
function timing(task) {
  const start = millis(task.startTime) ?? millis(task.createTime);
  const finish = millis(task.finishTime);
  const parts = [];
  if (start !== null) {
    parts.push(
      h(
        "span",
        {
          class: "elapsed",
          dataset: { from: String(start), to: finish !== null ? String(finish) : "", label: task.startTime ? "Elapsed" : "Queued" },
        },
        `${task.startTime ? "Elapsed" : "Queued"} ${formatDuration((finish ?? Date.now()) - start)}`,
      ),
    );
  }
  const eta = task.eta && millis(task.eta.finishTime);
  if (!atRest(task) && eta !== null && eta !== undefined) {
    parts.push(
      h(
        "span",
        { class: "eta", dataset: { finish: String(eta) }, title: `Expected at ${formatTime(task.eta.finishTime)}` },
        etaText(eta - Date.now()),
        h("span", { class: "eta-basis" }, ` (${basisName(task.eta)})`),
      ),
    );
  }
  return parts.length ? h("div", { class: "timing" }, parts) : null;
}

function etaText(left) {
  return left >= 1000 ? `ETA ${formatDuration(left)}` : "ETA any moment";
}

// Refreshes every elapsed and ETA counter under `root` from the client's clock.
export function tick(root, now = Date.now()) {
  for (const node of root.querySelectorAll(".elapsed")) {
    const from = Number(node.dataset.from);
    const to = node.dataset.to ? Number(node.dataset.to) : now;
    node.firstChild.nodeValue = `${node.dataset.label} ${formatDuration(to - from)}`;
  }
  for (const node of root.querySelectorAll(".eta")) {
    node.firstChild.nodeValue = etaText(Number(node.dataset.finish) - now);
  }
}

function stepItem(step) {
  const state = stepState(step);
  const fraction = fractionOf(step);
  const units = unitsText(step.progress);
  const icon = { succeeded: "✓", failed: "✗", running: "▶", skipped: "↷", cancelled: "■" }[state] || "○";
  const name = step.displayName || step.key;
  return h(
    "li",
    { class: `step step-${state}`, dataset: { stepKey: step.key, state } },
    h("span", { class: "step-icon", "aria-hidden": "true" }, icon),
    h("span", { class: "step-name" }, name),
    h("span", { class: "visually-hidden" }, ` ${state}`),
    state === "running" || (state !== "pending" && state !== "succeeded" && fraction)
      ? progressBar(fraction, `${name} progress`, true)
      : h("span", { class: "bar-spacer" }),
    h(
      "span",
      { class: "step-progress" },
      units || (state === "running" && fraction !== null ? percent(fraction) : ""),
    ),
    step.message ? h("span", { class: "step-message" }, step.message) : null,
    step.error
      ? h(
          "span",
          { class: "step-error" },
          step.error.message || step.error.code,
          step.error.retryable ? h("span", { class: "retryable" }, "retryable") : null,
        )
      : null,
  );
}

// A parent's children as the server counts them: "Children 2/3 done · 1 running · 1 failed".
// "Done" is every child at rest; the parent's bar follows theirs unless it reports its own.
export function childrenSummary(task) {
  const counts = task.children;
  if (!counts || !counts.total) return null;
  const done = (counts.succeeded || 0) + (counts.failed || 0) + (counts.cancelled || 0);
  const parts = [`Children ${done}/${counts.total} done`];
  for (const state of ["running", "pending", "failed", "cancelled"]) {
    if (counts[state]) parts.push(`${counts[state]} ${state}`);
  }
  return h(
    "p",
    { class: "children-summary", dataset: { total: String(counts.total), done: String(done) } },
    parts.join(" · "),
  );
}

function errorBlock(error) {
  const details = Object.entries(error.details || {});
  const traceback = error.details && error.details.traceback;
  const rest = details.filter(([key]) => key !== "traceback");
  return h(
    "details",
    { class: "error", dataset: { keep: "error" } },
    h(
      "summary",
      {},
      h("strong", {}, error.code || "Error"),
      error.message ? `: ${error.message}` : "",
      error.retryable ? h("span", { class: "retryable" }, "retryable") : null,
    ),
    rest.length
      ? h("dl", { class: "error-details" }, rest.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))
      : null,
    traceback ? h("pre", { class: "traceback" }, traceback) : null,
  );
}

function metricsList(metrics) {
  const entries = Object.entries(metrics || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return null;
  return h(
    "dl",
    { class: "metrics", "aria-label": "Metrics" },
    entries.map(([key, value]) =>
      h("div", { class: "metric" }, h("dt", {}, key), h("dd", {}, formatNumber(value))),
    ),
  );
}

function artifactsList(artifacts) {
  if (!artifacts || !artifacts.length) return null;
  return h(
    "ul",
    { class: "artifacts", "aria-label": "Artifacts" },
    h("li", { class: "artifacts-title" }, "Artifacts:"),
    artifacts.map((artifact) => {
      const href = safeHref(artifact.uri);
      const label = artifact.name || artifact.uri;
      return h(
        "li",
        {},
        href
          ? h("a", { href, target: "_blank", rel: "noopener noreferrer", title: artifact.mediaType || null }, label)
          : h("span", { title: artifact.uri }, label),
      );
    }),
  );
}

export function logLine(entry) {
  const level = logLevel(entry);
  return h(
    "li",
    { class: `log log-${level}`, dataset: { level, revision: String(entry.revision || 0), index: String(entry.index || 0) } },
    h("time", { datetime: entry.time || null }, formatTime(entry.time)),
    h("span", { class: "log-level" }, level.toUpperCase()),
    entry.stepKey ? h("span", { class: "log-step" }, entry.stepKey) : null,
    h("span", { class: "log-message" }, entry.message || ""),
  );
}

// One task's card. `options.can` is the set of the viewer's permissions;
// `options.logs` the latest log lines; `options.actions` the button handlers.
export function taskCard(task, options) {
  const { can, logs = [], actions, full = false } = options;
  const state = taskState(task);
  const fraction = fractionOf(task);
  const name = task.displayName || task.id;
  const rest = atRest(task);
  const buttons = [];
  if (!rest && can.has("cancel") && !task.cancelRequest) {
    buttons.push(
      h(
        "button",
        { type: "button", class: "btn cancel", "aria-label": `Cancel ${name}`, onclick: () => actions.cancel(task) },
        "Cancel",
      ),
    );
  }
  if (rest && can.has("delete")) {
    buttons.push(
      h(
        "button",
        { type: "button", class: "btn dismiss", "aria-label": `Dismiss ${name}`, onclick: () => actions.dismiss(task) },
        "Dismiss",
      ),
    );
  }
  const iteration =
    task.maxIterations && Number(task.maxIterations) > 0
      ? `${formatNumber(Number(task.iteration || 0))}/${formatNumber(Number(task.maxIterations))}`
      : task.iteration && Number(task.iteration) > 0
        ? formatNumber(Number(task.iteration))
        : null;
  const labels = Object.entries(task.labels || {});
  return h(
    "article",
    {
      class: `card card-${state}${task.stalled ? " card-stalled" : ""}`,
      "aria-label": `${name}, ${state}`,
      dataset: { taskId: task.id, state, revision: String(task.revision || 0), stalled: task.stalled ? "true" : "false" },
    },
    h(
      "header",
      { class: "card-head" },
      h(
        "h3",
        { class: "card-title" },
        full ? name : h("a", { href: `#/tasks/${encodeURIComponent(task.id)}`, class: "task-link" }, name),
      ),
      task.kind ? h("span", { class: "kind" }, task.kind) : null,
      stateBadge(state),
      buttons.length ? h("div", { class: "actions" }, buttons) : null,
    ),
    labels.length
      ? h("ul", { class: "labels", "aria-label": "Labels" }, labels.map(([k, v]) => h("li", {}, `${k}: ${v}`)))
      : null,
    task.stalled
      ? h(
          "p",
          { class: "stalled", role: "status" },
          h("strong", {}, "⚠ STALLED"),
          ` — no report since ${formatTime(task.lastReportTime) || "a while"}`,
        )
      : null,
    task.cancelRequest && !rest
      ? h(
          "p",
          { class: "cancelling" },
          `Cancel requested${task.cancelRequest.requestedBy ? ` by ${task.cancelRequest.requestedBy}` : ""}` +
            (task.cancelRequest.reason ? `: ${task.cancelRequest.reason}` : ""),
        )
      : null,
    h(
      "div",
      { class: "progress-row" },
      progressBar(fraction, `${name} progress`),
      h("span", { class: "percent" }, fraction === null ? "…" : percent(fraction)),
    ),
    childrenSummary(task),
    task.message ? h("p", { class: "message" }, task.message) : null,
    h(
      "div",
      { class: "facts" },
      iteration ? h("span", { class: "iteration" }, `Iteration ${iteration}`) : null,
      criteriaCount(task),
      timing(task),
    ),
    task.steps && task.steps.length
      ? h("ol", { class: "steps", "aria-label": "Steps" }, task.steps.map(stepItem))
      : null,
    full ? criteriaList(task.criteria) : null,
    metricsList(task.metrics),
    task.error ? errorBlock(task.error) : null,
    artifactsList(task.artifacts),
    !full && logs.length
      ? h("ul", { class: "logs card-logs", "aria-label": "Latest log lines" }, logs.slice(-CARD_LOG_LINES).map(logLine))
      : null,
    full ? null : h("div", { class: "children" }),
  );
}
