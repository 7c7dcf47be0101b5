/**
 * One bulk or interrupt transfer, run to its end, its timeout or its signal's abort: the loop
 * every `UsbDevice.transferIn` / `transferOut` (blocking or async) goes through.
 *
 * libusb's synchronous calls cannot be cancelled from JavaScript (the cancel needs the transfer
 * pointer they keep to themselves), so a transfer with a `signal` runs in slices of at most
 * {@linkcode ABORT_SLICE_MS}: each slice is a libusb call with that timeout, and between slices the
 * signal is looked at. A slice that times out reports the bytes it moved, and the next one goes on
 * from there, so slicing loses nothing and sends nothing twice. An IN slice ends early only at a
 * short packet, exactly as one long transfer would.
 *
 * @module
 */

import { LibusbError, UsbError } from "./errors.ts";

/**
 * The longest libusb call a transfer with a `signal` makes before it looks at the signal again,
 * in milliseconds: an abort settles within about this long (plus one scheduling delay).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ABORT_SLICE_MS } from "./transfer.ts";
 * assert.ok(ABORT_SLICE_MS <= 50); // aborts settle well within the contract's 100 ms
 * ```
 */
export const ABORT_SLICE_MS = 40;

/**
 * A libusb transfer call bound to a handle and an endpoint: moves up to `length` bytes of `data`
 * within `timeout` ms, stores the count in `transferred[0]` and returns 0 or a LIBUSB_ERROR code.
 *
 * @example
 * ```ts
 * import type { TransferCall } from "./transfer.ts";
 * const instant: TransferCall = (_data, length, transferred) => (transferred[0] = length, 0);
 * ```
 */
export type TransferCall = (
  data: Uint8Array,
  length: number,
  transferred: Int32Array,
  timeout: number,
) => number;

/**
 * The same call, run off the calling thread (Deno's nonblocking FFI).
 *
 * @example
 * ```ts
 * import type { AsyncTransferCall } from "./transfer.ts";
 * const instant: AsyncTransferCall = (_data, length, transferred) =>
 *   Promise.resolve((transferred[0] = length, 0));
 * ```
 */
export type AsyncTransferCall = (
  data: Uint8Array,
  length: number,
  transferred: Int32Array,
  timeout: number,
) => Promise<number>;

/**
 * What one transfer is: its bytes (what to send, or where the reply lands), its timeout (0 for
 * none), its signal and its name for errors.
 *
 * @example
 * ```ts
 * import type { TransferPlan } from "./transfer.ts";
 * const plan: TransferPlan = {
 *   bytes: new Uint8Array(64), timeout: 1000, direction: "in", operation: "transferIn(0x81)",
 * };
 * ```
 */
export interface TransferPlan {
  /** The bytes to send (OUT) or the room for the reply (IN), used in place. */
  readonly bytes: Uint8Array;
  /** Milliseconds for the whole transfer; 0 waits forever. */
  readonly timeout: number;
  /** Aborts the transfer between slices. */
  readonly signal?: AbortSignal;
  /** Which way the bytes go: decides what a failure carries (`data` for IN). */
  readonly direction: "in" | "out";
  /** How the transfer names itself in errors, e.g. `"transferIn(0x81)"`. */
  readonly operation: string;
}

// A work handler's `item.signal` is aborted by the queue's Worker loop, which cannot run while a
// blocking transfer holds the thread. The loop hangs a check of the shared abort flag on the
// signal under this key (see src/worker_loop.ts), so blocking transfers see the abort too.
const POLL_ABORT = Symbol.for("tbq.pollAbort");

/**
 * True when the signal has aborted, asking the queue's shared memory first when the signal is an
 * `item.signal` (whose abort otherwise waits for the Worker's event loop).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { signalAborted } from "./transfer.ts";
 * const controller = new AbortController();
 * assert.equal(signalAborted(controller.signal), false);
 * controller.abort();
 * assert.equal(signalAborted(controller.signal), true);
 * ```
 */
export function signalAborted(signal: AbortSignal | undefined): boolean {
  if (!signal) return false;
  if (!signal.aborted) {
    const poll = (signal as unknown as Record<symbol, unknown>)[POLL_ABORT];
    if (typeof poll === "function") poll();
  }
  return signal.aborted;
}

function abortedError(plan: TransferPlan, moved: number): UsbError {
  return new UsbError(LibusbError.INTERRUPTED, {
    operation: plan.operation,
    detail: "aborted by its signal",
    transferred: moved,
    ...(plan.direction === "in" ? { data: plan.bytes.subarray(0, moved) } : {}),
    cause: plan.signal?.reason,
  });
}

