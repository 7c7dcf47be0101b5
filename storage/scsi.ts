/**
 * The few SCSI commands a block writer needs: their CDBs, the replies' decoders, sense data and its
 * NTSTATUS ({@linkcode senseStatus}), and {@linkcode ScsiError} (a command that ended in CHECK
 * CONDITION).
 *
 * @module
 */

import { Status, type StatusCode } from "../src/status.ts";
import { BotError, hex2, StorageStatus, u32 } from "./errors.ts";

/** The SCSI operation codes this module builds. */
export const ScsiOp = {
  /** TEST UNIT READY (6). */
  TestUnitReady: 0x00,
  /** REQUEST SENSE (6). */
  RequestSense: 0x03,
  /** READ CAPACITY (10). */
  ReadCapacity10: 0x25,
  /** READ (10). */
  Read10: 0x28,
  /** WRITE (10). */
  Write10: 0x2a,
} as const;

/**
 * SCSI sense keys (SPC).
 *
 * @example
 * ```ts
 * import { SenseKey } from "./scsi.ts";
 * console.log(SenseKey.IllegalRequest); // 5
 * ```
 */
export const SenseKey = {
  /** NO SENSE. */
  NoSense: 0x0,
  /** RECOVERED ERROR: the command succeeded after recovery. */
  RecoveredError: 0x1,
  /** NOT READY. */
  NotReady: 0x2,
  /** MEDIUM ERROR. */
  MediumError: 0x3,
  /** HARDWARE ERROR. */
  HardwareError: 0x4,
  /** ILLEGAL REQUEST. */
  IllegalRequest: 0x5,
  /** UNIT ATTENTION (reset, power on, medium changed). */
  UnitAttention: 0x6,
  /** DATA PROTECT (write protected). */
  DataProtect: 0x7,
  /** ABORTED COMMAND. */
  AbortedCommand: 0xb,
} as const;

/**
 * Decoded sense data (fixed or descriptor format).
 *
 * @example
 * ```ts
 * import type { SenseData } from "./scsi.ts";
 * const sense: SenseData = { responseCode: 0x70, senseKey: 0x6, asc: 0x29, ascq: 0 };
 * ```
 */
export interface SenseData {
  /** Response code (0x70/0x71 fixed, 0x72/0x73 descriptor). */
  readonly responseCode: number;
  /** The sense key (see {@linkcode SenseKey}). */
  readonly senseKey: number;
  /** Additional sense code. */
  readonly asc: number;
  /** Additional sense code qualifier. */
  readonly ascq: number;
}

/**
 * A command that ended in CHECK CONDITION, with the sense data REQUEST SENSE returned.
 *
 * @example
 * ```ts
 * import { ScsiError } from "./scsi.ts";
 * const error = new ScsiError(0x28, { responseCode: 0x70, senseKey: 5, asc: 0x21, ascq: 0 });
 * console.log(error.status === (0xC0000015 | 0)); // true: NonexistentSector
 * ```
 */
export class ScsiError extends Error {
  /** The failed command's operation code. */
  readonly opcode: number;
  /** The sense key. */
  readonly senseKey: number;
  /** Additional sense code. */
  readonly asc: number;
  /** Additional sense code qualifier. */
  readonly ascq: number;
  /** The NTSTATUS of the condition ({@linkcode senseStatus}). */
  readonly status: StatusCode;

  /** Makes one from the command's opcode and its sense data. */
  constructor(opcode: number, sense: SenseData) {
    super(
      `SCSI command 0x${hex2(opcode)} failed: sense key 0x${sense.senseKey.toString(16)}, ` +
        `ASC/ASCQ 0x${hex2(sense.asc)}/0x${hex2(sense.ascq)}`,
    );
    this.name = "ScsiError";
    this.opcode = opcode;
    this.senseKey = sense.senseKey;
    this.asc = sense.asc;
    this.ascq = sense.ascq;
    this.status = senseStatus(sense);
  }
}

/**
 * TEST UNIT READY's CDB (6 bytes).
 *
 * @example
 * ```ts
 * import { testUnitReadyCdb } from "./scsi.ts";
 * console.log(testUnitReadyCdb()); // Uint8Array(6) [0, 0, 0, 0, 0, 0]
 * ```
 */
export function testUnitReadyCdb(): Uint8Array {
  return new Uint8Array(6);
}

/**
 * REQUEST SENSE (6)'s CDB, asking for up to `allocationLength` bytes (default 18, fixed format).
 *
 * @example
 * ```ts
 * import { requestSenseCdb } from "./scsi.ts";
 * console.log(requestSenseCdb()[4]); // 18
 * ```
 */
export function requestSenseCdb(allocationLength = 18): Uint8Array {
  if (!Number.isInteger(allocationLength) || allocationLength < 0 || allocationLength > 255) {
    throw new BotError("invalid-argument", `allocationLength must be 0..255`);
  }
  return new Uint8Array([ScsiOp.RequestSense, 0, 0, 0, allocationLength, 0]);
}

/**
 * READ CAPACITY (10)'s CDB (10 bytes); the reply is 8 bytes ({@linkcode parseReadCapacity10}).
 *
 * @example
 * ```ts
 * import { readCapacity10Cdb } from "./scsi.ts";
 * console.log(readCapacity10Cdb()[0]); // 37
 * ```
 */
export function readCapacity10Cdb(): Uint8Array {
  const cdb = new Uint8Array(10);
  cdb[0] = ScsiOp.ReadCapacity10;
  return cdb;
}

