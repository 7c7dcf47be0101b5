import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { BufferDisposition, Status, statusOfError } from "../../src/status.ts";
import type { WorkContext, WorkItem } from "../../src/handlers.ts";
import { UsbError } from "../../ffi/errors.ts";
import { libusbPath } from "../../ffi/library.ts";
import bulkWriter, {
  type BulkWriterOptions,
  recordWritten,
} from "../../ffi/handlers/bulk_writer.ts";
import pipelinedWriter from "../../ffi/handlers/bulk_writer_pipelined.ts";

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
