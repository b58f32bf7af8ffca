// The dashboard's state: the tenant's tasks, kept current by the event stream.
//
// Every change event (created, updated, deleted, logs) carries the revision of
// the change. A task change is applied only when its revision is newer than the
// revision of the task already held, so an event seen twice (a reconnect that
// resumes a little early) changes nothing, and the store counts it as a
// duplicate instead. On `resync` the store drops everything and rebuilds from
// the snapshot events that follow, until `synced`.

export const MAX_LOGS_PER_TASK = 200;

export function revisionOf(value) {
  // int64 fields arrive as JSON strings; revisions stay far below 2^53.
  return value === undefined || value === null ? 0 : Number(value);
}

export class Store {
  constructor() {
    this.tasks = new Map(); // id -> Task (proto3 JSON)
    this.logs = new Map(); // id -> LogEntry[] (oldest first, at most MAX_LOGS_PER_TASK)
    this.gone = new Map(); // id -> revision of its deletion, so a stale event cannot revive it
    this.revision = 0; // the newest revision seen
    this.resumeRevision = 0; // where a new stream resumes: the last change or control event once synced
    this.synced = false;
    this.rebuilding = null; // ids seen in a fresh snapshot, while one is under way
    this.seen = new Set(); // change events (type, task, revision) received since the last resync
    this.stats = { events: 0, applied: 0, duplicates: 0, resyncs: 0 };
    this.listeners = new Set();
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(change) {
    for (const listener of this.listeners) listener(change);
  }

  reset() {
    this.tasks.clear();
    this.logs.clear();
    this.gone.clear();
    this.seen.clear();
    this.synced = false;
  }

  // A fresh stream (no resume point) starts with a snapshot: keep showing what is
  // held, and at `synced` drop the tasks the snapshot no longer had.
  beginSnapshot() {
    this.rebuilding = new Set();
    this.synced = false;
  }

  // Applies one event (`type` is the SSE event name, `event` the Event JSON).
  // Returns the kind of change for the views, or null when nothing changed.
  apply(type, event) {
    this.stats.events += 1;
    const revision = revisionOf(event.revision);
    const change = this.#reduce(type, event, revision);
    if (revision > this.revision && type !== "resync") this.revision = revision;
    // Snapshot events carry their task's revision, not a resume point.
    if (this.synced && type !== "snapshot" && type !== "resync" && revision > this.resumeRevision) {
      this.resumeRevision = revision;
    }
    if (change) {
      this.stats.applied += 1;
      this.emit(change);
    }
    return change;
  }

  #reduce(type, event, revision) {
    switch (type) {
      case "snapshot":
        if (this.rebuilding && event.snapshot) this.rebuilding.add(event.snapshot.id);
        return this.#put(event.snapshot, "snapshot");
      case "created":
        return this.#change(type, event.created, revision, () => this.#put(event.created, type));
      case "updated":
        return this.#change(type, event.updated, revision, () => this.#put(event.updated, type));
      case "deleted":
        return this.#change(type, event.deleted, revision, () =>
          this.#remove(event.deleted, revision),
        );
      case "logs": {
        const logs = event.logsAppended || {};
        return this.#change(type, { id: logs.taskId }, revision, () => this.#appendLogs(logs));
      }
      case "resync":
        this.stats.resyncs += 1;
        this.reset();
        this.resumeRevision = 0;
        return { kind: "resync" };
      case "synced": {
        const present = this.rebuilding;
        this.rebuilding = null;
        this.synced = true;
        if (revision > this.resumeRevision) this.resumeRevision = revision;
        if (present) {
          for (const id of [...this.tasks.keys()]) {
            if (!present.has(id)) {
              this.tasks.delete(id);
              this.logs.delete(id);
            }
          }
        }
        return { kind: "synced" };
      }
      default: // heartbeat, error: nothing to change
        return null;
    }
  }

  // A change event: one per task and revision; the same one seen again is a duplicate.
  #change(type, task, revision, apply) {
    const key = `${type}:${(task && task.id) || ""}:${revision}`;
    if (this.seen.has(key)) {
      this.stats.duplicates += 1;
      return null;
    }
    this.seen.add(key);
    return apply();
  }

  #put(task, kind) {
    if (!task || !task.id) return null;
    const revision = revisionOf(task.revision);
    const held = this.tasks.get(task.id);
    if (held && revisionOf(held.revision) >= revision) return null;
    const deletedAt = this.gone.get(task.id);
    if (deletedAt !== undefined && deletedAt >= revision) return null;
    this.gone.delete(task.id);
    this.tasks.set(task.id, task);
    return { kind, id: task.id, task };
  }

  #remove(task, revision) {
    if (!task || !task.id) return null;
    const held = this.tasks.get(task.id);
    if (held && revisionOf(held.revision) >= revision) return null;
    this.gone.set(task.id, revision);
    if (!held) return null;
    this.tasks.delete(task.id);
    this.logs.delete(task.id);
    return { kind: "deleted", id: task.id, task };
  }

  #appendLogs(appended) {
    if (!appended || !appended.taskId || !appended.entries) return null;
    const id = appended.taskId;
    const lines = this.logs.get(id) || [];
    const last = lines.length ? lines[lines.length - 1] : null;
    const fresh = appended.entries.filter((entry) => !last || compareLog(entry, last) > 0);
    if (!fresh.length) return null;
    const all = lines.concat(fresh);
    this.logs.set(id, all.slice(-MAX_LOGS_PER_TASK));
    return { kind: "logs", id, entries: fresh };
  }

  // Tasks whose parent is `parentId` ("" for top-level tasks, or tasks whose parent is not held).
  // A child is created after its parent: one left by an earlier task of the same id is top-level.
  children(parentId) {
    const out = [];
    for (const task of this.tasks.values()) {
      const parent = task.parentId || "";
      const held = this.tasks.get(parent);
      const top = !parent || !held || revisionOf(task.createRevision) <= revisionOf(held.createRevision);
      if (parentId === "" ? top : !top && parent === parentId) out.push(task);
    }
    return out;
  }
}

export function compareLog(a, b) {
  const byRevision = revisionOf(a.revision) - revisionOf(b.revision);
  return byRevision !== 0 ? byRevision : (a.index || 0) - (b.index || 0);
}
