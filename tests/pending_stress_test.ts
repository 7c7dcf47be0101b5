/**
 * Stress: most items pend and complete later (from a worker timer, or from the owner thread),
 * while `flush()` calls and aborted `enqueueAndWait`s race them. Nothing may stall, every waiter
 * settles once with a legitimate outcome, `reuseCleanup` runs once per round, stats add up.
 */
import assert from "node:assert/strict";
import { statsOf, total, until, within } from "./helpers.ts";
import { isSuccess, Status, ThreadedBufferQueue, type WorkBuffer } from "../mod.ts";
import { How, prng } from "./fixtures/mixed_producer.ts";
import { fill, L, statusFor } from "./fixtures/stress_common.ts";

const handlers = new URL("./fixtures/stress_handlers.ts", import.meta.url);

type Op =
  | "wait"
  | "waitHead"
  | "abortLater"
  | "abortHeadLater"
  | "preAborted"
  | "enqueue"
  | "enqueueHead"
  | "reuse";

interface Round {
  id: number;
  how: number;
  op: Op;
  /** How the waiter settled: a status, or the rejection reason. */
  settled: { status?: number; reason?: unknown; times: number };
  /** The abort reason this round's signal used, if any. */
  reason?: unknown;
}

const ops: Op[] = [
  "wait",
  "wait",
  "wait",
  "waitHead",
  "abortLater",
  "abortLater",
  "abortHeadLater",
  "preAborted",
  "enqueue",
  "enqueueHead",
  "reuse",
];

