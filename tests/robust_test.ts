/**
 * Regression tests for issue 7 ("Robust core: no hang, no lie, no leak"): one or more for each of
 * its eleven numbered behaviours, asserting what CONTRACT.md §1–2 promises instead, plus `keep`,
 * `item.signal` and `onIdle`. Cases that could hang or kill the process run in a subprocess
 * (tests/fixtures/robust_child.ts) under an outer time limit, so a regression fails instead of
 * hanging the run.
 */
import assert from "node:assert/strict";
import {
  QueueError,
  Status,
  ThreadedBufferQueue,
  type ThreadedBufferQueueConfig,
  UsbError,
} from "../mod.ts";
import { allFree, ProducerWorker, settled, until, within } from "./helpers.ts";
import { script } from "./fixtures/probe.ts";
import { runLimited } from "./fixtures/run_limited.ts";
import { Late, R, replyByte, Seen, Thrown, W } from "./fixtures/robust_common.ts";
import {
  capture,
  consistent,
  createRejects,
  isQueueError,
  outcome,
  put,
  robust,
  robustHandlers,
  throwsCode,
} from "./fixtures/robust_setup.ts";

const childScript = new URL("./fixtures/robust_child.ts", import.meta.url);
const minimalHandlers = new URL("./fixtures/minimal_handlers.ts", import.meta.url);

/**
 * Runs a case of robust_child.ts in its own process, killed after `limit` ms; asserts it exited
 * 0 and returns its RESULT.
 */
async function child(
  name: string,
  { limit = 20_000, v8Flags = [] as string[] } = {},
): Promise<Record<string, unknown> & { exit?: Record<string, unknown> }> {
  const { code, signal, timedOut, stdout, stderr, ms } = await runLimited(
    ["run", "-A", "--unstable-worker-options", ...v8Flags, childScript.pathname, name],
    limit,
    { NO_COLOR: "1" },
  );
  const detail = `case "${name}" after ${Math.round(ms)} ms, exit code ${code}${
    signal ? `, signal ${signal}` : ""
  }\n--- stdout\n${stdout}--- stderr\n${stderr}`;
  assert.ok(!timedOut, `killed after ${limit} ms (a hang): ${detail}`);
  assert.equal(code, 0, detail);
  const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
  assert.ok(line, `no RESULT: ${detail}`);
  const exit = stdout.split("\n").find((l) => l.startsWith("EXIT "));
  return {
    ...JSON.parse(line.slice("RESULT ".length)),
    ...(exit ? { exit: JSON.parse(exit.slice("EXIT ".length)) } : {}),
  };
}

/** Asserts `create(config)` rejects with `QueueError` InvalidConfig (closing it if it resolves). */
async function rejectsInvalidConfig(config: ThreadedBufferQueueConfig, what: string) {
  const created = await outcome(ThreadedBufferQueue.create(config), 5000, `create (${what})`);
  if (created.value) await created.value.close({ signal: AbortSignal.timeout(1000) });
  assert.ok(
    isQueueError(created.error, "InvalidConfig"),
    `${what}: create rejects QueueError InvalidConfig, not ${
      created.value ? "resolves" : created.error
    }`,
  );
}

// ── 1. a lock left held ──────────────────────────────────────────────────────────────────────

Deno.test("1a. a stack overflow inside owner-side workCompleted/stats/fetch leaves no lock held", async () => {
  const result = await child("overflow-owner");
  assert.ok((result.attempts as number) > 0, JSON.stringify(result));
});

Deno.test("1b. a stack overflow inside ctx.workCompleted in a handler leaves no lock held", async () => {
  const result = await child("overflow-worker");
  assert.ok((result.overflows as number) + (result.other as number) > 0, JSON.stringify(result));
});

Deno.test("1c. a pool over a corrupt buffer, or a lock left by a dead thread, never freezes a call", async () => {
  const result = await child("corrupt-pool", { limit: 40_000 });
  assert.ok(result.lockOfDeadThread, JSON.stringify(result));
});

// ── 2. no escape from a hung handler ─────────────────────────────────────────────────────────

