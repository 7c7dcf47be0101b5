/**
 * USB Mass Storage Bulk-Only Transport (BOT): pure encoders and decoders for the Command Block
 * Wrapper (CBW) and the Command Status Wrapper (CSW), and {@linkcode BotDevice}, which runs commands over a claimed
 * {@linkcode UsbDevice} with the spec's error handling (CHECK CONDITION → REQUEST SENSE → a typed
 * {@linkcode ScsiError}; stalls → clear halt; phase errors and invalid CSWs → Reset Recovery).
 *
 * Every failure thrown here carries a numeric NTSTATUS `status` (a {@linkcode UsbError}'s passes
 * through unchanged), so a queue work handler can complete its item with `statusOfError(error)`.
 *
 * ```ts ignore
 * import { Libusb } from "../mod.ts";
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

import { DEFAULT_TIMEOUT, type UsbDevice } from "../ffi/device.ts";
import { LibusbError, UsbError } from "../ffi/errors.ts";
import {
  DEFAULT_INTERFACE,
  type DeviceSessionOptions,
  openDeviceSession,
} from "../ffi/handlers/device_session.ts";
import { Status } from "../src/status.ts";
import { BotError, hex2, StorageStatus, u32 } from "./errors.ts";
import {
  type Capacity,
  parseReadCapacity10,
  parseSense,
  read10Cdb,
  readCapacity10Cdb,
  requestSenseCdb,
  ScsiError,
  ScsiOp,
  type SenseData,
  SenseKey,
  testUnitReadyCdb,
  write10Cdb,
} from "./scsi.ts";

/** The bulk IN endpoint a {@linkcode BotDevice} uses unless told otherwise. */
export const DEFAULT_IN_ENDPOINT = 0x81;
/** The bulk OUT endpoint a {@linkcode BotDevice} uses unless told otherwise. */
export const DEFAULT_OUT_ENDPOINT = 0x02;
/** Bytes per block until READ CAPACITY says otherwise. */
export const DEFAULT_BLOCK_SIZE = 512;
/** Blocks per command in {@linkcode BotDevice.writeBlocks} and {@linkcode BotDevice.readBlocks}. */
export const DEFAULT_CHUNK_BLOCKS = 128;

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

/**
 * Which way a command's data phase goes.
 *
 * @example
 * ```ts
 * import type { BotDirection } from "./bot.ts";
 * const direction: BotDirection = "in";
 * ```
 */
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

/**
 * Encodes a CBW into 31 bytes (into `target` when given, which must be at least 31 long).
 *
 * @example
 * ```ts
 * import { encodeCbw } from "./bot.ts";
 * import { testUnitReadyCdb } from "./scsi.ts";
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
 * import { decodeCbw, encodeCbw } from "./bot.ts";
 * import { testUnitReadyCdb } from "./scsi.ts";
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
 * The transfers {@linkcode BotDevice} needs: a claimed {@linkcode UsbDevice} has them all; a
 * simulator for tests may provide just these.
 *
 * @example
 * ```ts
 * import { BotDevice, type BotTransport } from "./bot.ts";
 * const transport: BotTransport = {
 *   transferOut: (_endpoint, data) => data.byteLength,
 *   transferIn: () => new Uint8Array(0),
 *   clearHalt: () => {},
 *   controlTransferOut: () => 0,
 * };
 * const bot = new BotDevice(transport);
 * ```
 */
export type BotTransport = Pick<
  UsbDevice,
  "transferOut" | "transferIn" | "clearHalt" | "controlTransferOut"
>;

/**
 * Options of a {@linkcode BotDevice}.
 *
 * @example
 * ```ts
 * import type { BotOptions } from "./bot.ts";
 * const options: BotOptions = { inEndpoint: 0x81, outEndpoint: 0x02, timeout: 2000 };
 * ```
 */
export interface BotOptions {
  /** The claimed mass storage interface (for Reset Recovery). Default `DEFAULT_INTERFACE` (0). */
  readonly interface?: number;
  /** Bulk IN endpoint address. Default {@linkcode DEFAULT_IN_ENDPOINT}. */
  readonly inEndpoint?: number;
  /** Bulk OUT endpoint address. Default {@linkcode DEFAULT_OUT_ENDPOINT}. */
  readonly outEndpoint?: number;
  /** The logical unit. Default 0. */
  readonly lun?: number;
  /** Milliseconds per transfer phase. Default `DEFAULT_TIMEOUT` (the device's, 5000). */
  readonly timeout?: number;
  /**
   * Bytes per block until {@linkcode BotDevice.readCapacity} says otherwise. Default
   * {@linkcode DEFAULT_BLOCK_SIZE}.
   */
  readonly blockSize?: number;
}

