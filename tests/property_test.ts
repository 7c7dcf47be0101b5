/**
 * Model-based tests of a STOPPED queue (a running one's are in property_running_test.ts).
 *
 * 1. The single-thread API: random sequences of fetch / enqueue / enqueueAtHead / reuse / flush /
 *    count / stats / aborted waits and misuse (foreign values, stale handles, double enqueue,
 *    enqueue after reuse, reuse of a queued buffer, …) against a simple model. Every misuse must
 *    throw `QueueError` with the right code and change nothing. Then the loop starts and drains:
 *    the handler must see exactly the model's queue, head first.
 * 2. After close, every method throws Closed and nothing changes.
 *
 * TBQ_PROPERTY_COVERAGE=1 prints what ran.
 */
import assert from "node:assert/strict";
// The lead may move this to deno.json "imports"; until then it is pinned inline.
import fc from "fast-check";
import {
  QueueError,
  type QueueProducer,
  type QueueStats,
  Status,
  type StatusCode,
  ThreadedBufferQueue,
  type WorkBuffer,
} from "../mod.ts";
import {
  call,
  type Config,
  coverage,
  misuseOn,
  pick,
  type Verb,
} from "./fixtures/property_common.ts";
import { fill, statusFor } from "./fixtures/stress_common.ts";
import { statsOf, within } from "./helpers.ts";

const handlers = new URL("./fixtures/stress_property_handlers.ts", import.meta.url);

/** What the queue should look like. */
interface Model {
  readonly config: Config;
  /** Buffers in the pool now (grows with look-aside). */
  allocated: number;
  free: number;
  /** Ids of held buffers, in fetch order. */
  held: number[];
  /** Ids of queued items, head first. */
  queue: number[];
  /** Queued ids with an `enqueueAndWait` waiter. */
  waited: Set<number>;
  /** How many handles of ended rounds the real side keeps. */
  stale: number;
  cancelled: number;
  nextId: number;
}

/** The real queue and the handles the commands use. */
interface Real {
  readonly queue: ThreadedBufferQueue;
  /** Another handle on the same queue (its buffers are foreign to `queue`). */
  readonly other: QueueProducer;
  readonly held: Map<number, WorkBuffer>;
  readonly queued: Map<number, WorkBuffer>;
  readonly waits: Map<number, Promise<StatusCode>>;
  readonly stale: WorkBuffer[];
}

type Cmd = fc.AsyncCommand<Model, Real>;

function canFetch(m: Model): boolean {
  return m.free > 0 || (m.config.lookAside && m.allocated < m.config.maxBufferCount);
}

/** Takes one buffer out of the model's free pool (growing it with look-aside when empty). */
function takeFree(m: Model): void {
  if (m.free > 0) m.free--;
  else m.allocated++;
}

function expectedStats(m: Model): Partial<QueueStats> {
  return {
    free: m.free,
    queued: m.queue.length,
    running: 0,
    pending: 0,
    held: m.held.length,
    returning: 0,
    cancelled: m.cancelled,
    completed: 0,
    failed: 0,
  };
}

function checkStats(m: Model, r: Real): void {
  // The model's `free` includes buffers whose reuseCleanup the Worker is still running.
  const { free, returning, ...rest } = r.queue.stats();
  const stats = { ...rest, free: free + returning, returning: 0 };
  assert.deepEqual(stats, expectedStats(m));
  assert.equal(stats.free + stats.queued + stats.held, m.allocated, "stats add up to the pool");
  assert.equal(r.queue.count(), m.queue.length);
}

// ── commands ────────────────────────────────────────────────────────────────────────────────

class Fetch implements Cmd {
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const buffer = r.queue.fetch();
    if (!canFetch(m)) {
      assert.equal(buffer, null, "no free buffer: fetch returns null");
      return;
    }
    assert.ok(buffer, "a free buffer");
    assert.equal(buffer.size, m.config.bufferSize, "size starts at bufferSize");
    assert.equal(buffer.data.length, m.config.bufferSize);
    assert.equal(buffer.context.length, m.config.contextSize);
    assert.ok(buffer.data.every((b) => b === 0), "data zero-filled");
    assert.ok(buffer.context.every((b) => b === 0), "context zero-filled");
    const live = [...r.held.values(), ...r.queued.values()].map((b) => b.index);
    assert.ok(!live.includes(buffer.index), `slot ${buffer.index} handed out twice`);
    const id = m.nextId++;
    fill(buffer, 0, id);
    takeFree(m);
    m.held.push(id);
    r.held.set(id, buffer);
    await Promise.resolve();
  }
  toString = () => "fetch";
}