for (
  const [name, run, bound] of [
    [
      "2a. work spinning forever: close({ signal }) terminates it, waiters get Cancelled, all free",
      "spin-close",
      2000,
    ],
    ["2b. work spinning forever: await using finishes after disposeTimeout", "spin-dispose", 2500],
    [
      "2c. work blocked in a synchronous FFI call (libc sleep 30 s): close({ signal }) resolves",
      "ffi-close",
      2000,
    ],
    [
      "2d. work blocked in a synchronous FFI call (libc sleep 30 s): await using finishes",
      "ffi-dispose",
      2500,
    ],
  ] as const
) {
  Deno.test(name, async () => {
    const { closeMs } = await child(run);
    const what = run.endsWith("close") ? "close" : "dispose";
    assert.ok((closeMs as number) < bound, `${what} took ${closeMs} ms`);
  });
}

Deno.test("2e. a work promise that never settles: close({ signal }) settles every waiter, all free", async () => {
  const pool = 4;
  await using r = await robust({ bufferQueue: { bufferCount: pool, bufferSize: 16 } });
  const { queue, probe } = r;
  await queue.start();
  const stuck = queue.enqueueAndWait(put(queue, R.HANG, 1));
  await probe.until(W.WORK, (n) => n === 1);
  const queued = queue.enqueueAndWait(put(queue, R.COMPLETE, 2));
  put(queue, R.COMPLETE, 3);
  put(queue, R.COMPLETE, 4);
  const acquiring = capture(queue.acquire());
  const idle = capture(queue.onIdle());
  const stopping = capture(queue.stop());
  assert.equal(await settled(stopping), false, "stop waits for the item in progress");
  const t0 = performance.now();
  const stats = await within(queue.close({ signal: AbortSignal.timeout(300) }), 3000, "close");
  assert.ok(performance.now() - t0 < 2000, "close resolves soon after its signal aborts");
  allFree(stats, pool);
  assert.equal(await within(stuck, 1000, "the hung item's waiter"), Status.Cancelled);
  assert.equal(await within(queued, 1000, "the queued item's waiter"), Status.Cancelled);
  const acquired = await within(acquiring, 1000, "acquire");
  assert.ok(isQueueError(acquired.error, "Closed"), `acquire rejects Closed: ${acquired.error}`);
  const idled = await within(idle, 1000, "onIdle");
  assert.ok(isQueueError(idled.error, "Closed"), `onIdle rejects Closed: ${idled.error}`);
  await within(stopping, 1000, "stop");
  throwsCode(() => queue.fetch(), "Closed");
  throwsCode(() => queue.stats(), "Closed");
  assert.equal(probe.get(W.POST), 0, "no post runs after a forced close");
});

Deno.test("2f. a pre promise that never settles: start() settles once close({ signal }) resolves", async () => {
  const pool = 2;
  await using r = await robust({ bufferQueue: { bufferCount: pool, bufferSize: 16 }, pre: "hang" });
  const { queue, probe } = r;
  const waiting = queue.enqueueAndWait(put(queue, R.COMPLETE, 1));
  const starting = capture(queue.start());
  await probe.until(W.PRE, (n) => n === 1);
  assert.equal(await settled(starting), false);
  allFree(await within(queue.close({ signal: AbortSignal.timeout(300) }), 3000, "close"), pool);
  const started = await within(starting, 1000, "start");
  assert.ok(started.error instanceof Error, "start rejects");
  assert.equal(await within(waiting, 1000, "the queued waiter"), Status.Cancelled);
  assert.equal(probe.get(W.WORK), 0);
});

Deno.test("2g. a post promise that never settles: stop() and close({ signal }) settle", async () => {
  const pool = 2;
  await using r = await robust({
    bufferQueue: { bufferCount: pool, bufferSize: 16 },
    post: "hang",
  });
  const { queue, probe } = r;
  await queue.start();
  assert.equal(await queue.enqueueAndWait(put(queue, R.COMPLETE, 1)), Status.Success);
  const stopping = capture(queue.stop());
  await probe.until(W.POST, (n) => n === 1);
  const held = put(queue, R.COMPLETE, 2);
  allFree(await within(queue.close({ signal: AbortSignal.timeout(300) }), 3000, "close"), pool);
  await within(stopping, 1000, "stop");
  throwsCode(() => queue.reuse(held), "Closed");
});

