/**
 * Model-based tests of a RUNNING queue (the stopped queue's are in property_test.ts).
 *
 * 3. A deterministic handler (fixtures/property_reply_handlers.ts): jobs that complete, throw,
 *    pend for the owner's `workCompleted`, hold the loop until released or until their
 *    `item.signal` aborts; `keep` replies, `returning`, `onIdle`, stop/start, waiter aborts,
 *    early and late `workCompleted`, misuse. The model simulates the work loop step by step and
 *    predicts every status, reply, stats snapshot and handler call (see "The running queue").
 *    One queue per config serves many sequences; each ends by draining and `onIdle`.
 * 4. The same, ending in a close at a random point: graceful, or forced (`AbortSignal.abort()`, a
 *    signal that aborts while a job holds the loop, a later call's signal): every waiter settles
 *    as the model says, every buffer is free, every later call throws `Closed`.
 *
 * TBQ_PROPERTY_COVERAGE=1 prints what ran; TBQ_PROPERTY_RUNNING_RUNS / TBQ_PROPERTY_CLOSE_RUNS
 * set the number of sequences; TBQ_PROPERTY_SEED replays a reported seed.
 */
import assert from "node:assert/strict";
// The lead may move this to deno.json "imports"; until then it is pinned inline.
import fc from "fast-check";
import {
  QueueError,
  type QueueErrorCode,
  type QueueProducer,
  type QueueStats,
  Status,
  type StatusCode,
  statusName,
  ThreadedBufferQueue,
  type WorkBuffer,
} from "../mod.ts";
import {
  ABORTED,
  AbortKind,
  HEADER,
  Job,
  LOG_SIZE,
  oddText,
  P,
  PEND_SLOTS,
  PROBE_WORDS,
  reply,
  type ReplyOptions,
  writeJob,
} from "./fixtures/property_reply_common.ts";
import {
  call,
  type Config,
  coverage,
  misuseOn,
  pick,
  type Verb,
} from "./fixtures/property_common.ts";
import { statsOf, until, within } from "./helpers.ts";

// ══ The running queue ═══════════════════════════════════════════════════════════════════════
//
// A second model, of a STARTED queue whose handler (fixtures/property_reply_handlers.ts) is
// deterministic: every job writes a reply derived from its input into its buffer and sets
// `item.size`; PEND jobs wait for the owner's `workCompleted`; GATE jobs hold the loop until the
// owner releases them or their `item.signal` aborts; DEAF jobs only until released. After every
// command the test waits until the queue reaches the state the model predicts (stats, the
// handler's log, `reuseCleanup` calls, reports, every waiter that must have settled) and then
// checks everything else: statuses, kept buffers' `size` and bytes, that no waiter settled early.
// The model simulates the work loop exactly: one returning buffer (`reuseCleanup`), then one item,
// until a gate job holds it; so `returning` and `free` are predicted, not just bounded.

const replyHandlers = new URL("./fixtures/property_reply_handlers.ts", import.meta.url);
/** How long the queue may take to reach the model's state after a command. */
const SETTLE_MS = 5_000;

function runsFrom(name: string, fallback: number): number {
  const value = Number(Deno.env.get(name));
  return Number.isInteger(value) && value > 0 ? value : fallback;
}
/** Sequences against the running model (TBQ_PROPERTY_RUNNING_RUNS overrides). */
const RUNNING_RUNS = runsFrom("TBQ_PROPERTY_RUNNING_RUNS", 10_000);
/** Sequences that end in a close, on a fresh queue each (TBQ_PROPERTY_CLOSE_RUNS overrides). */
const CLOSE_RUNS = runsFrom("TBQ_PROPERTY_CLOSE_RUNS", 250);
/** TBQ_PROPERTY_SEED=<seed> replays a reported run of the running and close properties. */
const seeded = Deno.env.get("TBQ_PROPERTY_SEED")
  ? { seed: Number(Deno.env.get("TBQ_PROPERTY_SEED")) }
  : {};

interface RunConfig extends Config {
  /** The handler module has a `reuseCleanup`. */
  cleanup: boolean;
}

/** A buffer handle as the model sees it. */
interface Handle {
  /** Its key in `RunReal.handles`. */
  readonly key: number;
  /** Its slot, as `fetch` returned it. */
  readonly index: number;
  /** Its last round's status was made final by work: `workCompleted` is refused BufferState. */
  final: boolean;
  /** (Stale handles) its slot has been handed out again since its round ended. */
  refetched: boolean;
  /** While held: its `size`, its first `size` bytes and its context (null: all zero). */
  size: number;
  data: Uint8Array | null;
  context: Uint8Array | null;
}

interface JobRec {
  readonly id: number;
  readonly kind: Job;
  readonly handle: Handle;
  /** The status the job completes with when its work ends normally. */
  readonly status: StatusCode;
  /** What the handler writes back (its length is the size it sets). */
  readonly reply: Uint8Array;
  readonly context: Uint8Array;
  /** An `enqueueAndWait` caller still waits for it. */
  waiter: boolean;
  keep: boolean;
  /** The status `workCompleted` gave while its work still ran. */
  early?: StatusCode;
  /** (PEND) how its `item.signal` aborted first. */
  abortKind: number;
}

/** How a waiter settles: resolves with a status, or rejects with a reason (by identity). */
type Expect = { status: StatusCode } | { reason: unknown };

/** A report `onError` must receive: a job that threw, or a double completion. */
type ReportExpect = { id: number; status: StatusCode } | "twice";

interface RunModel {
  readonly cfg: RunConfig;
  allocated: number;
  free: number;
  /** Buffers whose `reuseCleanup` is due: the loop runs them whenever no gate job holds it. */
  recycling: number;
  held: Handle[];
  /** Queued jobs, head first. */
  queue: JobRec[];
  /** The gate job whose work holds the loop. */
  running: JobRec | null;
  pending: JobRec[];
  /** PEND jobs completed in this sequence: their item.signal must not abort any more. */
  donePend: JobRec[];
  stale: Handle[];
  loop: "running" | "stopped";
  /** Gate jobs complete at once (`P.DRAIN`). */
  drain: boolean;
  completed: number;
  cancelled: number;
  failed: number;
  /** Probe counters the handler must reach. */
  work: number;
  cleanups: number;
  abortWaiter: number;
  abortStop: number;
  reports: ReportExpect[];
  reportsChecked: number;
  readonly reportBase: number;
  /** Job ids in the order `work` must see them (from `logBase` in the handler's log). */
  ran: number[];
  ranChecked: number;
  readonly logBase: number;
  /** Waited jobs not yet checked: null while the model says the waiter still waits. */
  expect: Map<number, Expect | null>;
  nextKey: number;
}

/** A queue the running model drives (reused by many sequences while it is clean). */
interface QueueUnderTest {
  readonly cfg: RunConfig;
  readonly queue: ThreadedBufferQueue;
  /** An attached producer handle (for `onIdle` from another handle). */
  readonly other: QueueProducer;
  readonly probe: Int32Array;
  readonly reports: unknown[];
  dirty: boolean;
}

