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
 * import { BufferDisposition, defineWorkHandlers } from "../mod.ts";
 * export default defineWorkHandlers({
 *   work(item) {
 *     console.log(item.size, item.data.length === item.size, item.context.byteLength);
 *     // Hand a reply back to an `enqueueAndWait(buffer, { keep: true })` caller:
 *     item.data.set([0x06]);
 *     item.size = 1;
 *     return BufferDisposition.WorkComplete;
 *   },
 * });
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
 * import { BufferDisposition, Status, type WorkResult } from "../mod.ts";
 * const result: WorkResult = { disposition: BufferDisposition.WorkComplete, status: Status.IoTimeout };
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
 * import { defineWorkHandlers, Status, BufferDisposition } from "../mod.ts";
 * export default defineWorkHandlers<{ delayMs: number }>({
 *   work(item, ctx) {
 *     setTimeout(() => ctx.workCompleted(item, Status.Success), ctx.options.delayMs);
 *     return BufferDisposition.WorkPending;
 *   },
 * });
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
 * import { BufferDisposition, type WorkHandlers } from "../mod.ts";
 * const handlers: WorkHandlers = { work: () => BufferDisposition.WorkComplete };
 * console.log(typeof handlers.work); // "function"; the handler module exports it as default
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
 * import { BufferDisposition, defineWorkHandlers, Status } from "../mod.ts";
 *
 * export default defineWorkHandlers({
 *   work(item) {
 *     return item.size > 0
 *       ? BufferDisposition.WorkComplete
 *       : { disposition: BufferDisposition.WorkComplete, status: Status.InvalidParameter };
 *   },
 * });
 * ```
 */
export function defineWorkHandlers<Options = unknown>(
  handlers: WorkHandlers<Options>,
): WorkHandlers<Options> {
  return handlers;
}
