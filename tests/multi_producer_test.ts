/**
 * Concurrency: several producer Workers plus the main thread share one small pool through
 * `share()` / `attach()`; and `close()` while producers in Workers are blocked.
 */
import assert from "node:assert/strict";
import { ProducerWorker, statsOf, total, until, within } from "./helpers.ts";
import { isSuccess, Status, ThreadedBufferQueue } from "../mod.ts";
import { H } from "../src/layout.ts";
import { L, type Plan, runProducer, statusFor } from "./fixtures/stress_common.ts";

const handlers = new URL("./fixtures/stress_handlers.ts", import.meta.url);

const POOL = 4;

Deno.test("multi-producer: 4 Workers + main thread through a 4-buffer pool lose, duplicate and reorder nothing", async () => {
  const PER_PRODUCER = 1000;
  const plans: Plan[] = ["fifo", "fifo", "fifo", "mixed"]; // producers 1..4 in Workers
  const producers = plans.length + 1;
  const log = new SharedArrayBuffer((L.BODY + 2 * producers * PER_PRODUCER + 16) * 4);
  const words = new Int32Array(log);
  const reported: string[] = [];
  const queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: POOL, bufferSize: 64, contextSize: 8 },
    handlers,
    handlerOptions: { log, mode: "record" },
    onError: (error, phase) => reported.push(`${phase}: ${error.message}`),
  });
  const workers: ProducerWorker<"stress">[] = [];
  try {
    await queue.start();
    const share = queue.share();
    plans.forEach((plan, i) =>
      workers.push(
        new ProducerWorker(share, "stress", { producer: i + 1, plan, count: PER_PRODUCER }),
      )
    );
    const reports = await within(
      Promise.all([
        runProducer(queue, 0, "mixed", PER_PRODUCER),
        ...workers.map((worker) => worker.report(20_000)),
      ]),
      20_000,
      "the producers",
    );
    for (const report of reports) {
      assert.deepEqual(report.errors, [], `producer ${report.producer}`);
    }

    // Every buffer comes back (nothing is pended): acquiring the whole pool proves the queue drained.
    const drained = [];
    for (let i = 0; i < POOL; i++) {
      drained.push(await queue.acquire({ signal: AbortSignal.timeout(10_000) }));
    }

    // What the handler saw, in order.
    const seen = Atomics.load(words, L.LENGTH);
    const order = new Map<number, number[]>();
    const times = new Map<string, number>();
    for (let i = 0; i < seen; i++) {
      const producer = words[L.BODY + 2 * i];
      const seq = words[L.BODY + 2 * i + 1];
      if (!order.has(producer)) order.set(producer, []);
      order.get(producer)!.push(seq);
      const key = `${producer}:${seq}`;
      times.set(key, (times.get(key) ?? 0) + 1);
    }
    let expectedCompleted = 0;
    let expectedFailed = 0;
    let enqueuedTotal = 0;
    let reusedTotal = 0;
    for (const report of reports) {
      const { producer } = report;
      enqueuedTotal += report.enqueued.length;
      reusedTotal += report.reused.length;
      assert.ok(report.enqueued.length > 0 && report.reused.length > 0, "the plan mixes ops");
      // Nothing lost, nothing duplicated, nothing reused ran.
      for (const seq of report.enqueued) {
        assert.equal(times.get(`${producer}:${seq}`), 1, `item ${producer}:${seq} ran once`);
        if (isSuccess(statusFor(producer, seq))) expectedCompleted++;
        else expectedFailed++;
      }
      for (const seq of report.reused) {
        assert.equal(times.get(`${producer}:${seq}`), undefined, `reused ${producer}:${seq} ran`);
      }
      // Tail-enqueued items of one producer run in the order they were enqueued.
      const atHead = new Set(report.atHead);
      const tail = report.enqueued.filter((seq) => !atHead.has(seq));
      const ranTail = (order.get(producer) ?? []).filter((seq) => !atHead.has(seq));
      assert.deepEqual(ranTail, tail, `producer ${producer} (${report.plan}) FIFO order`);
      if (report.plan === "fifo") assert.deepEqual(order.get(producer), report.enqueued);
      // Each waiter got the status of its own item.
      const waited = report.waits.length;
      assert.ok(waited > 0, "some enqueueAndWait");
      for (const [seq, status] of report.waits) {
        assert.equal(status, statusFor(producer, seq), `status of ${producer}:${seq}'s waiter`);
      }
      assert.equal(
        new Set(report.waits.map(([seq]) => seq)).size,
        waited,
        "each waiter settled once",
      );
    }
    assert.equal(seen, enqueuedTotal, "the handler saw exactly the enqueued items");
    assert.ok(
      reports.reduce((n, r) => n + r.fetchMisses, 0) > 0,
      "producers contended (some fetch returned null and acquire waited)",
    );
    assert.equal(Atomics.load(words, L.CORRUPT), 0, "payloads arrived intact");
    assert.equal(Atomics.load(words, L.OVERLAP), 0, "items ran one at a time");
    assert.equal(
      Atomics.load(words, L.CLEANUP_FINISHED),
      enqueuedTotal + reusedTotal,
      "reuseCleanup ran once per buffer return",
    );

    const stats = queue.stats();
    assert.deepEqual(
      stats,
      statsOf({ held: POOL, completed: expectedCompleted, failed: expectedFailed }),
    );
    for (const buffer of drained) queue.reuse(buffer);
    assert.deepEqual(reported, []);
  } finally {
    workers.forEach((worker) => worker.terminate());
    const final = await queue.close();
    assert.equal(total(final), POOL);
    assert.equal(final.free, POOL);
  }
});

