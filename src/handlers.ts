/**
 * The handler module API: what a module passed as `handlers` exports, and what its callbacks
 * receive. These run on the queue's worker thread.
 *
 * @module
 */

import type { BufferDisposition, StatusCode } from "./status.ts";

/**
 * One unit of work, as the `work` handler sees it. The item is valid until it is completed: when
 * `work` returns `WorkComplete`, or when `workCompleted` is called for a pended item.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BufferDisposition, defineWorkHandlers, type WorkItem } from "../mod.ts";
 * const handlers = defineWorkHandlers({
 *   work(item) {
 *     // Hand a reply back to an `enqueueAndWait(buffer, { keep: true })` caller:
 *     item.data[0] = 0x06;
 *     item.size = 1;
 *     return BufferDisposition.WorkComplete;
 *   },
 * });
 * // The handler module exports it: export default handlers;
 * // A handler is a plain function, testable without a queue:
 * const data = new Uint8Array(8);
 * const item: WorkItem = { data, context: new Uint8Array(0), size: 8, index: 0, signal: new AbortController().signal };
 * handlers.work(item, { options: undefined, signal: item.signal, workCompleted() {} });
 * assert.deepEqual([item.size, data[0]], [1, 0x06]);
 * ```
 */
export interface WorkItem {
  /** The first `size` bytes of the buffer (a view on shared memory, not a copy). */
  readonly data: Uint8Array;
  /** The buffer's context bytes (`contextSize` long; may be empty). */
  readonly context: Uint8Array;
  /**
   * How many bytes of the buffer the producer filled. Settable from 0 to `bufferSize` while the
   * item runs or pends (a RangeError otherwise); `data` then views that many bytes. With `keep`,
   * the waiter gets the buffer back with this size.
   */
  size: number;
  /**
   * The most bytes `size` can be: the queue's `bufferSize`, so a handler that reads a reply into
   * the buffer knows its room (set `size` to it, read, set `size` to what arrived). Always present
   * on the queue's items; a hand-made item (a test's) may leave it out, meaning `data.length`.
   */
  readonly capacity?: number;
  /** The buffer's slot number in the pool (stable across rounds; handy as a map key). */
  readonly index: number;
  /**
   * Aborts when this item's waiter gives up (the signal given to `enqueueAndWait` aborts) or the
   * queue stops or closes: pass it to transfers so that abandoned work ends early.
   */
  readonly signal: AbortSignal;
}

/**
 * What `work` may return: a disposition, or a disposition with a status (default `Success`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BufferDisposition, Status, statusName, type WorkResult } from "../mod.ts";
 * const timedOut: WorkResult = { disposition: BufferDisposition.WorkComplete, status: Status.IoTimeout };
 * const done: WorkResult = BufferDisposition.WorkComplete; // status Success
 * assert.equal(typeof timedOut === "object" && statusName(timedOut.status!), "IoTimeout");
 * assert.equal(done, 1);
 * ```
 */
export type WorkResult =
  | BufferDisposition
  | { readonly disposition: BufferDisposition; readonly status?: StatusCode };

/**
 * What every handler callback receives besides the item.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BufferDisposition, defineWorkHandlers, Status, type WorkContext } from "../mod.ts";
 * const handlers = defineWorkHandlers<{ delayMs: number }>({
 *   work(item, ctx) {
 *     setTimeout(() => ctx.workCompleted(item, Status.Success), ctx.options.delayMs);
 *     return BufferDisposition.WorkPending;
 *   },
 * });
 * // The handler module exports it: export default handlers;
 * // What the loop passes, faked to test the handler alone:
 * const done = Promise.withResolvers<number | undefined>();
 * const ctx: WorkContext<{ delayMs: number }> = {
 *   options: { delayMs: 1 }, signal: new AbortController().signal,
 *   workCompleted: (_item, status) => done.resolve(status),
 * };
 * const item = { data: new Uint8Array(0), context: new Uint8Array(0), size: 0, index: 0, signal: ctx.signal };
 * assert.equal(handlers.work(item, ctx), BufferDisposition.WorkPending);
 * assert.equal(await done.promise, Status.Success);
 * ```
 */
export interface WorkContext<Options = unknown> {
  /** The queue's `handlerOptions`, structured-cloned into the worker. */
  readonly options: Options;
  /** Aborts when a stop is requested or the queue closes; each start gives a fresh one. */
  readonly signal: AbortSignal;
  /**
   * Completes an item for which `work` returned `WorkPending`; its waiter resolves with
   * `status`. Once the item's status is final (completed, or inside `reuseCleanup`) it throws
   * `QueueError` `BufferState` and changes nothing.
   */
  workCompleted(item: WorkItem, status?: StatusCode): void;
}

/**
 * The callbacks of a handler module (DMF's `EvtThreadedBufferQueuePre/Work/Post/ReuseCleanup`).
 * Export it as the module's default export, through {@linkcode defineWorkHandlers}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BufferDisposition, type WorkHandlers } from "../mod.ts";
 * const opened: string[] = [];
 * const handlers: WorkHandlers<{ device: string }> = {
 *   pre: (ctx) => void opened.push(ctx.options.device), // once per start()
 *   work: () => BufferDisposition.WorkComplete,
 *   post: () => void opened.pop(), // once per stop()
 * };
 * // The handler module exports it: export default handlers;
 * const ctx = { options: { device: "ftdi" }, signal: new AbortController().signal, workCompleted() {} };
 * await handlers.pre?.(ctx);
 * assert.deepEqual(opened, ["ftdi"]);
 * ```
 */
export interface WorkHandlers<Options = unknown> {
  /** Once per `start()`, before the loop: open and claim the device here. */
  pre?(ctx: WorkContext<Options>): void | Promise<void>;
  /** Mandatory: does the work of one item. Items run one at a time, in queue order. */
  work(item: WorkItem, ctx: WorkContext<Options>): WorkResult | Promise<WorkResult>;
  /** Once per `stop()` (and at close if running), after the loop: release and close here. */
  post?(ctx: WorkContext<Options>): void | Promise<void>;
  /** Once each time a buffer returns to the pool, before it can be fetched again. */
  reuseCleanup?(item: WorkItem, ctx: WorkContext<Options>): void | Promise<void>;
}

/**
 * Types a handler module's callbacks; export the result as the module's default export.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BufferDisposition, defineWorkHandlers, Status } from "../mod.ts";
 *
 * const handlers = defineWorkHandlers({
 *   work(item) {
 *     return item.size > 0
 *       ? BufferDisposition.WorkComplete
 *       : { disposition: BufferDisposition.WorkComplete, status: Status.InvalidParameter };
 *   },
 * });
 * // The handler module exports it (export default handlers) for `handlers: new URL(…)`.
 * const empty = { data: new Uint8Array(0), context: new Uint8Array(0), size: 0, index: 0, signal: AbortSignal.abort() };
 * const ctx = { options: undefined, signal: empty.signal, workCompleted() {} };
 * assert.deepEqual(handlers.work(empty, ctx), { disposition: BufferDisposition.WorkComplete, status: Status.InvalidParameter });
 * ```
 */
export function defineWorkHandlers<Options = unknown>(
  handlers: WorkHandlers<Options>,
): WorkHandlers<Options> {
  return handlers;
}
