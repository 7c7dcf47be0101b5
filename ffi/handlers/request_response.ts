/**
 * A ready-made handler module for devices that answer requests: each item's `size` bytes go to a
 * bulk (or interrupt) OUT endpoint, then the device's answer is read from an IN endpoint into the
 * item's own buffer (no allocation, no copy), `item.size` becomes the answer's length and the item
 * completes with `Status.Success`. A producer that calls `enqueueAndWait(buffer, { keep: true })`
 * gets the same buffer back, held, with the answer in `buffer.data` (its `buffer.size` bytes).
 *
 * How an answer ends is the option {@linkcode RequestResponseOptions.answerEnd}: at a short packet
 * (default: what one IN transfer returns), at a terminator byte, or after a fixed length; the last
 * two read on until the answer is complete, however the device splits it into packets, within
 * {@linkcode RequestResponseOptions.timeout} ms.
 *
 * Devices that start every IN packet with status bytes, as an FTDI USB-serial chip does (2 modem
 * status bytes in each packet of up to 64 bytes), take `packetHeader: 2`: the handler strips the
 * first 2 bytes of each max-packet-sized packet in place, so `data` holds only what the device's
 * UART received. Packets that carry nothing but the header (an idle FTDI sends one every few ms)
 * add nothing to the answer and do not end it. With such a device use a terminator or a length:
 * the chip forwards its receive FIFO whenever its latency timer fires, so an answer may arrive in
 * several short packets.
 *
 * Failures (the item's status; the buffer still comes back held to a `keep` waiter):
 * - the request could not be written: the failure's status (`IoTimeout`, `DeviceNotConnected`,
 *   …); `data` and `size` still hold the request, so the caller can enqueue it again;
 * - the answer did not end in time: `IoTimeout`; an abort of `item.signal` (its waiter gave up,
 *   the queue stops or closes): `Cancelled`; the device sent more than the answer, or more than
 *   the buffer holds: `UsbStatus.DataOverrun`. Then `size` says how many answer bytes did arrive
 *   (they are in `data`), and nothing is left half-read unnoticed: before the next request the
 *   handler reads and discards whatever the device still had queued (a late answer), and counts
 *   it in the item's context (see below).
 *
 * Context (when the queue's `contextSize` has room): bytes 0–3 receive the request bytes written,
 * bytes 4–7 the stale bytes discarded before the request (little-endian u32 each).
 *
 * An item of `size` 0 writes nothing and only reads an answer (e.g. a device that reports on its
 * own). `absent` is as in every ready-made handler; with `"wait"`, an item that finds the device
 * away waits (`DeviceSlot.whenOpen`, as in the other ready-made handlers) until it is back, then
 * does its whole exchange; an exchange cut by an unplug after its request went out fails with
 * `DeviceNotConnected` instead (a request is not repeated blindly to a device that was reset).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { libusbPath, Status, ThreadedBufferQueue, usbWorkerPermissions } from "../../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 4, bufferSize: 256, contextSize: 8 },
 *   handlers: new URL("./request_response.ts", import.meta.url),
 *   handlerOptions: {
 *     vendorId: 0xfffe, productId: 1, outEndpoint: 0x02, inEndpoint: 0x81,
 *     answerEnd: { terminator: 0x0a }, packetHeader: 2, // an FTDI-style device, line answers
 *     absent: "fail-items", libusbPath: libusbPath(),
 *   },
 *   permissions: usbWorkerPermissions(),
 * });
 * await queue.start(); // no such device here: with "fail-items" each item fails instead
 * const request = queue.fetch()!;
 * request.size = new TextEncoder().encodeInto("*IDN?\n", request.data).written;
 * assert.equal(await queue.enqueueAndWait(request, { keep: true }), Status.DeviceNotConnected);
 * assert.equal(request.size, 6); // held again, the request intact: enqueue it again or reuse it
 * queue.reuse(request);
 * ```
 *
 * @module
 */

import {
  defineWorkHandlers,
  type WorkContext,
  type WorkHandlers,
  type WorkItem,
  type WorkResult,
} from "../../src/handlers.ts";
import { BufferDisposition, Status, type StatusCode, statusOfError } from "../../src/status.ts";
import type { UsbDevice } from "../device.ts";
import { LibusbError, UsbError } from "../errors.ts";
import { type AnswerEnd, drainStale, readAnswer, type ReadIn } from "./answer.ts";
import { recordWritten } from "./bulk_writer.ts";
import { DEFAULT_INTERFACE, type DeviceSessionOptions, DeviceSlot } from "./device_session.ts";

/** The OUT endpoint requests go to unless the options name another. */
export const DEFAULT_REQUEST_ENDPOINT = 0x01;
/** The IN endpoint answers come from unless the options name another. */
export const DEFAULT_ANSWER_ENDPOINT = 0x81;
/** Milliseconds for a request's transfer, and again for its whole answer, by default. */
export const DEFAULT_EXCHANGE_TIMEOUT = 1000;

