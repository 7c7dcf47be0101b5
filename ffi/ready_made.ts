/**
 * The ready-made handler modules, by URL, for a queue's `handlers`: no worker module of your own.
 *
 * @module
 */

/**
 * Writes each item's bytes to a bulk OUT endpoint, one transfer at a time (see
 * `ffi/handlers/bulk_writer.ts`; options: `BulkWriterOptions`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bulkWriterHandlers, libusbPath, Status, ThreadedBufferQueue, usbWorkerPermissions } from "../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 16, bufferSize: 4096 },
 *   handlers: bulkWriterHandlers,
 *   handlerOptions: { vendorId: 0xfffe, productId: 0x0001, endpoint: 0x02, libusbPath: libusbPath(), absent: "fail-items" },
 *   permissions: usbWorkerPermissions(),
 * });
 * await queue.start(); // no such device: with "fail-items", start() resolves and items fail
 * const line = await queue.acquire();
 * line.size = new TextEncoder().encodeInto("hello\n", line.data).written;
 * assert.equal(await queue.enqueueAndWait(line), Status.DeviceNotConnected);
 * ```
 */
export const bulkWriterHandlers: URL = new URL("./handlers/bulk_writer.ts", import.meta.url);

/**
 * Like {@linkcode bulkWriterHandlers}, but each transfer runs off the Worker's thread: `work`
 * returns `WorkPending` and the transfer's end completes the item (see
 * `ffi/handlers/bulk_writer_pipelined.ts`; `depth` bounds the items pending).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { libusbPath, pipelinedBulkWriterHandlers, ThreadedBufferQueue, usbWorkerPermissions } from "../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 16, bufferSize: 4096 },
 *   handlers: pipelinedBulkWriterHandlers,
 *   handlerOptions: { vendorId: 0xfffe, productId: 0x0001, endpoint: 0x02, depth: 8, libusbPath: libusbPath() },
 *   permissions: usbWorkerPermissions(),
 * });
 * // pre opens and claims the device: without it, start() rejects and the loop does not run.
 * await assert.rejects(queue.start(), { name: "LIBUSB_ERROR_NOT_FOUND" });
 * assert.equal(queue.running, false);
 * ```
 */
export const pipelinedBulkWriterHandlers: URL = new URL(
  "./handlers/bulk_writer_pipelined.ts",
  import.meta.url,
);