Deno.test("2h. await using with a hung handler finishes after disposeTimeout", async () => {
  const r = await robust({ bufferQueue: { bufferCount: 2, bufferSize: 16 }, disposeTimeout: 500 });
  const { queue, probe } = r;
  await queue.start();
  const stuck = queue.enqueueAndWait(put(queue, R.HANG, 1));
  await probe.until(W.WORK, (n) => n === 1);
  const t0 = performance.now();
  await within(
    (async () => {
      await using _ = queue;
    })(),
    3000,
    "await using",
  );
  const ms = performance.now() - t0;
  assert.ok(ms >= 400 && ms < 2500, `await using took ${Math.round(ms)} ms (disposeTimeout 500)`);
  assert.equal(await within(stuck, 1000, "the hung item's waiter"), Status.Cancelled);
  allFree(await within(queue.close(), 1000, "close"), 2);
});

Deno.test("2i. after await using, nothing keeps the process alive (no wait for disposeTimeout)", async () => {
  const { exit } = await child("dispose-exit");
  assert.ok(exit, "the child reached its unload event");
  assert.ok(
    (exit.lingeredMs as number) < 1000,
    `the process ended ${exit.lingeredMs} ms after the queue was disposed (disposeTimeout 5000)`,
  );
});

// ── 3. a dying Worker ────────────────────────────────────────────────────────────────────────

Deno.test("3a. self.close() in work: WorkerFailed within 1 s, waiters settle, methods throw Closed", async () => {
  const pool = 4;
  await using r = await robust({ bufferQueue: { bufferCount: pool, bufferSize: 16 } });
  const { queue, probe, report } = r;
  await queue.start();
  const pended = queue.enqueueAndWait(put(queue, R.PEND, 1));
  await probe.until(W.WORK, (n) => n === 1);
  const idle = capture(queue.onIdle());
  const t0 = performance.now();
  const dying = queue.enqueueAndWait(put(queue, R.SELF_CLOSE, 2));
  const queued = queue.enqueueAndWait(put(queue, R.COMPLETE, 3));
  const held = put(queue, R.COMPLETE, 4);
  const acquiring = capture(queue.acquire());
  const failed = await report((x) => isQueueError(x.error, "WorkerFailed"), 3000, "WorkerFailed");
  const noticed = performance.now() - t0;
  assert.ok(noticed < 1500, `the owner noticed within ${Math.round(noticed)} ms`);
  assert.equal(failed.phase, "worker");
  const statuses = await within(Promise.all([pended, dying, queued]), 1000, "the waiters");
  assert.deepEqual(statuses, [Status.Cancelled, Status.Cancelled, Status.Cancelled]);
  const acquired = await within(acquiring, 1000, "acquire");
  assert.ok(isQueueError(acquired.error, "Closed"), `acquire rejects Closed: ${acquired.error}`);
  const idled = await within(idle, 1000, "onIdle");
  assert.ok(isQueueError(idled.error, "Closed"), `onIdle rejects Closed: ${idled.error}`);
  for (
    const call of [
      () => queue.fetch(),
      () => queue.enqueue(held),
      () => queue.count(),
      () => queue.flush(),
    ]
  ) {
    const closed = throwsCode(call, "Closed");
    assert.equal(closed.cause, failed.error, "Closed carries the WorkerFailed error as cause");
  }
  const started = await outcome(queue.start(), 1000, "start");
  assert.ok(isQueueError(started.error, "Closed"), `start rejects Closed: ${started.error}`);
  const stats = await within(queue.close(), 1000, "close");
  allFree(stats, pool);
  assert.equal(stats.cancelled, 3);
});

Deno.test("3b. self.close() in pre: start() rejects, WorkerFailed reported, waiters settle", async () => {
  const pool = 2;
  await using r = await robust({
    bufferQueue: { bufferCount: pool, bufferSize: 16 },
    pre: "close",
  });
  const { queue, report } = r;
  const waiting = queue.enqueueAndWait(put(queue, R.COMPLETE, 1));
  const t0 = performance.now();
  const started = await outcome(queue.start(), 3000, "start");
  assert.ok(
    isQueueError(started.error, "WorkerFailed", "Closed"),
    `start rejects WorkerFailed or Closed: ${started.error}`,
  );
  const failed = await report((x) => isQueueError(x.error, "WorkerFailed"), 3000, "WorkerFailed");
  assert.ok(performance.now() - t0 < 1500, "noticed within about a second");
  assert.equal(failed.phase, "worker");
  assert.equal(await within(waiting, 1000, "the queued waiter"), Status.Cancelled);
  const closed = throwsCode(() => queue.fetch(), "Closed");
  assert.equal(closed.cause, failed.error);
  allFree(await within(queue.close(), 1000, "close"), pool);
});