interface Waiter {
  readonly promise: Promise<StatusCode>;
  outcome?: { ok: true; value: StatusCode } | { ok: false; error: unknown };
}

interface RunReal {
  readonly q: QueueUnderTest;
  readonly handles: Map<number, WorkBuffer>;
  readonly waiters: Map<number, Waiter>;
  readonly controllers: Map<number, AbortController>;
}

/** Job ids are unique for the whole run (the handler's per-job probe slots rely on it). */
let nextJobId = 1;

/** What ran, for the summary. */
const runCounts = { sequences: 0, commands: 0, closes: 0, byCommand: new Map<string, number>() };

function countCommand(name: string): void {
  runCounts.commands++;
  observe(name);
}

/** Counts a situation the run reached (printed with TBQ_PROPERTY_COVERAGE=1). */
function observe(name: string): void {
  runCounts.byCommand.set(name, (runCounts.byCommand.get(name) ?? 0) + 1);
}

// ── the model's transitions ──────────────────────────────────────────────────────────────────

function tallyRun(m: RunModel, status: StatusCode): void {
  if (status === Status.Cancelled) m.cancelled++;
  else if (status >= 0) m.completed++;
  else m.failed++;
}

function canFetchRun(m: Readonly<RunModel>): boolean {
  return m.free > 0 || (m.cfg.lookAside && m.allocated < m.cfg.maxBufferCount);
}

function isIdle(m: Readonly<RunModel>): boolean {
  return m.queue.length === 0 && !m.running && m.pending.length === 0 && m.recycling === 0;
}

/** A round ended outside the loop: the buffer goes back through `reuseCleanup` (if any). */
function recycle(m: RunModel): void {
  if (m.cfg.cleanup) m.recycling++;
  else m.free++;
}

function toStale(m: RunModel, handle: Handle): void {
  handle.refetched = false;
  m.stale.push(handle);
}

/**
 * The job's work ended with `status` (the earlier `workCompleted` status stands, if any). With
 * `inline` the loop completed it and runs its `reuseCleanup` at once.
 */
function finishByWork(m: RunModel, job: JobRec, status: StatusCode, inline: boolean): void {
  const final = job.early ?? status;
  if (job.early !== undefined) m.reports.push("twice");
  if (job.kind === Job.PEND) m.donePend.push(job);
  tallyRun(m, final);
  job.handle.final = true;
  if (job.waiter) m.expect.set(job.id, { status: final });
  if (job.waiter && job.keep) {
    // Back to the caller, held, holding the reply; no reuseCleanup.
    Object.assign(job.handle, { size: job.reply.length, data: job.reply, context: job.context });
    m.held.push(job.handle);
    return;
  }
  toStale(m, job.handle);
  if (!inline) recycle(m);
  else {
    if (m.cfg.cleanup) m.cleanups++;
    m.free++;
  }
}

/** Flushed, aborted while queued, or closed: Cancelled, and the buffer goes back. */
function cancelJob(m: RunModel, job: JobRec): void {
  tallyRun(m, Status.Cancelled);
  job.handle.final = false;
  if (job.waiter) m.expect.set(job.id, { status: Status.Cancelled });
  toStale(m, job.handle);
  recycle(m);
}

/** The loop takes `job` and runs its work. */
function take(m: RunModel, job: JobRec): void {
  m.work++;
  m.ran.push(job.id);
  switch (job.kind) {
    case Job.COMPLETE:
    case Job.ASYNC:
    case Job.LATE:
      return finishByWork(m, job, job.status, true);
    case Job.THROW:
      m.reports.push({ id: job.id, status: job.status });
      return finishByWork(m, job, job.status, true);
    case Job.PEND:
      m.pending.push(job);
      return;
    default:
      if (m.drain) finishByWork(m, job, job.status, true);
      else m.running = job;
  }
}

/** What the loop does until it waits: one returning buffer, then one item, and again. */
function advance(m: RunModel): void {
  while (!m.running) {
    let busy = false;
    if (m.recycling > 0) {
      m.recycling--;
      m.cleanups++;
      m.free++;
      busy = true;
    }
    if (m.loop === "running" && m.queue.length > 0) {
      take(m, m.queue.shift()!);
      busy = true;
    }
    if (!busy) return;
  }
}

/** The gate job holding the loop completes with `status`; the loop goes on. */
function endRunning(m: RunModel, status: StatusCode): void {
  const job = m.running!;
  m.running = null;
  finishByWork(m, job, status, true);
  advance(m);
}

function runStats(m: Readonly<RunModel>): QueueStats {
  return {
    free: m.free,
    queued: m.queue.length,
    running: m.running ? 1 : 0,
    pending: m.pending.length,
    held: m.held.length,
    returning: m.recycling,
    completed: m.completed,
    cancelled: m.cancelled,
    failed: m.failed,
  };
}

// ── waiting for the queue to catch up, and checking it ──────────────────────────────────────

let tickChannel: MessageChannel | undefined;
let ticked: (() => void) | undefined;

/** One macrotask turn (no timer clamp): lets waiters, `Atomics.waitAsync` and messages run. */
function tick(): Promise<void> {
  if (!tickChannel) {
    tickChannel = new MessageChannel();
    tickChannel.port1.onmessage = () => ticked?.();
  }
  const channel = tickChannel;
  return new Promise((resolve) => {
    ticked = resolve;
    channel.port2.postMessage(0);
  });
}

async function ticks(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await tick();
}

function closeTicks(): void {
  tickChannel?.port1.close();
  tickChannel?.port2.close();
  tickChannel = undefined;
}

function capture<T>(promise: Promise<T>): { promise: Promise<T>; settled: boolean } {
  const captured = { promise, settled: false };
  promise.then(() => (captured.settled = true), () => (captured.settled = true));
  return captured;
}

function track(r: RunReal, id: number, promise: Promise<StatusCode>): void {
  const waiter: Waiter = { promise };
  promise.then(
    (value) => (waiter.outcome = { ok: true, value }),
    (error) => (waiter.outcome = { ok: false, error }),
  );
  r.waiters.set(id, waiter);
}

function sameStats(a: QueueStats, b: QueueStats): boolean {
  return a.free === b.free && a.queued === b.queued && a.running === b.running &&
    a.pending === b.pending && a.held === b.held && a.returning === b.returning &&
    a.completed === b.completed && a.cancelled === b.cancelled && a.failed === b.failed;
}

/** Handler-side facts that must never happen; checked at once, not waited for. */
function assertClean(r: RunReal): void {
  const p = r.q.probe;
  for (
    const [word, what] of [
      [P.CORRUPT, "jobs whose input was not what the owner wrote"],
      [P.OVERLAP, "overlapping work calls"],
      [P.ABORT_OTHER, `item.signal aborts with an unexpected reason (first: ${oddText(p)})`],
      [P.CLEANUP_COMPLETED, "workCompleted calls accepted inside reuseCleanup"],
      [P.CLEANUP_ODD, "workCompleted calls in reuseCleanup that threw no QueueError"],
      [
        P.LATE_ACCEPTED,
        "ctx.workCompleted accepted for the item of a finished round (same buffer, kept?)",
      ],
    ] as const
  ) {
    assert.equal(Atomics.load(p, word), 0, what);
  }
}

