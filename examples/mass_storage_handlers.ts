/**
 * A handler module that makes a ThreadedBufferQueue a block writer for a USB mass storage device
 * (Bulk-Only Transport, SCSI): each item's `data` (`size` = blocks × block size) is written with
 * WRITE (10) at the LBA in the first 4 bytes of its `context` (little-endian u32, see
 * {@linkcode setItemLba}), and the item completes with the NTSTATUS of the outcome (`Success`, a
 * sense-mapped status such as `StorageStatus.NonexistentSector`, a transport status, or the
 * `UsbError`'s, e.g. `IoTimeout`, `DeviceNotConnected`).
 *
 * `pre` opens the device, claims the interface, waits until TEST UNIT READY passes (REQUEST SENSE
 * on CHECK CONDITION; UNIT ATTENTION is ridden out) and reads the capacity; `post` releases and
 * closes. With `absent: "fail-items"` a missing or vanished device fails items with
 * `DeviceNotConnected` (each item tries to open it again) instead of failing `start()`.
 *
 * Give `report` (from {@linkcode createReport}) to watch the handler from the owner's thread.
 *
 * ```ts ignore
 * import { libusbPath, ThreadedBufferQueue, usbWorkerPermissions } from "../mod.ts";
 * import { createReport, setItemLba } from "./mass_storage_handlers.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 8, bufferSize: 65536, contextSize: 4 },
 *   handlers: new URL("./mass_storage_handlers.ts", import.meta.url),
 *   handlerOptions: { vendorId: 0x46f4, productId: 0x0001, libusbPath: libusbPath(), report: createReport() },
 *   permissions: usbWorkerPermissions({ read: [new URL("./usb_storage/", import.meta.url)] }),
 * });
 * await queue.start();
 * const buffer = await queue.acquire();
 * setItemLba(buffer.context, 2048);
 * const status = await queue.enqueueAndWait(buffer);
 * ```
 *
 * @module
 */

import {
  BufferDisposition,
  defineWorkHandlers,
  openWriterDevice,
  Status,
  type StatusCode,
  statusOfError,
  UsbError,
  type WorkHandlers,
  type WriterSession,
} from "../mod.ts";
import { BotDevice } from "./usb_storage/bot.ts";

/** The `handlerOptions` of this module. */
export interface MassStorageOptions {
  /** idVendor of the device. */
  readonly vendorId: number;
  /** idProduct of the device. */
  readonly productId: number;
  /** Only the device with this serial number, when given. */
  readonly serialNumber?: string;
  /** The library to load (pass the owner's `libusbPath()`: the Worker cannot look it up). */
  readonly libusbPath?: string;
  /** The mass storage interface. Default 0. */
  readonly interface?: number;
  /** Bulk IN endpoint. Default 0x81. */
  readonly inEndpoint?: number;
  /** Bulk OUT endpoint. Default 0x02. */
  readonly outEndpoint?: number;
  /** Logical unit. Default 0. */
  readonly lun?: number;
  /** Milliseconds per transfer phase. Default 5000. */
  readonly timeout?: number;
  /**
   * `"fail-start"` (default): an absent device makes `start()` reject. `"fail-items"`: items
   * complete with `DeviceNotConnected` while it is absent or after it went away, and each item
   * tries to open it again (so the queue rides out an unplug and a replug).
   */
  readonly absent?: "fail-start" | "fail-items";
  /** A report buffer from {@linkcode createReport}, updated by the handler. */
  readonly report?: SharedArrayBuffer;
}

