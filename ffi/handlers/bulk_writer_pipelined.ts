/**
 * A ready-made handler module that keeps several bulk OUT transfers in flight: `work` starts
 * `transferOutAsync` and returns `WorkPending`; the transfer's end completes the item through
 * `ctx.workCompleted` with `Status.Success` or the failure's status. At most `depth` (default 4)
 * are pending; `work` waits for one to end before starting another, which holds back the queue
 * loop rather than the owner. Transfers reach the device in queue order (the device runs one
 * endpoint's transfers one after another), so the gain is that the worker thread stays free while
 * libusb waits. `post` waits for the transfers in flight, then closes the device. Options and the
 * context's byte count are as in `bulk_writer.ts`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { libusbPath, QueueError, ThreadedBufferQueue, usbWorkerPermissions } from "../../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 16, bufferSize: 4096, contextSize: 4 },
 *   handlers: new URL("./bulk_writer_pipelined.ts", import.meta.url),
 *   handlerOptions: { vendorId: 0xfffe, productId: 1, depth: 8, libusbPath: libusbPath() },
 *   permissions: usbWorkerPermissions(),
 * });
 * // The default "fail-start": no such device here, so start() rejects and nothing runs.
 * await assert.rejects(queue.start(), (error) => !(error instanceof QueueError));
 * assert.equal(queue.running, false);
 * ```
 *
 * @module
 */

import { defineWorkHandlers, type WorkHandlers } from "../../src/handlers.ts";
import { BufferDisposition, Status, statusOfError } from "../../src/status.ts";
import {
  type BulkWriterOptions,
  movedBefore,
  recordWritten,
  transferOptions,
  writerSlot,
} from "./bulk_writer.ts";

/** Transfers in flight unless the options' `depth` says otherwise. */
const DEFAULT_DEPTH = 4;

const slot = writerSlot();
const inFlight = new Set<Promise<void>>();

/**
 * The handler module's callbacks (its default export), for a queue's `handlers`.
 *
 * @example
 * ```ts
 * import handlers from "./bulk_writer_pipelined.ts";
 * console.log(typeof handlers.work); // "function"
 * ```
 */
const handlers: WorkHandlers<BulkWriterOptions> = defineWorkHandlers<BulkWriterOptions>({
  pre(ctx) {
    slot.open(ctx.options);
  },
  async work(item, ctx) {
    const depth = Math.max(1, ctx.options.depth ?? DEFAULT_DEPTH);
    while (inFlight.size >= depth) await Promise.race(inFlight);
    let device;
    try {
      device = slot.get(ctx.options);
    } catch (error) {
      return { disposition: BufferDisposition.WorkComplete, status: statusOfError(error) };
    }
    const complete = (status: number) => {
      try {
        ctx.workCompleted(item, status);
      } catch {
        // Already completed by the queue (closed with the item pending): nothing left to do.
      }
    };
    // item.data stays valid (and referenced by the transfer) until workCompleted below.
    const { endpoint, timeout } = transferOptions(ctx.options);
    const transfer = device.transferOutAsync(endpoint, item.data, { timeout }).then(
      (written) => {
        recordWritten(item.context, written);
        complete(Status.Success);
      },
      (error) => {
        recordWritten(item.context, movedBefore(error));
        slot.failed(ctx.options, error);
        complete(statusOfError(error));
      },
    );
    const tracked: Promise<void> = transfer.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
    return BufferDisposition.WorkPending;
  },
  async post() {
    await Promise.allSettled([...inFlight]);
    slot.close();
  },
});

export default handlers;