async function pendingStress(
  { rounds, pool, tasks, seed, cleanupDelayMs, flushPauseMs = 1 }: {
    rounds: number;
    pool: number;
    tasks: number;
    seed: number;
    cleanupDelayMs?: number;
    /** Pause between flushes (0 or this, at random). */
    flushPauseMs?: number;
  },
): Promise<void> {
  const random = prng(seed);
  const maxId = rounds + 1;
  const log = new SharedArrayBuffer((L.BODY + 3 * maxId + 16) * 4);
  const w = new Int32Array(log);
  const seen = (id: number) => Atomics.load(w, L.BODY + id);
  const cleaned = (id: number) => Atomics.load(w, L.BODY + maxId + id);
  const reported: string[] = [];
  const queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: pool, bufferSize: 48, contextSize: 8 },
    handlers,
    handlerOptions: { log, mode: "pending", maxId, cleanupDelayMs },
    onError: (error, phase) => reported.push(`${phase}: ${error.message}`),
  });
  const handles = new Map<number, WorkBuffer>();
  const ownerErrors: string[] = [];
  let ownerCompleted = 0;
  let producing = true;
  let completing = true;
  let flushed = 0;
  let flushCalls = 0;
  const inconsistent: string[] = [];
  try {
    await queue.start();

    // The owner thread completes what the handler pended for it (read from the mailbox).
    const completer = (async () => {
      let read = 0;
      while (completing) {
        const n = Atomics.load(w, L.MAILBOX_LENGTH);
        if (n === read) {
          const sleep = Atomics.waitAsync(w, L.MAILBOX_LENGTH, n, 20);
          if (sleep.async) await sleep.value;
          continue;
        }
        for (; read < n; read++) {
          const id = w[L.BODY + 2 * maxId + read];
          const handle = handles.get(id);
          try {
            assert.ok(handle, `a handle for mailbox id ${id}`);
            queue.workCompleted(handle, statusFor(How.OwnerPend, id));
            ownerCompleted++;
          } catch (error) {
            ownerErrors.push(`${id}: ${error}`);
          }
          // Sometimes let the loop run ahead before completing the next one.
          if (random() < 0.3) await Promise.resolve();
        }
        if (random() < 0.5) await new Promise((resolve) => setTimeout(resolve, 0));
      }
    })();

    // Flushes race the producers; the stats must add up every time.
    const flusher = (async () => {
      while (producing) {
        flushed += queue.flush();
        flushCalls++;
        const stats = queue.stats();
        if (total(stats) !== pool) inconsistent.push(JSON.stringify(stats));
        await new Promise((resolve) => setTimeout(resolve, random() < 0.5 ? 0 : flushPauseMs));
      }
    })();

    const all: Round[] = [];
    let nextId = 1;
    const producer = async () => {
      const signal = AbortSignal.timeout(20_000);
      const waits: Promise<void>[] = [];
      for (let id = nextId++; id <= rounds; id = nextId++) {
        const buffer = await queue.acquire({ signal });
        const how = Math.floor(random() * 4);
        const op = ops[Math.floor(random() * ops.length)];
        fill(buffer, how, id);
        handles.set(id, buffer);
        const round: Round = { id, how, op, settled: { times: 0 } };
        all.push(round);
        const track = (promise: Promise<number>) =>
          waits.push(promise.then(
            (status) => void (round.settled.status = status, round.settled.times++),
            (reason) => void (round.settled.reason = reason, round.settled.times++),
          ));
        switch (op) {
          case "wait":
            track(queue.enqueueAndWait(buffer));
            break;
          case "waitHead":
            track(queue.enqueueAtHeadAndWait(buffer));
            break;
          case "abortLater":
          case "abortHeadLater": {
            const controller = new AbortController();
            round.reason = new Error(`abort ${id}`);
            const options = { signal: controller.signal };
            track(
              op === "abortLater"
                ? queue.enqueueAndWait(buffer, options)
                : queue.enqueueAtHeadAndWait(buffer, options),
            );
            const when = random();
            if (when < 0.3) queueMicrotask(() => controller.abort(round.reason));
            else setTimeout(() => controller.abort(round.reason), when < 0.7 ? 0 : 1);
            break;
          }
          case "preAborted": {
            const controller = new AbortController();
            round.reason = new Error(`pre-abort ${id}`);
            controller.abort(round.reason);
            track(queue.enqueueAndWait(buffer, { signal: controller.signal }));
            break;
          }
          case "enqueue":
            queue.enqueue(buffer);
            break;
          case "enqueueHead":
            queue.enqueueAtHead(buffer);
            break;
          case "reuse":
            queue.reuse(buffer);
            break;
        }
        if (random() < 0.2) await Promise.resolve();
      }
      await Promise.all(waits);
    };

    await within(
      Promise.all(Array.from({ length: tasks }, producer)),
      20_000,
      "producers and their waiters (a stall)",
    );
    producing = false;
    await flusher;

    // Everything comes back to the pool (pended items included): acquire the whole pool.
    const back: WorkBuffer[] = [];
    for (let i = 0; i < pool; i++) {
      back.push(await queue.acquire({ signal: AbortSignal.timeout(10_000) }));
    }
    completing = false;
    await completer;

    assert.deepEqual(ownerErrors, [], "owner-thread workCompleted never throws");
    assert.deepEqual(reported, [], "no handler error reported");
    assert.deepEqual(inconsistent, [], "stats always add up to the pool");
    assert.equal(Atomics.load(w, L.COMPLETE_ERRORS), 0, "ctx.workCompleted from timers");
    assert.equal(Atomics.load(w, L.CORRUPT), 0, "payloads intact");
    assert.equal(Atomics.load(w, L.OVERLAP), 0, "one item at a time");
    assert.equal(all.length, rounds);

    let completed = 0;
    let failed = 0;
    let cancelled = 0;
    let pendedForOwner = 0;
    for (const round of all) {
      const { id, how, op, settled } = round;
      const ran = seen(id);
      const what = `round ${id} (${op}, how ${how}): ran ${ran}, ${JSON.stringify(settled)}`;
      assert.ok(ran === 0 || ran === 1, `ran at most once: ${what}`);
      assert.equal(cleaned(id), 1, `reuseCleanup once: ${what}`);
      if (ran) {
        if (isSuccess(statusFor(how, id))) completed++;
        else failed++;
        if (how === How.OwnerPend) pendedForOwner++;
      } else if (op !== "reuse") {
        cancelled++;
      }
      const own = statusFor(how, id);
      switch (op) {
        case "wait":
        case "waitHead":
          assert.equal(settled.times, 1, what);
          assert.equal(settled.reason, undefined, what);
          assert.equal(settled.status, ran ? own : Status.Cancelled, what);
          break;
        case "abortLater":
        case "abortHeadLater":
          assert.equal(settled.times, 1, what);
          if (settled.reason !== undefined) assert.equal(settled.reason, round.reason, what);
          else assert.equal(settled.status, ran ? own : Status.Cancelled, what);
          break;
        case "preAborted":
          assert.equal(settled.times, 1, what);
          assert.equal(settled.reason, round.reason, what);
          assert.equal(ran, 0, what);
          break;
        case "reuse":
          assert.equal(ran, 0, what);
          break;
        default:
          break;
      }
    }
    assert.equal(Atomics.load(w, L.MAILBOX_LENGTH), pendedForOwner, "mailbox entries");
    assert.equal(ownerCompleted, pendedForOwner, "owner completions");
    assert.ok(flushCalls > 0);
    assert.ok(flushed <= cancelled, `flushed ${flushed} <= cancelled ${cancelled}`);
    const stats = queue.stats();
    assert.deepEqual(stats, statsOf({ held: pool, completed, cancelled, failed }));
    assert.equal(Atomics.load(w, L.CLEANUP_STARTED), rounds, "cleanups started");
    assert.equal(Atomics.load(w, L.CLEANUP_FINISHED), rounds, "cleanups finished");
    // The mix really happened.
    assert.ok(
      Atomics.load(w, L.TIMER_COMPLETED) > 0 && pendedForOwner > 0,
      `both pend paths: timer ${Atomics.load(w, L.TIMER_COMPLETED)}, owner ${pendedForOwner}, ${
        JSON.stringify(stats)
      }, ${flushCalls} flushes`,
    );
    assert.ok(all.some((r) => r.settled.reason !== undefined && r.op !== "preAborted"), "aborts");
    assert.ok(cancelled > 0, "flushes or aborts cancelled something");
    if (Deno.env.get("TBQ_STRESS_VERBOSE")) {
      console.log(
        JSON.stringify(stats),
        { flushed, flushCalls, pendedForOwner },
        Atomics.load(w, L.TIMER_COMPLETED),
      );
    }
    for (const buffer of back) queue.reuse(buffer);
  } finally {
    producing = false;
    completing = false;
    await queue.close();
  }
}

