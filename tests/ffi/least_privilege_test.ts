import assert from "node:assert/strict";
import {
  bulkWriterHandlers,
  libusbPath,
  pipelinedBulkWriterHandlers,
  Status,
  ThreadedBufferQueue,
  UsbError,
  usbWorkerPermissions,
  type WorkerPermissions,
} from "../../mod.ts";
import { allowed } from "../capabilities.ts";

Deno.test("usbWorkerPermissions grants libusb's absolute path and nothing else", () => {
  const permissions = usbWorkerPermissions();
  assert.deepEqual(permissions, {
    ffi: [libusbPath()],
    read: [],
    net: false,
    env: false,
    write: false,
    run: false,
    sys: false,
    import: false,
  });
  assert.ok(libusbPath().startsWith("/"));
});

Deno.test("a queue worker started with usbWorkerPermissions calls libusb and is denied the rest", async () => {
  assert.deepEqual(
    await allowed(usbWorkerPermissions(), { libusbPath: libusbPath() }),
    ["read own module", "libusb"],
  );
});

for (
  const [writer, handlers] of [["bulk_writer", bulkWriterHandlers], [
    "bulk_writer_pipelined",
    pipelinedBulkWriterHandlers,
  ]] as const
) {
  Deno.test(`${writer}, no device, fail-items: waiters get DeviceNotConnected, no buffer lost`, async () => {
    const errors: Error[] = [];
    await using queue = await ThreadedBufferQueue.create({
      bufferQueue: { bufferCount: 3, bufferSize: 64, contextSize: 4 },
      handlers,
      handlerOptions: {
        vendorId: 0x0403,
        productId: 0x6001,
        endpoint: 0x02,
        absent: "fail-items",
        libusbPath: libusbPath(),
      },
      permissions: usbWorkerPermissions(),
      onError: (error) => errors.push(error),
    });
    await queue.start();
    const waits = [];
    for (let i = 0; i < 10; i++) {
      const buffer = await queue.acquire();
      buffer.size = new TextEncoder().encodeInto(`line ${i}\n`, buffer.data).written;
      waits.push(queue.enqueueAndWait(buffer));
    }
    assert.deepEqual(await Promise.all(waits), Array(10).fill(Status.DeviceNotConnected));
    const stats = queue.stats();
    assert.deepEqual(
      [stats.free, stats.queued, stats.running, stats.pending, stats.held, stats.failed],
      [3, 0, 0, 0, 0, 10],
    );
    assert.deepEqual(errors, [], "an absent device is a status, not a handler error");
  });
}

Deno.test("the default grant still refuses what streaming needs; only the opt-in allows it", async () => {
  assert.deepEqual(usbWorkerPermissions({ ffi: "scoped" }), usbWorkerPermissions());
  assert.deepEqual(
    usbWorkerPermissions({ ffi: "unscoped" }),
    Object.assign({}, usbWorkerPermissions(), { ffi: true }),
  );
  assert.throws(
    () => usbWorkerPermissions({ ffi: "all" as "unscoped" }),
    (error: unknown) => error instanceof UsbError && error.name === "LIBUSB_ERROR_INVALID_PARAM",
  );
  // A Worker with exactly these permissions tries to make a libusb completion callback.
  const probe = "data:application/javascript," + encodeURIComponent(`
    self.onmessage = () => {
      try {
        new Deno.UnsafeCallback({ parameters: ["usize"], result: "void" }, () => {}).close();
        self.postMessage("allowed");
      } catch (error) {
        self.postMessage(error.name);
      }
    };`);
  const outcome = async (permissions: WorkerPermissions) => {
    const worker = new Worker(probe, { type: "module", deno: { permissions } } as WorkerOptions);
    try {
      const { promise, resolve } = Promise.withResolvers<string>();
      worker.onmessage = (event) => resolve(event.data);
      worker.postMessage(null);
      return await promise;
    } finally {
      worker.terminate();
    }
  };
  assert.equal(await outcome(usbWorkerPermissions()), "NotCapable");
  assert.equal(await outcome(usbWorkerPermissions({ ffi: "unscoped" })), "allowed");
});
