/**
 * What the owner of a mass storage queue hands its handler ({@linkcode MassStorageOptions}) and its
 * items (the LBA in the context, {@linkcode setItemLba}), and the report buffer through which the
 * handler tells the owner what it did ({@linkcode createReport}, {@linkcode readReport}). Nothing
 * here opens a device: it is safe on any thread.
 *
 * @module
 */

import type { StorageDeviceOptions } from "./bot.ts";

/**
 * The `handlerOptions` of the mass storage handler: the device and its transport
 * ({@linkcode StorageDeviceOptions}: ids, serial number, interface, endpoints, LUN, timeout,
 * `absent` mode, `"wait"` included, library path) and an optional report buffer.
 *
 * @example
 * ```ts
 * import { createReport, type MassStorageOptions } from "./options.ts";
 * const options: MassStorageOptions = {
 *   vendorId: 0x46f4, productId: 0x0001, absent: "fail-items", report: createReport(),
 * };
 * ```
 */
export interface MassStorageOptions extends StorageDeviceOptions {
  /** A report buffer from {@linkcode createReport}, updated by the handler. */
  readonly report?: SharedArrayBuffer;
}

/**
 * Int32 word indexes of a report buffer.
 *
 * @example
 * ```ts
 * import { createReport, ReportWord } from "./options.ts";
 * const report = createReport();
 * console.log(Atomics.load(new Int32Array(report), ReportWord.Writes)); // 0
 * ```
 */
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
  /** Items that waited for the device to come back (`absent: "wait"`). */
  Waits: 15,
} as const;

const REPORT_WORDS = 16;

/**
 * A fresh report buffer to pass as the `report` option.
 *
 * @example
 * ```ts
 * import { createReport, readReport } from "./options.ts";
 * console.log(readReport(createReport()).post); // 0
 * ```
 */
export function createReport(): SharedArrayBuffer {
  return new SharedArrayBuffer(REPORT_WORDS * 4);
}

/**
 * A snapshot of a report buffer: one number per {@linkcode ReportWord}, named in camel case.
 *
 * @example
 * ```ts
 * import { createReport, type MassStorageReport, readReport } from "./options.ts";
 * const report: MassStorageReport = readReport(createReport());
 * console.log(report.writes); // 0
 * ```
 */
export type MassStorageReport = {
  -readonly [K in keyof typeof ReportWord as Uncapitalize<K>]: number;
};

/**
 * Reads a report buffer (atomically, word by word).
 *
 * @example
 * ```ts
 * import { createReport, readReport } from "./options.ts";
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
 * import { itemLba, setItemLba } from "./options.ts";
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
 * import { itemLba } from "./options.ts";
 * console.log(itemLba(new Uint8Array([0, 8, 0, 0]))); // 2048
 * ```
 */
export function itemLba(context: Uint8Array): number {
  return new DataView(context.buffer, context.byteOffset, 4).getUint32(0, true);
}
