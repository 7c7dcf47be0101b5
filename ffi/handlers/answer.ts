/**
 * Reading a device's answer into a buffer: where it ends ({@linkcode AnswerEnd}), the status
 * bytes some devices put in every packet ({@linkcode stripPacketHeaders}), one whole answer
 * ({@linkcode readAnswer}) and what a device still had queued ({@linkcode drainStale}). Pure
 * functions over a `ReadIn`, so they are tested without a device; the request/response handler
 * (`request_response.ts`) runs them on a `UsbDevice`.
 *
 * @module
 */

import { LibusbError, UsbError } from "../errors.ts";

/**
 * Where an answer ends: `"short-packet"` (the first short packet that brings answer bytes; a
 * zero-length packet is an empty answer unless `packetHeader` is set), `{ terminator }` (the first
 * byte of that value, included in the answer) or `{ length }` (exactly that many bytes).
 *
 * @example
 * ```ts
 * import type { AnswerEnd } from "./answer.ts";
 * const line: AnswerEnd = { terminator: 0x0a };
 * const status: AnswerEnd = { length: 4 };
 * const oneTransfer: AnswerEnd = "short-packet";
 * ```
 */
export type AnswerEnd = "short-packet" | { readonly terminator: number } | {
  readonly length: number;
};

/**
 * Milliseconds one read may wait for stale bytes before the next request: a device with nothing
 * queued NAKs, and this is how long the handler lets it before it writes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DRAIN_QUIET_MS } from "./answer.ts";
 * assert.ok(DRAIN_QUIET_MS < 100); // paid only after a failed or aborted exchange, and on open
 * ```
 */
export const DRAIN_QUIET_MS = 20;
/**
 * Strips the first `header` bytes of each `packetSize`-byte packet from the `count` bytes a
 * transfer left at the start of `bytes` (every packet full but the last, as USB delivers them),
 * moving the rest to the front in place; returns how many bytes remain.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { stripPacketHeaders } from "./answer.ts";
 * // two 4-byte packets and a short one, each behind a 2-byte header
 * const bytes = new Uint8Array([0xb1, 0, 1, 2, 0xb1, 0, 3, 4, 0xb1, 0, 5]);
 * assert.equal(stripPacketHeaders(bytes, bytes.length, 4, 2), 5);
 * assert.deepEqual([...bytes.subarray(0, 5)], [1, 2, 3, 4, 5]);
 * ```
 */
export function stripPacketHeaders(
  bytes: Uint8Array,
  count: number,
  packetSize: number,
  header: number,
): number {
  if (header === 0) return count;
  let kept = 0;
  for (let packet = 0; packet < count; packet += packetSize) {
    const from = packet + header;
    const to = Math.min(packet + packetSize, count);
    if (to > from) {
      bytes.copyWithin(kept, from, to);
      kept += to - from;
    }
  }
  return kept;
}

/**
 * One IN transfer: fills `into` (up to its length) within `timeout` ms and returns the bytes
 * moved; throws a `UsbError` on failure, whose `transferred` says what landed in `into` first.
 *
 * @example
 * ```ts
 * import type { ReadIn } from "./answer.ts";
 * const silent: ReadIn = () => 0; // a zero-length packet, every time
 * ```
 */
export type ReadIn = (into: Uint8Array, timeout: number) => number;

/**
 * How a device frames its answers: where they end, its IN endpoint's max packet size and the
 * header bytes in each packet.
 *
 * @example
 * ```ts
 * import type { AnswerFormat } from "./answer.ts";
 * const ftdiLines: AnswerFormat = { answerEnd: { terminator: 0x0a }, packetSize: 64, packetHeader: 2 };
 * ```
 */
export interface AnswerFormat {
  /** Where an answer ends. */
  readonly answerEnd: AnswerEnd;
  /** The IN endpoint's `wMaxPacketSize`. */
  readonly packetSize: number;
  /** Bytes stripped from the start of every packet. */
  readonly packetHeader: number;
}

/**
 * What {@linkcode readAnswer} read: the answer's length and, when it is not whole, why.
 *
 * @example
 * ```ts
 * import type { Answer } from "./answer.ts";
 * const ok: Answer = { length: 12 };
 * ```
 */
export interface Answer {
  /** Bytes at the start of the room: the answer, or with `error` what arrived before it. */
  readonly length: number;
  /** Why the answer is cut short or suspect (a `UsbError`); absent when it is whole. */
  readonly error?: unknown;
}

function timedOut(error: unknown): boolean {
  return error instanceof UsbError && error.code === LibusbError.TIMEOUT;
}

function movedInto(error: unknown, room: number): number {
  const moved = error instanceof UsbError ? error.transferred ?? 0 : 0;
  return Math.max(0, Math.min(moved, room));
}

function answerError(code: number, detail: string, length: number): UsbError {
  return new UsbError(code, { operation: "reading the answer", detail, transferred: length });
}

/**
 * Reads one answer into `room` (from its start) through `read`, stripping packet headers and
 * reading on until the answer ends as `format` says or `timeout` ms have passed. Never throws: a
 * failure comes back as `error` with the bytes that did arrive (`LIBUSB_ERROR_TIMEOUT` when the
 * answer did not end in time, `LIBUSB_ERROR_OVERFLOW` when the device sent more than the answer
 * or than `room` holds, else the transfer's own error, e.g. `LIBUSB_ERROR_INTERRUPTED` on abort).
 * Reads are a whole number of packets long, so no packet can overflow them; only when `room` has
 * less than a packet left is one packet read aside and copied in. A transfer ends at a short
 * packet or when its buffer is full, not after a full packet, so with a terminator each read is
 * one packet (its end is seen as soon as it arrives), with a length just the packets still due,
 * and at a short packet one read takes the whole answer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readAnswer, type ReadIn } from "./answer.ts";
 * // An FTDI-like device: 8-byte packets with a 2-byte header; the line arrives in two transfers.
 * const transfers = [[0xb1, 0, ...new TextEncoder().encode("HEL")], [0xb1, 0, 76, 79, 10]];
 * const read: ReadIn = (into) => {
 *   const next = transfers.shift() ?? [];
 *   into.set(next);
 *   return next.length;
 * };
 * const room = new Uint8Array(64);
 * const answer = readAnswer(read, room, { answerEnd: { terminator: 10 }, packetSize: 8, packetHeader: 2 }, 1000);
 * assert.deepEqual(answer, { length: 6 });
 * assert.equal(new TextDecoder().decode(room.subarray(0, 6)), "HELLO\n");
 * ```
 */