class Enqueue implements Cmd {
  constructor(readonly at: number, readonly head: boolean, readonly wait: boolean) {}
  check = (m: Readonly<Model>) => m.held.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const id = pick(m.held, this.at);
    const buffer = r.held.get(id)!;
    if (this.wait) {
      const promise = this.head
        ? r.queue.enqueueAtHeadAndWait(buffer)
        : r.queue.enqueueAndWait(buffer);
      promise.catch(() => {}); // checked at the end
      r.waits.set(id, promise);
      m.waited.add(id);
    } else if (this.head) r.queue.enqueueAtHead(buffer);
    else r.queue.enqueue(buffer);
    m.held.splice(m.held.indexOf(id), 1);
    r.held.delete(id);
    if (this.head) m.queue.unshift(id);
    else m.queue.push(id);
    r.queued.set(id, buffer);
    await Promise.resolve();
  }
  toString = () =>
    `${this.head ? "enqueueAtHead" : "enqueue"}${this.wait ? "AndWait" : ""}(held[${this.at}])`;
}

class Reuse implements Cmd {
  constructor(readonly at: number) {}
  check = (m: Readonly<Model>) => m.held.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const id = pick(m.held, this.at);
    const buffer = r.held.get(id)!;
    r.queue.reuse(buffer);
    m.held.splice(m.held.indexOf(id), 1);
    r.held.delete(id);
    r.stale.push(buffer);
    m.stale++;
    m.free++;
    await Promise.resolve();
  }
  toString = () => `reuse(held[${this.at}])`;
}

class Flush implements Cmd {
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const flushed = r.queue.flush();
    assert.equal(flushed, m.queue.length, "flush returns how many it cancelled");
    for (const id of m.queue) {
      if (m.waited.has(id)) {
        const status = await within(r.waits.get(id)!, 2_000, `waiter of flushed ${id}`);
        assert.equal(status, Status.Cancelled, `flushed ${id}'s waiter`);
        r.waits.delete(id);
        m.waited.delete(id);
      }
      r.stale.push(r.queued.get(id)!);
      r.queued.delete(id);
      m.stale++;
    }
    m.free += flushed;
    m.cancelled += flushed;
    m.queue = [];
  }
  toString = () => "flush";
}

class Observe implements Cmd {
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    checkStats(m, r);
    await Promise.resolve();
  }
  toString = () => "stats+count";
}

/** enqueueAndWait, then abort before the (stopped) loop takes it: removed, cancelled, recycled. */
class AbortedWait implements Cmd {
  constructor(readonly at: number, readonly head: boolean, readonly before: boolean) {}
  check = (m: Readonly<Model>) => m.held.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const id = pick(m.held, this.at);
    const buffer = r.held.get(id)!;
    const controller = new AbortController();
    const reason = new Error(`abort ${id}`);
    if (this.before) controller.abort(reason);
    const options = { signal: controller.signal };
    const promise = this.head
      ? r.queue.enqueueAtHeadAndWait(buffer, options)
      : r.queue.enqueueAndWait(buffer, options);
    if (!this.before) {
      assert.equal(r.queue.count(), m.queue.length + 1, "queued until the abort");
      controller.abort(reason);
    }
    await assert.rejects(within(promise, 2_000, "aborted wait"), (error) => error === reason);
    m.held.splice(m.held.indexOf(id), 1);
    r.held.delete(id);
    r.stale.push(buffer);
    m.stale++;
    m.free++;
    m.cancelled++;
  }
  toString = () =>
    `${this.head ? "enqueueAtHeadAndWait" : "enqueueAndWait"}(held[${this.at}]) ${
      this.before ? "pre-aborted" : "then abort"
    }`;
}

type MisuseKind =
  | "foreignArray"
  | "foreignValue"
  | "otherHandle"
  | "stale"
  | "queued"
  | "completeHeld"
  | "badSize";