/**
 * Pool of 4, handler pends forever (or the loop never starts, so items stay queued): Workers 1
 * and 2 each hold 2 items in `enqueueAndWait` and then block in `acquire`; Worker 3 and the main
 * thread block in `acquire`. `close()` must settle every one of them.
 */
async function closeWhileBlocked(startLoop: boolean): Promise<void> {
  const log = new SharedArrayBuffer((L.BODY + 64) * 4);
  const words = new Int32Array(log);
  const queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: POOL, bufferSize: 32, contextSize: 8 },
    handlers,
    handlerOptions: { log, mode: "pendForever" },
  });
  const shared = new Int32Array(queue.share().buffer);
  const plan = [
    { producer: 1, waits: 2, acquires: 1 },
    { producer: 2, waits: 2, acquires: 1 },
    { producer: 3, waits: 0, acquires: 2 },
  ];
  const workers: ProducerWorker<"close">[] = [];
  let mainAcquire: Promise<string> | undefined;
  try {
    if (startLoop) await queue.start();
    const share = queue.share();
    for (const options of plan) {
      const worker = new ProducerWorker(share, "close", options);
      workers.push(worker);
      assert.equal((await worker.next()).phase, "enqueued");
    }
    for (const worker of workers) {
      worker.command("acquire");
      assert.equal((await worker.next()).phase, "acquiring");
    }
    mainAcquire = queue.acquire().then(
      (buffer) => `buffer:${buffer.index}`,
      (error) => `rejected:${error?.code ?? error?.name}`,
    );
    const where = startLoop ? "pending" : "queued";
    await until(
      () => queue.stats()[where] === POOL && Atomics.load(shared, H.FREE_SLEEPERS) === 5,
      10_000,
      `4 items ${where} and 5 acquires asleep (${JSON.stringify(queue.stats())}, ` +
        `sleepers ${Atomics.load(shared, H.FREE_SLEEPERS)})`,
    );
    assert.equal(Atomics.load(words, L.LENGTH), startLoop ? POOL : 0);

    const final = await within(queue.close(), 10_000, "close");
    const outcomes = await Promise.all(workers.map((worker) => worker.next(10_000)));
    for (const [i, message] of outcomes.entries()) {
      assert.equal(message.phase, "done");
      assert.deepEqual(message.report, {
        waits: Array(plan[i].waits).fill(`status:${Status.Cancelled}`),
        acquires: Array(plan[i].acquires).fill("rejected:Closed"),
      }, `worker ${plan[i].producer}`);
    }
    assert.equal(await within(mainAcquire, 5_000, "main acquire"), "rejected:Closed");
    assert.deepEqual(final, statsOf({ free: POOL, cancelled: POOL }));
    assert.equal(Atomics.load(words, L.CLEANUP_FINISHED), POOL, "reuseCleanup per buffer");
    assert.equal(Atomics.load(shared, H.FREE_SLEEPERS), 0, "no acquire still asleep");
  } finally {
    workers.forEach((worker) => worker.terminate());
    await queue.close();
  }
}

Deno.test("close: producers in Workers blocked in acquire and enqueueAndWait (items pended) all settle", async () => {
  await closeWhileBlocked(true);
});

Deno.test("close: producers in Workers blocked in acquire and enqueueAndWait (loop never started) all settle", async () => {
  await closeWhileBlocked(false);
});
