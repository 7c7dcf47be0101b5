/**
 * USB Mass Storage Bulk-Only Transport (BOT) and the few SCSI commands a block writer needs:
 * pure encoders and decoders for the Command Block Wrapper (CBW), the Command Status Wrapper (CSW),
 * the CDBs and their replies, and {@linkcode BotDevice}, which runs commands over a claimed
 * {@linkcode UsbDevice} with the spec's error handling (CHECK CONDITION → REQUEST SENSE → a typed
 * {@linkcode ScsiError}; stalls → clear halt; phase errors and invalid CSWs → Reset Recovery).
 *
 * Every failure thrown here carries a numeric NTSTATUS `status` (a {@linkcode UsbError}'s passes
 * through unchanged), so a queue work handler can complete its item with `statusOfError(error)`.
 *
 * ```ts ignore
 * import { Libusb } from "../../mod.ts";
 * import { BotDevice } from "./bot.ts";
 * using usb = Libusb.open();
 * using dev = usb.openDevice({ vendorId: 0x46f4, productId: 0x0001 });
 * dev.claimInterface(0);
 * const bot = new BotDevice(dev);
 * bot.waitReady();
 * const { blockCount } = bot.readCapacity();
 * bot.write10(0, 1, new Uint8Array(512));
 * ```
 *
 * @module
 */

import { LibusbError, Status, type StatusCode, UsbError, UsbStatus } from "../../mod.ts";
import type { UsbDevice } from "../../mod.ts";

/** dCBWSignature, "USBC" little-endian. */
export const CBW_SIGNATURE = 0x43425355;
/** dCSWSignature, "USBS" little-endian. */
export const CSW_SIGNATURE = 0x53425355;
/** A CBW is exactly this long, in a transfer of its own. */
export const CBW_LENGTH = 31;
/** A CSW is exactly this long. */
export const CSW_LENGTH = 13;

/** bCSWStatus values. */
export const CswStatus = {
  /** The command passed. */
  Passed: 0,
  /** The command failed (CHECK CONDITION): REQUEST SENSE says why. */
  Failed: 1,
  /** Host and device disagree about the phases: the host must do Reset Recovery. */
  PhaseError: 2,
} as const;

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

/** SCSI sense keys (SPC). */
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
 * NTSTATUS values for storage failures that `Status` has no name for (signed 32-bit), chosen as
 * Windows' disk class driver reports the same conditions.
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

/** Which way a command's data phase goes. */
export type BotDirection = "none" | "in" | "out";

/** The fields of a Command Block Wrapper. */
export interface Cbw {
  /** dCBWTag, echoed by the CSW (u32). */
  readonly tag: number;
  /** dCBWDataTransferLength: bytes the host expects to move in the data phase (u32). */
  readonly dataLength: number;
  /** bmCBWFlags bit 7: "in" sets it; "none" requires `dataLength` 0. */
  readonly direction: BotDirection;
  /** bCBWLUN (0..15). Default 0. */
  readonly lun?: number;
  /** CBWCB: the SCSI CDB, 1..16 bytes. */
  readonly cdb: Uint8Array;
}

/** The fields of a Command Status Wrapper. */
export interface Csw {
  /** dCSWTag. */
  readonly tag: number;
  /** dCSWDataResidue: expected minus processed bytes. */
  readonly residue: number;
  /** bCSWStatus (see {@linkcode CswStatus}). */
  readonly status: number;
}

/** Why a {@linkcode BotError} was thrown. */
export type BotErrorReason =
  | "invalid-argument"
  | "invalid-csw"
  | "phase-error"
  | "short-transfer";

/**
 * A transport-level failure: bad arguments, an invalid or mismatched CSW, a phase error, or a
 * data phase that moved fewer bytes than the command needs. `status` is its NTSTATUS.
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

/** Decoded sense data (fixed or descriptor format). */
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

/** A command that ended in CHECK CONDITION, with the sense data REQUEST SENSE returned. */
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

function hex2(value: number): string {
  return value.toString(16).padStart(2, "0");
}

function u32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new BotError("invalid-argument", `${what} must be an integer in 0..2^32-1, got ${value}`);
  }
  return value;
}

/**
 * Encodes a CBW into 31 bytes (into `target` when given, which must be at least 31 long).
 *
 * @example
 * ```ts
 * import { encodeCbw, testUnitReadyCdb } from "./bot.ts";
 * const cbw = encodeCbw({ tag: 1, dataLength: 0, direction: "none", cdb: testUnitReadyCdb() });
 * console.log(cbw.length); // 31
 * ```
 */