Deno.test("3c. self.close() while the handler module loads: create() rejects", async () => {
  const created = await createRejects(
    new URL("./fixtures/robust_load_close.ts", import.meta.url),
    5000,
  );
  assert.ok(created.ms < 3000);
});

Deno.test("3d. a handler module that never finishes loading: create() rejects after loadTimeout", async () => {
  const t0 = performance.now();
  const created = await outcome(
    robust({
      handlers: new URL("./fixtures/robust_load_hang.ts", import.meta.url),
      loadTimeout: 300,
    }),
    5000,
    "create",
  );
  if (created.value) await created.value.queue.close({ signal: AbortSignal.timeout(500) });
  const ms = performance.now() - t0;
  assert.ok(
    isQueueError(created.error, "HandlerLoad"),
    `create rejects HandlerLoad, not ${created.error ?? "resolves"}`,
  );
  assert.ok(ms >= 250 && ms < 2500, `create rejected after ${Math.round(ms)} ms (loadTimeout 300)`);
});

Deno.test("3e. Deno.exit() in work: WorkerFailed within 1 s, waiters Cancelled, methods throw Closed", async () => {
  await child("exit-work");
});

Deno.test("3f. Deno.exit() in pre: start() rejects, WorkerFailed, waiters Cancelled", async () => {
  await child("exit-pre");
});

Deno.test("3g. Deno.exit() while the handler module loads: create() rejects", async () => {
  await child("exit-load");
});

// ── 4. the owner survives what the Worker sends ──────────────────────────────────────────────

Deno.test("4a. errors named toString, valueOf, constructor, __proto__ reach onError intact", async () => {
  const { names } = await child("error-names");
  assert.deepEqual(names, ["toString", "valueOf", "constructor", "__proto__"]);
});

Deno.test("4b. a handler posting null, a stray done, or junk: the owner and the queue live on", async () => {
  await child("junk");
});

Deno.test("4c. an onError that throws: the owner lives on and the queue keeps working", async () => {
  const { calls } = await child("onerror-throws");
  assert.ok((calls as number) >= 3);
});

Deno.test("4d. an onError that is not a function: create rejects InvalidConfig", async () => {
  for (const onError of [42, "log", {}]) {
    await rejectsInvalidConfig(
      {
        bufferQueue: { bufferCount: 1, bufferSize: 8 },
        handlers: minimalHandlers,
        onError: onError as unknown as () => void,
      },
      `onError: ${JSON.stringify(onError)}`,
    );
  }
});

// ── 5. one bad result does not kill the loop ─────────────────────────────────────────────────

Deno.test("5. a throwing disposition getter or error.status getter fails only its item", async () => {
  await using r = await robust();
  const { queue, reports, report } = r;
  await queue.start();
  const statuses = await within(
    Promise.all([
      queue.enqueueAndWait(put(queue, R.BAD_RESULT, 1)),
      queue.enqueueAndWait(put(queue, R.THROW, Thrown.STATUS_GETTER)),
      queue.enqueueAndWait(put(queue, R.COMPLETE, 3)),
    ]),
    3000,
    "the items",
  );
  assert.deepEqual(statuses, [Status.Unsuccessful, Status.Unsuccessful, Status.Success]);
  assert.equal(
    await within(queue.enqueueAndWait(put(queue, R.COMPLETE, 4)), 3000, "a later item"),
    Status.Success,
  );
  await report(() => reports.filter((x) => x.phase === "work").length >= 2, 3000, "2 reports");
  assert.ok(!reports.some((x) => x.phase === "loop"), "the loop did not fail");
  await within(queue.onIdle(), 3000, "onIdle");
  const stats = consistent(queue.stats(), 4);
  assert.deepEqual([stats.failed, stats.completed], [2, 2]);
});