/** Int32 word indexes of a report buffer. */
export const ReportWord = {
  /** Times `pre` ran. */
  Pre: 0,
  /** Times `post` ran. */
  Post: 1,
  /** Times the device was opened and found ready. */
  Opens: 2,
  /** Items written successfully. */
  Writes: 3,
  /** Items that failed. */
  Failures: 4,
  /** The status of the last failed item. */
  LastFailure: 5,
  /** CHECK CONDITIONs seen (over all opens). */
  CheckConditions: 6,
  /** Reset Recoveries performed (over all opens). */
  ResetRecoveries: 7,
  /** Endpoint halts cleared (over all opens). */
  ClearedHalts: 8,
  /** Block size read at the last open. */
  BlockSize: 9,
  /** Block count read at the last open. */
  BlockCount: 10,
  /** Microseconds spent in successful WRITE (10) commands (CBW, data, CSW), summed. */
  WriteMicros: 11,
  /** libusb's error code (`UsbError.code`) of the last failed item, 0 when it was not a UsbError. */
  LastUsbCode: 12,
  /** The status of the first failed item (0 while none failed). */
  FirstFailure: 13,
  /** libusb's error code of the first failed item, 0 when it was not a UsbError. */
  FirstUsbCode: 14,
} as const;

const REPORT_WORDS = 16;

/**
 * A fresh report buffer to pass as the `report` option.
 *
 * @example
 * ```ts
 * import { createReport, readReport } from "./mass_storage_handlers.ts";
 * console.log(readReport(createReport()).post); // 0
 * ```
 */
export function createReport(): SharedArrayBuffer {
  return new SharedArrayBuffer(REPORT_WORDS * 4);
}

/** A snapshot of a report buffer. */
export type MassStorageReport = {
  -readonly [K in keyof typeof ReportWord as Uncapitalize<K>]: number;
};

/**
 * Reads a report buffer (atomically, word by word).
 *
 * @example
 * ```ts
 * import { createReport, readReport } from "./mass_storage_handlers.ts";
 * const { pre, post, writes } = readReport(createReport());
 * ```
 */
export function readReport(report: SharedArrayBuffer): MassStorageReport {
  const words = new Int32Array(report);
  const out: Record<string, number> = {};
  for (const [name, index] of Object.entries(ReportWord)) {
    out[name[0].toLowerCase() + name.slice(1)] = Atomics.load(words, index);
  }
  return out as MassStorageReport;
}

/**
 * Stores the item's LBA in the first 4 bytes of its context (little-endian u32).
 *
 * @example
 * ```ts
 * import { itemLba, setItemLba } from "./mass_storage_handlers.ts";
 * const context = new Uint8Array(4);
 * setItemLba(context, 4096);
 * console.log(itemLba(context)); // 4096
 * ```
 */
export function setItemLba(context: Uint8Array, lba: number): void {
  new DataView(context.buffer, context.byteOffset, 4).setUint32(0, lba, true);
}

/**
 * Reads the LBA from an item's context (see {@linkcode setItemLba}).
 *
 * @example
 * ```ts
 * import { itemLba } from "./mass_storage_handlers.ts";
 * console.log(itemLba(new Uint8Array([0, 8, 0, 0]))); // 2048
 * ```
 */
export function itemLba(context: Uint8Array): number {
  return new DataView(context.buffer, context.byteOffset, 4).getUint32(0, true);
}

/** An open, claimed, ready device. */
interface Session {
  readonly usb: WriterSession;
  readonly bot: BotDevice;
  /** Counters already added to the report. */
  readonly reported: { checkConditions: number; resetRecoveries: number; clearedHalts: number };
}

let session: Session | undefined;

function words(options: MassStorageOptions): Int32Array | undefined {
  return options.report ? new Int32Array(options.report) : undefined;
}

function bump(options: MassStorageOptions, word: number, by = 1): void {
  const report = words(options);
  if (report && by !== 0) Atomics.add(report, word, by);
}