Deno.test("pending stress: timer- and owner-completed pends race flush and abort (sync reuseCleanup)", async () => {
  await pendingStress({ rounds: 3000, pool: 8, tasks: 6, seed: 0x5eed });
});

Deno.test("pending stress: same with an async reuseCleanup", async () => {
  // An async cleanup makes each return take a worker timer turn, and the loop cleans before it
  // takes the next item: flush less often, or flushes cancel everything before it runs.
  await pendingStress({
    rounds: 800,
    pool: 6,
    tasks: 5,
    seed: 0xbeef,
    cleanupDelayMs: 0,
    flushPauseMs: 25,
  });
});

Deno.test("pending stress: a pool of 1 and many producers", async () => {
  await pendingStress({ rounds: 600, pool: 1, tasks: 4, seed: 7 });
});

Deno.test("close: every async reuseCleanup has finished by the time close() resolves", async () => {
  // The race is timing-dependent: try a few times (each attempt is ~40 ms).
  for (let attempt = 0; attempt < 10; attempt++) {
    const log = new SharedArrayBuffer((L.BODY + 64) * 4);
    const w = new Int32Array(log);
    const queue = await ThreadedBufferQueue.create({
      bufferQueue: { bufferCount: 8, bufferSize: 16, contextSize: 8 },
      handlers,
      handlerOptions: { log, mode: "record", cleanupDelayMs: 3 },
    });
    try {
      // Loop never started: 8 queued items that close() cancels; each passes through cleanup.
      for (let i = 0; i < 8; i++) {
        const buffer = queue.fetch();
        assert.ok(buffer);
        fill(buffer, 0, i);
        queue.enqueue(buffer);
      }
      const final = await within(queue.close(), 10_000, "close");
      assert.equal(final.cancelled, 8);
      assert.equal(Atomics.load(w, L.CLEANUP_STARTED), 8, `attempt ${attempt}: started`);
      assert.equal(
        Atomics.load(w, L.CLEANUP_FINISHED),
        8,
        `attempt ${attempt}: every reuseCleanup finished before close() resolved`,
      );
    } finally {
      await queue.close();
    }
  }
});

Deno.test("pending stress: stop/start cycles while items pend and complete from the owner", async () => {
  const maxId = 400;
  const log = new SharedArrayBuffer((L.BODY + 3 * maxId + 16) * 4);
  const w = new Int32Array(log);
  const queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 4, bufferSize: 32, contextSize: 8 },
    handlers,
    handlerOptions: { log, mode: "pending", maxId },
  });
  const howOf = (id: number) =>
    id % 3 === 0 ? How.OwnerPend : id % 3 === 1 ? How.TimerPend : How.Now;
  const handles = new Map<number, WorkBuffer>();
  let read = 0;
  let pumping = true;
  const completeMailbox = () => {
    for (const n = Atomics.load(w, L.MAILBOX_LENGTH); read < n; read++) {
      const id = w[L.BODY + 2 * maxId + read];
      queue.workCompleted(handles.get(id)!, statusFor(How.OwnerPend, id));
    }
  };
  // The owner completes pended items whenever the handler posts them, stopped or not.
  const pump = (async () => {
    while (pumping) {
      completeMailbox();
      const sleep = Atomics.waitAsync(w, L.MAILBOX_LENGTH, read, 20);
      if (sleep.async) await sleep.value;
    }
  })();
  try {
    await queue.start();
    const waits: Promise<[number, number]>[] = [];
    for (let id = 1; id < maxId; id++) {
      if (id % 25 === 0) {
        await queue.stop(); // pended items stay pended, queued ones stay queued
        await queue.start();
      }
      const buffer = await queue.acquire({ signal: AbortSignal.timeout(5_000) });
      fill(buffer, howOf(id), id);
      handles.set(id, buffer);
      waits.push(queue.enqueueAndWait(buffer).then((status) => [id, status]));
    }
    const results = await within(Promise.all(waits), 15_000, "every waiter");
    for (const [id, status] of results) assert.equal(status, statusFor(howOf(id), id), `${id}`);
    assert.equal(Atomics.load(w, L.COMPLETE_ERRORS), 0);
    await until(() => queue.stats().free === 4, 5_000, "all buffers back");
    const stats = queue.stats();
    assert.equal(stats.completed + stats.failed, maxId - 1);
    assert.equal(stats.cancelled, 0);
    assert.equal(Atomics.load(w, L.CLEANUP_FINISHED), maxId - 1);
  } finally {
    pumping = false;
    await pump;
    await queue.close();
  }
});