// ── 6. a status, once final, stays ───────────────────────────────────────────────────────────

Deno.test("6. workCompleted from reuseCleanup after WorkComplete is refused; the waiter gets work's status", async () => {
  await using r = await robust();
  const { queue, probe, report } = r;
  await queue.start();
  assert.equal(
    await within(queue.enqueueAndWait(put(queue, R.LATE_COMPLETE, 1)), 3000, "the item"),
    Status.IoTimeout,
  );
  await probe.until(W.LATE, (v) => v !== 0);
  assert.equal(probe.get(W.LATE), Late.REFUSED, "ctx.workCompleted threw QueueError BufferState");
  const reported = await report((x) => x.phase === "reuseCleanup", 3000, "the reuseCleanup report");
  assert.ok(isQueueError(reported.error, "BufferState"), `${reported.error}`);
  assert.ok(!r.reports.some((x) => x.phase === "work"), "work is not blamed");
  assert.equal(await queue.enqueueAndWait(put(queue, R.COMPLETE, 2)), Status.Success);
  await within(queue.onIdle(), 3000, "onIdle");
  const stats = consistent(queue.stats(), 4);
  assert.deepEqual([stats.failed, stats.completed], [1, 1]);
});

// ── 7. attach() checks the header ────────────────────────────────────────────────────────────

Deno.test("7. attach() refuses a buffer with the magic word but impossible sizes", async () => {
  // Distinctive sizes, so their header words can be found by value whatever the layout.
  const queue = await ThreadedBufferQueue.create({
    bufferQueue: {
      bufferCount: 3,
      bufferSize: 1001,
      contextSize: 200,
      enableLookAside: true,
      maxBufferCount: 300,
    },
    handlers: minimalHandlers,
  });
  try {
    const real = queue.share().buffer;
    const head = new Int32Array(real, 0, 8);
    const at = (value: number) => {
      const found = head.indexOf(value);
      assert.ok(found > 0 && head.lastIndexOf(value) === found, `one header word is ${value}`);
      return found;
    };
    const [bufferSize, contextSize, maxBuffers] = [at(1001), at(200), at(300)];
    const forged = (byteLength: number, edit: (words: Int32Array) => void = () => {}) => {
      const buffer = new SharedArrayBuffer(byteLength);
      const bytes = Math.min(byteLength, real.byteLength);
      new Uint8Array(buffer).set(new Uint8Array(real, 0, bytes));
      edit(new Int32Array(buffer, 0, Math.floor(byteLength / 4)));
      return { kind: "tbq" as const, buffer };
    };
    // The control: an exact copy attaches.
    ThreadedBufferQueue.attach(forged(real.byteLength));
    const cases: [string, ReturnType<typeof forged>][] = [
      ["negative bufferSize", forged(real.byteLength, (w) => w[bufferSize] = -1)],
      ["negative contextSize", forged(real.byteLength, (w) => w[contextSize] = -8)],
      ["negative maxBufferCount", forged(real.byteLength, (w) => w[maxBuffers] = -300)],
      ["bufferSize beyond the buffer", forged(real.byteLength, (w) => w[bufferSize] = 0x7fffffff)],
      ["contextSize beyond the buffer", forged(real.byteLength, (w) => w[contextSize] = 1 << 28)],
      ["maxBufferCount beyond the buffer", forged(real.byteLength, (w) => w[maxBuffers] = 1 << 20)],
      ["a buffer 8 bytes too short", forged(real.byteLength - 8)],
      ["a buffer of the header only", forged(256)],
      ["a buffer of the magic word only", forged(4)],
    ];
    for (const [what, share] of cases) {
      assert.throws(
        () => ThreadedBufferQueue.attach(share),
        (error: unknown) => isQueueError(error, "ForeignBuffer"),
        `${what}: attach throws QueueError ForeignBuffer`,
      );
    }
  } finally {
    await queue.close();
  }
});

// ── 8. stats() tells the truth ───────────────────────────────────────────────────────────────