class Misuse implements Cmd {
  constructor(readonly kind: MisuseKind, readonly verb: Verb, readonly at: number) {}
  check = (m: Readonly<Model>) => {
    switch (this.kind) {
      case "stale":
        return m.stale > 0;
      case "queued":
        return m.queue.length > 0;
      case "completeHeld":
      case "badSize":
        return m.held.length > 0;
      case "otherHandle":
        return canFetch(m);
      default:
        return this.verb !== "size";
    }
  };
  async run(m: Model, r: Real): Promise<void> {
    const { queue } = r;
    switch (this.kind) {
      case "foreignArray":
        return await misuseOn(
          r.queue,
          "ForeignBuffer",
          () => call(queue, this.verb, new Uint8Array(16)),
        );
      case "foreignValue":
        return await misuseOn(
          r.queue,
          "ForeignBuffer",
          () =>
            call(
              queue,
              this.verb,
              pick([null, undefined, {}, { index: 0, data: new Uint8Array(4) }], this.at),
            ),
        );
      case "otherHandle": {
        // A buffer of this queue fetched through another handle is foreign to this handle.
        const buffer = r.other.fetch();
        assert.ok(buffer, "the other handle fetches");
        const grew = m.free === 0;
        if (this.verb === "size") {
          buffer.size = 1; // its own handle may set it
        } else {
          await misuseOn(r.queue, "ForeignBuffer", () => call(queue, this.verb, buffer));
        }
        r.other.reuse(buffer);
        if (grew) {
          m.allocated++;
          m.free++;
        }
        return;
      }
      case "stale":
        return await misuseOn(
          r.queue,
          "StaleBuffer",
          () => call(queue, this.verb, pick(r.stale, this.at)),
        );
      case "queued": {
        const id = pick(m.queue, this.at);
        return await misuseOn(
          r.queue,
          "BufferState",
          () => call(queue, this.verb, r.queued.get(id)),
        );
      }
      case "completeHeld":
        return await misuseOn(
          r.queue,
          "BufferState",
          () => queue.workCompleted(r.held.get(pick(m.held, this.at))!, Status.Success),
        );
      case "badSize": {
        const buffer = r.held.get(pick(m.held, this.at))!;
        const size = buffer.size;
        const bad = pick([-1, m.config.bufferSize + 1, 1.5, NaN, Infinity], this.at);
        await misuseOn(r.queue, "RangeError", () => (buffer.size = bad));
        assert.equal(buffer.size, size, "a rejected size leaves the size alone");
        return;
      }
    }
  }
  toString = () => `misuse ${this.kind}: ${this.verb}[${this.at}]`;
}

const verbs: Verb[] = [
  "enqueue",
  "enqueueAtHead",
  "reuse",
  "workCompleted",
  "enqueueAndWait",
  "size",
];

const commands = [
  fc.constant(new Fetch()),
  fc.constant(new Fetch()),
  fc.tuple(fc.nat(), fc.boolean(), fc.boolean()).map(([at, head, wait]) =>
    new Enqueue(at, head, wait)
  ),
  fc.tuple(fc.nat(), fc.boolean()).map(([at, head]) => new Enqueue(at, head, false)),
  fc.tuple(fc.nat(), fc.boolean()).map(([at, head]) => new Enqueue(at, head, false)),
  fc.nat().map((at) => new Reuse(at)),
  fc.constant(new Flush()),
  fc.constant(new Observe()),
  fc.tuple(fc.nat(), fc.boolean(), fc.boolean()).map(([at, head, before]) =>
    new AbortedWait(at, head, before)
  ),
  fc.tuple(
    fc.constantFrom<MisuseKind>(
      "foreignArray",
      "foreignValue",
      "otherHandle",
      "stale",
      "queued",
      "completeHeld",
      "badSize",
    ),
    fc.constantFrom(...verbs),
    fc.nat(),
  ).map(([kind, verb, at]) => new Misuse(kind, verb, at)),
];

const configs: fc.Arbitrary<Config> = fc.record({
  bufferCount: fc.integer({ min: 0, max: 6 }),
  bufferSize: fc.integer({ min: 8, max: 40 }),
  contextSize: fc.constantFrom(0, 8, 12),
  lookAside: fc.boolean(),
  extra: fc.integer({ min: 0, max: 3 }),
}).map(({ bufferCount, lookAside, extra, ...rest }) => ({
  ...rest,
  bufferCount: lookAside ? bufferCount : Math.max(1, bufferCount),
  lookAside,
  maxBufferCount: lookAside ? Math.max(1, bufferCount + extra) : Math.max(1, bufferCount),
}));

