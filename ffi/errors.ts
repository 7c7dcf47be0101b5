/**
 * libusb error codes, their NTSTATUS equivalents, and {@linkcode UsbError}.
 *
 * @module
 */

import { registerErrorClass } from "../src/protocol.ts";
import { registerStatusNames, Status, type StatusCode } from "../src/status.ts";

/**
 * NTSTATUS values for libusb failures that `Status` has no name for (signed 32-bit, like `Status`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { statusName, UsbError, UsbStatus } from "../mod.ts";
 * assert.equal(UsbStatus.AccessDenied, 0xC0000022 | 0);
 * assert.equal(new UsbError(-3, { operation: "open" }).status, UsbStatus.AccessDenied); // LIBUSB_ERROR_ACCESS
 * assert.equal(statusName(UsbStatus.AccessDenied), "AccessDenied");
 * ```
 */
export const UsbStatus = {
  /** STATUS_ACCESS_DENIED (0xC0000022): LIBUSB_ERROR_ACCESS. */
  AccessDenied: 0xC0000022 | 0,
  /** STATUS_DATA_OVERRUN (0xC000003C): LIBUSB_ERROR_OVERFLOW (the device sent more than asked). */
  DataOverrun: 0xC000003C | 0,
  /** STATUS_NOT_SUPPORTED (0xC00000BB): LIBUSB_ERROR_NOT_SUPPORTED. */
  NotSupported: 0xC00000BB | 0,
  /** STATUS_PIPE_BROKEN (0xC000014B): LIBUSB_ERROR_PIPE (endpoint stalled / request refused). */
  PipeBroken: 0xC000014B | 0,
  /** STATUS_IO_DEVICE_ERROR (0xC0000185): LIBUSB_ERROR_IO. */
  IoDeviceError: 0xC0000185 | 0,
  /** STATUS_DEVICE_BUSY (0x80000011): LIBUSB_ERROR_BUSY (a warning-severity code, so not success). */
  DeviceBusy: 0x80000011 | 0,
} as const;

/**
 * One row of the libusb error table.
 *
 * @example
 * ```ts
 * import { LIBUSB_ERRORS, type LibusbErrorInfo } from "./errors.ts";
 * const row: LibusbErrorInfo | undefined = LIBUSB_ERRORS.find((e) => e.code === -7);
 * console.log(row?.name); // "LIBUSB_ERROR_TIMEOUT"
 * ```
 */
export interface LibusbErrorInfo {
  /** libusb's number (`enum libusb_error`), 0 or negative. */
  readonly code: number;
  /** libusb's name for it, e.g. `"LIBUSB_ERROR_TIMEOUT"`. */
  readonly name: string;
  /** The matching NTSTATUS. */
  readonly status: StatusCode;
  /** What it means and what to do about it. */
  readonly hint: string;
}

/**
 * Every `enum libusb_error` value (LIBUSB_SUCCESS 0 … LIBUSB_ERROR_OTHER -99), with its status and
 * advice.
 *
 * @example
 * ```ts
 * import { LIBUSB_ERRORS } from "./errors.ts";
 * for (const { code, name } of LIBUSB_ERRORS) console.log(code, name);
 * ```
 */