export function encodeCbw(cbw: Cbw, target: Uint8Array = new Uint8Array(CBW_LENGTH)): Uint8Array {
  const lun = cbw.lun ?? 0;
  if (!Number.isInteger(lun) || lun < 0 || lun > 15) {
    throw new BotError("invalid-argument", `lun must be 0..15, got ${lun}`);
  }
  if (cbw.cdb.length < 1 || cbw.cdb.length > 16) {
    throw new BotError("invalid-argument", `a CDB is 1..16 bytes, got ${cbw.cdb.length}`);
  }
  u32(cbw.tag, "tag");
  u32(cbw.dataLength, "dataLength");
  if (cbw.direction === "none" ? cbw.dataLength !== 0 : cbw.dataLength === 0) {
    throw new BotError(
      "invalid-argument",
      `direction "${cbw.direction}" does not fit dataLength ${cbw.dataLength}`,
    );
  }
  if (target.length < CBW_LENGTH) {
    throw new BotError("invalid-argument", `a CBW needs ${CBW_LENGTH} bytes`);
  }
  const bytes = target.subarray(0, CBW_LENGTH);
  bytes.fill(0);
  const view = new DataView(bytes.buffer, bytes.byteOffset, CBW_LENGTH);
  view.setUint32(0, CBW_SIGNATURE, true);
  view.setUint32(4, cbw.tag, true);
  view.setUint32(8, cbw.dataLength, true);
  bytes[12] = cbw.direction === "in" ? 0x80 : 0x00;
  bytes[13] = lun;
  bytes[14] = cbw.cdb.length;
  bytes.set(cbw.cdb, 15);
  return bytes;
}

/**
 * Decodes a CBW (the device's side; for tests and tracing). Throws a {@linkcode BotError} when it
 * is not exactly 31 bytes with the signature and a valid CDB length.
 *
 * @example
 * ```ts
 * import { decodeCbw, encodeCbw, testUnitReadyCdb } from "./bot.ts";
 * const cbw = decodeCbw(encodeCbw({ tag: 7, dataLength: 0, direction: "none", cdb: testUnitReadyCdb() }));
 * console.log(cbw.tag); // 7
 * ```
 */
