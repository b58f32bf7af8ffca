// Headway from Node.js, built only from the protos in protos/headway/v1.
//
// An agent's life in one script: create a task, report progress, watch it
// with Subscribe (snapshot, synced, changes), drop the stream and resume from
// the last revision seen, get an INVALID_ARGUMENT and read its details, and
// finish the task. Every outcome is checked; each milestone is printed as one
// JSON line on stdout, the last one {"step": "summary", "ok": true, ...}.
// Anything unexpected prints {"step": "failed", ...} and exits with 1.
//
//   npm ci && node progress.mjs
//
// Environment:
//   HEADWAY_ADDRESS  host:port of the server (default 127.0.0.1:50051), plaintext
//   HEADWAY_TOKEN    a bearer token, sent as `authorization: Bearer <token>`

import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import googleProtoFiles from 'google-proto-files';
import protobuf from 'protobufjs';

const ADDRESS = process.env.HEADWAY_ADDRESS || '127.0.0.1:50051';
const TOKEN = process.env.HEADWAY_TOKEN || '';
const TIMEOUT_MS = 10_000;

// The contract, straight from the repository (two folders up from this file).
const PROTOS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../protos');
// google/protobuf/*.proto and google/rpc/*.proto, from the google-proto-files package.
const GOOGLE_PROTOS = path.dirname(googleProtoFiles.getProtoPath());

// How protobuf messages become JavaScript objects. None of these is the default,
// and each one matters:
const OBJECTS = {
  // Field names as written in the protos (task_id, start_revision, step_key),
  // not camelCase: they match the field paths of BadRequest violations, the
  // JSON of grpcurl and the HTTP API, and the rest of the documentation.
  keepCase: true,
  // int64 fields (revisions, unit counts, iterations) as decimal strings.
  // Revisions may exceed 2^53, where a Number silently loses digits, and the
  // default Long objects compare by identity. Compare with BigInt(revision).
  longs: String,
  // Enum values by name ('TASK_STATE_SUCCEEDED'), not by number.
  enums: String,
  // Unset fields read as their proto3 default ('' / 0 / false / []), so
  // task.message or task.steps are never undefined.
  defaults: true,
  // Each oneof gets a virtual field naming the member that is set:
  // event.kind is 'snapshot', 'updated', 'synced', ...; progress.value is
  // 'units', 'fraction' or 'indeterminate'.
  oneofs: true,
};

const definition = protoLoader.loadSync('headway/v1/task_service.proto', {
  ...OBJECTS,
  includeDirs: [PROTOS, GOOGLE_PROTOS],
});
const { TaskService } = grpc.loadPackageDefinition(definition).headway.v1;
const client = new TaskService(ADDRESS, grpc.credentials.createInsecure());

// Error details: the server puts a google.rpc.Status in the trailer
// `grpc-status-details-bin`; its `details` are Any messages, here ErrorInfo
// (every error) and BadRequest (INVALID_ARGUMENT). protobufjs decodes them.
const rpcProtos = new protobuf.Root().loadSync(
  [googleProtoFiles.getProtoPath('rpc', 'status.proto'), googleProtoFiles.getProtoPath('rpc', 'error_details.proto')],
  { keepCase: true },
);
const Status = rpcProtos.lookupType('google.rpc.Status');

/** The details of a gRPC error, each as {type: 'google.rpc.ErrorInfo', ...fields}. */
function errorDetails(error) {
  const [bytes] = error.metadata?.get('grpc-status-details-bin') ?? [];
  if (!bytes) return [];
  return Status.decode(bytes).details.map((any) => {
    const name = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    const type = rpcProtos.lookup(name);
    if (!(type instanceof protobuf.Type)) return { type: name }; // a detail this client does not know
    return { type: name, ...type.toObject(type.decode(any.value), OBJECTS) };
  });
}

/** Per-call metadata: the bearer token, as the Python client sends it. */
function metadata() {
  const md = new grpc.Metadata();
  if (TOKEN) md.set('authorization', `Bearer ${TOKEN}`);
  return md;
}

/** A unary RPC as a promise; every mutation carries a fresh request_id (safe to retry). */
function call(method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), { deadline: Date.now() + TIMEOUT_MS }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

// Streams still open when the script ends, cancelled then: an open call keeps Node running.
const openStreams = new Set();

