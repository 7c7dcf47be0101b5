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
 * With `absent: "wait"`, a transfer cut by an unplug (or one queued behind it) does not complete
 * its item: the device is let go at once, so no later transfer can overtake it, and once it is
 * back every such item sends the bytes it had not sent, in queue order, before `work` starts any
 * later item (it waits meanwhile, holding back the loop). A waiting item whose `item.signal`
 * aborts completes with `Cancelled`; stopping or closing the queue cancels them all.
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

import {
  defineWorkHandlers,
  type WorkContext,
  type WorkHandlers,
  type WorkItem,
  type WorkResult,
} from "../../src/handlers.ts";
import { BufferDisposition, Status, statusOfError } from "../../src/status.ts";
import type { UsbDevice } from "../device.ts";
import {
  type BulkWriterOptions,
  completed,
  movedBefore,
  recordWritten,
  transferOptions,
  waitSignal,
  writerSlot,
} from "./bulk_writer.ts";

/** Transfers in flight unless the options' `depth` says otherwise. */
const DEFAULT_DEPTH = 4;

const slot = writerSlot();
const inFlight = new Set<Promise<void>>();

/** A pended item and the bytes of it that reached the device so far. */
interface Pended {
  readonly item: WorkItem;
  readonly ctx: WorkContext<BulkWriterOptions>;
  /** Queue order: stalled items are resent by it, whatever order their failures came in. */
  readonly seq: number;
  sent: number;
  /** Unhooks the abort listener of an item waiting in `stalled`. */
  unhook?: () => void;
}

/** `absent: "wait"`: items whose transfer the device's absence cut. */
const stalled: Pended[] = [];
let sequence = 0;
/** `absent: "wait"`: set while the device is away: waits for it, then resends `stalled`. */
let recovery: Promise<unknown> | undefined;

function complete(entry: Pended, status: number): void {
  recordWritten(entry.item.context, entry.sent);
  try {
    entry.ctx.workCompleted(entry.item, status);
  } catch {
    // Already completed by the queue (closed with the item pending): nothing left to do.
  }
}

/** Starts the transfer of what is left of an item; its end completes (or stalls) the item. */
function send(entry: Pended, device: UsbDevice): void {
  const { item, ctx } = entry;
  // item.data stays valid (and referenced by the transfer) until the item completes.
  const { endpoint, timeout } = transferOptions(ctx.options);
  const transfer = device.transferOutAsync(endpoint, item.data.subarray(entry.sent), {
    timeout,
    signal: item.signal, // a waiter that gives up ends its transfer (status Cancelled)
  })
    .then(
      (written) => {
        entry.sent += written;
        complete(entry, Status.Success);
      },
      (error) => {
        entry.sent += movedBefore(error);
        // While recovering, every failure is the absence (or the device closed under it).
        const waits = ctx.options.absent === "wait";
        const away = waits && recovery !== undefined ? true : slot.failed(ctx.options, error);
        if (!away || !waits) {
          complete(entry, statusOfError(error));
        } else if (item.data.length > 0 && entry.sent >= item.data.length) {
          complete(entry, Status.Success); // every byte went out before the cut
        } else {
          stall(entry);
          recovery ??= recover(ctx);
        }
      },
    );
  const tracked: Promise<void> = transfer.finally(() => inFlight.delete(tracked));
  inFlight.add(tracked);
}

/** Parks an item until the device is back; its `item.signal` cancels it meanwhile. */
function stall(entry: Pended): void {
  const signal = entry.item.signal;
  const cancel = () => {
    const at = stalled.indexOf(entry);
    if (at >= 0) stalled.splice(at, 1);
    complete(entry, Status.Cancelled);
  };
  if (signal.aborted) return cancel();
  signal.addEventListener("abort", cancel, { once: true });
  entry.unhook = () => signal.removeEventListener("abort", cancel);
  stalled.push(entry);
}

/**
 * The device went away: once every cut transfer has reported what it moved, waits until the
 * device is back (or the loop stops), then resends the stalled items in order. Resolves with the
 * error that ended the wait without a device (the stalled items fail with it), else undefined.
 */
async function recover(ctx: WorkContext<BulkWriterOptions>): Promise<unknown> {
  try {
    while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    let device: UsbDevice;
    try {
      device = await slot.whenOpen(ctx.options, ctx.signal);
    } catch (error) {
      const status = ctx.signal.aborted ? Status.Cancelled : statusOfError(error);
      for (const entry of stalled.splice(0)) {
        entry.unhook?.();
        complete(entry, status);
      }
      return error;
    }
    for (const entry of stalled.splice(0).sort((a, b) => a.seq - b.seq)) {
      entry.unhook?.();
      send(entry, device);
    }
    return undefined;
  } finally {
    recovery = undefined;
  }
}

/** `absent: "wait"`: the device to send a new item to, once it is there and nothing is stalled. */
async function deviceFor(
  item: WorkItem,
  ctx: WorkContext<BulkWriterOptions>,
): Promise<UsbDevice> {
  const signal = waitSignal(item, ctx);
  for (;;) {
    signal.throwIfAborted();
    if (recovery) {
      const error = await abortable(recovery, signal);
      if (error !== undefined && !slot.opened) throw error;
      continue;
    }
    if (slot.opened) return slot.get(ctx.options);
    return await slot.whenOpen(ctx.options, signal);
  }
}

/** `promise`, or a rejection with `signal.reason` if that aborts first. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

async function workWaiting(
  item: WorkItem,
  ctx: WorkContext<BulkWriterOptions>,
): Promise<WorkResult> {
  let device: UsbDevice;
  try {
    // A failure that came in while this awaited may have let the device go: look again.
    do device = await deviceFor(item, ctx); while (recovery || !slot.opened);
  } catch (error) {
    const cancelled = item.signal.aborted || ctx.signal.aborted;
    return completed(cancelled ? Status.Cancelled : statusOfError(error));
  }
  send({ item, ctx, seq: sequence++, sent: 0 }, device);
  return BufferDisposition.WorkPending;
}

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
    if (ctx.options.absent === "wait") return await workWaiting(item, ctx);
    let device;
    try {
      device = slot.get(ctx.options);
    } catch (error) {
      return completed(statusOfError(error));
    }
    send({ item, ctx, seq: sequence++, sent: 0 }, device);
    return BufferDisposition.WorkPending;
  },
  async post() {
    // ctx.signal is aborted by now: a recovery in progress cancels its stalled items and ends.
    while (inFlight.size > 0 || recovery) await Promise.allSettled([...inFlight, recovery]);
    slot.close();
  },
});

export default handlers;