/** What the queue has not reached yet, or undefined once it matches the model. */
function lagging(m: RunModel, r: RunReal, expected: QueueStats): string | undefined {
  assertClean(r);
  const stats = r.q.queue.stats();
  if (!sameStats(stats, expected)) {
    return `stats ${JSON.stringify(stats)}, model ${JSON.stringify(expected)}`;
  }
  const p = r.q.probe;
  const counters: [string, number, number][] = [
    ["work calls", Atomics.load(p, P.WORK), m.work],
    ["reuseCleanup calls", Atomics.load(p, P.CLEANUPS), m.cleanups],
    ["gate aborts by the waiter", Atomics.load(p, P.ABORT_WAITER), m.abortWaiter],
    ["gate aborts by stop", Atomics.load(p, P.ABORT_STOP), m.abortStop],
    ["reports", r.q.reports.length - m.reportBase, m.reports.length],
  ];
  for (const [what, real, model] of counters) {
    if (real !== model) return `${what}: ${real}, model ${model}`;
  }
  for (const job of m.pending) {
    const kind = Atomics.load(p, P.PEND_ABORT + (job.id % PEND_SLOTS));
    if (kind !== job.abortKind) {
      return `pended job ${job.id}'s item.signal: abort kind ${kind}, model ${job.abortKind}`;
    }
  }
  for (const [id, expect] of m.expect) {
    if (expect && !r.waiters.get(id)!.outcome) return `job ${id}'s waiter has not settled`;
  }
  return undefined;
}

function describeOutcome(outcome: Waiter["outcome"]): string {
  if (!outcome) return "still waiting";
  return outcome.ok
    ? `resolved ${statusName(outcome.value)} (${outcome.value})`
    : `rejected ${outcome.error}`;
}

function describeExpect(expect: Expect): string {
  return "status" in expect
    ? `resolve ${statusName(expect.status)} (${expect.status})`
    : `reject ${expect.reason}`;
}

function sameBytes(actual: Uint8Array, expected: Uint8Array | null, length: number): boolean {
  if (actual.length < length) return false;
  for (let i = 0; i < length; i++) if (actual[i] !== (expected ? expected[i] : 0)) return false;
  return true;
}

/** Everything the model knows, once the queue caught up (`open`: it is not closed). */
function verify(m: RunModel, r: RunReal, open = true): void {
  for (const [id, expect] of m.expect) {
    const waiter = r.waiters.get(id)!;
    if (!expect) {
      assert.equal(
        waiter.outcome,
        undefined,
        `job ${id}'s waiter ${describeOutcome(waiter.outcome)}; the model says it still waits`,
      );
      continue;
    }
    const outcome = waiter.outcome!;
    const ok = "status" in expect
      ? outcome.ok && outcome.value === expect.status
      : !outcome.ok && outcome.error === expect.reason;
    assert.ok(
      ok,
      `job ${id}'s waiter ${describeOutcome(outcome)}; model: ${describeExpect(expect)}`,
    );
    m.expect.delete(id);
    r.waiters.delete(id);
    r.controllers.delete(id);
  }
  if (m.recycling > 0) {
    observe("· seen: buffers returning (reuseCleanup due) while a gate holds the loop");
  }
  if (m.running && m.queue.length >= 3) observe("· seen: 3+ items queued behind a gate");
  for (const handle of m.held) {
    const buffer = r.handles.get(handle.key)!;
    if (handle.data) observe("· checked: a kept buffer's reply (size and bytes)");
    assert.equal(buffer.index, handle.index);
    assert.equal(buffer.size, handle.size, `held buffer ${handle.key}: size`);
    assert.ok(
      sameBytes(buffer.data, handle.data, handle.data ? handle.size : buffer.data.length),
      `held buffer ${handle.key}: data ${buffer.data.subarray(0, handle.size)}, model ${
        handle.data ?? "zeros"
      }`,
    );
    assert.ok(
      sameBytes(buffer.context, handle.context, buffer.context.length),
      `held buffer ${handle.key}: context`,
    );
  }
  const p = r.q.probe;
  for (const job of m.donePend) {
    const slot = job.id % PEND_SLOTS;
    if (Atomics.load(p, P.PEND_OWNER + slot) !== job.id) continue;
    assert.equal(
      Atomics.load(p, P.PEND_ABORT + slot),
      job.abortKind,
      `the item.signal of pended job ${job.id} aborted after the job had completed`,
    );
  }
  for (; m.ranChecked < m.ran.length; m.ranChecked++) {
    const seen = Atomics.load(p, P.LOG + ((m.logBase + m.ranChecked) % LOG_SIZE));
    assert.equal(
      seen,
      m.ran[m.ranChecked],
      `work call ${m.ranChecked} of the sequence ran job ${seen}; the model says ${
        m.ran[m.ranChecked]
      } (model order: ${m.ran.join(",")})`,
    );
  }
  for (; m.reportsChecked < m.reports.length; m.reportsChecked++) {
    const report = r.q.reports[m.reportBase + m.reportsChecked];
    const expected = m.reports[m.reportsChecked];
    if (expected === "twice") {
      assert.ok(
        report instanceof QueueError && report.code === "BufferState",
        `a double completion is reported as BufferState, got ${report}`,
      );
    } else {
      assert.ok(report instanceof Error, `job ${expected.id}'s throw is reported: ${report}`);
      assert.ok(report.message.includes(`job ${expected.id} `), String(report));
      assert.equal((report as Error & { status?: number }).status, expected.status);
    }
  }
  assertClean(r);
  if (open) assert.equal(r.q.queue.count(), m.queue.length, "count()");
}

/** Waits until the queue reaches the model's state, then checks everything. */
async function settle(m: RunModel, r: RunReal): Promise<void> {
  const expected = runStats(m);
  await until(
    () => !lagging(m, r, expected),
    SETTLE_MS,
    () => `the queue to reach the model's state: ${lagging(m, r, expected)}`,
    tick,
  );
  verify(m, r);
}

// ── the running model's commands ─────────────────────────────────────────────────────────────

abstract class RunCommand implements fc.AsyncCommand<RunModel, RunReal> {
  abstract readonly name: string;
  abstract check(m: Readonly<RunModel>): boolean;
  abstract act(m: RunModel, r: RunReal): Promise<void> | void;
  async run(m: RunModel, r: RunReal): Promise<void> {
    countCommand(this.name);
    await this.act(m, r);
    await settle(m, r);
  }
  toString(): string {
    return this.name;
  }
}

function newHandle(m: RunModel, r: RunReal, buffer: WorkBuffer): Handle {
  assert.equal(buffer.size, m.cfg.bufferSize, "a fetched buffer's size is bufferSize");
  assert.ok(buffer.data.every((b) => b === 0), "a fetched buffer's data is zero-filled");
  assert.ok(buffer.context.every((b) => b === 0), "a fetched buffer's context is zero-filled");
  const live = [
    ...m.held,
    ...m.queue.map((job) => job.handle),
    ...m.pending.map((job) => job.handle),
    ...(m.running ? [m.running.handle] : []),
  ];
  assert.ok(
    !live.some((handle) => handle.index === buffer.index),
    `slot ${buffer.index} handed out while in use`,
  );
  for (const handle of m.stale) if (handle.index === buffer.index) handle.refetched = true;
  const handle: Handle = {
    key: m.nextKey++,
    index: buffer.index,
    final: false,
    refetched: false,
    size: m.cfg.bufferSize,
    data: null,
    context: null,
  };
  r.handles.set(handle.key, buffer);
  m.held.push(handle);
  return handle;
}

