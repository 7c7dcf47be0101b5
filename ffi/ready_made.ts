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

/**
 * Writes each item's bytes to an OUT endpoint as a request, then reads the device's answer from
 * an IN endpoint into the item's own buffer and sets its `size` (see
 * `ffi/handlers/request_response.ts`; options: `RequestResponseOptions`): made for
 * `enqueueAndWait(buffer, { keep: true })`, which hands the buffer back with the answer in it.
 * Answers end at a short packet, a terminator byte or a length; `packetHeader` strips the status
 * bytes an FTDI chip puts in front of every packet.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { libusbPath, Status, ThreadedBufferQueue, usbWorkerPermissions } from "../mod.ts";
 * import { requestResponseHandlers } from "./ready_made.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 4, bufferSize: 256 },
 *   handlers: requestResponseHandlers,
 *   handlerOptions: {
 *     vendorId: 0xfffe, productId: 0x0001, outEndpoint: 0x02, inEndpoint: 0x81,
 *     answerEnd: { terminator: 0x0a }, libusbPath: libusbPath(), absent: "fail-items",
 *   },
 *   permissions: usbWorkerPermissions(),
 * });
 * await queue.start(); // no such device: with "fail-items", start() resolves and items fail
 * const request = await queue.acquire();
 * request.size = new TextEncoder().encodeInto("MEAS?\n", request.data).written;
 * assert.equal(await queue.enqueueAndWait(request, { keep: true }), Status.DeviceNotConnected);
 * // With a device: Success, and request.data.subarray(0, request.size) holds its answer.
 * queue.reuse(request); // kept: the buffer is ours until we enqueue or reuse it
 * ```
 */
export const requestResponseHandlers: URL = new URL(
  "./handlers/request_response.ts",
  import.meta.url,
);