function open(options: MassStorageOptions): Session {
  const usb = openWriterDevice({
    vendorId: options.vendorId,
    productId: options.productId,
    serialNumber: options.serialNumber,
    interface: options.interface ?? 0,
    libusbPath: options.libusbPath,
  });
  try {
    const bot = new BotDevice(usb.device, {
      interfaceNumber: options.interface ?? 0,
      inEndpoint: options.inEndpoint,
      outEndpoint: options.outEndpoint,
      lun: options.lun,
      timeout: options.timeout,
    });
    const opened: Session = {
      usb,
      bot,
      reported: { checkConditions: 0, resetRecoveries: 0, clearedHalts: 0 },
    };
    try {
      bot.waitReady();
      const capacity = bot.readCapacity();
      const report = words(options);
      if (report) {
        Atomics.store(report, ReportWord.BlockSize, capacity.blockSize);
        Atomics.store(report, ReportWord.BlockCount, capacity.blockCount | 0);
      }
      bump(options, ReportWord.Opens);
      return opened;
    } finally {
      account(options, opened);
    }
  } catch (error) {
    usb.close();
    throw error;
  }
}

/** Adds what the BOT layer recovered from since the last call to the report. */
function account(options: MassStorageOptions, current: Session): void {
  const { counters } = current.bot;
  const { reported } = current;
  bump(options, ReportWord.CheckConditions, counters.checkConditions - reported.checkConditions);
  bump(options, ReportWord.ResetRecoveries, counters.resetRecoveries - reported.resetRecoveries);
  bump(options, ReportWord.ClearedHalts, counters.clearedHalts - reported.clearedHalts);
  reported.checkConditions = counters.checkConditions;
  reported.resetRecoveries = counters.resetRecoveries;
  reported.clearedHalts = counters.clearedHalts;
}

function close(): void {
  session?.usb.close();
  session = undefined;
}

function tolerates(options: MassStorageOptions, error: unknown): boolean {
  return options.absent === "fail-items" && statusOfError(error) === Status.DeviceNotConnected;
}

function complete(status: StatusCode): { disposition: BufferDisposition; status: StatusCode } {
  return { disposition: BufferDisposition.WorkComplete, status };
}

function failed(options: MassStorageOptions, status: StatusCode, usbCode = 0) {
  bump(options, ReportWord.Failures);
  const report = words(options);
  if (report) {
    Atomics.store(report, ReportWord.LastFailure, status);
    Atomics.store(report, ReportWord.LastUsbCode, usbCode);
    if (Atomics.compareExchange(report, ReportWord.FirstFailure, 0, status) === 0) {
      Atomics.store(report, ReportWord.FirstUsbCode, usbCode);
    }
  }
  return complete(status);
}

/**
 * The handler module's callbacks (its default export), for a queue's `handlers`.
 *
 * @example
 * ```ts
 * import handlers from "./mass_storage_handlers.ts";
 * console.log(typeof handlers.work); // "function"
 * ```
 */
const handlers: WorkHandlers<MassStorageOptions> = defineWorkHandlers<MassStorageOptions>({
  pre(ctx) {
    bump(ctx.options, ReportWord.Pre);
    close();
    try {
      session = open(ctx.options);
    } catch (error) {
      if (!tolerates(ctx.options, error)) throw error;
    }
  },
  work(item, ctx) {
    const options = ctx.options;
    if (item.context.byteLength < 4) return failed(options, Status.InvalidParameter);
    const lba = itemLba(item.context);
    let current: Session | undefined;
    try {
      if (!session && options.absent === "fail-items") session = open(options);
      current = session;
      if (!current) return failed(options, Status.DeviceNotConnected);
      const blockSize = current.bot.blockSize;
      if (item.size === 0 || item.size % blockSize !== 0) {
        return failed(options, Status.InvalidParameter);
      }
      const t0 = performance.now();
      current.bot.write10(lba, item.size / blockSize, item.data);
      bump(options, ReportWord.WriteMicros, Math.round((performance.now() - t0) * 1000));
      bump(options, ReportWord.Writes);
      return complete(Status.Success);
    } catch (error) {
      if (tolerates(options, error)) close();
      return failed(options, statusOfError(error), error instanceof UsbError ? error.code : 0);
    } finally {
      if (current) account(options, current);
    }
  },
  post(ctx) {
    close();
    bump(ctx.options, ReportWord.Post);
  },
});

export default handlers;
