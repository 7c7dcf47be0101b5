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
 * ```ts ignore
 * import { bulkWriterHandlers, libusbPath, ThreadedBufferQueue, usbWorkerPermissions } from "../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 16, bufferSize: 4096 },
 *   handlers: bulkWriterHandlers,
 *   handlerOptions: { vendorId: 0x0403, productId: 0x6001, endpoint: 0x02, libusbPath: libusbPath() },
 *   permissions: usbWorkerPermissions(),
 * });
 * ```
 */
export const bulkWriterHandlers: URL = new URL("./handlers/bulk_writer.ts", import.meta.url);

/**
 * Like {@linkcode bulkWriterHandlers}, but each transfer runs off the Worker's thread: `work`
 * returns `WorkPending` and the transfer's end completes the item (see
 * `ffi/handlers/bulk_writer_pipelined.ts`; `depth` bounds the items pending).
 *
 * @example
 * ```ts ignore
 * import { pipelinedBulkWriterHandlers } from "../mod.ts";
 * const handlers = pipelinedBulkWriterHandlers;
 * ```
 */
export const pipelinedBulkWriterHandlers: URL = new URL(
  "./handlers/bulk_writer_pipelined.ts",
  import.meta.url,
);