class RunFetch extends RunCommand {
  readonly name: string;
  constructor(readonly wait: boolean) {
    super();
    this.name = wait ? "acquire" : "fetch";
  }
  check = () => true;
  async act(m: RunModel, r: RunReal): Promise<void> {
    const can = canFetchRun(m);
    const buffer = this.wait && can
      ? await within(r.q.queue.acquire(), 2_000, "acquire with a free buffer")
      : r.q.queue.fetch();
    if (!can) {
      if (m.recycling > 0) observe("· seen: fetch returns null while buffers are returning");
      assert.equal(buffer, null, "nothing fetchable: fetch returns null");
      return;
    }
    assert.ok(buffer, "a buffer is fetchable");
    if (m.free > 0) m.free--;
    else m.allocated++;
    newHandle(m, r, buffer);
  }
}

const jobNames: Record<Job, string> = {
  [Job.COMPLETE]: "COMPLETE",
  [Job.ASYNC]: "ASYNC",
  [Job.THROW]: "THROW",
  [Job.PEND]: "PEND",
  [Job.GATE]: "GATE",
  [Job.DEAF]: "DEAF",
  [Job.LATE]: "LATE",
};

class RunEnqueue extends RunCommand {
  constructor(
    readonly at: number,
    readonly kind: Job,
    readonly head: boolean,
    readonly wait: boolean,
    readonly keep: boolean,
    readonly preAbort: boolean,
    readonly status: StatusCode,
    readonly sizeSeed: number,
  ) {
    super();
  }
  get name(): string {
    const verb = this.head ? "enqueueAtHead" : "enqueue";
    if (!this.wait) return `${verb} ${jobNames[this.kind]}`;
    return `${verb}AndWait${this.keep ? " keep" : ""}${this.preAbort ? " pre-aborted" : ""} ${
      jobNames[this.kind]
    }`;
  }
  check = (m: Readonly<RunModel>) => m.held.length > 0;
  act(m: RunModel, r: RunReal): void {
    const { queue } = r.q;
    const handle = pick(m.held, this.at);
    const buffer = r.handles.get(handle.key)!;
    const id = nextJobId++;
    const size = HEADER + (this.sizeSeed % (m.cfg.bufferSize - HEADER + 1));
    writeJob(buffer.data, buffer.context, this.kind, id, this.status, size);
    buffer.size = size;
    const job: JobRec = {
      id,
      kind: this.kind,
      handle,
      status: this.status,
      reply: reply(id, buffer.data.subarray(0, size), m.cfg.bufferSize),
      context: buffer.context.slice(),
      waiter: this.wait,
      keep: this.wait && this.keep,
      abortKind: AbortKind.NONE,
    };
    m.held.splice(m.held.indexOf(handle), 1);
    if (this.wait) {
      const controller = new AbortController();
      const reason = new Error(`job ${id}: aborted before the call`);
      if (this.preAbort) controller.abort(reason);
      const options = { signal: controller.signal, keep: this.keep };
      track(
        r,
        id,
        this.head
          ? queue.enqueueAtHeadAndWait(buffer, options)
          : queue.enqueueAndWait(buffer, options),
      );
      r.controllers.set(id, controller);
      if (this.preAbort) {
        // Never queued: recycled at once, counted as cancelled, the handle goes stale.
        m.expect.set(id, { reason });
        tallyRun(m, Status.Cancelled);
        toStale(m, handle);
        recycle(m);
        advance(m);
        return;
      }
      m.expect.set(id, null);
    } else if (this.head) queue.enqueueAtHead(buffer);
    else queue.enqueue(buffer);
    handle.final = false;
    if (this.head) m.queue.unshift(job);
    else m.queue.push(job);
    advance(m);
  }
  override toString(): string {
    return `${this.name}(held[${this.at}], ${statusName(this.status)}, size seed ${this.sizeSeed})`;
  }
}

/** Wakes gate jobs to look at RELEASE and DRAIN again. */
function kick(r: RunReal): void {
  Atomics.add(r.q.probe, P.KICK, 1);
  Atomics.notify(r.q.probe, P.KICK);
}

/** The owner releases the gate job that holds the loop. */
function release(m: RunModel, r: RunReal): void {
  const job = m.running!;
  Atomics.store(r.q.probe, P.RELEASE, job.id);
  kick(r);
  endRunning(m, job.status);
}

class RunRelease extends RunCommand {
  readonly name = "release the gate";
  check = (m: Readonly<RunModel>) => m.running !== null;
  act(m: RunModel, r: RunReal): void {
    release(m, r);
  }
}

class RunCompletePending extends RunCommand {
  readonly name = "workCompleted(pended)";
  constructor(readonly at: number, readonly status: StatusCode) {
    super();
  }
  check = (m: Readonly<RunModel>) => m.pending.length > 0;
  act(m: RunModel, r: RunReal): void {
    const job = pick(m.pending, this.at);
    r.q.queue.workCompleted(r.handles.get(job.handle.key)!, this.status);
    m.pending.splice(m.pending.indexOf(job), 1);
    finishByWork(m, job, this.status, false);
    advance(m);
  }
  override toString(): string {
    return `${this.name}[${this.at}] ${statusName(this.status)}`;
  }
}

class RunEarlyComplete extends RunCommand {
  readonly name = "workCompleted(running)";
  constructor(readonly status: StatusCode) {
    super();
  }
  check = (m: Readonly<RunModel>) => m.running !== null && m.running.early === undefined;
  act(m: RunModel, r: RunReal): void {
    const job = m.running!;
    r.q.queue.workCompleted(r.handles.get(job.handle.key)!, this.status);
    job.early = this.status;
  }
  override toString(): string {
    return `${this.name} ${statusName(this.status)}`;
  }
}

function waitedJobs(m: Readonly<RunModel>): JobRec[] {
  return [...m.queue, ...(m.running ? [m.running] : []), ...m.pending].filter((job) => job.waiter);
}

class RunAbortWaiter extends RunCommand {
  readonly name = "abort a waiter";
  constructor(readonly at: number) {
    super();
  }
  check = (m: Readonly<RunModel>) => waitedJobs(m).length > 0;
  act(m: RunModel, r: RunReal): void {
    const job = pick(waitedJobs(m), this.at);
    const reason = new Error(`job ${job.id}: the waiter gives up`);
    r.controllers.get(job.id)!.abort(reason);
    m.expect.set(job.id, { reason });
    job.waiter = false;
    job.keep = false;
    const queued = m.queue.indexOf(job);
    if (queued >= 0) {
      // Not started: removed, never runs, cancelled.
      m.queue.splice(queued, 1);
      cancelJob(m, job);
      advance(m);
    } else if (job === m.running) {
      // Its item.signal aborts: a GATE job gives up and completes; a DEAF one goes on.
      if (job.kind === Job.GATE) {
        m.abortWaiter++;
        endRunning(m, ABORTED);
      }
    } else if (job.abortKind === AbortKind.NONE) {
      job.abortKind = AbortKind.WAITER;
    }
  }
  override toString(): string {
    return `${this.name}[${this.at}]`;
  }
}