/** Subscribe: the call (to cancel it) and its events, one at a time, in order. */
function subscribe(request) {
  const stream = client.Subscribe(request, metadata());
  openStreams.add(stream);
  stream.on('close', () => openStreams.delete(stream));
  async function* events() {
    for await (const response of stream) yield* response.events;
  }
  const iterator = events();
  return {
    stream,
    // The next event that is not a heartbeat, or null once the stream ended with OK.
    async next() {
      for (;;) {
        const { value, done } = await within(iterator.next(), 'the next event');
        if (done) return null;
        // Heartbeats only carry the current revision; kinds added later are skipped too.
        if (value.kind === 'heartbeat' || value.kind === undefined) continue;
        return value;
      }
    },
  };
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function print(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

async function main() {
  const taskId = `node-example-${randomUUID()}`;

  // 1. Create a task with two steps. Revisions are strings (longs: String).
  const { task: created } = await call('CreateTask', {
    task_id: taskId,
    display_name: 'Node.js example',
    kind: 'example.node',
    labels: { language: 'javascript' },
    steps: [{ key: 'fetch' }, { key: 'analyze', weight: 2 }],
    request_id: randomUUID(),
  });
  check(created.id === taskId && created.state === 'TASK_STATE_PENDING', `created ${created.state}`);
  check(typeof created.revision === 'string', 'revisions are strings');
  print({ step: 'created', task_id: taskId, revision: created.revision, creator: created.creator });

  // 2. Watch it: without start_revision the stream starts with a snapshot, then `synced`.
  const watch = subscribe({ filter: { task_ids: [taskId] } });
  const snapshot = await watch.next();
  check(snapshot?.kind === 'snapshot' && snapshot.snapshot.id === taskId, `first event ${snapshot?.kind}`);
  check(snapshot.revision === created.revision, 'the snapshot is the task as created');
  const synced = await watch.next();
  check(synced?.kind === 'synced', `second event ${synced?.kind}`);
  print({ step: 'snapshot', revision: snapshot.revision, state: snapshot.snapshot.state });
  print({ step: 'synced', revision: synced.revision });

  // 3. Report progress (40 of 120 files); the watcher sees the change.
  const { task: reported } = await call('UpdateStep', {
    task_id: taskId,
    step_key: 'fetch',
    progress: { units: { current: 40, total: 120, unit: 'files' } },
    request_id: randomUUID(),
  });
  const change = await watch.next();
  check(change?.kind === 'updated' && change.revision === reported.revision, `change ${change?.kind}`);
  const progress = change.updated.steps[0].progress;
  check(progress.value === 'units' && progress.units.current === '40', 'units as reported');
  check(change.updated.state === 'TASK_STATE_RUNNING', 'progress starts the task');
  let lastSeen = change.revision;
  print({ step: 'updated', revision: lastSeen, state: change.updated.state, fraction: change.updated.fraction });

  // 4. Disconnect. The task keeps changing while nobody watches.
  watch.stream.cancel();
  print({ step: 'disconnected', last_revision: lastSeen });
  const missed = [];
  for (const [method, request] of [
    ['UpdateStep', { task_id: taskId, step_key: 'fetch', state: 'STEP_STATE_SUCCEEDED' }],
    ['AddSteps', { task_id: taskId, steps: [{ key: 'write' }] }],
    ['UpdateStep', { task_id: taskId, step_key: 'analyze', progress: { fraction: 0.5 } }],
  ]) {
    const { task } = await call(method, { ...request, request_id: randomUUID() });
    missed.push(task.revision);
  }

  // 5. Resume from the last revision processed: exactly the changes after it,
  //    in order, no snapshot and no `synced`. end_at_rest ends the stream (OK)
  //    once the task finishes.
  const resumeFrom = lastSeen;
  const resumed = subscribe({ filter: { task_ids: [taskId] }, start_revision: resumeFrom, end_at_rest: true });
  const received = [];
  for (const _ of missed) {
    const event = await resumed.next();
    check(event?.kind === 'updated', `resumed event ${event?.kind}`);
    check(BigInt(event.revision) > BigInt(lastSeen), `revision ${event.revision} after ${lastSeen}`);
    lastSeen = event.revision;
    received.push(event.revision);
  }
  check(JSON.stringify(received) === JSON.stringify(missed), `missed ${missed}, received ${received}`);
  print({ step: 'resumed', from: resumeFrom, revisions: received });

  // 6. A mistake: no step key and a fraction above 1. The call fails with
  //    INVALID_ARGUMENT; the details say why, field by field.
  let rejected = null;
  try {
    await call('UpdateStep', { task_id: taskId, step_key: '', progress: { fraction: 1.5 }, request_id: randomUUID() });
  } catch (error) {
    rejected = error;
  }
  check(rejected?.code === grpc.status.INVALID_ARGUMENT, `expected INVALID_ARGUMENT, got ${rejected?.code}`);
  const details = errorDetails(rejected);
  const info = details.find((detail) => detail.type === 'google.rpc.ErrorInfo');
  const badRequest = details.find((detail) => detail.type === 'google.rpc.BadRequest');
  check(info?.domain === 'headway.v1' && info.reason === 'FIELD_VIOLATION', `ErrorInfo ${JSON.stringify(info)}`);
  const fields = (badRequest?.field_violations ?? []).map((violation) => violation.field);
  check(fields.includes('step_key') && fields.includes('progress.fraction'), `violations ${fields}`);
  print({
    step: 'invalid_argument',
    code: grpc.status[rejected.code],
    reason: info.reason,
    domain: info.domain,
    field_violations: badRequest.field_violations.map(({ field, description }) => ({ field, description })),
  });

  // 7. Finish. The rejected call emitted nothing: the next change the resumed
  //    stream delivers is this one, and then the stream ends.
  const { task: done } = await call('SucceedTask', { task_id: taskId, message: 'done', request_id: randomUUID() });
  const last = await resumed.next();
  check(last?.kind === 'updated' && last.revision === done.revision, `last event ${last?.kind} ${last?.revision}`);
  check(last.updated.state === 'TASK_STATE_SUCCEEDED', `final state ${last.updated.state}`);
  received.push(last.revision);
  check((await resumed.next()) === null, 'the stream ends once the task is at rest');

  print({
    step: 'summary',
    ok: true,
    task_id: taskId,
    state: last.updated.state,
    revision: last.revision,
    resumed_from: resumeFrom,
    resumed_revisions: received,
  });
}

try {
  await main();
} catch (error) {
  print({ step: 'failed', message: error.message, code: error.code, details: error.metadata ? errorDetails(error) : [] });
  process.exitCode = 1;
} finally {
  for (const stream of openStreams) stream.cancel();
  client.close();
}