function failedError(plan: TransferPlan, code: number, moved: number): UsbError {
  return new UsbError(code, {
    operation: plan.operation,
    transferred: moved,
    ...(plan.direction === "in" && moved > 0 ? { data: plan.bytes.subarray(0, moved) } : {}),
  });
}

/** Where a sliced transfer stands, and what its next slice is. */
class Progress {
  moved = 0;
  readonly #deadline: number;
  readonly transferred = new Int32Array(1);

  constructor(readonly plan: TransferPlan) {
    this.#deadline = plan.timeout === 0 ? Infinity : performance.now() + plan.timeout;
  }

  /** The next slice's timeout in ms (at least 1: libusb reads 0 as "forever"). */
  sliceTimeout(): number {
    if (!this.plan.signal) return this.plan.timeout;
    const left = this.#deadline - performance.now();
    return Math.max(1, Math.min(ABORT_SLICE_MS, Math.ceil(left)));
  }

  /** The bytes still to move. */
  rest(): Uint8Array {
    return this.moved === 0 ? this.plan.bytes : this.plan.bytes.subarray(this.moved);
  }

  /**
   * Takes one slice's result: the bytes moved so far when the transfer is over, `undefined` when
   * another slice should run; throws the transfer's `UsbError` when it failed.
   */
  settle(code: number): number | undefined {
    const count = this.transferred[0];
    this.moved += Math.max(0, Math.min(count, this.plan.bytes.length - this.moved));
    this.transferred[0] = 0;
    if (code === 0) return this.moved;
    if (code !== LibusbError.TIMEOUT || !this.plan.signal) {
      throw failedError(this.plan, code, this.moved);
    }
    if (this.moved === this.plan.bytes.length) return this.moved;
    if (signalAborted(this.plan.signal)) throw abortedError(this.plan, this.moved);
    if (performance.now() >= this.#deadline) throw failedError(this.plan, code, this.moved);
    return undefined;
  }

  /** Before the first slice: an already aborted signal moves nothing. */
  begin(): void {
    if (signalAborted(this.plan.signal)) throw abortedError(this.plan, 0);
  }
}

/**
 * Runs a transfer on this thread and returns the bytes moved; throws a `UsbError` when it fails
 * (`transferred` and, for IN, `data` say what moved), times out, or its signal aborts
 * (`LIBUSB_ERROR_INTERRUPTED`, status `Cancelled`, `cause` the signal's reason).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { runTransfer } from "./transfer.ts";
 * const sink: number[] = [];
 * const moved = runTransfer((data, length, transferred) => {
 *   sink.push(...data.subarray(0, length));
 *   transferred[0] = length;
 *   return 0;
 * }, { bytes: new Uint8Array([1, 2, 3]), timeout: 100, direction: "out", operation: "out" });
 * assert.equal(moved, 3);
 * assert.deepEqual(sink, [1, 2, 3]);
 * ```
 */
export function runTransfer(call: TransferCall, plan: TransferPlan): number {
  const progress = new Progress(plan);
  progress.begin();
  for (;;) {
    const rest = progress.rest();
    const code = call(rest, rest.length, progress.transferred, progress.sliceTimeout());
    const done = progress.settle(code);
    if (done !== undefined) return done;
  }
}

/**
 * Like {@linkcode runTransfer}, with each slice off the calling thread, so the signal can abort
 * from this thread's own timers and events.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { runTransferAsync } from "./transfer.ts";
 * const controller = new AbortController();
 * setTimeout(() => controller.abort(new Error("enough")), 30);
 * const nothing = (_d: Uint8Array, _l: number, _t: Int32Array, timeout: number) =>
 *   new Promise<number>((resolve) => setTimeout(() => resolve(-7), timeout)); // NAKs: timeout
 * await assert.rejects(
 *   runTransferAsync(nothing, {
 *     bytes: new Uint8Array(8), timeout: 0, signal: controller.signal, direction: "in", operation: "in",
 *   }),
 *   { name: "LIBUSB_ERROR_INTERRUPTED", transferred: 0 },
 * );
 * ```
 */
export async function runTransferAsync(
  call: AsyncTransferCall,
  plan: TransferPlan,
): Promise<number> {
  const progress = new Progress(plan);
  progress.begin();
  for (;;) {
    const rest = progress.rest();
    const code = await call(rest, rest.length, progress.transferred, progress.sliceTimeout());
    const done = progress.settle(code);
    if (done !== undefined) return done;
  }
}