class RunFlush extends RunCommand {
  readonly name = "flush";
  check = () => true;
  act(m: RunModel, r: RunReal): void {
    assert.equal(r.q.queue.flush(), m.queue.length, "flush returns how many it cancelled");
    for (const job of m.queue) cancelJob(m, job);
    m.queue = [];
    advance(m);
  }
}

class RunReuse extends RunCommand {
  readonly name = "reuse";
  constructor(readonly at: number) {
    super();
  }
  check = (m: Readonly<RunModel>) => m.held.length > 0;
  act(m: RunModel, r: RunReal): void {
    const handle = pick(m.held, this.at);
    r.q.queue.reuse(r.handles.get(handle.key)!);
    m.held.splice(m.held.indexOf(handle), 1);
    toStale(m, handle);
    recycle(m);
    advance(m);
  }
  override toString(): string {
    return `${this.name}(held[${this.at}])`;
  }
}

class RunStop extends RunCommand {
  readonly name = "stop";
  // A DEAF job would hold stop() forever.
  check = (m: Readonly<RunModel>) => m.loop === "running" && m.running?.kind !== Job.DEAF;
  async act(m: RunModel, r: RunReal): Promise<void> {
    await within(r.q.queue.stop(), 3_000, "stop");
    m.loop = "stopped";
    for (const job of m.pending) {
      if (job.abortKind === AbortKind.NONE) job.abortKind = AbortKind.STOP;
    }
    if (m.running) {
      m.abortStop++;
      endRunning(m, ABORTED);
    }
  }
}

class RunStart extends RunCommand {
  readonly name = "start";
  check = (m: Readonly<RunModel>) => m.loop === "stopped";
  async act(m: RunModel, r: RunReal): Promise<void> {
    await within(r.q.queue.start(), 3_000, "start");
    m.loop = "running";
    advance(m);
  }
}

/** Lets everything finish: the loop runs, gate jobs complete at once, pended jobs complete. */
async function drainRun(m: RunModel, r: RunReal): Promise<void> {
  const { queue, probe } = r.q;
  Atomics.store(probe, P.DRAIN, 1);
  kick(r);
  m.drain = true;
  if (m.running) endRunning(m, m.running.status);
  if (m.loop === "stopped") {
    await within(queue.start(), 3_000, "start");
    m.loop = "running";
    advance(m);
  }
  await settle(m, r); // the loop has taken what it will pend
  for (const job of [...m.pending]) {
    queue.workCompleted(r.handles.get(job.handle.key)!, Status.Success);
    m.pending.splice(m.pending.indexOf(job), 1);
    finishByWork(m, job, Status.Success, false);
    advance(m);
  }
  assert.ok(isIdle(m), "the model drains");
}

function undrain(m: RunModel, r: RunReal): void {
  Atomics.store(r.q.probe, P.DRAIN, 0);
  m.drain = false;
}

type IdleVariant = "idle" | "abort" | "drain" | "pre-aborted";

class RunOnIdle extends RunCommand {
  readonly name: string;
  constructor(readonly variant: IdleVariant, readonly other: boolean) {
    super();
    this.name = `onIdle ${variant}${other ? " (attached handle)" : ""}`;
  }
  check = (m: Readonly<RunModel>) =>
    this.variant === "pre-aborted" || (this.variant === "idle") === isIdle(m);
  async act(m: RunModel, r: RunReal): Promise<void> {
    const { queue } = r.q;
    const handle = this.other ? r.q.other : queue;
    const reason = new Error("onIdle: given up");
    switch (this.variant) {
      case "pre-aborted":
        await assert.rejects(
          within(handle.onIdle({ signal: AbortSignal.abort(reason) }), 2_000, "onIdle"),
          (error) => error === reason,
        );
        return;
      case "idle": {
        const stats = await within(handle.onIdle().then(() => queue.stats()), 2_000, "onIdle");
        assert.deepEqual(stats, runStats(m), "an idle queue's onIdle resolves at once");
        return;
      }
      case "abort": {
        const controller = new AbortController();
        const idle = capture(handle.onIdle({ signal: controller.signal }));
        await ticks(3);
        assert.equal(idle.settled, false, "onIdle waits while the queue is busy");
        controller.abort(reason);
        await assert.rejects(within(idle.promise, 2_000, "aborted onIdle"), (e) => e === reason);
        return;
      }
      case "drain": {
        // The stats at the very moment onIdle resolves.
        const idle = capture(handle.onIdle().then(() => queue.stats()));
        await ticks(3);
        assert.equal(idle.settled, false, "onIdle waits while the queue is busy");
        await drainRun(m, r);
        const stats = await within(idle.promise, SETTLE_MS, "onIdle after the drain");
        assert.deepEqual(stats, runStats(m), "stats when onIdle resolves");
        undrain(m, r);
        return;
      }
    }
  }
}

/** `acquire()` while nothing is fetchable: it waits; a release may free a buffer, else abort. */
class RunAcquireBlocked extends RunCommand {
  readonly name: string;
  constructor(readonly release: boolean) {
    super();
    this.name = release ? "acquire, then release the gate" : "acquire, then abort";
  }
  check = (m: Readonly<RunModel>) => !canFetchRun(m) && (!this.release || m.running !== null);
  async act(m: RunModel, r: RunReal): Promise<void> {
    const controller = new AbortController();
    const reason = new Error("acquire: given up");
    const acquiring = capture(r.q.queue.acquire({ signal: controller.signal }));
    await ticks(3);
    assert.equal(acquiring.settled, false, "acquire waits while nothing is fetchable");
    if (this.release) {
      release(m, r);
      if (m.free > 0) {
        const buffer = await within(acquiring.promise, 2_000, "acquire after the release");
        m.free--;
        newHandle(m, r, buffer);
        return;
      }
    }
    controller.abort(reason);
    await assert.rejects(within(acquiring.promise, 2_000, "aborted acquire"), (e) => e === reason);
  }
}

type RunMisuseKind =
  | "stale"
  | "late"
  | "queued"
  | "running"
  | "pending"
  | "twice"
  | "badSize"
  | "foreign";

/** Verbs on a buffer handle (besides workCompleted). */
const handleVerbs: Verb[] = ["enqueue", "enqueueAtHead", "reuse", "enqueueAndWait", "size"];

