import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { BufferDisposition, Status, statusOfError } from "../../src/status.ts";
import type { WorkContext, WorkHandlers, WorkItem } from "../../src/handlers.ts";
import { UsbError } from "../../ffi/errors.ts";
import { libusbPath } from "../../ffi/library.ts";
import bulkWriter, {
  type BulkWriterOptions,
  recordWritten,
} from "../../ffi/handlers/bulk_writer.ts";
import pipelinedWriter from "../../ffi/handlers/bulk_writer_pipelined.ts";
import { REOPEN_INTERVAL } from "../../ffi/handlers/device_session.ts";
import { bulkWriterHandlers, pipelinedBulkWriterHandlers } from "../../ffi/ready_made.ts";
import { usbWorkerPermissions } from "../../ffi/permissions.ts";
import massStorage from "../../storage/handlers.ts";
import { createReport, type MassStorageOptions, readReport } from "../../storage/options.ts";
import { ThreadedBufferQueue } from "../../src/threaded_buffer_queue.ts";

const OPTIONS: BulkWriterOptions = {
  vendorId: 0x46f4,
  productId: 0x0001,
  endpoint: 0x02,
  libusbPath: libusbPath(),
};

function context(): WorkContext<BulkWriterOptions> {
  return {
    options: OPTIONS,
    signal: new AbortController().signal,
    workCompleted: () => assert.fail("nothing may complete without a device"),
  };
}

const ITEM: WorkItem = {
  data: new Uint8Array(8),
  context: new Uint8Array(4),
  size: 8,
  index: 0,
  signal: new AbortController().signal,
};

const notConnected = (error: unknown): boolean =>
  error instanceof UsbError && error.name === "LIBUSB_ERROR_NOT_FOUND" &&
  statusOfError(error) === Status.DeviceNotConnected;

Deno.test("bulk writers: pre fails with DeviceNotConnected when the device is absent", async () => {
  for (const handlers of [bulkWriter, pipelinedWriter]) {
    const ctx = context();
    await assert.rejects(async () => await handlers.pre!(ctx), notConnected);
    assert.deepEqual(
      await handlers.work(ITEM, ctx),
      { disposition: BufferDisposition.WorkComplete, status: Status.DeviceNotConnected },
      "work without an open device completes its item with DeviceNotConnected",
    );
    await handlers.post!(ctx); // nothing to close; must not throw
  }
});

Deno.test("recordWritten stores a little-endian count when the context has room", () => {
  const context = new Uint8Array(6);
  recordWritten(context.subarray(1), 0x01020304);
  assert.deepEqual([...context], [0, 4, 3, 2, 1, 0]);
  const tiny = new Uint8Array(3);
  recordWritten(tiny, 7);
  assert.deepEqual([...tiny], [0, 0, 0]);
});

Deno.test("queue + bulk writer in a Worker granted only libusb: start() rejects, not found", async () => {
  const { ThreadedBufferQueue } = await import("../../mod.ts");
  const handlers = new URL("../../ffi/handlers/bulk_writer.ts", import.meta.url);
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 2, bufferSize: 64, contextSize: 4 },
    handlers,
    handlerOptions: OPTIONS,
    permissions: {
      ffi: [libusbPath()],
      read: [fileURLToPath(new URL("../../ffi/", import.meta.url))],
    },
  });
  await assert.rejects(queue.start(), (error: unknown) => {
    assert.equal(statusOfError(error), Status.DeviceNotConnected, String(error));
    assert.match(String((error as Error).message), /LIBUSB_ERROR_NOT_FOUND/);
    return true;
  });
});

// ── absent: "wait" (no such device here: every item waits) ──────────────────────────────────

const AWAY = { vendorId: 0xfffe, productId: 0x0001, endpoint: 0x02, libusbPath: libusbPath() };
const WAIT: BulkWriterOptions = { ...AWAY, absent: "wait" };

/** Still pending after `ms`? (The handler waits for the device, which is not here.) */
async function pendingAfter(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  promise.then(() => settled = true, () => settled = true);
  await new Promise((resolve) => setTimeout(resolve, ms));
  return !settled;
}

function waitingItem(): WorkItem & { abort(reason?: unknown): void } {
  const controller = new AbortController();
  const context = new Uint8Array(4).fill(0xee);
  return {
    data: new Uint8Array(8),
    context,
    size: 8,
    index: 0,
    signal: controller.signal,
    abort: (reason) => controller.abort(reason),
  };
}

const storageWait: MassStorageOptions = { ...AWAY, absent: "wait", report: createReport() };
const waitingHandlers: [string, WorkHandlers<never>, object][] = [
  ["bulk writer", bulkWriter, WAIT],
  ["pipelined bulk writer", pipelinedWriter, WAIT],
  ["mass storage handler", massStorage, storageWait],
];

