/**
 * A ready-made handler module: each queue item's bytes go to a bulk OUT endpoint, one transfer at a
 * time. `pre` opens the device and claims the interface, `post` releases and closes it.
 *
 * Each item completes with `Status.Success` or the failure's status (`UsbError.status`, e.g.
 * `IoTimeout`, `DeviceNotConnected`). When the item's context has at least 4 bytes, its first 4
 * receive the number of bytes written (little-endian u32), also on failure (bytes sent before a
 * timeout).
 *
 * With `absent: "wait"` an item that finds the device away (or whose transfer an unplug cuts)
 * waits until it is back, then sends the bytes not sent yet; its count is the total over the
 * attempts. `work` then returns a promise, so the loop starts no later item meanwhile: order is
 * kept. The wait ends only through `item.signal` (status `Cancelled`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { libusbPath, Status, ThreadedBufferQueue, usbWorkerPermissions } from "../../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 16, bufferSize: 4096, contextSize: 4 },
 *   handlers: new URL("./bulk_writer.ts", import.meta.url),
 *   // "fail-items": with no such device here, start() resolves and each item fails instead.
 *   handlerOptions: { vendorId: 0xfffe, productId: 1, absent: "fail-items", libusbPath: libusbPath() },
 *   permissions: usbWorkerPermissions(),
 * });
 * await queue.start();
 * const line = queue.fetch()!;
 * line.size = new TextEncoder().encodeInto("hello\n", line.data).written;
 * assert.equal(await queue.enqueueAndWait(line), Status.DeviceNotConnected);
 * ```
 *
 * @module
 */

import {
  defineWorkHandlers,
  type WorkContext,
  type WorkHandlers,
  type WorkItem,
  type WorkResult,
} from "../../src/handlers.ts";
import { BufferDisposition, Status, statusOfError } from "../../src/status.ts";
import type { UsbDevice } from "../device.ts";
import { UsbError } from "../errors.ts";
import { type DeviceSessionOptions, DeviceSlot } from "./device_session.ts";

/** The bulk OUT endpoint the bulk writers use unless their options name another. */
export const DEFAULT_BULK_OUT_ENDPOINT = 0x01;
/** Milliseconds per bulk writer transfer unless the options say otherwise. */
export const DEFAULT_WRITE_TIMEOUT = 1000;

/**
 * The `handlerOptions` of the bulk writer handler modules: which device (see
 * `DeviceSessionOptions`, shared by every ready-made USB handler), and how to write.
 *
 * @example
 * ```ts
 * import type { BulkWriterOptions } from "./bulk_writer.ts";
 * const options: BulkWriterOptions = {
 *   vendorId: 0x46f4, productId: 0x0001, endpoint: 0x02, timeout: 500,
 *   libusbPath: "/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0",
 * };
 * ```
 */
export interface BulkWriterOptions extends DeviceSessionOptions {
  /** The bulk OUT endpoint address. Default {@linkcode DEFAULT_BULK_OUT_ENDPOINT}. */
  readonly endpoint?: number;
  /** Milliseconds per transfer. Default {@linkcode DEFAULT_WRITE_TIMEOUT}. */
  readonly timeout?: number;
  /** Pipelined writer only: transfers kept in flight. Default 4. */
  readonly depth?: number;
}

/**
 * The device slot of a bulk writer: the claimed device itself, nothing set up on it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { writerSlot } from "./bulk_writer.ts";
 * const slot = writerSlot(); // opened by the handler's pre (or first item), closed by post
 * slot.close(); // nothing open yet: closing is a no-op
 * assert.equal(typeof slot.get, "function");
 * ```
 */
export function writerSlot(): DeviceSlot<BulkWriterOptions, UsbDevice> {
  return new DeviceSlot<BulkWriterOptions, UsbDevice>((device) => device);
}

/**
 * The endpoint and timeout of a bulk writer's transfers: the options', else the defaults.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DEFAULT_BULK_OUT_ENDPOINT, transferOptions } from "./bulk_writer.ts";
 * assert.equal(transferOptions({ vendorId: 1, productId: 2 }).endpoint, DEFAULT_BULK_OUT_ENDPOINT);
 * assert.equal(transferOptions({ vendorId: 1, productId: 2, timeout: 50 }).timeout, 50);
 * ```
 */
export function transferOptions(options: BulkWriterOptions): { endpoint: number; timeout: number } {
  return {
    endpoint: options.endpoint ?? DEFAULT_BULK_OUT_ENDPOINT,
    timeout: options.timeout ?? DEFAULT_WRITE_TIMEOUT,
  };
}

/**
 * Stores a byte count in the first 4 bytes of an item's context (little-endian), if it has room.
 *
 * @example
 * ```ts
 * import { recordWritten } from "./bulk_writer.ts";
 * const context = new Uint8Array(8);
 * recordWritten(context, 300);
 * console.log(context[0], context[1]); // 44 1
 * ```
 */