class RunMisuse extends RunCommand {
  readonly name: string;
  constructor(readonly kind: RunMisuseKind, readonly verb: number, readonly at: number) {
    super();
    this.name = `misuse ${kind}`;
  }
  check = (m: Readonly<RunModel>) => {
    switch (this.kind) {
      case "stale":
        return m.stale.length > 0;
      case "late":
        return m.stale.length + m.held.length > 0;
      case "queued":
        return m.queue.length > 0;
      case "running":
        return m.running !== null;
      case "pending":
        return m.pending.length > 0;
      case "twice":
        return m.running?.early !== undefined;
      case "badSize":
        return m.held.length > 0;
      case "foreign":
        return true;
    }
  };
  async act(m: RunModel, r: RunReal): Promise<void> {
    const { queue } = r.q;
    const real = (handle: Handle) => r.handles.get(handle.key)!;
    const wrong = (code: QueueErrorCode | "RangeError", action: () => unknown) =>
      misuseOn(queue, code, action);
    const verb = pick(handleVerbs, this.verb);
    switch (this.kind) {
      case "stale":
        return await wrong("StaleBuffer", () => call(queue, verb, real(pick(m.stale, this.at))));
      case "late": {
        // workCompleted once the round's status is final: BufferState; on a handle whose slot
        // went round again since: StaleBuffer.
        const all = [...m.stale, ...m.held];
        const handle = pick(all, this.at);
        const held = m.held.includes(handle);
        const code = held || (handle.final && !handle.refetched) ? "BufferState" : "StaleBuffer";
        observe(`· late workCompleted → ${code}`);
        return await wrong(code, () => queue.workCompleted(real(handle), Status.Success));
      }
      case "queued": {
        const job = pick(m.queue, this.at);
        const anyVerb = pick([...handleVerbs, "workCompleted"] as Verb[], this.verb);
        return await wrong("BufferState", () => call(queue, anyVerb, real(job.handle)));
      }
      case "running":
        return await wrong("BufferState", () => call(queue, verb, real(m.running!.handle)));
      case "pending":
        return await wrong(
          "BufferState",
          () => call(queue, verb, real(pick(m.pending, this.at).handle)),
        );
      case "twice":
        return await wrong(
          "BufferState",
          () => queue.workCompleted(real(m.running!.handle), Status.Success),
        );
      case "badSize": {
        const buffer = real(pick(m.held, this.at));
        const bad = pick([-1, m.cfg.bufferSize + 1, 2.5, NaN, Infinity], this.at);
        return await wrong("RangeError", () => (buffer.size = bad));
      }
      case "foreign": {
        const value = pick([new Uint8Array(16), null, undefined, {}], this.at);
        const foreignVerb = pick(
          ["enqueue", "enqueueAtHead", "reuse", "enqueueAndWait", "workCompleted"] as Verb[],
          this.verb,
        );
        return await wrong("ForeignBuffer", () => call(queue, foreignVerb, value));
      }
    }
  }
  override toString(): string {
    return `${this.name}[${this.at}] verb ${this.verb}`;
  }
}

const statuses: StatusCode[] = [
  Status.Success,
  Status.Success,
  1,
  0x1234,
  Status.IoTimeout,
  Status.DeviceNotConnected,
  Status.Unsuccessful,
  Status.Cancelled,
  0xC0000999 | 0,
];
const jobKinds: Job[] = [
  Job.COMPLETE,
  Job.COMPLETE,
  Job.ASYNC,
  Job.THROW,
  Job.PEND,
  Job.PEND,
  Job.GATE,
  Job.GATE,
  Job.DEAF,
  Job.LATE,
];

const enqueueOf = (kinds: Job[]) =>
  fc.record({
    at: fc.nat(),
    kind: fc.constantFrom(...kinds),
    head: fc.boolean(),
    wait: fc.boolean(),
    keep: fc.boolean(),
    preAbort: fc.nat(9).map((n) => n === 0),
    status: fc.constantFrom(...statuses),
    sizeSeed: fc.nat(),
  }).map((c) =>
    new RunEnqueue(c.at, c.kind, c.head, c.wait, c.keep, c.preAbort, c.status, c.sizeSeed)
  );
const enqueueCommand = enqueueOf(jobKinds);

const runCommands: fc.Arbitrary<RunCommand>[] = [
  fc.constant(new RunFetch(false)),
  fc.constant(new RunFetch(false)),
  fc.constant(new RunFetch(false)),
  fc.constant(new RunFetch(true)),
  enqueueCommand,
  enqueueCommand,
  enqueueCommand,
  enqueueCommand,
  enqueueCommand,
  enqueueCommand,
  fc.constant(new RunRelease()),
  fc.constant(new RunRelease()),
  fc.tuple(fc.nat(), fc.constantFrom(...statuses)).map(([at, s]) => new RunCompletePending(at, s)),
  fc.tuple(fc.nat(), fc.constantFrom(...statuses)).map(([at, s]) => new RunCompletePending(at, s)),
  fc.constantFrom(...statuses).map((s) => new RunEarlyComplete(s)),
  fc.nat().map((at) => new RunAbortWaiter(at)),
  fc.nat().map((at) => new RunAbortWaiter(at)),
  fc.constant(new RunFlush()),
  fc.nat().map((at) => new RunReuse(at)),
  fc.constant(new RunStop()),
  fc.constant(new RunStart()),
  fc.tuple(
    fc.constantFrom<IdleVariant>("idle", "abort", "drain", "drain", "pre-aborted"),
    fc.boolean(),
  ).map(([variant, other]) => new RunOnIdle(variant, other)),
  fc.boolean().map((release) => new RunAcquireBlocked(release)),
  fc.tuple(
    fc.constantFrom<RunMisuseKind>(
      "stale",
      "late",
      "queued",
      "running",
      "pending",
      "twice",
      "badSize",
      "foreign",
    ),
    fc.nat(),
    fc.nat(),
  ).map(([kind, verb, at]) => new RunMisuse(kind, verb, at)),
];

/** The close property's commands: more jobs that hold the loop or pend when the close comes. */
const closeCommands: fc.Arbitrary<RunCommand>[] = [
  ...runCommands,
  enqueueOf([Job.GATE, Job.DEAF, Job.PEND]),
  enqueueOf([Job.GATE, Job.DEAF, Job.PEND]),
  enqueueOf([Job.GATE, Job.DEAF, Job.PEND]),
];

/** A GATE or DEAF job enqueued just before the close. */
const blocker = fc.record({
  kind: fc.constantFrom(Job.GATE, Job.DEAF),
  wait: fc.boolean(),
  keep: fc.boolean(),
  status: fc.constantFrom(...statuses),
  sizeSeed: fc.nat(),
}).map((c) => new RunEnqueue(0, c.kind, false, c.wait, c.keep, false, c.status, c.sizeSeed));

// ── queues, sequences ────────────────────────────────────────────────────────────────────────

async function openQueue(cfg: RunConfig): Promise<QueueUnderTest> {
  const probe = new Int32Array(new SharedArrayBuffer(4 * PROBE_WORDS));
  const reports: unknown[] = [];
  const queue = await ThreadedBufferQueue.create({
    bufferQueue: {
      bufferCount: cfg.bufferCount,
      bufferSize: cfg.bufferSize,
      contextSize: cfg.contextSize,
      enableLookAside: cfg.lookAside,
      maxBufferCount: cfg.lookAside ? cfg.maxBufferCount : undefined,
    },
    handlers: cfg.cleanup ? new URL("?cleanup", replyHandlers) : replyHandlers,
    handlerOptions: {
      probe: probe.buffer,
      bufferSize: cfg.bufferSize,
      contextSize: cfg.contextSize,
    } satisfies ReplyOptions,
    onError: (error) => void reports.push(error),
  });
  await queue.start();
  return {
    cfg,
    queue,
    other: ThreadedBufferQueue.attach(queue.share()),
    probe,
    reports,
    dirty: false,
  };
}