Deno.test("8a. a buffer whose reuseCleanup is due or running counts as returning; free is what fetch gives", async () => {
  const pool = 3;
  await using r = await robust({ bufferQueue: { bufferCount: pool, bufferSize: 16 } });
  const { queue, probe } = r;
  await queue.start();
  queue.enqueue(put(queue, R.CLEAN_GATE, 1));
  await probe.until(W.IN_CLEAN, (n) => n === 1);
  let stats = consistent(queue.stats(), pool);
  assert.deepEqual([stats.returning, stats.free, stats.running], [1, 2, 0], JSON.stringify(stats));
  // Its cleanup cannot run while the worker awaits the first: due, so returning too.
  queue.reuse(put(queue, R.COMPLETE, 2));
  stats = consistent(queue.stats(), pool);
  assert.deepEqual([stats.returning, stats.free], [2, 1], JSON.stringify(stats));
  const fetched = [];
  for (let buffer = queue.fetch(); buffer; buffer = queue.fetch()) fetched.push(buffer);
  assert.equal(fetched.length, stats.free, "fetch hands out exactly the free buffers");
  stats = consistent(queue.stats(), pool);
  assert.deepEqual([stats.free, stats.held, stats.returning], [0, 1, 2], JSON.stringify(stats));
  const idle = queue.onIdle();
  assert.equal(await settled(idle), false, "onIdle waits for returning buffers");
  probe.set(W.CLEAN_GATE, 1);
  await within(idle, 3000, "onIdle");
  stats = consistent(queue.stats(), pool);
  assert.deepEqual([stats.free, stats.held, stats.returning], [2, 1, 0], JSON.stringify(stats));
  for (const buffer of fetched) queue.reuse(buffer);
  await within(queue.onIdle(), 3000, "onIdle");
  assert.equal(consistent(queue.stats(), pool).free, pool);
});

Deno.test("8b. a producer Worker terminated mid-enqueueAndWait leaves its buffer returning; close recovers it", async () => {
  const pool = 2;
  await using r = await robust({ bufferQueue: { bufferCount: pool, bufferSize: 16 } });
  const { queue, probe } = r;
  await queue.start();
  const worker = new ProducerWorker(queue.share(), "gate", { id: 1 });
  try {
    assert.equal((await worker.next(5000)).phase, "waiting");
    await probe.until(W.IN_GATE, (n) => n === 1);
  } finally {
    worker.terminate();
  }
  probe.set(W.GATE, 1);
  await probe.until(W.CLEANUP, (n) => n === 1);
  await until(() => queue.stats().running === 0, 3000, "the item to complete");
  await new Promise((resolve) => setTimeout(resolve, 100));
  let stats = consistent(queue.stats(), pool);
  assert.deepEqual([stats.free, stats.returning], [1, 1], JSON.stringify(stats));
  const buffer = queue.fetch();
  assert.ok(buffer);
  assert.equal(queue.fetch(), null, "the parked buffer is not fetchable");
  queue.reuse(buffer);
  await until(() => queue.stats().free === 1 && queue.stats().returning === 1, 3000, "reuse");
  stats = await within(queue.close(), 3000, "close");
  allFree(stats, pool);
});

// ── 9. aborted acquire() calls do not leak ───────────────────────────────────────────────────

Deno.test("9. 100,000 aborted acquire() calls on an empty pool leave the heap flat", async () => {
  const { growthMiB } = await child("heap", { limit: 30_000, v8Flags: ["--v8-flags=--expose-gc"] });
  assert.ok((growthMiB as number) < 20);
});

// ── 10. errors keep their identity across the Worker ─────────────────────────────────────────

Deno.test("10a. UsbError, QueueError and a thrown string reach onError as what was thrown", async () => {
  await using r = await robust();
  const { queue, reports, report } = r;
  await queue.start();
  const statuses = await within(
    Promise.all([
      queue.enqueueAndWait(put(queue, R.THROW, Thrown.USB)),
      queue.enqueueAndWait(put(queue, R.THROW, Thrown.QUEUE)),
      queue.enqueueAndWait(put(queue, R.THROW, Thrown.STRING)),
    ]),
    3000,
    "the items",
  );
  assert.deepEqual(statuses, [Status.IoTimeout, Status.InvalidParameter, Status.Unsuccessful]);
  await report(() => reports.filter((x) => x.phase === "work").length >= 3, 3000, "3 reports");
  const [usb, queueError, thrown] = reports.filter((x) => x.phase === "work").map((x) => x.error);
  const expected = new UsbError(-7, { operation: "transferOut(0x02)", transferred: 5 });
  assert.ok(usb instanceof UsbError, `a UsbError arrives as one: ${usb?.constructor?.name}`);
  assert.deepEqual(
    { code: usb.code, name: usb.name, status: usb.status, transferred: usb.transferred },
    { code: -7, name: "LIBUSB_ERROR_TIMEOUT", status: Status.IoTimeout, transferred: 5 },
  );
  assert.equal(usb.message, expected.message);
  assert.ok(queueError instanceof QueueError, `a QueueError arrives as one: ${queueError}`);
  assert.deepEqual(
    { code: queueError.code, status: queueError.status, message: queueError.message },
    { code: "StaleBuffer", status: Status.InvalidParameter, message: "thrown by the handler" },
  );
  assert.ok(thrown instanceof Error, `a thrown string arrives as an Error: ${thrown}`);
  assert.match(thrown.message, /a thrown string 1234/);
});