for (const [name, handlers, options] of waitingHandlers) {
  Deno.test(`${name}, absent "wait": pre resolves, work waits, item.signal ends it Cancelled`, async () => {
    const loop = new AbortController();
    const ctx: WorkContext<never> = {
      options: options as never,
      signal: loop.signal,
      workCompleted: () => assert.fail("nothing may complete through workCompleted here"),
    };
    await handlers.pre!(ctx); // the device is away: no error
    const item = waitingItem();
    const work = Promise.resolve(handlers.work(item, ctx));
    assert.ok(await pendingAfter(work, 3 * REOPEN_INTERVAL), "the item waits for the device");
    const t0 = performance.now();
    item.abort(new Error("the waiter gave up"));
    assert.deepEqual(await work, {
      disposition: BufferDisposition.WorkComplete,
      status: Status.Cancelled,
    });
    assert.ok(performance.now() - t0 < 100, "the abort ends the wait at once");

    // The loop stopping (ctx.signal) ends a wait too.
    const second = Promise.resolve(handlers.work(waitingItem(), ctx));
    assert.ok(await pendingAfter(second, REOPEN_INTERVAL));
    loop.abort(new Error("stopping"));
    assert.deepEqual(await second, {
      disposition: BufferDisposition.WorkComplete,
      status: Status.Cancelled,
    });
    await handlers.post!(ctx);
  });
}

Deno.test('bulk writer, absent "wait": a cancelled item\'s context says 0 bytes written', async () => {
  const ctx: WorkContext<BulkWriterOptions> = {
    options: WAIT,
    signal: new AbortController().signal,
    workCompleted: () => assert.fail("no workCompleted"),
  };
  await bulkWriter.pre!(ctx);
  const item = waitingItem();
  const work = Promise.resolve(bulkWriter.work(item, ctx));
  item.abort();
  assert.equal((await work as { status: number }).status, Status.Cancelled);
  assert.deepEqual([...item.context], [0, 0, 0, 0]);
  await bulkWriter.post!(ctx);
});

Deno.test('mass storage handler, absent "wait": waiting items are counted, none as failed', () => {
  const report = readReport(storageWait.report!);
  assert.equal(report.waits, 2, "two items waited (see the test above)");
  assert.equal(report.failures, 0, "a cancelled wait is no failure");
  assert.equal(report.writes, 0);
});

for (
  const [writer, handlers] of [
    ["bulk writer", bulkWriterHandlers],
    ["pipelined bulk writer", pipelinedBulkWriterHandlers],
  ] as const
) {
  Deno.test(`${writer} queue, absent "wait": items stay queued in order, none fails; abort and close end waits`, async () => {
    const errors: Error[] = [];
    const queue = await ThreadedBufferQueue.create({
      bufferQueue: { bufferCount: 4, bufferSize: 64, contextSize: 4 },
      handlers,
      handlerOptions: WAIT,
      permissions: usbWorkerPermissions(),
      onError: (error) => errors.push(error),
    });
    try {
      await queue.start(); // the device is away: start() resolves anyway
      const line = async (n: number) => {
        const buffer = await queue.acquire();
        buffer.size = new TextEncoder().encodeInto(`line ${n}\n`, buffer.data).written;
        return buffer;
      };
      const giveUp = new AbortController();
      const first = queue.enqueueAndWait(await line(0), { signal: giveUp.signal });
      const rest = [1, 2, 3].map(async (n) => queue.enqueueAndWait(await line(n)));
      assert.ok(await pendingAfter(Promise.race([first, ...rest]), 3 * REOPEN_INTERVAL));
      let stats = queue.stats();
      assert.deepEqual(
        [stats.running + stats.pending, stats.queued, stats.failed, stats.completed],
        [1, 3, 0, 0],
        `one item waits, the others stay queued behind it: ${JSON.stringify(stats)}`,
      );

      // The first waiter gives up: its item ends Cancelled, the next one (in order) waits now.
      const reason = new Error("gave up on line 0");
      giveUp.abort(reason);
      await assert.rejects(first, (error) => error === reason);
      const deadline = performance.now() + 2000;
      while (queue.stats().cancelled === 0 && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      stats = queue.stats();
      assert.deepEqual(
        [stats.cancelled, stats.running + stats.pending, stats.queued, stats.failed],
        [1, 1, 2, 0],
        `the aborted item is cancelled, the next one waits: ${JSON.stringify(stats)}`,
      );

      // close() with an item waiting and two queued: prompt, every waiter gets Cancelled.
      const t0 = performance.now();
      const final = await queue.close();
      const closeMs = performance.now() - t0;
      assert.ok(closeMs < 2000, `close() took ${closeMs.toFixed(0)} ms`);
      assert.deepEqual(await Promise.all(rest), [
        Status.Cancelled,
        Status.Cancelled,
        Status.Cancelled,
      ]);
      assert.deepEqual(
        [final.free, final.failed, final.completed, final.cancelled],
        [4, 0, 0, 4],
      );
      assert.deepEqual(errors, [], "waiting is no handler error");
    } finally {
      await queue.close();
    }
  });
}

Deno.test('bulk writer queue, absent "wait": stop() ends the wait (Cancelled), start again works', async () => {
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 2, bufferSize: 64, contextSize: 4 },
    handlers: bulkWriterHandlers,
    handlerOptions: WAIT,
    permissions: usbWorkerPermissions(),
  });
  for (let round = 0; round < 2; round++) {
    await queue.start();
    const buffer = await queue.acquire();
    const waiting = queue.enqueueAndWait(buffer);
    assert.ok(await pendingAfter(waiting, REOPEN_INTERVAL));
    const t0 = performance.now();
    await queue.stop();
    assert.ok(performance.now() - t0 < 1000, "stop() does not wait for the device");
    assert.equal(await waiting, Status.Cancelled);
  }
});
