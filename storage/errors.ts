/**
 * The failures of the mass storage layer: {@linkcode StorageStatus} (the NTSTATUS values it adds)
 * and {@linkcode BotError} (a transport-level failure).
 *
 * @module
 */

import { registerStatusNames, Status, type StatusCode } from "../src/status.ts";
import { UsbStatus } from "../ffi/errors.ts";

/**
 * NTSTATUS values for storage failures that `Status` has no name for (signed 32-bit), chosen as
 * Windows' disk class driver reports the same conditions.
 *
 * @example
 * ```ts
 * import { StorageStatus } from "./errors.ts";
 * console.log(StorageStatus.MediaWriteProtected === (0xC00000A2 | 0)); // true
 * ```
 */
export const StorageStatus = {
  /** STATUS_INVALID_DEVICE_REQUEST (0xC0000010): ILLEGAL REQUEST. */
  InvalidDeviceRequest: 0xC0000010 | 0,
  /** STATUS_NO_MEDIA_IN_DEVICE (0xC0000013): NOT READY, medium not present (ASC 0x3A). */
  NoMediaInDevice: 0xC0000013 | 0,
  /** STATUS_NONEXISTENT_SECTOR (0xC0000015): ILLEGAL REQUEST, LBA out of range (ASC 0x21). */
  NonexistentSector: 0xC0000015 | 0,
  /** STATUS_DATA_ERROR (0xC000003E): the device moved fewer bytes than the command needs. */
  DataError: 0xC000003E | 0,
  /** STATUS_DEVICE_DATA_ERROR (0xC000009C): MEDIUM ERROR. */
  DeviceDataError: 0xC000009C | 0,
  /** STATUS_MEDIA_WRITE_PROTECTED (0xC00000A2): DATA PROTECT. */
  MediaWriteProtected: 0xC00000A2 | 0,
  /** STATUS_DEVICE_NOT_READY (0xC00000A3): NOT READY. */
  DeviceNotReady: 0xC00000A3 | 0,
  /** STATUS_IO_DEVICE_ERROR (0xC0000185): HARDWARE ERROR, ABORTED COMMAND, NO SENSE. */
  IoDeviceError: UsbStatus.IoDeviceError,
  /** STATUS_DEVICE_PROTOCOL_ERROR (0xC0000186): invalid CSW or phase error (after recovery). */
  DeviceProtocolError: 0xC0000186 | 0,
  /** STATUS_VERIFY_REQUIRED (0x80000016): UNIT ATTENTION (a warning, so not success). */
  VerifyRequired: 0x80000016 | 0,
} as const;

/**
 * Why a {@linkcode BotError} was thrown.
 *
 * @example
 * ```ts
 * import type { BotErrorReason } from "./errors.ts";
 * const reason: BotErrorReason = "phase-error";
 * ```
 */
export type BotErrorReason =
  | "invalid-argument"
  | "invalid-csw"
  | "phase-error"
  | "short-transfer";

/**
 * A transport-level failure: bad arguments, an invalid or mismatched CSW, a phase error, or a
 * data phase that moved fewer bytes than the command needs. `status` is its NTSTATUS.
 *
 * @example
 * ```ts
 * import { BotError, StorageStatus } from "./errors.ts";
 * const error = new BotError("short-transfer", "READ (10) returned 0 of 512 bytes");
 * console.log(error.status === StorageStatus.DataError); // true
 * ```
 */
export class BotError extends Error {
  /** What went wrong. */
  readonly reason: BotErrorReason;
  /** The NTSTATUS (signed 32-bit). */
  readonly status: StatusCode;

  /** Makes one; `status` defaults by reason. */
  constructor(reason: BotErrorReason, message: string, status?: StatusCode) {
    super(message);
    this.name = "BotError";
    this.reason = reason;
    this.status = status ?? botErrorStatus(reason);
  }
}

function botErrorStatus(reason: BotErrorReason): StatusCode {
  switch (reason) {
    case "invalid-argument":
      return Status.InvalidParameter;
    case "short-transfer":
      return StorageStatus.DataError;
    default:
      return StorageStatus.DeviceProtocolError;
  }
}

/** Two hex digits (for messages). */
export function hex2(value: number): string {
  return value.toString(16).padStart(2, "0");
}

/** `value` if it is a u32, else a {@linkcode BotError} `invalid-argument` naming `what`. */
export function u32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new BotError("invalid-argument", `${what} must be an integer in 0..2^32-1, got ${value}`);
  }
  return value;
}

registerStatusNames(StorageStatus);