Deno.test("10b. pre throwing a UsbError: start() rejects with a UsbError", async () => {
  await using r = await robust({ pre: "usb" });
  const started = await outcome(r.queue.start(), 3000, "start");
  const error = started.error;
  assert.ok(error instanceof UsbError, `start rejects with a UsbError, not ${error}`);
  assert.deepEqual(
    { code: error.code, name: error.name, status: error.status },
    { code: -4, name: "LIBUSB_ERROR_NO_DEVICE", status: Status.DeviceNotConnected },
  );
  assert.match(error.message, /openDevice\(0403:6001\)/);
  assert.equal(r.queue.running, false);
});

// ── 11. permissions are checked ──────────────────────────────────────────────────────────────

Deno.test("11. malformed permissions: create rejects InvalidConfig", async () => {
  const malformed: unknown[] = [
    null,
    { read: "yes" },
    { bogus: true },
    42,
    "all",
    { ffi: [42] },
    { net: { host: "x" } },
  ];
  for (const permissions of malformed) {
    await rejectsInvalidConfig(
      {
        bufferQueue: { bufferCount: 1, bufferSize: 8 },
        handlers: minimalHandlers,
        permissions: permissions as ThreadedBufferQueueConfig["permissions"],
      },
      `permissions: ${JSON.stringify(permissions)}`,
    );
  }
});

// ── keep, item.size, item.signal, onIdle ─────────────────────────────────────────────────────

Deno.test("keep: the handler's item.size and bytes come back in the same held buffer", async () => {
  const pool = 2;
  const bufferSize = 64;
  await using r = await robust({ bufferQueue: { bufferCount: pool, bufferSize } });
  const { queue, probe } = r;
  await queue.start();
  const buffer = put(queue, R.REPLY, 40, bufferSize + 1);
  assert.equal(buffer.size, 12);
  const status = await within(queue.enqueueAndWait(buffer, { keep: true }), 3000, "the reply");
  assert.equal(status, Status.Success);
  assert.equal(probe.get(W.SIZE_REFUSED), 2, "item.size = -1 and bufferSize + 1 throw RangeError");
  assert.equal(probe.get(W.SIZE_VIEW_OK), 1, "item.data follows item.size");
  assert.equal(buffer.size, 40);
  assert.deepEqual(
    Array.from(buffer.data.subarray(0, 40)),
    Array.from({ length: 40 }, (_, i) => replyByte(i)),
  );
  assert.equal(probe.get(W.CLEANUP), 0, "no reuseCleanup ran");
  const stats = consistent(queue.stats(), pool);
  assert.deepEqual([stats.held, stats.free], [1, 1]);
  // The same handle goes round again.
  buffer.size = script(buffer.data, R.COMPLETE, 2);
  assert.equal(await within(queue.enqueueAndWait(buffer), 3000, "again"), Status.Success);
  throwsCode(() => queue.reuse(buffer), "StaleBuffer");
  // Flushed with keep: the buffer goes back to the pool as usual.
  await queue.stop();
  const flushed = put(queue, R.COMPLETE, 3);
  const waiting = queue.enqueueAndWait(flushed, { keep: true });
  queue.flush();
  assert.equal(await within(waiting, 3000, "the flushed waiter"), Status.Cancelled);
  throwsCode(() => queue.reuse(flushed), "StaleBuffer");
  await within(queue.onIdle(), 3000, "onIdle");
  assert.equal(consistent(queue.stats(), pool).free, pool);
});

