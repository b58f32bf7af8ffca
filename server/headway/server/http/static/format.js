// Small formatting helpers shared by the views.

export const TASK_STATES = [
  "TASK_STATE_PENDING",
  "TASK_STATE_RUNNING",
  "TASK_STATE_SUCCEEDED",
  "TASK_STATE_FAILED",
  "TASK_STATE_CANCELLED",
];

export const LOG_LEVELS = ["LOG_LEVEL_DEBUG", "LOG_LEVEL_INFO", "LOG_LEVEL_WARNING", "LOG_LEVEL_ERROR"];

// "TASK_STATE_RUNNING" -> "running"
export function stateName(value, prefix) {
  if (!value) return "unspecified";
  return value.replace(prefix, "").toLowerCase();
}

export const taskState = (task) => stateName(task.state, "TASK_STATE_");
export const stepState = (step) => stateName(step.state, "STEP_STATE_");
export const logLevel = (entry) => stateName(entry.level || "LOG_LEVEL_INFO", "LOG_LEVEL_");

export function atRest(task) {
  return ["succeeded", "failed", "cancelled"].includes(taskState(task));
}

export function millis(timestamp) {
  if (!timestamp) return null;
  const value = Date.parse(timestamp);
  return Number.isNaN(value) ? null : value;
}

// Proto3 JSON Duration ("12.5s") in milliseconds.
export function durationMillis(duration) {
  if (!duration) return null;
  const value = Number.parseFloat(String(duration).replace(/s$/, ""));
  return Number.isNaN(value) ? null : value * 1000;
}

// 3725000 -> "1h 2m 5s"; 65000 -> "1m 5s"; 4200 -> "4s"
// With `precise`, durations under 10 s keep a tenth: 4200 -> "4.2s".
export function formatDuration(ms, precise = false) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (precise && ms < 10000) return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
  let seconds = Math.max(0, Math.round(ms / 1000));
  const days = Math.floor(seconds / 86400);
  seconds -= days * 86400;
  const hours = Math.floor(seconds / 3600);
  seconds -= hours * 3600;
  const minutes = Math.floor(seconds / 60);
  seconds -= minutes * 60;
  if (days) return `${days}d ${hours}h`;
  if (hours) return `${hours}h ${minutes}m`;
  if (minutes) return `${minutes}m ${seconds}s`;
  return `${seconds}s`;
}

export function formatTime(timestamp) {
  const ms = millis(timestamp);
  if (ms === null) return "";
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

export function formatNumber(value) {
  if (typeof value !== "number") value = Number(value);
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  const abs = Math.abs(value);
  return value.toLocaleString("en-US", { maximumFractionDigits: abs >= 100 ? 1 : abs >= 1 ? 3 : 4 });
}

// A fraction (0..1) or null when unknown (indeterminate progress, or none).
export function fractionOf(item) {
  const progress = item.progress;
  if (progress && progress.indeterminate) return null;
  if (typeof item.fraction === "number") return clamp(item.fraction);
  if (progress && typeof progress.fraction === "number") return clamp(progress.fraction);
  if (progress && progress.units) {
    const total = Number(progress.units.total || 0);
    if (total > 0) return clamp(Number(progress.units.current || 0) / total);
  }
  return (item.state || "").endsWith("SUCCEEDED") ? 1 : 0;
}

function clamp(value) {
  return Math.min(1, Math.max(0, value));
}

export function percent(fraction) {
  if (fraction === null) return "";
  const value = fraction * 100;
  return `${value > 0 && value < 1 ? value.toFixed(1) : Math.floor(value)}%`;
}

// "40/120 files" for units, "" otherwise.
export function unitsText(progress) {
  if (!progress || !progress.units) return "";
  const { current = "0", total = "0", unit = "" } = progress.units;
  return `${formatNumber(Number(current))}/${formatNumber(Number(total))}${unit ? ` ${unit}` : ""}`;
}

export const BASIS_NAMES = {
  ESTIMATE_BASIS_RATE: "from the rate",
  ESTIMATE_BASIS_HISTORY: "from history",
  ESTIMATE_BASIS_AGENT: "from the agent",
  ESTIMATE_BASIS_COMBINED: "combined",
};

export function basisName(eta) {
  return (eta && BASIS_NAMES[eta.basis]) || "estimate";
}