export type { AnswerEnd };

/**
 * The `handlerOptions` of the request/response handler: which device (see `DeviceSessionOptions`,
 * shared by every ready-made USB handler), its endpoints, and how its answers look. Checked when
 * the loop starts: anything wrong, including an unknown key, makes `start()` reject with a
 * `UsbError` `LIBUSB_ERROR_INVALID_PARAM` that says what.
 *
 * @example
 * ```ts
 * import type { RequestResponseOptions } from "./request_response.ts";
 * const ftdi: RequestResponseOptions = {
 *   vendorId: 0x0403, productId: 0x6001, outEndpoint: 0x02, inEndpoint: 0x81,
 *   answerEnd: { terminator: 0x0a }, packetHeader: 2, timeout: 500,
 * };
 * ```
 */
export interface RequestResponseOptions extends DeviceSessionOptions {
  /** The OUT endpoint address (bit 7 clear). Default {@linkcode DEFAULT_REQUEST_ENDPOINT}. */
  readonly outEndpoint?: number;
  /** The IN endpoint address (bit 7 set). Default {@linkcode DEFAULT_ANSWER_ENDPOINT}. */
  readonly inEndpoint?: number;
  /**
   * Milliseconds (1..2^31-1) for the request's transfer, and again for the whole answer (from the
   * request's end to the answer's last byte). Default {@linkcode DEFAULT_EXCHANGE_TIMEOUT}.
   */
  readonly timeout?: number;
  /** Where an answer ends. Default `"short-packet"`. A `length` may not exceed the buffer. */
  readonly answerEnd?: AnswerEnd;
  /**
   * Bytes at the start of every IN packet that are not answer (0..packet size - 1): stripped in
   * place. FTDI chips: 2 (their modem status). Default 0.
   */
  readonly packetHeader?: number;
}

/**
 * The checked, defaulted options of one exchange.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exchangePlan, type ExchangePlan } from "./request_response.ts";
 * const plan: ExchangePlan = exchangePlan({ vendorId: 1, productId: 2 });
 * assert.deepEqual(plan, {
 *   outEndpoint: 0x01, inEndpoint: 0x81, timeout: 1000, answerEnd: "short-packet", packetHeader: 0,
 * });
 * ```
 */
export interface ExchangePlan {
  /** The OUT endpoint address. */
  readonly outEndpoint: number;
  /** The IN endpoint address. */
  readonly inEndpoint: number;
  /** Milliseconds for the request, and for the answer. */
  readonly timeout: number;
  /** Where an answer ends. */
  readonly answerEnd: AnswerEnd;
  /** Bytes stripped from the start of every IN packet. */
  readonly packetHeader: number;
}

const KNOWN_OPTIONS = new Set([
  "vendorId",
  "productId",
  "serialNumber",
  "interface",
  "libusbPath",
  "absent",
  "outEndpoint",
  "inEndpoint",
  "timeout",
  "answerEnd",
  "packetHeader",
]);
const ABSENT_MODES = ["fail-start", "fail-items", "wait"];
const MAX_INT32 = 0x7fffffff;

function invalid(detail: string): UsbError {
  return new UsbError(LibusbError.INVALID_PARAM, { operation: "request/response options", detail });
}

function integer(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(`${name} must be an integer in ${min}..${max}, got ${String(value)}`);
  }
  return value;
}

/** An endpoint address with the direction bit `direction` (0x80 IN, 0 OUT), not endpoint 0. */
function endpoint(value: unknown, name: string, direction: number): number {
  const range = direction
    ? "an IN address, bit 7 set (0x81..0x8f)"
    : "an OUT address, bit 7 clear (0x01..0x0f)";
  if (
    typeof value !== "number" || !Number.isInteger(value) || (value & ~0x8f) !== 0 ||
    (value & 0x80) !== direction || (value & 0x0f) === 0
  ) {
    throw invalid(`${name} must be ${range}, got ${String(value)}`);
  }
  return value;
}

function answerEndOf(value: unknown): AnswerEnd {
  if (value === undefined || value === "short-packet") return "short-packet";
  const shape = 'answerEnd must be "short-packet", { terminator: byte } or { length: bytes }';
  if (typeof value !== "object" || value === null) throw invalid(`${shape}, got ${String(value)}`);
  const keys = Object.keys(value);
  if (keys.length === 1 && keys[0] === "terminator") {
    return {
      terminator: integer((value as { terminator: unknown }).terminator, "terminator", 0, 0xff),
    };
  }
  if (keys.length === 1 && keys[0] === "length") {
    return { length: integer((value as { length: unknown }).length, "length", 1, MAX_INT32) };
  }
  throw invalid(`${shape}, got one with keys ${JSON.stringify(keys)}`);
}