/** Reuses what is held, starts the loop, runs a sentinel last, and checks what the handler saw. */
async function drain(m: Model, r: Real, log: Int32Array): Promise<void> {
  for (const id of [...m.held]) {
    r.queue.reuse(r.held.get(id)!);
    r.held.delete(id);
    m.free++;
  }
  m.held = [];
  checkStats(m, r);
  // The sentinel runs last. Fetch it before start where possible (a look-aside pool grows now,
  // deterministically); else every buffer is queued and acquire gets the first one to finish.
  const sentinelId = 1_000_000;
  const signal = AbortSignal.timeout(5_000);
  const early = canFetch(m) ? r.queue.fetch() : null;
  if (early) takeFree(m);
  const send = (buffer: WorkBuffer) => {
    fill(buffer, 0, sentinelId);
    return r.queue.enqueueAndWait(buffer, { signal });
  };
  const waiting = early ? send(early) : undefined;
  await r.queue.start();
  const status = await (waiting ?? send(await r.queue.acquire({ signal })));
  assert.equal(status, statusFor(0, sentinelId));
  const seen = Array.from(log.subarray(2, 2 + Atomics.load(log, 0)));
  assert.deepEqual(seen, [...m.queue, sentinelId], "the handler saw the model's queue, in order");
  assert.equal(Atomics.load(log, 1), 0, "payloads intact");
  for (const [id, promise] of r.waits) {
    assert.equal(await within(promise, 2_000, `waiter ${id}`), statusFor(0, id), `waiter ${id}`);
  }
  let completed = 0;
  let failed = 0;
  for (const id of [...m.queue, sentinelId]) {
    if (statusFor(0, id) >= 0) completed++;
    else failed++;
  }
  await r.queue.stop();
  await r.queue.onIdle();
  const stats = r.queue.stats();
  assert.deepEqual(
    stats,
    statsOf({ free: m.allocated, completed, cancelled: m.cancelled, failed }),
  );
}

Deno.test("property: random API sequences on a stopped queue match the model; misuse changes nothing", async () => {
  await fc.assert(
    fc.asyncProperty(
      configs,
      fc.commands(commands, { maxCommands: 60, size: "large" }),
      async (config, cmds) => {
        const log = new Int32Array(new SharedArrayBuffer(4 * 256));
        const queue = await ThreadedBufferQueue.create({
          bufferQueue: {
            bufferCount: config.bufferCount,
            bufferSize: config.bufferSize,
            contextSize: config.contextSize,
            enableLookAside: config.lookAside,
            maxBufferCount: config.lookAside ? config.maxBufferCount : undefined,
          },
          handlers,
          handlerOptions: { log: log.buffer },
        });
        try {
          const model: Model = {
            config,
            allocated: config.bufferCount,
            free: config.bufferCount,
            held: [],
            queue: [],
            waited: new Set(),
            stale: 0,
            cancelled: 0,
            nextId: 1,
          };
          const real: Real = {
            queue,
            other: ThreadedBufferQueue.attach(queue.share()),
            held: new Map(),
            queued: new Map(),
            waits: new Map(),
            stale: [],
          };
          await fc.asyncModelRun(() => ({ model, real }), cmds);
          if (coverage) { for (const cmd of cmds) coverage.add(String(cmd).replace(/\[.*/, "")); }
          checkStats(model, real);
          await drain(model, real, log);
        } finally {
          await queue.close();
        }
      },
    ),
    { numRuns: 120 },
  );
  if (coverage) console.log([...coverage].sort().join("\n"));
});

Deno.test("property: after close every method throws Closed and nothing changes", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 3 }),
      fc.integer({ min: 0, max: 3 }),
      async (held, queued) => {
        const log = new Int32Array(new SharedArrayBuffer(4 * 64));
        const queue = await ThreadedBufferQueue.create({
          bufferQueue: { bufferCount: 6, bufferSize: 16 },
          handlers,
          handlerOptions: { log: log.buffer },
        });
        const buffers: WorkBuffer[] = [];
        for (let i = 0; i < held + queued; i++) {
          const buffer = queue.fetch()!;
          fill(buffer, 0, i + 1);
          buffers.push(buffer);
          if (i >= held) queue.enqueue(buffer);
        }
        const final = await queue.close();
        assert.deepEqual(final, statsOf({ free: 6, cancelled: queued }));
        const closed = (action: () => unknown) =>
          assert.throws(action, (e) => e instanceof QueueError && e.code === "Closed");
        closed(() => queue.fetch());
        closed(() => queue.count());
        closed(() => queue.stats());
        closed(() => queue.flush());
        closed(() => queue.share());
        for (const buffer of buffers) {
          closed(() => queue.enqueue(buffer));
          closed(() => queue.reuse(buffer));
          await assert.rejects(queue.enqueueAndWait(buffer), (e) => e instanceof QueueError);
        }
        await assert.rejects(
          queue.acquire(),
          (e) => e instanceof QueueError && e.code === "Closed",
        );
        await assert.rejects(queue.start(), (e) => e instanceof QueueError && e.code === "Closed");
        assert.equal(Atomics.load(log, 0), 0, "nothing ran");
      },
    ),
    { numRuns: 10 },
  );
});
