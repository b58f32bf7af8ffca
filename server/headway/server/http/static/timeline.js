// The timeline of a task: each step a bar from its start to its end (running
// steps reach to now), on one time axis, with the waits between steps shown.

import { h } from "./dom.js";
import { formatDuration, formatTime, millis, stepState } from "./format.js";

function spanOf(task, now) {
  const starts = [millis(task.startTime), millis(task.createTime)];
  const ends = [millis(task.finishTime)];
  for (const step of task.steps || []) {
    starts.push(millis(step.startTime));
    ends.push(millis(step.finishTime), step.startTime && !step.finishTime ? now : null);
  }
  const first = Math.min(...starts.filter((v) => v !== null));
  let last = Math.max(...ends.filter((v) => v !== null), first);
  if (!task.finishTime) last = Math.max(last, now);
  return Number.isFinite(first) ? { first, last: Math.max(last, first + 1000) } : null;
}

function ticks(first, last) {
  const span = last - first;
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
  const every = (steps.find((s) => (span / 1000) / s <= 6) || 86400) * 1000;
  const out = [];
  for (let t = 0; t <= span; t += every) out.push(t);
  return out;
}

export function timeline(task, now = Date.now()) {
  const steps = task.steps || [];
  const span = spanOf(task, now);
  if (!span) return h("p", { class: "empty" }, "The task has not started yet.");
  const { first, last } = span;
  const pct = (t) => `${(((t - first) / (last - first)) * 100).toFixed(3)}%`;
  const width = (a, b) => `${Math.max(0.4, ((b - a) / (last - first)) * 100).toFixed(3)}%`;

  const axis = h(
    "div",
    { class: "tl-row tl-axis", "aria-hidden": "true" },
    h("span", { class: "tl-label" }, formatTime(new Date(first).toISOString())),
    h(
      "div",
      { class: "tl-track" },
      ticks(first, last).map((t) =>
        h(
          "span",
          { class: `tl-tick${t / (last - first) > 0.94 ? " tl-tick-end" : ""}`, style: `left: ${pct(first + t)}` },
          `+${formatDuration(t)}`,
        ),
      ),
    ),
  );

  let previousEnd = millis(task.startTime) ?? millis(task.createTime);
  const rows = steps.map((step) => {
    const state = stepState(step);
    const start = millis(step.startTime);
    const end = millis(step.finishTime) ?? (start !== null ? now : null);
    const name = step.displayName || step.key;
    const track = h("div", { class: "tl-track" });
    let summary;
    if (start === null) {
      track.append(h("span", { class: "tl-none" }, state === "skipped" ? "skipped" : "not started"));
      summary = `${name}: ${state === "skipped" ? "skipped" : "not started"}`;
    } else {
      const wait = previousEnd !== null ? start - previousEnd : 0;
      if (wait >= 100) {
        track.append(
          h(
            "span",
            {
              class: "tl-wait",
              style: `left: ${pct(previousEnd)}; width: ${width(previousEnd, start)}`,
              title: `waited ${formatDuration(wait, true)}`,
              dataset: { wait: String(wait) },
            },
            (start - previousEnd) / (last - first) > 0.06
              ? h("span", { class: "tl-wait-label" }, `wait ${formatDuration(wait, true)}`)
              : null,
          ),
        );
      }
      const duration = end - start;
      summary = `${name}: ${state}, ${formatTime(step.startTime)} to ${
        step.finishTime ? formatTime(step.finishTime) : "now"
      } (${formatDuration(duration, true)})`;
      track.append(
        h(
          "span",
          {
            class: `tl-bar tl-${state}${step.finishTime ? "" : " tl-open"}`,
            style: `left: ${pct(start)}; width: ${width(start, end)}`,
            title: summary,
            dataset: { stepKey: step.key, start: String(start), end: String(end) },
          },
          h("span", { class: "tl-bar-label" }, formatDuration(duration, true)),
        ),
      );
      previousEnd = Math.max(previousEnd ?? end, end);
    }
    return h(
      "div",
      { class: "tl-row", role: "listitem", "aria-label": summary, dataset: { stepKey: step.key, state } },
      h("span", { class: "tl-label", title: name }, name),
      track,
    );
  });

  const nowLine = task.finishTime
    ? null
    : h("div", { class: "tl-now", style: `left: calc(var(--tl-label) + (100% - var(--tl-label)) * ${((now - first) / (last - first)).toFixed(4)})`, "aria-hidden": "true" });

  return h(
    "div",
    { class: "timeline", dataset: { first: String(first), last: String(last) } },
    axis,
    h("div", { class: "tl-rows", role: "list", "aria-label": "Steps over time" }, rows.length ? rows : h("p", { class: "empty" }, "No steps.")),
    nowLine,
  );
}