const plans = new WeakMap<object, ExchangePlan>();

/**
 * Checks the handler's options and fills in the defaults; throws a `UsbError`
 * `LIBUSB_ERROR_INVALID_PARAM` (status `InvalidParameter`) that names what is wrong.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exchangePlan } from "./request_response.ts";
 * assert.equal(exchangePlan({ vendorId: 1, productId: 2, packetHeader: 2 }).packetHeader, 2);
 * assert.throws(() => exchangePlan({ vendorId: 1, productId: 2, inEndpoint: 0x02 }), /bit 7 set/);
 * assert.throws(() => exchangePlan({ vendorId: 1, productId: 2, endpoint: 2 }), /unknown option "endpoint"/);
 * ```
 */
export function exchangePlan(options: unknown): ExchangePlan {
  if (typeof options !== "object" || options === null) {
    throw invalid(`handlerOptions must be an object, got ${String(options)}`);
  }
  const known = plans.get(options);
  if (known) return known;
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) {
      throw invalid(`unknown option "${key}"; known: ${[...KNOWN_OPTIONS].join(", ")}`);
    }
  }
  const o = options as Record<string, unknown>;
  integer(o.vendorId, "vendorId", 0, 0xffff);
  integer(o.productId, "productId", 0, 0xffff);
  if (o.serialNumber !== undefined && typeof o.serialNumber !== "string") {
    throw invalid(`serialNumber must be a string, got ${String(o.serialNumber)}`);
  }
  if (o.interface !== undefined) integer(o.interface, "interface", 0, 0xff);
  if (o.libusbPath !== undefined && (typeof o.libusbPath !== "string" || o.libusbPath === "")) {
    throw invalid(`libusbPath must be a non-empty string, got ${String(o.libusbPath)}`);
  }
  if (o.absent !== undefined && !ABSENT_MODES.includes(o.absent as string)) {
    throw invalid(`absent must be one of ${ABSENT_MODES.join(", ")}, got ${String(o.absent)}`);
  }
  const outEndpoint = endpoint(o.outEndpoint ?? DEFAULT_REQUEST_ENDPOINT, "outEndpoint", 0x00);
  const inEndpoint = endpoint(o.inEndpoint ?? DEFAULT_ANSWER_ENDPOINT, "inEndpoint", 0x80);
  const plan: ExchangePlan = {
    outEndpoint,
    inEndpoint,
    timeout: integer(o.timeout ?? DEFAULT_EXCHANGE_TIMEOUT, "timeout", 1, MAX_INT32),
    answerEnd: answerEndOf(o.answerEnd),
    packetHeader: integer(o.packetHeader ?? 0, "packetHeader", 0, 1023),
  };
  plans.set(options, plan);
  return plan;
}

/**
 * The most bytes an item's buffer holds (the queue's `bufferSize`, `item.capacity`), however small
 * its `size` is now; for a hand-made item without `capacity` (a test's), `data.length`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { itemCapacity } from "./request_response.ts";
 * assert.equal(itemCapacity({ data: new Uint8Array(4), capacity: 48 }), 48);
 * assert.equal(itemCapacity({ data: new Uint8Array(4) }), 4);
 * ```
 */
export function itemCapacity(item: Pick<WorkItem, "data" | "capacity">): number {
  return item.capacity ?? item.data.length;
}

/** The open device, its IN packet size, and whether stale bytes may wait in it. */
interface DeviceLink {
  readonly device: UsbDevice;
  readonly packetSize: number;
  /** True after an exchange that ended badly, and on each open: drain before the next request. */
  stale: boolean;
}

function hex(value: number): string {
  return `0x${value.toString(16).padStart(2, "0")}`;
}

/** Checks the endpoints against the claimed interface's descriptors (on each open). */
function linkTo(device: UsbDevice, options: RequestResponseOptions): DeviceLink {
  const plan = exchangePlan(options);
  const number = options.interface ?? DEFAULT_INTERFACE;
  const endpoints = device.configuration?.interfaces
    .find((i) => i.interfaceNumber === number)?.alternate.endpoints ?? [];
  const address = (e: { endpointNumber: number; direction: string }) =>
    e.endpointNumber | (e.direction === "in" ? 0x80 : 0);
  const find = (wanted: number, role: string) => {
    const found = endpoints.find((e) => address(e) === wanted && e.type !== "isochronous");
    if (found) return found;
    const has = endpoints.map((e) => `${hex(address(e))} ${e.type}`).join(", ") || "none";
    throw new UsbError(LibusbError.INVALID_PARAM, {
      operation: "request/response open",
      detail: `${role} ${hex(wanted)} is no bulk or interrupt endpoint of interface ${number} ` +
        `(it has: ${has})`,
    });
  };
  find(plan.outEndpoint, "outEndpoint");
  const { packetSize } = find(plan.inEndpoint, "inEndpoint");
  if (packetSize < 1) throw invalid(`inEndpoint ${hex(plan.inEndpoint)} has a 0-byte max packet`);
  if (plan.packetHeader >= packetSize) {
    throw invalid(
      `packetHeader ${plan.packetHeader} leaves nothing of a ${packetSize}-byte packet`,
    );
  }
  return { device, packetSize, stale: true };
}