export const LIBUSB_ERRORS: readonly LibusbErrorInfo[] = [
  { code: 0, name: "LIBUSB_SUCCESS", status: Status.Success, hint: "success" },
  {
    code: -1,
    name: "LIBUSB_ERROR_IO",
    status: UsbStatus.IoDeviceError,
    hint: "input/output error; check the cable and the device, then retry",
  },
  {
    code: -2,
    name: "LIBUSB_ERROR_INVALID_PARAM",
    status: Status.InvalidParameter,
    hint: "invalid parameter (wrong endpoint direction, interface number, length or handle)",
  },
  {
    code: -3,
    name: "LIBUSB_ERROR_ACCESS",
    status: UsbStatus.AccessDenied,
    hint: "access denied; on Linux add a udev rule giving your user the device, e.g. " +
      '/etc/udev/rules.d/50-tbq.rules with SUBSYSTEM=="usb", ATTR{idVendor}=="xxxx", ' +
      'MODE="0660", TAG+="uaccess" (then `udevadm control --reload` and re-plug), or run as root',
  },
  {
    code: -4,
    name: "LIBUSB_ERROR_NO_DEVICE",
    status: Status.DeviceNotConnected,
    hint: "the device was disconnected; re-plug it and open it again",
  },
  {
    code: -5,
    name: "LIBUSB_ERROR_NOT_FOUND",
    status: Status.DeviceNotConnected,
    hint: "not found; check the vendor/product ids and serial number, and that it is plugged in " +
      "(`lsusb`), or that the interface/endpoint exists in the active configuration",
  },
  {
    code: -6,
    name: "LIBUSB_ERROR_BUSY",
    status: UsbStatus.DeviceBusy,
    hint: "busy; another process or kernel driver holds the interface (close other programs " +
      "using it; claimInterface already asks libusb to detach kernel drivers)",
  },
  {
    code: -7,
    name: "LIBUSB_ERROR_TIMEOUT",
    status: Status.IoTimeout,
    hint: "the operation timed out; the device did not answer in time (raise `timeout`, or check " +
      "that the device is reading/writing that endpoint)",
  },
  {
    code: -8,
    name: "LIBUSB_ERROR_OVERFLOW",
    status: UsbStatus.DataOverrun,
    hint: "overflow; the device sent more data than requested (ask for a multiple of the " +
      "endpoint's max packet size)",
  },
  {
    code: -9,
    name: "LIBUSB_ERROR_PIPE",
    status: UsbStatus.PipeBroken,
    hint: "pipe error; the endpoint stalled or the device refused the control request " +
      "(clearHalt(endpoint) resets a stalled endpoint)",
  },
  {
    code: -10,
    name: "LIBUSB_ERROR_INTERRUPTED",
    status: Status.Cancelled,
    hint: "the system call was interrupted; retry",
  },
  {
    code: -11,
    name: "LIBUSB_ERROR_NO_MEM",
    status: Status.InsufficientResources,
    hint: "out of memory (or the kernel refused a transfer this large; try smaller transfers)",
  },
  {
    code: -12,
    name: "LIBUSB_ERROR_NOT_SUPPORTED",
    status: UsbStatus.NotSupported,
    hint: "not supported on this platform or by this libusb build",
  },
  {
    code: -99,
    name: "LIBUSB_ERROR_OTHER",
    status: Status.Unsuccessful,
    hint: "other error; rerun with LIBUSB_DEBUG=4 in the environment to see libusb's log",
  },
];

const byCode: ReadonlyMap<number, LibusbErrorInfo> = new Map(
  LIBUSB_ERRORS.map((info) => [info.code, info]),
);

/**
 * Names of the libusb error codes, as in `libusb.h`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { LibusbError, UsbError } from "../mod.ts";
 * assert.equal(LibusbError.TIMEOUT, -7);
 * assert.equal(new UsbError(LibusbError.TIMEOUT, { operation: "transferIn(0x81)" }).name, "LIBUSB_ERROR_TIMEOUT");
 * ```
 */
export const LibusbError = {
  /** LIBUSB_SUCCESS. */
  SUCCESS: 0,
  /** LIBUSB_ERROR_IO. */
  IO: -1,
  /** LIBUSB_ERROR_INVALID_PARAM. */
  INVALID_PARAM: -2,
  /** LIBUSB_ERROR_ACCESS. */
  ACCESS: -3,
  /** LIBUSB_ERROR_NO_DEVICE. */
  NO_DEVICE: -4,
  /** LIBUSB_ERROR_NOT_FOUND. */
  NOT_FOUND: -5,
  /** LIBUSB_ERROR_BUSY. */
  BUSY: -6,
  /** LIBUSB_ERROR_TIMEOUT. */
  TIMEOUT: -7,
  /** LIBUSB_ERROR_OVERFLOW. */
  OVERFLOW: -8,
  /** LIBUSB_ERROR_PIPE. */
  PIPE: -9,
  /** LIBUSB_ERROR_INTERRUPTED. */
  INTERRUPTED: -10,
  /** LIBUSB_ERROR_NO_MEM. */
  NO_MEM: -11,
  /** LIBUSB_ERROR_NOT_SUPPORTED. */
  NOT_SUPPORTED: -12,
  /** LIBUSB_ERROR_OTHER. */
  OTHER: -99,
} as const;

/**
 * Looks up a libusb error code. Unknown codes (a newer libusb) come back as
 * `LIBUSB_ERROR_UNKNOWN(<code>)` with status `Unsuccessful`.
 *
 * @example
 * ```ts
 * import { libusbError } from "./errors.ts";
 * libusbError(-4).name; // "LIBUSB_ERROR_NO_DEVICE"
 * ```
 */
export function libusbError(code: number): LibusbErrorInfo {
  const known = byCode.get(code);
  if (known) return known;
  for (const lookup of nameLookups) {
    const name = lookup(code);
    if (name) {
      return { code, name, status: Status.Unsuccessful, hint: "see libusb's documentation" };
    }
  }
  return {
    code,
    name: `LIBUSB_ERROR_UNKNOWN(${code})`,
    status: Status.Unsuccessful,
    hint: "unknown libusb error code",
  };
}

const nameLookups = new Set<(code: number) => string | undefined>();