export function decodeCbw(bytes: Uint8Array): Required<Cbw> {
  if (bytes.length !== CBW_LENGTH) {
    throw new BotError("invalid-argument", `a CBW is ${CBW_LENGTH} bytes, got ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, CBW_LENGTH);
  if (view.getUint32(0, true) !== CBW_SIGNATURE) {
    throw new BotError("invalid-argument", "bad CBW signature");
  }
  const cdbLength = bytes[14] & 0x1f;
  if (cdbLength < 1 || cdbLength > 16) {
    throw new BotError("invalid-argument", `bad CDB length ${cdbLength}`);
  }
  const dataLength = view.getUint32(8, true);
  return {
    tag: view.getUint32(4, true),
    dataLength,
    direction: dataLength === 0 ? "none" : (bytes[12] & 0x80 ? "in" : "out"),
    lun: bytes[13] & 0x0f,
    cdb: bytes.slice(15, 15 + cdbLength),
  };
}

/**
 * Encodes a CSW (the device's side; for tests and simulators).
 *
 * @example
 * ```ts
 * import { encodeCsw } from "./bot.ts";
 * console.log(encodeCsw({ tag: 1, residue: 0, status: 0 }).length); // 13
 * ```
 */
export function encodeCsw(csw: Csw): Uint8Array {
  const bytes = new Uint8Array(CSW_LENGTH);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, CSW_SIGNATURE, true);
  view.setUint32(4, u32(csw.tag, "tag"), true);
  view.setUint32(8, u32(csw.residue, "residue"), true);
  bytes[12] = csw.status;
  return bytes;
}

/**
 * Parses and validates a CSW: exactly 13 bytes, the signature, the expected tag, a status of 0..2
 * and a residue no larger than the command's data length. Any violation throws a
 * {@linkcode BotError} `invalid-csw` (the host must then do Reset Recovery). A phase error is a
 * valid CSW: it is returned, with `status` 2.
 *
 * @example
 * ```ts
 * import { encodeCsw, parseCsw } from "./bot.ts";
 * const csw = parseCsw(encodeCsw({ tag: 9, residue: 0, status: 0 }), 9, 512);
 * console.log(csw.status); // 0
 * ```
 */
export function parseCsw(bytes: Uint8Array, expectedTag: number, dataLength: number): Csw {
  if (bytes.length !== CSW_LENGTH) {
    throw new BotError("invalid-csw", `a CSW is ${CSW_LENGTH} bytes, got ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, CSW_LENGTH);
  const signature = view.getUint32(0, true);
  if (signature !== CSW_SIGNATURE) {
    throw new BotError("invalid-csw", `bad CSW signature 0x${signature.toString(16)}`);
  }
  const tag = view.getUint32(4, true);
  if (tag !== expectedTag) {
    throw new BotError("invalid-csw", `CSW tag ${tag} does not match the CBW's ${expectedTag}`);
  }
  const residue = view.getUint32(8, true);
  const status = bytes[12];
  if (status > CswStatus.PhaseError) {
    throw new BotError("invalid-csw", `bad CSW status ${status}`);
  }
  if (status !== CswStatus.PhaseError && residue > dataLength) {
    throw new BotError(
      "invalid-csw",
      `CSW residue ${residue} exceeds the data length ${dataLength}`,
    );
  }
  return { tag, residue, status };
}

/**
 * TEST UNIT READY's CDB (6 bytes).
 *
 * @example
 * ```ts
 * import { testUnitReadyCdb } from "./bot.ts";
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
 * import { requestSenseCdb } from "./bot.ts";
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
 * import { readCapacity10Cdb } from "./bot.ts";
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
 * import { read10Cdb } from "./bot.ts";
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
 * import { write10Cdb } from "./bot.ts";
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
 * import { parseSense } from "./bot.ts";
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
 * import { senseStatus, SenseKey, StorageStatus } from "./bot.ts";
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

/** What READ CAPACITY (10) reports. */
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
 * import { parseReadCapacity10 } from "./bot.ts";
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

/**
 * The transfers {@linkcode BotDevice} needs: a claimed {@linkcode UsbDevice} has them all; a
 * simulator for tests may provide just these.
 */
export type BotTransport = Pick<
  UsbDevice,
  "transferOut" | "transferIn" | "clearHalt" | "controlTransferOut"
>;

/** Options of a {@linkcode BotDevice}. */
export interface BotOptions {
  /** The claimed mass storage interface (for Reset Recovery). Default 0. */
  readonly interfaceNumber?: number;
  /** Bulk IN endpoint address. Default 0x81. */
  readonly inEndpoint?: number;
  /** Bulk OUT endpoint address. Default 0x02. */
  readonly outEndpoint?: number;
  /** The logical unit. Default 0. */
  readonly lun?: number;
  /** Milliseconds per transfer. Default 5000. */
  readonly timeout?: number;
  /** Bytes per block until {@linkcode BotDevice.readCapacity} says otherwise. Default 512. */
  readonly blockSize?: number;
}

/** The outcome of one command at the transport level. */
export interface CommandResult {
  /** IN data received (empty for "none"/"out"). */
  readonly data: Uint8Array;
  /** The CSW's residue. */
  readonly residue: number;
  /** The CSW's status: `Passed` or `Failed` (phase errors throw). */
  readonly status: number;
}

/** Counts of what {@linkcode BotDevice} had to recover from. */
export interface BotCounters {
  /** Commands sent (CBWs), including REQUEST SENSE. */
  commands: number;
  /** Commands that ended in CHECK CONDITION. */
  checkConditions: number;
  /** Endpoint halts cleared after a stall. */
  clearedHalts: number;
  /** Reset Recoveries performed. */
  resetRecoveries: number;
}

function isUsbError(error: unknown, code: number): boolean {
  return error instanceof UsbError && error.code === code;
}

function isGone(error: unknown): boolean {
  return error instanceof UsbError && error.status === Status.DeviceNotConnected;
}

/**
 * SCSI over Bulk-Only Transport on a claimed interface. Methods are synchronous (they block the
 * calling thread up to the transfer timeout per phase, which is what a queue work handler wants).
 * On success they return their result; on failure they throw an error whose `status` is an
 * NTSTATUS: a {@linkcode ScsiError} (CHECK CONDITION, with the sense), a {@linkcode BotError}
 * (transport), or the {@linkcode UsbError} of the failed transfer, unchanged (e.g. `IoTimeout`,
 * `DeviceNotConnected`).
 *
 * Error handling follows the BOT spec: a stalled data phase clears that endpoint's halt and still
 * reads the CSW; a stalled CSW read clears the IN halt and reads once more; an invalid CSW, a phase
 * error, a failed CBW, a second CSW failure or a timeout leads to Reset Recovery (class request
 * 0xFF, then clear halt on both endpoints) before the error is thrown, so the next command starts
 * clean. A device that went away is not recovered.
 *
 * @example
 * ```ts ignore
 * const bot = new BotDevice(dev, { timeout: 2000 });
 * bot.write10(2048, 128, data); // 64 KiB
 * const back = bot.read10(2048, 128);
 * ```
 */
export class BotDevice {
  /** The transport the commands go through. */
  readonly device: BotTransport;
  /** What had to be recovered so far. */
  readonly counters: BotCounters = {
    commands: 0,
    checkConditions: 0,
    clearedHalts: 0,
    resetRecoveries: 0,
  };
  /** Bytes per block (set by {@linkcode BotDevice.readCapacity}). */
  blockSize: number;

  readonly #interface: number;
  readonly #in: number;
  readonly #out: number;
  readonly #lun: number;
  readonly #timeout: number;
  readonly #cbw = new Uint8Array(CBW_LENGTH);
  #tag = 0;

  /** Wraps a device whose mass storage interface is already claimed. */
  constructor(device: BotTransport, options: BotOptions = {}) {
    this.device = device;
    this.#interface = options.interfaceNumber ?? 0;
    this.#in = options.inEndpoint ?? 0x81;
    this.#out = options.outEndpoint ?? 0x02;
    this.#lun = options.lun ?? 0;
    this.#timeout = options.timeout ?? 5000;
    this.blockSize = options.blockSize ?? 512;
  }

  /**
   * TEST UNIT READY. Throws a {@linkcode ScsiError} when the unit is not ready (e.g. UNIT
   * ATTENTION after a reset: `status` `VerifyRequired`).
   */
  testUnitReady(): void {
    this.#checked(testUnitReadyCdb(), "none", 0);
  }

  /**
   * TEST UNIT READY until it passes, up to `attempts` tries (default 5), riding out UNIT ATTENTION
   * and NOT READY / becoming ready (ASC 0x04, ASCQ 0x01). Other failures throw at once; the last
   * one throws when the tries run out. Returns the sense of each retried condition.
   */
  waitReady(attempts = 5): SenseData[] {
    const seen: SenseData[] = [];
    for (let attempt = 1;; attempt++) {
      try {
        this.testUnitReady();
        return seen;
      } catch (error) {
        const transient = error instanceof ScsiError &&
          (error.senseKey === SenseKey.UnitAttention ||
            (error.senseKey === SenseKey.NotReady && error.asc === 0x04 && error.ascq === 0x01));
        if (!transient || attempt >= attempts) throw error;
        seen.push({
          responseCode: 0x70,
          senseKey: error.senseKey,
          asc: error.asc,
          ascq: error.ascq,
        });
      }
    }
  }

  /** REQUEST SENSE: the sense data of the last failed command (which it also clears). */
  requestSense(): SenseData {
    const { data } = this.#expectPassed(
      ScsiOp.RequestSense,
      this.command(requestSenseCdb(18), "in", 18),
    );
    return parseSense(data);
  }

  /** READ CAPACITY (10); also sets {@linkcode BotDevice.blockSize}. */
  readCapacity(): Capacity {
    const { data } = this.#checked(readCapacity10Cdb(), "in", 8);
    const capacity = parseReadCapacity10(data);
    if (capacity.blockSize > 0) this.blockSize = capacity.blockSize;
    return capacity;
  }

  /**
   * WRITE (10): `blocks` blocks from `data` (exactly `blocks × blockSize` bytes; a view on shared
   * memory is fine, it is sent in place) at `lba`. A non-zero residue throws `short-transfer`.
   */
  write10(lba: number, blocks: number, data: Uint8Array): void {
    const cdb = write10Cdb(lba, blocks);
    const length = blocks * this.blockSize;
    if (data.byteLength !== length) {
      throw new BotError(
        "invalid-argument",
        `WRITE (10) of ${blocks} blocks needs ${length} bytes, got ${data.byteLength}`,
      );
    }
    const { residue } = this.#checked(cdb, "out", length, data);
    if (residue !== 0) {
      throw new BotError("short-transfer", `WRITE (10) left ${residue} bytes unwritten`);
    }
  }

  /** READ (10): `blocks` blocks from `lba`. Fewer bytes than asked throws `short-transfer`. */
  read10(lba: number, blocks: number): Uint8Array {
    const cdb = read10Cdb(lba, blocks);
    const length = blocks * this.blockSize;
    const { data, residue } = this.#checked(cdb, "in", length);
    if (residue !== 0 || data.length !== length) {
      throw new BotError(
        "short-transfer",
        `READ (10) returned ${data.length} of ${length} bytes (residue ${residue})`,
      );
    }
    return data;
  }

  /**
   * Bulk-Only Mass Storage Reset, then clear halt on both bulk endpoints (BOT 5.3.4). Throws the
   * `UsbError` of a step that fails.
   */
  resetRecovery(): void {
    this.counters.resetRecoveries++;
    this.device.controlTransferOut(
      {
        requestType: "class",
        recipient: "interface",
        request: 0xff,
        value: 0,
        index: this.#interface,
      },
      undefined,
      { timeout: this.#timeout },
    );
    this.device.clearHalt(this.#in);
    this.device.clearHalt(this.#out);
  }

  /**
   * Runs one command: CBW, data phase, CSW, with the stall / phase-error handling described on
   * the class. Returns the CSW's status (`Passed` or `Failed`) and residue without interpreting
   * them; {@linkcode BotDevice.testUnitReady} and friends add CHECK CONDITION handling.
   */
  command(
    cdb: Uint8Array,
    direction: BotDirection,
    dataLength: number,
    data?: Uint8Array,
  ): CommandResult {
    const tag = this.#tag = (this.#tag + 1) >>> 0;
    const cbw = encodeCbw({ tag, dataLength, direction, lun: this.#lun, cdb }, this.#cbw);
    if (direction === "out" && (data === undefined || data.byteLength !== dataLength)) {
      throw new BotError("invalid-argument", `OUT data must be exactly ${dataLength} bytes`);
    }
    const options = { timeout: this.#timeout };
    this.counters.commands++;
    try {
      this.device.transferOut(this.#out, cbw, options);
    } catch (error) {
      this.#recoverAfter(error);
      throw error;
    }

    let received: Uint8Array = new Uint8Array(0);
    if (direction !== "none") {
      const endpoint = direction === "in" ? this.#in : this.#out;
      try {
        if (direction === "in") received = this.device.transferIn(this.#in, dataLength, options);
        else this.device.transferOut(this.#out, data!, options);
      } catch (error) {
        if (!isUsbError(error, LibusbError.PIPE)) {
          this.#recoverAfter(error);
          throw error;
        }
        // The device stalled the data phase: clear it and go on to the CSW (BOT 6.7.2, 6.7.3).
        if (direction === "in" && error instanceof UsbError && error.data) received = error.data;
        this.#clearHalt(endpoint);
      }
    }

    const csw = this.#readCsw(tag, dataLength);
    if (csw.status === CswStatus.PhaseError) {
      this.#tryResetRecovery();
      throw new BotError("phase-error", `phase error on SCSI command 0x${hex2(cdb[0])}`);
    }
    return { data: received, residue: csw.residue, status: csw.status };
  }

  #readCsw(tag: number, dataLength: number): Csw {
    const options = { timeout: this.#timeout };
    let bytes: Uint8Array;
    try {
      bytes = this.device.transferIn(this.#in, CSW_LENGTH, options);
    } catch (error) {
      if (!isUsbError(error, LibusbError.PIPE)) {
        this.#recoverAfter(error);
        throw error;
      }
      this.#clearHalt(this.#in);
      try {
        bytes = this.device.transferIn(this.#in, CSW_LENGTH, options);
      } catch (again) {
        this.#recoverAfter(again);
        throw again;
      }
    }
    try {
      return parseCsw(bytes, tag, dataLength);
    } catch (error) {
      this.#tryResetRecovery();
      throw error;
    }
  }

  #clearHalt(endpoint: number): void {
    try {
      this.device.clearHalt(endpoint);
      this.counters.clearedHalts++;
    } catch (error) {
      this.#recoverAfter(error);
      throw error;
    }
  }

  /** After a failed transfer: Reset Recovery unless the device is gone. */
  #recoverAfter(error: unknown): void {
    if (!isGone(error)) this.#tryResetRecovery();
  }

  #tryResetRecovery(): void {
    try {
      this.resetRecovery();
    } catch {
      // Best effort: the original failure is what the caller hears about.
    }
  }

  #expectPassed(opcode: number, result: CommandResult): CommandResult {
    if (result.status !== CswStatus.Passed) {
      // REQUEST SENSE itself failed: nothing more to ask.
      throw new BotError(
        "invalid-csw",
        `SCSI command 0x${hex2(opcode)} failed and so did REQUEST SENSE`,
        StorageStatus.IoDeviceError,
      );
    }
    return result;
  }

  #checked(
    cdb: Uint8Array,
    direction: BotDirection,
    dataLength: number,
    data?: Uint8Array,
  ): CommandResult {
    const result = this.command(cdb, direction, dataLength, data);
    if (result.status === CswStatus.Passed) return result;
    this.counters.checkConditions++;
    const sense = this.requestSense();
    if (sense.senseKey === SenseKey.RecoveredError) return { ...result, status: CswStatus.Passed };
    throw new ScsiError(cdb[0], sense);
  }
}
