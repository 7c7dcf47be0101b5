/**
 * NTSTATUS values and the work disposition, as DMF uses them.
 *
 * @module
 */

/**
 * What a work handler did with its item (DMF's `ThreadedBufferQueue_BufferDisposition`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BufferDisposition } from "../mod.ts";
 * assert.equal(BufferDisposition.WorkComplete, 1);
 * assert.equal(BufferDisposition.WorkPending, 2);
 * assert.equal(BufferDisposition[0], "Invalid");
 * ```
 */
export enum BufferDisposition {
  /** Not a valid answer; a handler that returns it fails its item. */
  Invalid = 0,
  /** The work is done: the buffer returns to the pool and the next item runs. */
  WorkComplete = 1,
  /** The handler keeps the item and completes it later with `workCompleted`. */
  WorkPending = 2,
}

/**
 * NTSTATUS codes as signed 32-bit numbers (what `status | 0` gives for the unsigned literal).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Status } from "../mod.ts";
 * assert.equal(Status.IoTimeout, 0xC00000B5 | 0);
 * assert.equal(Status.Cancelled, -1073741536); // signed 32-bit
 * ```
 */
export const Status = {
  /** STATUS_SUCCESS (0x00000000). */
  Success: 0,
  /** STATUS_UNSUCCESSFUL (0xC0000001). */
  Unsuccessful: 0xC0000001 | 0,
  /** STATUS_INVALID_PARAMETER (0xC000000D). */
  InvalidParameter: 0xC000000D | 0,
  /** STATUS_INSUFFICIENT_RESOURCES (0xC000009A). */
  InsufficientResources: 0xC000009A | 0,
  /** STATUS_DEVICE_NOT_CONNECTED (0xC000009D). */
  DeviceNotConnected: 0xC000009D | 0,
  /** STATUS_IO_TIMEOUT (0xC00000B5). */
  IoTimeout: 0xC00000B5 | 0,
  /** STATUS_CANCELLED (0xC0000120). */
  Cancelled: 0xC0000120 | 0,
  /** STATUS_INVALID_DEVICE_STATE (0xC0000184). */
  InvalidDeviceState: 0xC0000184 | 0,
} as const;

/**
 * Any NTSTATUS value, signed 32-bit. The named ones are in {@linkcode Status}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Status, type StatusCode, statusName } from "../mod.ts";
 * const code: StatusCode = 0xC0000120 | 0; // any NTSTATUS, as a signed number
 * assert.equal(code, Status.Cancelled);
 * assert.equal(statusName(code), "Cancelled");
 * ```
 */
export type StatusCode = number;

/**
 * True for success and informational codes (`status >= 0` as a signed 32-bit number).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isSuccess, Status } from "../mod.ts";
 * assert.equal(isSuccess(Status.Success), true);
 * assert.equal(isSuccess(0x40000000), true); // informational
 * assert.equal(isSuccess(0xC0000001), false); // unsigned literals are read as signed
 * ```
 */
export function isSuccess(status: StatusCode): boolean {
  return (status | 0) >= 0;
}

const namesByCode = new Map<number, string>();

/**
 * Gives names to a table of statuses (like {@linkcode Status}), for {@linkcode statusName}. The
 * USB layer registers its statuses and mass storage its own, where each is defined; a code keeps
 * the first name it was given.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { registerStatusNames, statusName } from "../mod.ts";
 * registerStatusNames({ MyDeviceJammed: 0xE0000001 | 0 });
 * assert.equal(statusName(0xE0000001), "MyDeviceJammed");
 * ```
 */
export function registerStatusNames(table: Readonly<Record<string, number>>): void {
  for (const [name, code] of Object.entries(table)) {
    if (!namesByCode.has(code | 0)) namesByCode.set(code | 0, name);
  }
}

registerStatusNames(Status);

/**
 * The name of a status: `"IoTimeout"` for a named code (the queue's, the USB layer's, mass
 * storage's, or one given to {@linkcode registerStatusNames}), else `"0xC0000999"`-style hex.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Status, statusName, UsbStatus } from "../mod.ts";
 * assert.equal(statusName(Status.IoTimeout), "IoTimeout");
 * assert.equal(statusName(0xC00000B5), "IoTimeout"); // unsigned literals too
 * assert.equal(statusName(UsbStatus.AccessDenied), "AccessDenied");
 * assert.equal(statusName(0x40000000), "0x40000000");
 * ```
 */
export function statusName(status: StatusCode): string {
  const code = status | 0;
  return namesByCode.get(code) ??
    `0x${(code >>> 0).toString(16).toUpperCase().padStart(8, "0")}`;
}

/**
 * Reads a status out of anything a handler threw: its numeric `status` property, else
 * `Status.Unsuccessful`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Status, statusOfError } from "../mod.ts";
 * const timeout = Object.assign(new Error("t/o"), { status: Status.IoTimeout });
 * assert.equal(statusOfError(timeout), Status.IoTimeout);
 * assert.equal(statusOfError(new Error("plain")), Status.Unsuccessful);
 * assert.equal(statusOfError("not even an Error"), Status.Unsuccessful);
 * ```
 */
export function statusOfError(error: unknown): StatusCode {
  const status = (error as { status?: unknown } | null)?.status;
  return typeof status === "number" && Number.isInteger(status) ? status | 0 : Status.Unsuccessful;
}