/**
 * The outcome of one command at the transport level.
 *
 * @example
 * ```ts
 * import type { CommandResult } from "./bot.ts";
 * const passed = (result: CommandResult) => result.status === 0;
 * ```
 */
export interface CommandResult {
  /** IN data received (empty for "none"/"out"). */
  readonly data: Uint8Array;
  /** The CSW's residue. */
  readonly residue: number;
  /** The CSW's status: `Passed` or `Failed` (phase errors throw). */
  readonly status: number;
}

/**
 * Counts of what {@linkcode BotDevice} had to recover from.
 *
 * @example
 * ```ts
 * import type { BotCounters } from "./bot.ts";
 * const clean = (c: BotCounters) => c.resetRecoveries === 0 && c.clearedHalts === 0;
 * ```
 */
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
    this.#interface = options.interface ?? DEFAULT_INTERFACE;
    this.#in = options.inEndpoint ?? DEFAULT_IN_ENDPOINT;
    this.#out = options.outEndpoint ?? DEFAULT_OUT_ENDPOINT;
    this.#lun = options.lun ?? 0;
    this.#timeout = options.timeout ?? DEFAULT_TIMEOUT;
    this.blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
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
   * Writes `data` (a whole number of blocks, any length) at `lba` with WRITE (10) commands of at
   * most `chunkBlocks` blocks (default {@linkcode DEFAULT_CHUNK_BLOCKS}).
   */
  writeBlocks(lba: number, data: Uint8Array, chunkBlocks = DEFAULT_CHUNK_BLOCKS): void {
    const blockSize = this.blockSize;
    if (data.byteLength % blockSize !== 0) {
      throw new BotError(
        "invalid-argument",
        `${data.byteLength} bytes are not a whole number of ${blockSize}-byte blocks`,
      );
    }
    const chunkBytes = chunkBlocks * blockSize;
    for (let offset = 0; offset < data.byteLength; offset += chunkBytes) {
      const bytes = data.subarray(offset, offset + chunkBytes);
      this.write10(lba + offset / blockSize, bytes.byteLength / blockSize, bytes);
    }
  }

  /**
   * Reads `blocks` blocks from `lba` with READ (10) commands of at most `chunkBlocks` blocks
   * (default {@linkcode DEFAULT_CHUNK_BLOCKS}).
   */
  readBlocks(
    lba: number,
    blocks: number,
    chunkBlocks = DEFAULT_CHUNK_BLOCKS,
  ): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(blocks * this.blockSize);
    for (let done = 0; done < blocks; done += chunkBlocks) {
      const count = Math.min(chunkBlocks, blocks - done);
      out.set(this.read10(lba + done, count), done * this.blockSize);
    }
    return out;
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

/**
 * Which mass storage device to open and how to talk to it: the device session's options (ids,
 * serial number, interface, library, absent mode) and {@linkcode BotDevice}'s.
 *
 * @example
 * ```ts
 * import type { StorageDeviceOptions } from "./bot.ts";
 * const options: StorageDeviceOptions = { vendorId: 0x46f4, productId: 0x0001, timeout: 2000 };
 * ```
 */
export interface StorageDeviceOptions extends DeviceSessionOptions, BotOptions {}

/**
 * A mass storage device opened on this thread by {@linkcode openStorage}.
 *
 * @example
 * ```ts
 * import type { StorageSession } from "./bot.ts";
 * const blocks = (disk: StorageSession) => disk.capacity.blockCount;
 * ```
 */
export interface StorageSession extends Disposable {
  /** SCSI over BOT on the claimed interface, ready (TEST UNIT READY passed). */
  readonly bot: BotDevice;
  /** What READ CAPACITY (10) reported when it was opened. */
  readonly capacity: Capacity;
  /** Releases the interface and closes the device. Idempotent. */
  close(): void;
}

/**
 * Opens a mass storage device on this thread, claims its interface, waits until it is ready
 * ({@linkcode BotDevice.waitReady}) and reads its capacity. Throws the failure (a `UsbError` such
 * as `LIBUSB_ERROR_NOT_FOUND`, a {@linkcode ScsiError}, …) with everything closed again.
 *
 * @example
 * ```ts ignore
 * import { libusbPath } from "../mod.ts";
 * import { openStorage } from "./bot.ts";
 * using disk = openStorage({ vendorId: 0x46f4, productId: 0x0001, libusbPath: libusbPath() });
 * console.log(disk.capacity.blockCount, disk.bot.readBlocks(0, 1));
 * ```
 */
export function openStorage(options: StorageDeviceOptions): StorageSession {
  const session = openDeviceSession(options, (device, options) => {
    const bot = new BotDevice(device, options);
    bot.waitReady();
    return { bot, capacity: bot.readCapacity() };
  });
  const { bot, capacity } = session.value;
  return { bot, capacity, close: session.close, [Symbol.dispose]: session.close };
}