export function recordWritten(context: Uint8Array, written: number): void {
  if (context.byteLength >= 4) {
    new DataView(context.buffer, context.byteOffset, 4).setUint32(0, written, true);
  }
}

/**
 * The bytes a failed transfer still moved (a `UsbError`'s `transferred`), else 0.
 *
 * @example
 * ```ts
 * import { movedBefore } from "./bulk_writer.ts";
 * console.log(movedBefore(new Error("x"))); // 0
 * ```
 */
export function movedBefore(error: unknown): number {
  return error instanceof UsbError ? error.transferred ?? 0 : 0;
}

/**
 * The signal that ends an item's wait for its device: the item's own (its waiter gave up, or the
 * queue stops or closes) or the loop's.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { waitSignal } from "./bulk_writer.ts";
 * const loop = new AbortController();
 * const signal = waitSignal({ signal: new AbortController().signal }, { signal: loop.signal });
 * loop.abort();
 * assert.equal(signal.aborted, true);
 * ```
 */
export function waitSignal(
  item: Pick<WorkItem, "signal">,
  ctx: Pick<WorkContext, "signal">,
): AbortSignal {
  return AbortSignal.any([item.signal, ctx.signal]);
}

/**
 * A complete item's result with `status`.
 *
 * @example
 * ```ts
 * import { BufferDisposition, Status } from "../../src/status.ts";
 * import { completed } from "./bulk_writer.ts";
 * console.log(completed(Status.Cancelled).disposition === BufferDisposition.WorkComplete); // true
 * ```
 */
export function completed(status: number): { disposition: BufferDisposition; status: number } {
  return { disposition: BufferDisposition.WorkComplete, status };
}

const slot = writerSlot();

/** `absent: "wait"`: the fast path stays synchronous; only an absent device makes it wait. */
function writeOrWait(
  item: WorkItem,
  ctx: WorkContext<BulkWriterOptions>,
): WorkResult | Promise<WorkResult> {
  if (!slot.opened) return writeWhenBack(item, ctx, 0);
  const { endpoint, timeout } = transferOptions(ctx.options);
  try {
    const written = slot.get(ctx.options).transferOut(endpoint, item.data, {
      timeout,
      signal: item.signal,
    });
    recordWritten(item.context, written);
    return completed(Status.Success);
  } catch (error) {
    const sent = movedBefore(error);
    if (slot.failed(ctx.options, error)) return writeWhenBack(item, ctx, sent);
    recordWritten(item.context, sent);
    return completed(statusOfError(error));
  }
}

/** Waits for the device, then sends what is left of the item (from byte `sent` on). */
async function writeWhenBack(
  item: WorkItem,
  ctx: WorkContext<BulkWriterOptions>,
  sent: number,
): Promise<WorkResult> {
  const { endpoint, timeout } = transferOptions(ctx.options);
  const signal = waitSignal(item, ctx);
  for (;;) {
    if (item.data.length > 0 && sent >= item.data.length) break; // all of it went out after all
    let device: UsbDevice;
    try {
      device = await slot.whenOpen(ctx.options, signal);
    } catch (error) {
      recordWritten(item.context, sent);
      return completed(signal.aborted ? Status.Cancelled : statusOfError(error));
    }
    try {
      sent += device.transferOut(endpoint, item.data.subarray(sent), {
        timeout,
        signal: item.signal,
      });
      break;
    } catch (error) {
      sent += movedBefore(error);
      if (!slot.failed(ctx.options, error)) {
        recordWritten(item.context, sent);
        return completed(statusOfError(error));
      }
    }
  }
  recordWritten(item.context, sent);
  return completed(Status.Success);
}

/**
 * The handler module's callbacks (its default export), for a queue's `handlers`.
 *
 * @example
 * ```ts
 * import handlers from "./bulk_writer.ts";
 * console.log(typeof handlers.work); // "function"
 * ```
 */
const handlers: WorkHandlers<BulkWriterOptions> = defineWorkHandlers<BulkWriterOptions>({
  pre(ctx) {
    slot.open(ctx.options);
  },
  work(item, ctx) {
    if (ctx.options.absent === "wait") return writeOrWait(item, ctx);
    try {
      const { endpoint, timeout } = transferOptions(ctx.options);
      const written = slot.get(ctx.options).transferOut(endpoint, item.data, {
        timeout,
        signal: item.signal,
      });
      recordWritten(item.context, written); // a short write is not an error: the count says it
      return { disposition: BufferDisposition.WorkComplete, status: Status.Success };
    } catch (error) {
      recordWritten(item.context, movedBefore(error));
      slot.failed(ctx.options, error);
      return { disposition: BufferDisposition.WorkComplete, status: statusOfError(error) };
    }
  },
  post() {
    slot.close();
  },
});

export default handlers;