function completed(status: StatusCode): WorkResult {
  return { disposition: BufferDisposition.WorkComplete, status };
}

function recordDropped(context: Uint8Array, dropped: number): void {
  if (context.byteLength >= 8) {
    new DataView(context.buffer, context.byteOffset, 8).setUint32(4, dropped, true);
  }
}

const slot = new DeviceSlot<RequestResponseOptions, DeviceLink>(linkTo);

/** What became of one exchange: done (a result), or cut by an unplug before its request went out. */
type Outcome = WorkResult | "unplugged";

/** One request and its answer on an open device. */
function exchange(
  item: WorkItem,
  options: RequestResponseOptions,
  plan: ExchangePlan,
  link: DeviceLink,
): Outcome {
  const { device, packetSize } = link;
  const { signal } = item;
  const read: ReadIn = (into, timeout) =>
    device.transferIn(plan.inEndpoint, into, { timeout, signal }).length;
  const capacity = itemCapacity(item);
  let written = 0;
  let dropped = 0;
  let phase: "drain" | "request" = "drain";
  try {
    if (link.stale) {
      // Read aside: the request is in the item's memory.
      const scratch = new Uint8Array(packetSize * 8);
      dropped = drainStale(read, scratch, packetSize, plan.packetHeader, plan.timeout);
      link.stale = false;
    }
    phase = "request";
    if (item.size > 0) {
      written = device.transferOut(plan.outEndpoint, item.data, { timeout: plan.timeout, signal });
    }
  } catch (error) {
    link.stale = true;
    const sent = phase === "request" && error instanceof UsbError ? error.transferred ?? 0 : 0;
    recordWritten(item.context, sent);
    recordDropped(item.context, dropped);
    const gone = slot.failed(options, error);
    if (gone && options.absent === "wait" && sent === 0) return "unplugged";
    return completed(statusOfError(error));
  }
  recordWritten(item.context, written);
  recordDropped(item.context, dropped);
  const room = new Uint8Array(item.data.buffer, item.data.byteOffset, capacity);
  const answer = readAnswer(read, room, { ...plan, packetSize }, plan.timeout);
  item.size = answer.length;
  if (answer.error === undefined) return completed(Status.Success);
  link.stale = true;
  slot.failed(options, answer.error);
  return completed(statusOfError(answer.error));
}

/** `absent: "wait"`: waits until the device is back (`DeviceSlot.whenOpen`), then exchanges. */
async function exchangeWhenBack(
  item: WorkItem,
  options: RequestResponseOptions,
  plan: ExchangePlan,
): Promise<WorkResult> {
  for (;;) {
    let link: DeviceLink;
    try {
      link = await slot.whenOpen(options, item.signal);
    } catch (error) {
      return completed(item.signal.aborted ? Status.Cancelled : statusOfError(error));
    }
    const outcome = exchange(item, options, plan, link);
    if (outcome !== "unplugged") return outcome;
  }
}

function work(
  item: WorkItem,
  ctx: WorkContext<RequestResponseOptions>,
): WorkResult | Promise<WorkResult> {
  const options = ctx.options;
  const plan = exchangePlan(options);
  let link: DeviceLink;
  try {
    link = slot.get(options);
  } catch (error) {
    slot.failed(options, error);
    const away = statusOfError(error) === Status.DeviceNotConnected;
    if (away && options.absent === "wait") return exchangeWhenBack(item, options, plan);
    return completed(statusOfError(error));
  }
  const outcome = exchange(item, options, plan, link);
  return outcome === "unplugged" ? exchangeWhenBack(item, options, plan) : outcome;
}

/**
 * The handler module's callbacks (its default export), for a queue's `handlers`: `pre` checks the
 * options and opens the device, `work` does one exchange, `post` closes the device.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import handlers from "./request_response.ts";
 * const ctx = { options: { vendorId: 1, productId: 2, timeout: -1 }, signal: AbortSignal.abort(), workCompleted() {} };
 * await assert.rejects(async () => await handlers.pre!(ctx), /timeout must be an integer/);
 * ```
 */
const handlers: WorkHandlers<RequestResponseOptions> = defineWorkHandlers<
  RequestResponseOptions
>({
  pre(ctx) {
    exchangePlan(ctx.options);
    slot.open(ctx.options);
  },
  work,
  post() {
    slot.close();
  },
});

export default handlers;