/** A model of `q` as it is now: idle, nothing held (the state every sequence leaves it in). */
function startModel(q: QueueUnderTest): RunModel {
  const stats = q.queue.stats();
  const { free, completed, cancelled, failed } = stats;
  assert.deepEqual(
    { ...stats, completed: 0, cancelled: 0, failed: 0 },
    statsOf({ free }),
    "the queue starts idle",
  );
  const p = q.probe;
  return {
    cfg: q.cfg,
    allocated: free,
    free,
    recycling: 0,
    held: [],
    queue: [],
    running: null,
    pending: [],
    donePend: [],
    stale: [],
    loop: "running",
    drain: false,
    completed,
    cancelled,
    failed,
    work: Atomics.load(p, P.WORK),
    cleanups: Atomics.load(p, P.CLEANUPS),
    abortWaiter: Atomics.load(p, P.ABORT_WAITER),
    abortStop: Atomics.load(p, P.ABORT_STOP),
    reports: [],
    reportsChecked: 0,
    reportBase: q.reports.length,
    ran: [],
    ranChecked: 0,
    logBase: Atomics.load(p, P.WORK),
    expect: new Map(),
    nextKey: 1,
  };
}

function startReal(q: QueueUnderTest): RunReal {
  return { q, handles: new Map(), waiters: new Map(), controllers: new Map() };
}

/**
 * Ends a sequence and resets the queue for the next one: everything finishes, held buffers are
 * reused, and `onIdle` must resolve exactly when the model is idle, every buffer free.
 */
async function endSequence(m: RunModel, r: RunReal): Promise<void> {
  const { queue } = r.q;
  await drainRun(m, r);
  await settle(m, r); // kept buffers are held again only once their waiters collected
  for (const handle of [...m.held]) {
    queue.reuse(r.handles.get(handle.key)!);
    m.held.splice(m.held.indexOf(handle), 1);
    toStale(m, handle);
    recycle(m);
  }
  advance(m);
  const stats = await within(queue.onIdle().then(() => queue.stats()), SETTLE_MS, "onIdle");
  assert.deepEqual(stats, runStats(m), "stats when onIdle resolves");
  assert.equal(stats.free, m.allocated, "every buffer free");
  undrain(m, r);
  await settle(m, r);
  assert.equal(m.expect.size, 0, "every waiter settled as the model says");
}

/** One config per queue; the running property reuses each queue while it stays clean. */
const runConfigs: RunConfig[] = [
  {
    bufferCount: 4,
    bufferSize: 32,
    contextSize: 8,
    lookAside: false,
    maxBufferCount: 4,
    cleanup: false,
  },
  {
    bufferCount: 3,
    bufferSize: HEADER,
    contextSize: 0,
    lookAside: false,
    maxBufferCount: 3,
    cleanup: true,
  },
  {
    bufferCount: 2,
    bufferSize: 40,
    contextSize: 12,
    lookAside: true,
    maxBufferCount: 5,
    cleanup: true,
  },
  {
    bufferCount: 1,
    bufferSize: 16,
    contextSize: 4,
    lookAside: true,
    maxBufferCount: 3,
    cleanup: false,
  },
  {
    bufferCount: 6,
    bufferSize: 64,
    contextSize: 16,
    lookAside: false,
    maxBufferCount: 6,
    cleanup: true,
  },
  {
    bufferCount: 2,
    bufferSize: 20,
    contextSize: 4,
    lookAside: false,
    maxBufferCount: 2,
    cleanup: false,
  },
];

function printSummary(test: string, started: number, sequences: number): void {
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const kinds = [...runCounts.byCommand].sort(([a], [b]) => a.localeCompare(b))
    .map(([name, n]) => `  ${name}: ${n}`).join("\n");
  console.log(
    `${test}: ${sequences} sequences, ${runCounts.commands} commands run, ${seconds} s` +
      (coverage ? `\n${kinds}` : ""),
  );
}

Deno.test("property: a running queue matches the model: statuses, keep replies, returning, onIdle, item.signal", async () => {
  const started = performance.now();
  runCounts.sequences = runCounts.commands = 0;
  runCounts.byCommand.clear();
  const queues = new Map<number, QueueUnderTest>();
  // Once a sequence failed, every run (fast-check's shrinking) gets a fresh queue, so that the
  // counterexample it reports does not depend on what earlier sequences left behind.
  let failed = false;
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.nat(runConfigs.length - 1),
        fc.commands(runCommands, { maxCommands: 50, size: "max" }),
        async (index, cmds) => {
          let q = queues.get(index);
          if (!q || q.dirty || failed) {
            if (q) await q.queue.close({ signal: AbortSignal.abort() });
            q = await openQueue(runConfigs[index]);
            queues.set(index, q);
          }
          try {
            const model = startModel(q);
            const real = startReal(q);
            await fc.asyncModelRun(() => ({ model, real }), cmds);
            await endSequence(model, real);
            runCounts.sequences++;
          } catch (error) {
            q.dirty = failed = true;
            throw error;
          }
        },
      ),
      { numRuns: RUNNING_RUNS, ...seeded },
    );
  } finally {
    for (const q of queues.values()) {
      await q.queue.close(q.dirty ? { signal: AbortSignal.abort() } : undefined);
    }
    closeTicks();
  }
  printSummary("running model", started, runCounts.sequences);
});

// ── close at a random point ──────────────────────────────────────────────────────────────────

type CloseVariant =
  /** `close()`: stop (a GATE job's item.signal aborts), cancel, reclaim, end the Worker. */
  | "graceful"
  /** `close({ signal: AbortSignal.abort() })`: forced at once. */
  | "now"
  /** `close({ signal })` whose signal aborts after a few ms, while a DEAF job holds the loop. */
  | "timeout"
  /** `close()`, then `close({ signal })` whose signal aborts later: the same promise, forced. */
  | "later";

/**
 * The variant that applies: a graceful close cannot end a DEAF job; a short timeout would race a
 * graceful close that aborts a GATE job (either outcome is right, so the model would not know).
 */
function closeVariant(m: Readonly<RunModel>, wanted: CloseVariant): CloseVariant {
  const kind = m.running?.kind;
  if (kind === Job.DEAF) return wanted === "graceful" ? "timeout" : wanted;
  if (kind === Job.GATE) return wanted === "now" ? "now" : "graceful";
  return wanted;
}

