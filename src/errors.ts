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
 * import { QueueError } from "../mod.ts";
 * try {
 *   throw new QueueError("BufferState", "buffer is already queued");
 * } catch (error) {
 *   if (error instanceof QueueError && error.code === "BufferState") console.log(error.status);
 * }
 * ```
 */
export class QueueError extends Error {
  /** What went wrong. */
  readonly code: QueueErrorCode;
  /** The NTSTATUS for it (e.g. `InvalidDeviceState` for `AlreadyRunning`). */
  readonly status: StatusCode;

  /** Makes an error with a code, a message that says what to do, and an optional cause. */
  constructor(code: QueueErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "QueueError";
    this.code = code;
    this.status = statusOfCode[code];
  }
}