/**
 * Lets {@linkcode libusbError} ask a loaded libusb (`libusb_error_name`) for codes newer than
 * this table; returns the function that takes the lookup back. `Libusb.open` does this for each
 * open context.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { libusbError, useLibusbErrorNames } from "./errors.ts";
 * const stop = useLibusbErrorNames((code) => code === -42 ? "LIBUSB_ERROR_NEWER" : undefined);
 * assert.equal(libusbError(-42).name, "LIBUSB_ERROR_NEWER");
 * stop();
 * assert.equal(libusbError(-42).name, "LIBUSB_ERROR_UNKNOWN(-42)");
 * ```
 */
export function useLibusbErrorNames(lookup: (code: number) => string | undefined): () => void {
  const guarded = (code: number) => {
    try {
      return lookup(code);
    } catch {
      return undefined; // a failing lookup must never turn one error into another
    }
  };
  nameLookups.add(guarded);
  return () => nameLookups.delete(guarded);
}

/**
 * Extra facts for a {@linkcode UsbError}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { UsbError, type UsbErrorOptions } from "../mod.ts";
 * const options: UsbErrorOptions = { operation: "transferOut(0x02)", transferred: 10 };
 * const error = new UsbError(-7, options);
 * assert.equal(error.transferred, 10);
 * assert.match(error.message, /transferOut\(0x02\)/);
 * ```
 */
export interface UsbErrorOptions {
  /** What was being done, e.g. `"claimInterface(0)"`; starts the message. */
  readonly operation?: string;
  /** More detail, appended to the message. */
  readonly detail?: string;
  /** For a failed transfer: bytes moved before it failed (libusb reports them on a timeout). */
  readonly transferred?: number;
  /** For a failed IN transfer: the bytes that did arrive. */
  readonly data?: Uint8Array;
  /** The underlying error, if any. */
  readonly cause?: unknown;
}

/**
 * A libusb failure: `code` is libusb's number, `name` its name (`"LIBUSB_ERROR_TIMEOUT"`), `status`
 * the matching NTSTATUS, and the message says what to do. A work handler that throws one completes
 * its item with `status`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Status, UsbError } from "../mod.ts";
 * try {
 *   throw new UsbError(-7, { operation: "transferIn(0x81)" });
 * } catch (error) {
 *   assert.ok(error instanceof UsbError);
 *   assert.deepEqual([error.code, error.name, error.status], [-7, "LIBUSB_ERROR_TIMEOUT", Status.IoTimeout]);
 * }
 * ```
 */
export class UsbError extends Error {
  /** libusb's error number (negative). */
  readonly code: number;
  /** The matching NTSTATUS (signed 32-bit). */
  readonly status: StatusCode;
  /** Bytes moved before a transfer failed, when known. */
  readonly transferred?: number;
  /** The bytes an IN transfer did receive before it failed, when any. */
  readonly data?: Uint8Array;

  /**
   * Makes the error for a libusb code.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { UsbError, UsbStatus } from "../mod.ts";
   * const error = new UsbError(-3, { operation: "openDevice(46f4:0001)" });
   * assert.equal(error.name, "LIBUSB_ERROR_ACCESS");
   * assert.equal(error.status, UsbStatus.AccessDenied);
   * ```
   */
  constructor(code: number, options: UsbErrorOptions = {}) {
    const info = libusbError(code);
    const parts = [
      options.operation ? `${options.operation} failed: ${info.name}` : info.name,
      `: ${info.hint}`,
      options.detail ? ` (${options.detail})` : "",
      options.transferred !== undefined ? ` [${options.transferred} bytes transferred]` : "",
    ];
    super(parts.join(""), options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = info.status;
    Object.defineProperty(this, "name", {
      value: info.name,
      writable: true,
      enumerable: false,
      configurable: true,
    });
    if (options.transferred !== undefined) this.transferred = options.transferred;
    if (options.data !== undefined) this.data = options.data;
  }
}

/**
 * Passes a libusb result through when it is not an error (>= 0), as a number; throws a
 * {@linkcode UsbError} when it is negative. Accepts the bigint that `isize` results come as.
 *
 * @example
 * ```ts
 * import { unwrap } from "./errors.ts";
 * const count: number = unwrap(3n); // 3
 * try {
 *   unwrap(-5, "openDevice");
 * } catch (error) {
 *   console.log((error as Error).name); // "LIBUSB_ERROR_NOT_FOUND"
 * }
 * ```
 */
export function unwrap(
  code: number | bigint,
  operation?: string | UsbErrorOptions,
): number {
  const value = Number(code);
  if (value < 0) {
    throw new UsbError(value, typeof operation === "string" ? { operation } : operation);
  }
  return value;
}

// A UsbError thrown in a queue handler reaches the owner as a UsbError, fields intact.
registerErrorClass("UsbError", UsbError);
registerStatusNames(UsbStatus);