/** What the close leaves: every item not final is cancelled, every buffer free. */
function closeModel(m: RunModel, variant: CloseVariant): void {
  if (variant === "graceful" && m.running) {
    // stop() aborts its item.signal: the GATE job completes by itself first.
    const job = m.running;
    m.running = null;
    finishByWork(m, job, ABORTED, true);
  }
  for (const job of [...(m.running ? [m.running] : []), ...m.queue, ...m.pending]) {
    tallyRun(m, Status.Cancelled);
    if (job.waiter) m.expect.set(job.id, { status: Status.Cancelled });
    toStale(m, job.handle);
  }
  for (const handle of m.held) toStale(m, handle);
  m.running = null;
  m.queue = [];
  m.pending = [];
  m.held = [];
  m.recycling = 0;
  m.free = m.allocated;
}

function isClosed(error: unknown): boolean {
  return error instanceof QueueError && error.code === "Closed";
}

async function closeAndCheck(
  m: RunModel,
  r: RunReal,
  wanted: CloseVariant,
  delay: number,
): Promise<void> {
  const { queue, other } = r.q;
  const variant = closeVariant(m, wanted);
  const state = m.running ? `a ${jobNames[m.running.kind]} job holds the loop` : `loop ${m.loop}`;
  countCommand(`close ${variant}, ${state}, ${m.queue.length ? "items" : "nothing"} queued`);
  // Calls that wait when the close begins must settle: onIdle resolves only if already idle.
  const idle = isIdle(m);
  const onIdle = capture(queue.onIdle());
  const otherOnIdle = capture(other.onIdle());
  const acquiring = canFetchRun(m) ? undefined : capture(queue.acquire());
  await ticks(2);
  closeModel(m, variant);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const later = new AbortController();
  let closing: Promise<QueueStats>;
  try {
    switch (variant) {
      case "graceful":
        closing = queue.close();
        break;
      case "now":
        closing = queue.close({ signal: AbortSignal.abort() });
        break;
      case "timeout":
        timer = setTimeout(() => later.abort(), delay);
        closing = queue.close({ signal: later.signal });
        break;
      case "later": {
        const first = queue.close();
        timer = setTimeout(() => later.abort(), delay);
        closing = queue.close({ signal: later.signal });
        assert.equal(closing, first, "close() returns the same promise every time");
        break;
      }
    }
    const final = await within(closing, 5_000, `close (${variant})`);
    assert.deepEqual(
      final,
      runStats(m),
      `final stats after a ${variant} close, ${state}` +
        (variant === "graceful" ? "" : " (forced: every item not final must end Cancelled)"),
    );
  } finally {
    clearTimeout(timer);
  }
  for (const [id, waiter] of r.waiters) {
    await within(waiter.promise.catch(() => {}), 2_000, `job ${id}'s waiter after close`);
  }
  verify(m, r, false);
  assert.equal(m.expect.size, 0, "every waiter settled");
  for (
    const [what, call] of [["onIdle", onIdle], [
      "the attached handle's onIdle",
      otherOnIdle,
    ]] as const
  ) {
    if (idle) await within(call.promise, 2_000, `${what} on an idle queue`);
    else await assert.rejects(within(call.promise, 2_000, what), isClosed, `${what}: Closed`);
  }
  if (acquiring) {
    await assert.rejects(within(acquiring.promise, 2_000, "acquire"), isClosed, "acquire: Closed");
  }
  // Afterwards every call throws (or rejects with) Closed, on both handles.
  for (const handle of [queue, other]) {
    assert.throws(() => handle.fetch(), isClosed, "fetch");
    assert.throws(() => handle.count(), isClosed, "count");
    assert.throws(() => handle.stats(), isClosed, "stats");
    assert.throws(() => handle.flush(), isClosed, "flush");
    await assert.rejects(handle.acquire(), isClosed, "acquire");
    await assert.rejects(handle.onIdle(), isClosed, "onIdle");
  }
  assert.throws(() => queue.share(), isClosed, "share");
  for (const buffer of r.handles.values()) {
    assert.throws(() => queue.enqueue(buffer), isClosed, "enqueue");
    assert.throws(() => queue.enqueueAtHead(buffer), isClosed, "enqueueAtHead");
    assert.throws(() => queue.reuse(buffer), isClosed, "reuse");
    assert.throws(() => queue.workCompleted(buffer, Status.Success), isClosed, "workCompleted");
    await assert.rejects(queue.enqueueAndWait(buffer), isClosed, "enqueueAndWait");
    await assert.rejects(queue.enqueueAtHeadAndWait(buffer), isClosed, "enqueueAtHeadAndWait");
  }
  await assert.rejects(queue.start(), isClosed, "start");
  await assert.rejects(queue.stop(), isClosed, "stop");
  assert.equal(queue.close(), closing, "close() after close: the same promise");
  runCounts.closes++;
}

const runConfigArbitrary: fc.Arbitrary<RunConfig> = fc.record({
  bufferCount: fc.integer({ min: 0, max: 4 }),
  bufferSize: fc.integer({ min: HEADER, max: 40 }),
  contextSize: fc.constantFrom(0, 4, 8),
  lookAside: fc.boolean(),
  extra: fc.integer({ min: 0, max: 2 }),
  cleanup: fc.boolean(),
}).map(({ bufferCount, lookAside, extra, ...rest }) => ({
  ...rest,
  bufferCount: lookAside ? bufferCount : Math.max(1, bufferCount),
  lookAside,
  maxBufferCount: lookAside ? Math.max(1, bufferCount + extra) : Math.max(1, bufferCount),
}));

Deno.test("property: close at a random point (graceful or forced) settles every waiter and frees every buffer", async () => {
  const started = performance.now();
  runCounts.closes = runCounts.commands = 0;
  runCounts.byCommand.clear();
  try {
    await fc.assert(
      fc.asyncProperty(
        runConfigArbitrary,
        fc.commands(closeCommands, { maxCommands: 30, size: "max" }),
        fc.option(blocker, { freq: 3 }),
        fc.array(enqueueOf([Job.COMPLETE, Job.PEND, Job.THROW, Job.GATE]), { maxLength: 3 }),
        fc.constantFrom<CloseVariant>("graceful", "now", "timeout", "later"),
        fc.integer({ min: 1, max: 20 }),
        async (cfg, cmds, block, behind, variant, delay) => {
          const q = await openQueue(cfg);
          try {
            const model = startModel(q);
            const real = startReal(q);
            await fc.asyncModelRun(() => ({ model, real }), cmds);
            // Mostly, a job holds the loop when the close comes.
            if (block && model.loop === "running" && !model.running) {
              if (model.held.length === 0 && canFetchRun(model)) {
                await new RunFetch(false).run(model, real);
              }
              if (model.held.length > 0) await block.run(model, real);
              // And items queued behind it.
              for (const enqueue of behind) {
                if (model.held.length === 0 && canFetchRun(model)) {
                  await new RunFetch(false).run(model, real);
                }
                if (enqueue.check(model)) await enqueue.run(model, real);
              }
            }
            await closeAndCheck(model, real, variant, delay);
          } finally {
            await q.queue.close({ signal: AbortSignal.abort() });
          }
        },
      ),
      { numRuns: CLOSE_RUNS, ...seeded },
    );
  } finally {
    closeTicks();
  }
  printSummary("close model", started, runCounts.closes);
});
