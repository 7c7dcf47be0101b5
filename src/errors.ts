/**
 * The queue's typed error.
 *
 * @module
 */

import { Status, type StatusCode } from "./status.ts";

/**
 * Why a queue call failed. Each code says what went wrong; `status` is the NTSTATUS DMF would give.
 *
 * | code | when |
 * | --- | --- |
 * | `InvalidConfig` | `create` got counts or sizes that are not non-negative integers, or no way to get a buffer |
 * | `HandlerLoad` | the handler module failed to load, or exports no `work` |
 * | `ForeignBuffer` | the value is not a buffer fetched from this queue (or this handle) |
 * | `StaleBuffer` | the buffer's round is over (it was completed, flushed or reused) |
 * | `BufferState` | the buffer is in the wrong state for the call (e.g. already queued) |
 * | `InvalidDisposition` | `work` returned something other than a disposition (reported, item fails) |
 * | `AlreadyRunning` | `start` on a running queue |
 * | `Closed` | the queue is closed or closing |
 * | `WorkerFailed` | the worker thread died, or was terminated by a forced `close` |
 * | `LockTimeout` | a call could not get the pool's lock within a bounded time |
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { QueueError, type QueueErrorCode, Status } from "../mod.ts";
 * const code: QueueErrorCode = "StaleBuffer";
 * assert.equal(new QueueError(code, "its round is over").status, Status.InvalidParameter);
 * ```
 */
export type QueueErrorCode =
  | "InvalidConfig"
  | "HandlerLoad"
  | "ForeignBuffer"
  | "StaleBuffer"
  | "BufferState"
  | "InvalidDisposition"
  | "AlreadyRunning"
  | "Closed"
  | "WorkerFailed"
  | "LockTimeout";

const statusOfCode: Record<QueueErrorCode, StatusCode> = {
  InvalidConfig: Status.InvalidParameter,
  HandlerLoad: Status.Unsuccessful,
  ForeignBuffer: Status.InvalidParameter,
  StaleBuffer: Status.InvalidParameter,
  BufferState: Status.InvalidDeviceState,
  InvalidDisposition: Status.Unsuccessful,
  AlreadyRunning: Status.InvalidDeviceState,
  Closed: Status.InvalidDeviceState,
  WorkerFailed: Status.Unsuccessful,
  LockTimeout: Status.IoTimeout,
};

/**
 * The error every queue method throws for misuse or a broken queue. Misuse never changes any state.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { QueueError, Status, ThreadedBufferQueue } from "../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
 *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
 * });
 * const buffer = queue.fetch()!;
 * queue.enqueue(buffer);
 * assert.throws(() => queue.enqueue(buffer), QueueError); // already queued
 * assert.throws(() => queue.enqueue(buffer), { code: "BufferState", status: Status.InvalidDeviceState });
 * assert.equal(queue.count(), 1); // misuse changed nothing
 * ```
 */
export class QueueError extends Error {
  /** What went wrong. */
  readonly code: QueueErrorCode;
  /** The NTSTATUS for it (e.g. `InvalidDeviceState` for `AlreadyRunning`). */
  readonly status: StatusCode;

  /**
   * Makes an error with a code, a message that says what to do, and an optional cause.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { QueueError, Status } from "../mod.ts";
   * const error = new QueueError("Closed", "the queue is closed", { cause: "shutdown" });
   * assert.deepEqual([error.name, error.code, error.status], ["QueueError", "Closed", Status.InvalidDeviceState]);
   * assert.equal(error.cause, "shutdown");
   * ```
   */
  constructor(code: QueueErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "QueueError";
    this.code = code;
    this.status = statusOfCode[code];
  }
}