function rw10Cdb(opcode: number, lba: number, blocks: number): Uint8Array {
  u32(lba, "lba");
  if (!Number.isInteger(blocks) || blocks < 1 || blocks > 0xffff) {
    throw new BotError("invalid-argument", `blocks must be 1..65535 for a 10-byte CDB`);
  }
  const cdb = new Uint8Array(10);
  const view = new DataView(cdb.buffer);
  cdb[0] = opcode;
  view.setUint32(2, lba, false);
  view.setUint16(7, blocks, false);
  return cdb;
}

/**
 * READ (10)'s CDB: `blocks` (1..65535) blocks from `lba` (u32), big-endian as SCSI says.
 *
 * @example
 * ```ts
 * import { read10Cdb } from "./scsi.ts";
 * console.log([...read10Cdb(0x01020304, 8)]); // [40, 0, 1, 2, 3, 4, 0, 0, 8, 0]
 * ```
 */
export function read10Cdb(lba: number, blocks: number): Uint8Array {
  return rw10Cdb(ScsiOp.Read10, lba, blocks);
}

/**
 * WRITE (10)'s CDB: `blocks` (1..65535) blocks at `lba` (u32).
 *
 * @example
 * ```ts
 * import { write10Cdb } from "./scsi.ts";
 * console.log(write10Cdb(0, 128)[0]); // 42
 * ```
 */
export function write10Cdb(lba: number, blocks: number): Uint8Array {
  return rw10Cdb(ScsiOp.Write10, lba, blocks);
}

/**
 * Decodes sense data in fixed (0x70/0x71) or descriptor (0x72/0x73) format. Throws a
 * {@linkcode BotError} for anything else (too short, unknown response code).
 *
 * @example
 * ```ts
 * import { parseSense } from "./scsi.ts";
 * const sense = new Uint8Array(18);
 * sense[0] = 0x70; sense[2] = 0x05; sense[7] = 10; sense[12] = 0x21;
 * console.log(parseSense(sense)); // { responseCode: 112, senseKey: 5, asc: 33, ascq: 0 }
 * ```
 */
export function parseSense(bytes: Uint8Array): SenseData {
  const responseCode = (bytes[0] ?? 0) & 0x7f;
  if ((responseCode === 0x70 || responseCode === 0x71) && bytes.length >= 3) {
    return {
      responseCode,
      senseKey: bytes[2] & 0x0f,
      asc: bytes.length > 12 ? bytes[12] : 0,
      ascq: bytes.length > 13 ? bytes[13] : 0,
    };
  }
  if ((responseCode === 0x72 || responseCode === 0x73) && bytes.length >= 4) {
    return { responseCode, senseKey: bytes[1] & 0x0f, asc: bytes[2], ascq: bytes[3] };
  }
  throw new BotError(
    "invalid-argument",
    `not sense data (response code 0x${hex2(responseCode)}, ${bytes.length} bytes)`,
    StorageStatus.DeviceProtocolError,
  );
}

/**
 * The NTSTATUS of a sense: RECOVERED ERROR is `Success`; NO SENSE (under CHECK CONDITION),
 * HARDWARE ERROR and ABORTED COMMAND are `IoDeviceError`; the rest as {@linkcode StorageStatus}
 * documents.
 *
 * @example
 * ```ts
 * import { senseStatus, SenseKey } from "./scsi.ts";
 * import { StorageStatus } from "./errors.ts";
 * senseStatus({ responseCode: 0x70, senseKey: SenseKey.IllegalRequest, asc: 0x21, ascq: 0 }) ===
 *   StorageStatus.NonexistentSector; // true
 * ```
 */
export function senseStatus(sense: SenseData): StatusCode {
  switch (sense.senseKey) {
    case SenseKey.RecoveredError:
      return Status.Success;
    case SenseKey.NotReady:
      return sense.asc === 0x3a ? StorageStatus.NoMediaInDevice : StorageStatus.DeviceNotReady;
    case SenseKey.MediumError:
      return StorageStatus.DeviceDataError;
    case SenseKey.IllegalRequest:
      return sense.asc === 0x21
        ? StorageStatus.NonexistentSector
        : StorageStatus.InvalidDeviceRequest;
    case SenseKey.UnitAttention:
      return StorageStatus.VerifyRequired;
    case SenseKey.DataProtect:
      return StorageStatus.MediaWriteProtected;
    default: // NO SENSE (yet CHECK CONDITION), HARDWARE ERROR, ABORTED COMMAND, others
      return StorageStatus.IoDeviceError;
  }
}

/**
 * What READ CAPACITY (10) reports.
 *
 * @example
 * ```ts
 * import type { Capacity } from "./scsi.ts";
 * const capacity: Capacity = { lastLba: 131071, blockSize: 512, blockCount: 131072 };
 * ```
 */
export interface Capacity {
  /** The last addressable LBA. */
  readonly lastLba: number;
  /** Bytes per block. */
  readonly blockSize: number;
  /** Blocks on the medium (`lastLba + 1`). */
  readonly blockCount: number;
}

/**
 * Decodes READ CAPACITY (10)'s 8-byte reply (big-endian last LBA and block length).
 *
 * @example
 * ```ts
 * import { parseReadCapacity10 } from "./scsi.ts";
 * const reply = new Uint8Array([0, 0, 0x7f, 0xff, 0, 0, 2, 0]);
 * console.log(parseReadCapacity10(reply)); // { lastLba: 32767, blockSize: 512, blockCount: 32768 }
 * ```
 */
export function parseReadCapacity10(bytes: Uint8Array): Capacity {
  if (bytes.length < 8) {
    throw new BotError("short-transfer", `READ CAPACITY (10) returned ${bytes.length} bytes`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const lastLba = view.getUint32(0, false);
  return { lastLba, blockSize: view.getUint32(4, false), blockCount: lastLba + 1 };
}
