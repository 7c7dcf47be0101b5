/**
 * The mass storage handler module (pass `massStorageHandlers` from `storage/mod.ts` as a queue's
 * `handlers`): each item's `data` (`size` = blocks × block size) is written with WRITE (10) at the
 * LBA in the first 4 bytes of its `context` (see `setItemLba`), and the item completes with the
 * NTSTATUS of the outcome (`Success`, a sense-mapped status such as
 * `StorageStatus.NonexistentSector`, a transport status, or the `UsbError`'s, e.g. `IoTimeout`,
 * `DeviceNotConnected`).
 *
 * `pre` opens the device, claims the interface, waits until TEST UNIT READY passes (REQUEST SENSE
 * on CHECK CONDITION; UNIT ATTENTION is ridden out) and reads the capacity; `post` releases and
 * closes. The device session (and `absent: "fail-items"`) is the one the bulk writers use.
 *
 * @module
 */

import { defineWorkHandlers, type WorkHandlers } from "../src/handlers.ts";
import { BufferDisposition, Status, type StatusCode, statusOfError } from "../src/status.ts";
import { UsbError } from "../ffi/errors.ts";
import { DeviceSlot } from "../ffi/handlers/device_session.ts";
import { BotDevice } from "./bot.ts";
import { itemLba, type MassStorageOptions, ReportWord } from "./options.ts";

/** An open, claimed, ready device. */
interface Session {
  readonly bot: BotDevice;
  /** Counters already added to the report. */
  readonly reported: { checkConditions: number; resetRecoveries: number; clearedHalts: number };
}

function words(options: MassStorageOptions): Int32Array | undefined {
  return options.report ? new Int32Array(options.report) : undefined;
}

function bump(options: MassStorageOptions, word: number, by = 1): void {
  const report = words(options);
  if (report && by !== 0) Atomics.add(report, word, by);
}

const slot = new DeviceSlot<MassStorageOptions, Session>((device, options) => {
  const opened: Session = {
    bot: new BotDevice(device, options),
    reported: { checkConditions: 0, resetRecoveries: 0, clearedHalts: 0 },
  };
  try {
    opened.bot.waitReady();
    const capacity = opened.bot.readCapacity();
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
});

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
 * import handlers from "./handlers.ts";
 * console.log(typeof handlers.work); // "function"
 * ```
 */
const handlers: WorkHandlers<MassStorageOptions> = defineWorkHandlers<MassStorageOptions>({
  pre(ctx) {
    bump(ctx.options, ReportWord.Pre);
    slot.open(ctx.options);
  },
  work(item, ctx) {
    const options = ctx.options;
    if (item.context.byteLength < 4) return failed(options, Status.InvalidParameter);
    const lba = itemLba(item.context);
    let current: Session | undefined;
    try {
      current = slot.get(options);
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
      slot.failed(options, error);
      return failed(options, statusOfError(error), error instanceof UsbError ? error.code : 0);
    } finally {
      if (current) account(options, current);
    }
  },
  post(ctx) {
    slot.close();
    bump(ctx.options, ReportWord.Post);
  },
});

export default handlers;