export function readAnswer(
  read: ReadIn,
  room: Uint8Array,
  format: AnswerFormat,
  timeout: number,
  clock: () => number = () => performance.now(),
): Answer {
  const { answerEnd, packetSize, packetHeader } = format;
  const deadline = clock() + timeout;
  const length = typeof answerEnd === "object" && "length" in answerEnd
    ? answerEnd.length
    : undefined;
  const terminator = typeof answerEnd === "object" && "terminator" in answerEnd
    ? answerEnd.terminator
    : undefined;
  if (length !== undefined && length > room.length) {
    return {
      length: 0,
      error: new UsbError(LibusbError.INVALID_PARAM, {
        operation: "reading the answer",
        detail: `answerEnd.length ${length} is larger than the buffer (${room.length} bytes)`,
      }),
    };
  }
  let got = 0;
  let scanned = 0;
  let aside: Uint8Array | undefined;
  for (;;) {
    const left = Math.ceil(deadline - clock());
    if (left <= 0) {
      return {
        length: got,
        error: answerError(
          LibusbError.TIMEOUT,
          `the answer did not end within ${timeout} ms (${got} bytes so far)`,
          got,
        ),
      };
    }
    const space = room.length - got;
    let packets = Math.floor(space / packetSize);
    // A transfer goes on after a full packet, so one that ends mid-read would wait for its
    // timeout: read only the packets a length still needs, and a packet at a time for a
    // terminator.
    if (length !== undefined) {
      packets = Math.min(packets, Math.ceil((length - got) / (packetSize - packetHeader)));
    } else if (terminator !== undefined) {
      packets = Math.min(packets, 1);
    }
    const into = packets > 0
      ? room.subarray(got, got + packets * packetSize)
      : (aside ??= new Uint8Array(packetSize));
    let count: number;
    let failure: unknown;
    try {
      count = Math.max(0, Math.min(read(into, left), into.length));
    } catch (error) {
      count = movedInto(error, into.length);
      failure = error;
    }
    const short = failure === undefined && count < into.length;
    const payload = stripPacketHeaders(into, count, packetSize, packetHeader);
    const added = Math.min(payload, space);
    if (into === aside) room.set(aside.subarray(0, added), got);
    got += added;
    const lost = payload - added;
    if (failure !== undefined && !timedOut(failure)) return { length: got, error: failure };
    let end: number | undefined;
    if (terminator !== undefined) {
      const at = room.subarray(scanned, got).indexOf(terminator);
      if (at >= 0) end = scanned + at + 1;
      scanned = got;
    } else if (length !== undefined) {
      if (got >= length) end = length;
    } else if (short && (packetHeader === 0 || got > 0)) {
      end = got;
    }
    if (end !== undefined && got + lost > end) {
      const extra = got + lost - end;
      return {
        length: got,
        error: answerError(
          LibusbError.OVERFLOW,
          `the device sent ${extra} bytes after the ${end}-byte answer` +
            (lost > 0 ? ` (${lost} of them did not fit in the buffer and were dropped)` : ""),
          got,
        ),
      };
    }
    if (end !== undefined) return { length: end };
    if (got === room.length) {
      return {
        length: got,
        error: answerError(
          LibusbError.OVERFLOW,
          `the answer does not fit in the ${room.length}-byte buffer` +
            (lost > 0 ? ` (${lost} more bytes were dropped)` : ""),
          got,
        ),
      };
    }
  }
}

/**
 * Reads and drops whatever the device still has queued (a late answer to an exchange that failed
 * or was aborted, or bytes from before the device was opened), until a read of
 * {@linkcode DRAIN_QUIET_MS} ms brings nothing or `budget` ms have passed. Returns the bytes
 * dropped (after header stripping); throws what a read throws other than a timeout.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { drainStale, type ReadIn } from "./answer.ts";
 * const queued = [[0xb1, 0, 65, 66], [0xb1, 0]]; // a late "AB", then an idle status packet
 * const read: ReadIn = (into) => {
 *   const next = queued.shift() ?? [];
 *   into.set(next);
 *   return next.length;
 * };
 * assert.equal(drainStale(read, new Uint8Array(64), 64, 2, 1000), 2);
 * assert.equal(queued.length, 0);
 * ```
 */
export function drainStale(
  read: ReadIn,
  scratch: Uint8Array,
  packetSize: number,
  packetHeader: number,
  budget: number,
  clock: () => number = () => performance.now(),
): number {
  const deadline = clock() + budget;
  let dropped = 0;
  for (;;) {
    const left = Math.ceil(deadline - clock());
    if (left <= 0) return dropped;
    let count: number;
    try {
      count = read(scratch, Math.min(DRAIN_QUIET_MS, left));
    } catch (error) {
      if (!timedOut(error)) throw error;
      count = movedInto(error, scratch.length);
    }
    const payload = stripPacketHeaders(scratch, count, packetSize, packetHeader);
    dropped += payload;
    if (payload === 0) return dropped;
  }
}
