/**
 * USB mass storage for tbq: SCSI over Bulk-Only Transport ({@linkcode BotDevice}) on a device
 * opened through tbq's libusb binding, and a ready-made handler module
 * ({@linkcode massStorageHandlers}) that makes a ThreadedBufferQueue a block writer: each item is
 * one WRITE (10) at the LBA in its context, and completes with the NTSTATUS of the outcome
 * ({@linkcode StorageStatus} for the SCSI conditions).
 *
 * ```ts ignore
 * import { libusbPath, ThreadedBufferQueue, usbWorkerPermissions } from "jsr:@tbq/tbq";
 * import { massStorageHandlers, writeRegions } from "jsr:@tbq/tbq/storage";
 *
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 8, bufferSize: 65536, contextSize: 4 },
 *   handlers: massStorageHandlers,
 *   handlerOptions: { vendorId: 0x46f4, productId: 0x0001, libusbPath: libusbPath() },
 *   permissions: usbWorkerPermissions(),
 * });
 * await queue.start(); // opens the device and waits until it is ready
 * const { failures } = await writeRegions(queue, [{ lba: 2048, data: new Uint8Array(1 << 20) }]);
 * ```
 *
 * @module
 */

export {
  type BotCounters,
  BotDevice,
  type BotDirection,
  type BotOptions,
  type BotTransport,
  type CommandResult,
  openStorage,
  type StorageDeviceOptions,
  type StorageSession,
} from "./bot.ts";
export { BotError, type BotErrorReason, StorageStatus } from "./errors.ts";
export { type Capacity, ScsiError, type SenseData, SenseKey } from "./scsi.ts";
export {
  createReport,
  itemLba,
  type MassStorageOptions,
  type MassStorageReport,
  readReport,
  ReportWord,
  setItemLba,
} from "./options.ts";
export {
  type RegionWrite,
  writeRegions,
  type WriteRegionsOptions,
  type WriteRegionsResult,
} from "./produce.ts";

/**
 * The mass storage handler module, by URL, for a queue's `handlers` (options:
 * {@linkcode MassStorageOptions}; each item: blocks of data, its LBA set with
 * {@linkcode setItemLba}). With `absent: "fail-items"` a missing or vanished device fails items
 * with `DeviceNotConnected` (each item tries to open it again) instead of failing `start()`.
 *
 * @example
 * ```ts ignore
 * import { libusbPath, ThreadedBufferQueue, usbWorkerPermissions } from "../mod.ts";
 * import { createReport, massStorageHandlers, readReport, setItemLba } from "./mod.ts";
 * const report = createReport();
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 8, bufferSize: 65536, contextSize: 4 },
 *   handlers: massStorageHandlers,
 *   handlerOptions: { vendorId: 0x46f4, productId: 0x0001, libusbPath: libusbPath(), report },
 *   permissions: usbWorkerPermissions(),
 * });
 * await queue.start();
 * const buffer = await queue.acquire();
 * setItemLba(buffer.context, 2048);
 * console.log(await queue.enqueueAndWait(buffer), readReport(report).writes);
 * ```
 */
export const massStorageHandlers: URL = new URL("./handlers.ts", import.meta.url);