Deno.test("item.signal aborts when the waiter's signal aborts, and when the queue stops", async () => {
  const pool = 2;
  await using r = await robust({ bufferQueue: { bufferCount: pool, bufferSize: 16 } });
  const { queue, probe } = r;
  await queue.start();
  const controller = new AbortController();
  const waiting = queue.enqueueAndWait(put(queue, R.WAIT_SIGNAL, 1), { signal: controller.signal });
  await probe.until(W.SIGNAL_WAITING, (n) => n === 1);
  assert.equal(probe.get(W.SIGNAL_SEEN), 0);
  controller.abort(new Error("the caller gave up"));
  await assert.rejects(waiting, /the caller gave up/);
  await probe.until(W.SIGNAL_SEEN, (v) => v !== 0, 3000);
  assert.equal(probe.get(W.SIGNAL_SEEN), Seen.ABORT_ERROR, "aborted with an AbortError");
  await within(queue.onIdle(), 3000, "onIdle");
  assert.equal(consistent(queue.stats(), pool).free, pool);
  // Stopping the queue aborts the running item's signal too.
  probe.set(W.SIGNAL_SEEN, 0);
  const running = queue.enqueueAndWait(put(queue, R.WAIT_SIGNAL, 2));
  await probe.until(W.SIGNAL_WAITING, (n) => n === 2);
  await within(queue.stop(), 3000, "stop");
  assert.notEqual(probe.get(W.SIGNAL_SEEN), Seen.TIMED_OUT);
  assert.notEqual(probe.get(W.SIGNAL_SEEN), 0, "item.signal aborted");
  assert.equal(await within(running, 1000, "the waiter"), Status.Cancelled);
});

Deno.test("onIdle waits for items to finish, resolves at once when idle, rejects on abort and on close", async () => {
  const pool = 4;
  await using r = await robust({ bufferQueue: { bufferCount: pool, bufferSize: 16 } });
  const { queue, probe } = r;
  assert.equal(await settled(queue.onIdle()), true, "an idle queue is idle at once");
  await queue.start();
  const held = queue.fetch()!;
  assert.equal(await settled(queue.onIdle()), true, "held buffers do not count");
  queue.enqueue(put(queue, R.GATE, 1));
  queue.enqueue(put(queue, R.GATE, 2));
  const idle = queue.onIdle();
  const producer = ThreadedBufferQueue.attach(queue.share());
  const producerIdle = producer.onIdle();
  await probe.until(W.IN_GATE, (n) => n === 1);
  assert.equal(await settled(idle), false);
  assert.equal(await settled(producerIdle), false);
  probe.set(W.GATE, 1);
  await within(idle, 3000, "onIdle");
  await within(producerIdle, 3000, "the producer's onIdle");
  const stats = consistent(queue.stats(), pool);
  assert.equal(probe.get(W.WORK), 2, "both items ran");
  assert.deepEqual(
    [stats.queued, stats.running, stats.pending, stats.returning, stats.held],
    [0, 0, 0, 0, 1],
  );
  // A pended item keeps the queue busy.
  const pended = queue.enqueueAndWait(put(queue, R.PEND, 3));
  const controller = new AbortController();
  const aborted = queue.onIdle({ signal: controller.signal });
  const closing = capture(queue.onIdle());
  controller.abort(new Error("no longer idle-waiting"));
  await assert.rejects(aborted, /no longer idle-waiting/);
  assert.equal(await settled(closing), false);
  allFree(await within(queue.close(), 3000, "close"), pool);
  const closed = await within(closing, 1000, "onIdle");
  assert.ok(isQueueError(closed.error, "Closed"), `onIdle rejects Closed: ${closed.error}`);
  assert.equal(await pended, Status.Cancelled);
  throwsCode(() => queue.reuse(held), "Closed");
});

// The handler module itself loads and has work (a broken fixture would fail every case above).
Deno.test("the robust handler module loads", async () => {
  await using r = await robust({ handlers: robustHandlers });
  await r.queue.start();
  assert.equal(await r.queue.enqueueAndWait(put(r.queue, R.COMPLETE)), Status.Success);
});
