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
 * closes. The device session (and `absent: "fail-items"` / `"wait"`) is the one the bulk writers
 * use. With `absent: "wait"`, an item that finds the device away, or whose WRITE (10) an unplug
 * cuts, waits until the device is back (opened, ready and its capacity read again: a UNIT
 * ATTENTION after the replug is ridden out there) and repeats the whole WRITE (10) at its LBA
 * (writing the same blocks twice leaves the same medium); the report's `waits` counts such items.
 * The wait ends only through `item.signal` (status `Cancelled`, not counted as a failure).
 *
 * @module
 */

import {
  defineWorkHandlers,
  type WorkContext,
  type WorkHandlers,
  type WorkItem,
  type WorkResult,
} from "../src/handlers.ts";
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

/** The report's words, made once per report buffer (every item bumps two of them). */
let reportWords: { buffer: SharedArrayBuffer; words: Int32Array } | undefined;

function words(options: MassStorageOptions): Int32Array | undefined {
  const buffer = options.report;
  if (!buffer) return undefined;
  if (reportWords?.buffer !== buffer) reportWords = { buffer, words: new Int32Array(buffer) };
  return reportWords.words;
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

function failedWith(options: MassStorageOptions, error: unknown) {
  return failed(options, statusOfError(error), error instanceof UsbError ? error.code : 0);
}

/** One WRITE (10) of the item on an open device; throws what the transport throws. */
function write(current: Session, item: WorkItem, options: MassStorageOptions): WorkResult {
  const blockSize = current.bot.blockSize;
  if (item.size === 0 || item.size % blockSize !== 0) {
    return failed(options, Status.InvalidParameter);
  }
  const t0 = performance.now();
  current.bot.write10(itemLba(item.context), item.size / blockSize, item.data);
  bump(options, ReportWord.WriteMicros, Math.round((performance.now() - t0) * 1000));
  bump(options, ReportWord.Writes);
  return complete(Status.Success);
}

/** `absent: "wait"`: waits for the device (without blocking the Worker), then writes. */
async function writeWhenBack(
  item: WorkItem,
  ctx: WorkContext<MassStorageOptions>,
): Promise<WorkResult> {
  const options = ctx.options;
  bump(options, ReportWord.Waits);
  const signal = AbortSignal.any([item.signal, ctx.signal]);
  for (;;) {
    let current: Session;
    try {
      current = await slot.whenOpen(options, signal);
    } catch (error) {
      return signal.aborted ? complete(Status.Cancelled) : failedWith(options, error);
    }
    try {
      return write(current, item, options);
    } catch (error) {
      if (!slot.failed(options, error)) return failedWith(options, error);
    } finally {
      account(options, current);
    }
  }
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
    if (options.absent === "wait" && !slot.opened) return writeWhenBack(item, ctx);
    let current: Session | undefined;
    try {
      current = slot.get(options);
      return write(current, item, options);
    } catch (error) {
      const gone = slot.failed(options, error);
      if (gone && options.absent === "wait") return writeWhenBack(item, ctx);
      return failedWith(options, error);
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
