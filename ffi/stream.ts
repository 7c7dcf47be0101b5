/**
 * Streaming reads from an IN endpoint with several transfers in flight: {@linkcode openInStream}
 * (like node-usb's `startPoll` or nusb's transfer queue).
 *
 * This uses libusb's asynchronous API, whose completion callback is a `Deno.UnsafeCallback` and
 * whose `struct libusb_transfer` is written through `Deno.UnsafePointerView`: Deno allows neither
 * under a path-scoped ffi grant (`--allow-ffi=<libusb>`, or a Worker given
 * `usbWorkerPermissions()`), so there the stream refuses to open with a `UsbError`
 * (`LIBUSB_ERROR_NOT_SUPPORTED`). It is an opt-in: grant unscoped ffi (`--allow-ffi`, or
 * `usbWorkerPermissions({ ffi: "unscoped" })`), which lets that code load any library and touch
 * any memory of the process. Without it, `transferIn` / `transferInAsync` read one transfer at a
 * time.
 *
 * libusb's events are handled on the reading thread, inside `read()` (the blocking
 * `libusb_handle_events_timeout_completed`, in slices of at most 20 ms), so completion callbacks
 * are plain calls on that thread. The alternative, event handling on Deno's thread pool with a
 * `threadSafe` callback, was measured and dropped: Deno blocks the libusb thread until the JS
 * thread has run each callback (a thread hop per transfer: ~29 µs on a 2-core host; on the rig's
 * one vCPU it read at 0.3x (usb-storage) and 0.5x (FTDI) of one transfer at a time), and a
 * synchronous libusb call on the JS thread while a callback waits would deadlock.
 *
 * @module
 */

import { DEFAULT_TIMEOUT, type UsbDevice, usbDeviceInternals } from "./device.ts";
import { LibusbError, UsbError } from "./errors.ts";
import type { LibusbSymbols } from "./symbols.ts";

/**
 * Byte offsets of the fields of `struct libusb_transfer` on 64-bit platforms (libusb.h, 1.0.x):
 * what the stream writes before `libusb_submit_transfer` and reads in the completion callback.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TRANSFER_LAYOUT } from "./stream.ts";
 * assert.equal(TRANSFER_LAYOUT.buffer, 48);
 * assert.equal(TRANSFER_LAYOUT.size, 64); // up to the iso packet descriptors
 * ```
 */
export const TRANSFER_LAYOUT = {
  /** `libusb_device_handle *dev_handle`. */
  devHandle: 0,
  /** `uint8_t flags` (LIBUSB_TRANSFER_SHORT_NOT_OK …; the stream sets none). */
  flags: 8,
  /** `unsigned char endpoint`. */
  endpoint: 9,
  /** `unsigned char type` (2 bulk, 3 interrupt). */
  type: 10,
  /** `unsigned int timeout`, milliseconds. */
  timeout: 12,
  /** `enum libusb_transfer_status status`, written by libusb on completion. */
  status: 16,
  /** `int length`. */
  length: 20,
  /** `int actual_length`, written by libusb on completion. */
  actualLength: 24,
  /** `libusb_transfer_cb_fn callback`. */
  callback: 32,
  /** `void *user_data`. */
  userData: 40,
  /** `unsigned char *buffer`. */
  buffer: 48,
  /** `int num_iso_packets` (0 for bulk and interrupt; `libusb_alloc_transfer` zeroes it). */
  numIsoPackets: 56,
  /** Bytes up to the flexible `iso_packet_desc` array. */
  size: 64,
} as const;

/** `enum libusb_transfer_status`. */
const TransferStatus = {
  Completed: 0,
  Error: 1,
  TimedOut: 2,
  Cancelled: 3,
  Stall: 4,
  NoDevice: 5,
  Overflow: 6,
} as const;

/** The libusb error a failed transfer status stands for. */
const STATUS_ERRORS: Readonly<Record<number, number>> = {
  [TransferStatus.Error]: LibusbError.IO,
  [TransferStatus.TimedOut]: LibusbError.TIMEOUT,
  [TransferStatus.Cancelled]: LibusbError.INTERRUPTED,
  [TransferStatus.Stall]: LibusbError.PIPE,
  [TransferStatus.NoDevice]: LibusbError.NO_DEVICE,
  [TransferStatus.Overflow]: LibusbError.OVERFLOW,
};

const TRANSFER_TYPES = { bulk: 2, interrupt: 3 } as const;
const MAX_TRANSFERS = 256;
const MAX_LENGTH = 0x7fffffff;
/** Longest `read()` blocks this thread in one libusb call, so aborts and timers get in. */
const SLICE_MS = 20;
/** While data keeps coming, `read()` still lets other tasks run this often. */
const YIELD_EVERY_MS = 20;

/**
 * Options of {@linkcode openInStream}.
 *
 * @example
 * ```ts
 * import type { InStreamOptions } from "./stream.ts";
 * const options: InStreamOptions = { transfers: 8, size: 65536, length: 8 << 20, timeout: 2000 };
 * ```
 */
export interface InStreamOptions {
  /** Transfers kept in flight (1..256). Default 4. */
  readonly transfers?: number;
  /**
   * Bytes per transfer (1..2^31-1), hence the most one chunk holds. Ask for a multiple of the
   * endpoint's max packet size, or a larger packet overflows. Default 16384.
   */
  readonly size?: number;
  /**
   * Total bytes to ask the device for; once they are requested no more transfers are submitted,
   * and the stream ends after the last one comes back (the last transfer is shortened to fit).
   * Default: no end (until `close()`, an abort or a failure). Give it whenever something else
   * follows on the endpoint (e.g. a mass-storage CSW), or a spare transfer in flight swallows it.
   */
  readonly length?: number;
  /** Milliseconds each transfer may wait for data; 0 waits forever. Default 5000. */
  readonly timeout?: number;
  /**
   * Cancels the transfers in flight; what they had received is still delivered, then `read()`
   * rejects with the signal's reason.
   */
  readonly signal?: AbortSignal;
  /** The transfer type; default: the endpoint's type in the descriptors (bulk when not found). */
  readonly type?: "bulk" | "interrupt";
  /**
   * Read into this memory (e.g. a queue item's `data`) instead of a new buffer per transfer: no
   * allocation and no copy. Each transfer gets the next `size` bytes of it, so chunks are views on
   * it, in order (a short packet leaves the rest of its slot unwritten: see each chunk's
   * `byteOffset`). `length` defaults to, and may not exceed, its length. Leave it alone (no
   * resize, transfer or writes) until the stream has ended or is closed; it stays referenced
   * until then. Not a resizable `ArrayBuffer`.
   */
  readonly into?: Uint8Array;
}

/** The libusb functions a stream calls. */
type StreamSymbols = Pick<
  LibusbSymbols,
  | "libusb_alloc_transfer"
  | "libusb_free_transfer"
  | "libusb_submit_transfer"
  | "libusb_cancel_transfer"
  | "libusb_handle_events_timeout_completed"
>;

const CALLBACK = { parameters: ["usize"], result: "void" } as const;
type TransferCallback = Deno.UnsafeCallback<typeof CALLBACK>;

/** One `struct libusb_transfer` and what it holds while libusb owns it. */
interface Slot {
  readonly address: bigint;
  /** The struct's 64 bytes, written in place. */
  readonly fields: DataView;
  /** The buffer libusb writes into: referenced here until the transfer comes back. */
  buffer: Uint8Array | null;
  /** Sequence number of the submission in flight (chunks are delivered in this order). */
  seq: number;
  flying: boolean;
}

/** A submission that came back (or failed to go out): its status and the bytes it received. */
interface Outcome {
  readonly status: number;
  readonly data: Uint8Array;
  /** Set when `libusb_submit_transfer` itself refused it. */
  readonly error?: UsbError;
}

function hex(value: number): string {
  return `0x${value.toString(16).padStart(2, "0")}`;
}

function address(pointer: Deno.PointerValue): bigint {
  return BigInt(Deno.UnsafePointer.value(pointer));
}

function checkInteger(
  value: unknown,
  min: number,
  max: number,
  what: string,
  operation: string,
): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new UsbError(LibusbError.INVALID_PARAM, {
      operation,
      detail: `${what} must be an integer in ${min}..${max}, got ${String(value)}`,
    });
  }
  return value;
}

/** A macrotask turn: lets timers, messages and abort events in. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** The endpoint's type from the device's descriptors, when it is there. */
function endpointType(device: UsbDevice, endpoint: number): "bulk" | "interrupt" {
  try {
    for (const configuration of device.configurations) {
      for (const { alternates } of configuration.interfaces) {
        for (const { endpoints } of alternates) {
          const found = endpoints.find((e) =>
            e.direction === "in" && e.endpointNumber === (endpoint & 0x0f)
          );
          if (found) return found.type === "interrupt" ? "interrupt" : "bulk";
        }
      }
    }
  } catch {
    // Descriptors unreadable: bulk, which Linux also accepts on interrupt endpoints.
  }
  return "bulk";
}

/**
 * Streams with transfers libusb may still call back for: held here so that neither the callback
 * nor a buffer libusb writes into can be collected, even if the user drops the stream.
 */
const live = new Set<UsbInStream>();

/**
 * What {@linkcode openInStream} hands the stream's constructor (checked already).
 *
 * @ignore
 */
export interface InStreamSetup {
  readonly transfers: number;
  readonly size: number;
  readonly length: number;
  readonly timeout: number;
  readonly type: "bulk" | "interrupt";
  readonly signal?: AbortSignal;
  readonly into?: Uint8Array;
  /** The completion callback, made before anything else (that is where Deno refuses). */
  readonly callback: TransferCallback;
  /** Routes the callback's calls to the stream. */
  readonly bind: (complete: (transfer: bigint) => void) => void;
}

/**
 * Reads an IN endpoint with several transfers in flight, so the device is never left without a
 * request while the host handles the previous one. Chunks come in order, one per transfer, each a
 * new `Uint8Array` you own (a short packet makes a shorter chunk, a zero-length one an empty
 * chunk). Made by
 * {@linkcode openInStream}; read it with `for await`, or `read()`.
 *
 * `close()` (also `await using`, and leaving a `for await` early) cancels what is in flight and
 * waits until libusb has given every transfer back before freeing it. The device's `close()`
 * waits for the stream to be closed or to end, so always close it (a stream dropped unclosed is
 * kept alive, never freed under libusb).
 *
 * Transfers come back only while `read()` or `close()` runs libusb's event handling (or a
 * synchronous transfer on the same `Libusb` does): `read()` blocks its thread up to 20 ms at a time
 * while no chunk is ready, letting other tasks run in between (and at least every 20 ms while data
 * flows), and a transfer that came back is resubmitted at once. So keep reading: a consumer that
 * pauses leaves the device without requests once every transfer is full. The synchronous
 * `transferOut` / `transferIn` on the same device go on working meanwhile (e.g. commands on an OUT
 * endpoint). Do not run `…Async` transfers on the same `Libusb` while also making synchronous
 * calls there: the thread-pool call may be handling events and waiting for this thread to run a
 * stream callback while this thread waits in libusb for it.
 *
 * @example
 * ```ts ignore
 * await using stream = openInStream(dev, 0x81, { transfers: 8, size: 65536, length: 8 << 20 });
 * for await (const chunk of stream) hash.update(chunk);
 * ```
 */
export class UsbInStream implements AsyncIterable<Uint8Array>, AsyncDisposable {
  /** The endpoint address read (bit 7 set). */
  readonly endpoint: number;

  #symbols: StreamSymbols;
  #context: bigint;
  #handle: bigint;
  #unbusy: (() => void) | undefined;
  #callback: TransferCallback;
  #slots: Slot[] = [];
  #byAddress = new Map<bigint, Slot>();
  #type: number;
  #size: number;
  #timeout: number;
  #limit: number;
  #operation: string;
  #signal: AbortSignal | undefined;
  #into: Uint8Array | undefined;
  #onAbort = () => this.#stop({ reason: this.#signal?.reason });

  #outcomes = new Map<number, Outcome>();
  #nextSeq = 0;
  #nextDeliver = 0;
  #requested = 0;
  #inFlight = 0;
  #completions = 0;
  #bytesRead = 0;
  /** No more submissions (closed, aborted, or a transfer failed). */
  #stopped = false;
  #aborted: { reason: unknown } | undefined;
  #failure: UsbError | undefined;
  #released = false;
  #closing: Promise<void> | undefined;

  #timeval = new BigInt64Array(2);
  #completed = new Int32Array(1);
  #lastYield = performance.now();

  /**
   * Allocates the transfers and submits them. Use {@linkcode openInStream}.
   *
   * @ignore
   */
  constructor(device: UsbDevice, endpoint: number, setup: InStreamSetup) {
    const internals = usbDeviceInternals(device);
    this.endpoint = endpoint;
    this.#symbols = internals.symbols;
    this.#context = internals.context;
    this.#handle = internals.handle();
    this.#type = TRANSFER_TYPES[setup.type];
    this.#size = setup.size;
    this.#timeout = setup.timeout;
    this.#limit = setup.length;
    this.#signal = setup.signal;
    this.#into = setup.into;
    this.#operation = `inStream(${hex(endpoint)})`;
    this.#callback = setup.callback;
    setup.bind((transfer) => this.#complete(transfer));
    for (let i = 0; i < setup.transfers; i++) {
      const transfer = BigInt(this.#symbols.libusb_alloc_transfer(0));
      if (transfer === 0n) {
        this.#freeAll();
        throw new UsbError(LibusbError.NO_MEM, {
          operation: this.#operation,
          detail: `libusb_alloc_transfer failed for transfer ${i + 1} of ${setup.transfers}`,
        });
      }
      const fields = new DataView(
        Deno.UnsafePointerView.getArrayBuffer(
          Deno.UnsafePointer.create(transfer)!,
          TRANSFER_LAYOUT.size,
        ),
      );
      const slot: Slot = { address: transfer, fields, buffer: null, seq: -1, flying: false };
      this.#slots.push(slot);
      this.#byAddress.set(transfer, slot);
    }
    internals.busy(1, this.endpoint);
    this.#unbusy = () => internals.busy(-1, this.endpoint);
    live.add(this);
    // Fill every slot; the first submission failing fails the open, a later one ends the stream.
    for (const slot of this.#slots) {
      if (this.#stopped || this.#requested >= this.#limit) break;
      this.#submit(slot);
      if (this.#nextSeq === 1 && this.#inFlight === 0) {
        const error = this.#outcomes.get(0)!.error!;
        this.#freeAll();
        throw error;
      }
    }
    if (this.#signal) {
      if (this.#signal.aborted) this.#onAbort();
      else this.#signal.addEventListener("abort", this.#onAbort, { once: true });
    }
  }

  /**
   * Bytes delivered so far by `read()` / the iterator.
   *
   * @example
   * ```ts ignore
   * console.log(`${stream.bytesRead} bytes read`);
   * ```
   */
  get bytesRead(): number {
    return this.#bytesRead;
  }

  /**
   * Transfers libusb holds right now.
   *
   * @example
   * ```ts ignore
   * console.log(stream.inFlight); // e.g. 8 while the device streams
   * ```
   */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Fills a slot's struct with a fresh buffer and submits it; a refusal becomes its outcome. */
  #submit(slot: Slot): void {
    const length = Math.min(this.#size, this.#limit - this.#requested);
    const buffer = this.#into?.subarray(this.#requested, this.#requested + length) ??
      new Uint8Array(new ArrayBuffer(length)); // off the V8 heap: its address holds
    const f = slot.fields;
    const L = TRANSFER_LAYOUT;
    f.setBigUint64(L.devHandle, this.#handle, true);
    f.setUint8(L.flags, 0);
    f.setUint8(L.endpoint, this.endpoint);
    f.setUint8(L.type, this.#type);
    f.setUint32(L.timeout, this.#timeout, true);
    f.setInt32(L.length, length, true);
    f.setInt32(L.actualLength, 0, true);
    f.setBigUint64(L.callback, address(this.#callback.pointer), true);
    f.setBigUint64(L.userData, 0n, true);
    f.setBigUint64(L.buffer, address(Deno.UnsafePointer.of(buffer)), true);
    const seq = this.#nextSeq++;
    this.#requested += length;
    const code = this.#symbols.libusb_submit_transfer(slot.address);
    if (code < 0) {
      const error = new UsbError(code, {
        operation: this.#operation,
        detail: `submitting transfer ${seq} of the stream`,
      });
      this.#outcomes.set(seq, { status: TransferStatus.Error, data: new Uint8Array(0), error });
      this.#stop(undefined);
      return;
    }
    slot.buffer = buffer;
    slot.seq = seq;
    slot.flying = true;
    this.#inFlight++;
  }

  /** libusb gave a transfer back (its callback, on this thread). */
  #complete(transfer: bigint): void {
    const slot = this.#byAddress.get(transfer);
    if (!slot?.flying) return;
    const status = slot.fields.getInt32(TRANSFER_LAYOUT.status, true);
    const actual = slot.fields.getInt32(TRANSFER_LAYOUT.actualLength, true);
    const buffer = slot.buffer!;
    slot.flying = false;
    slot.buffer = null;
    this.#inFlight--;
    this.#completions++;
    this.#completed[0] = 1;
    const data = buffer.subarray(0, Math.max(0, Math.min(actual, buffer.length)));
    if (status === TransferStatus.Cancelled && !this.#stopped) {
      // Cancelled by someone else (e.g. a reset): the stream cannot go on without a gap.
      const error = new UsbError(LibusbError.INTERRUPTED, {
        operation: this.#operation,
        detail: `transfer ${slot.seq} of the stream was cancelled outside the stream`,
        transferred: data.length,
        data,
      });
      this.#outcomes.set(slot.seq, { status, data, error });
    } else {
      this.#outcomes.set(slot.seq, { status, data });
    }
    if (status === TransferStatus.Completed) {
      if (!this.#stopped && this.#requested < this.#limit) this.#submit(slot);
    } else if (!this.#stopped) {
      this.#stop(undefined); // the transfers after a failed one are moot
    }
  }

  /** Stops submitting and cancels what is in flight; an abort's reason is kept for `read()`. */
  #stop(aborted: { reason: unknown } | undefined): void {
    this.#stopped = true;
    if (aborted && !this.#aborted && !this.#failure) this.#aborted = aborted;
    for (const slot of this.#slots) {
      // NOT_FOUND: it already completed and its callback is on the way; nothing to do.
      if (slot.flying) this.#symbols.libusb_cancel_transfer(slot.address);
    }
  }

  /**
   * The next chunk in order, or `null` once the stream has ended (its `length` read, or closed).
   * After a failed transfer the chunks before it come first, then this rejects with a
   * {@linkcode UsbError} (`transferred`: the bytes delivered before it; `data`: what the failed
   * transfer received); after an abort, the chunks received (cancelled transfers' partial data
   * included) come first, then it rejects with the signal's reason. Transfers are freed by then.
   *
   * @example
   * ```ts ignore
   * let chunk;
   * while ((chunk = await stream.read()) !== null) console.log(chunk.length);
   * ```
   */
  async read(): Promise<Uint8Array | null> {
    for (;;) {
      if (this.#closing) return null;
      const outcome = this.#failure ? undefined : this.#outcomes.get(this.#nextDeliver);
      if (outcome) {
        const seq = this.#nextDeliver++;
        this.#outcomes.delete(seq);
        const { status, data } = outcome;
        if (outcome.error) {
          this.#failure = outcome.error;
        } else if (status === TransferStatus.Completed || status === TransferStatus.Cancelled) {
          if (data.length === 0 && status === TransferStatus.Cancelled) continue;
          this.#bytesRead += data.length;
          return data;
        }
        this.#failure ??= new UsbError(STATUS_ERRORS[status] ?? LibusbError.OTHER, {
          operation: this.#operation,
          detail: `transfer ${seq} of the stream came back with status ${status}`,
          transferred: data.length,
          data,
        });
        this.#stop(undefined);
        continue;
      }
      const drained = this.#failure !== undefined || this.#nextDeliver >= this.#nextSeq;
      if (this.#inFlight === 0 && drained && (this.#stopped || this.#requested >= this.#limit)) {
        this.#freeAll();
        if (this.#failure) throw this.#failure;
        if (this.#aborted) throw this.#aborted.reason;
        return null;
      }
      await this.#wait();
    }
  }

  /**
   * Runs libusb's event handling on this thread (so callbacks are plain calls here) for at most
   * a slice, and now and then lets other tasks run.
   */
  async #wait(): Promise<void> {
    const before = this.#completions;
    if (this.#inFlight > 0) this.#handleEvents(SLICE_MS);
    const now = performance.now();
    if (this.#completions === before || now - this.#lastYield >= YIELD_EVERY_MS) {
      this.#lastYield = now;
      await yieldToEventLoop();
    }
  }

  /** One round of libusb event handling on this thread, blocking up to `ms`. */
  #handleEvents(ms: number): void {
    this.#timeval[0] = 0n;
    this.#timeval[1] = BigInt(ms * 1000);
    this.#completed[0] = 0;
    const code = this.#symbols.libusb_handle_events_timeout_completed(
      this.#context,
      this.#timeval,
      this.#completed,
    );
    if (code < 0 && code !== LibusbError.INTERRUPTED && code !== LibusbError.BUSY) {
      throw new UsbError(code, { operation: this.#operation, detail: "handling libusb events" });
    }
  }

  /** Frees every transfer and the callback, once none is in flight. */
  #freeAll(): void {
    if (this.#released || this.#inFlight > 0) return;
    this.#released = true;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    for (const slot of this.#slots) this.#symbols.libusb_free_transfer(slot.address);
    this.#slots = [];
    this.#byAddress.clear();
    this.#outcomes.clear();
    this.#into = undefined;
    this.#callback.close();
    this.#unbusy?.();
    live.delete(this);
  }

  /**
   * Cancels the transfers in flight, waits until libusb has given each back, frees them, and ends
   * the stream (a pending `read()` then returns `null`; chunks not read are dropped). Idempotent.
   *
   * @example
   * ```ts ignore
   * const first = await stream.read();
   * await stream.close();
   * ```
   */
  close(): Promise<void> {
    return this.#closing ??= (async () => {
      this.#stop(undefined);
      while (this.#inFlight > 0) await this.#wait();
      this.#freeAll();
    })();
  }

  /**
   * Same as {@linkcode UsbInStream.close}, for `await using`.
   *
   * @example
   * ```ts ignore
   * {
   *   await using stream = openInStream(dev, 0x81);
   *   console.log(await stream.read());
   * } // closed here
   * ```
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * The chunks in order; leaving the loop early (or an error) closes the stream.
   *
   * @example
   * ```ts ignore
   * let total = 0;
   * for await (const chunk of openInStream(dev, 0x81, { length: 1 << 20 })) total += chunk.length;
   * ```
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    try {
      for (;;) {
        const chunk = await this.read();
        if (chunk === null) return;
        yield chunk;
      }
    } finally {
      await this.close();
    }
  }
}

/**
 * Opens a stream on an IN endpoint (bulk or interrupt) of a device, keeping `transfers` transfers
 * of `size` bytes in flight; see {@linkcode UsbInStream}. The interface must be claimed.
 *
 * Needs unscoped ffi (`--allow-ffi`, or a Worker with `usbWorkerPermissions({ ffi: "unscoped" })`);
 * under a grant scoped to the libusb path it throws a `UsbError` `LIBUSB_ERROR_NOT_SUPPORTED` at
 * once, before touching the device. Bad arguments throw `LIBUSB_ERROR_INVALID_PARAM`, a closed
 * device `LIBUSB_ERROR_NO_DEVICE`, and a first submission libusb refuses, its error.
 *
 * @example
 * ```ts ignore
 * import { Libusb } from "./libusb.ts";
 * using usb = Libusb.open();
 * using dev = usb.openDevice({ vendorId: 0x46f4, productId: 0x0001 });
 * dev.claimInterface(0);
 * await using stream = openInStream(dev, 0x81, { transfers: 8, size: 65536, length: 8 << 20 });
 * for await (const chunk of stream) console.log(chunk.length);
 * ```
 */
export function openInStream(
  device: UsbDevice,
  endpoint: number,
  options: InStreamOptions = {},
): UsbInStream {
  const operation = `inStream(${typeof endpoint === "number" ? hex(endpoint) : endpoint})`;
  const invalid = (detail: string) =>
    new UsbError(LibusbError.INVALID_PARAM, { operation, detail });
  checkInteger(endpoint, 0, 0xff, "endpoint", operation);
  if ((endpoint & 0x80) === 0) {
    throw invalid(`endpoint ${hex(endpoint)} is an OUT address; IN endpoints have bit 7 set`);
  }
  const transfers = checkInteger(options.transfers ?? 4, 1, MAX_TRANSFERS, "transfers", operation);
  const size = checkInteger(options.size ?? 16384, 1, MAX_LENGTH, "size", operation);
  const into = options.into;
  if (into !== undefined) {
    if (!(into instanceof Uint8Array)) throw invalid("into must be a Uint8Array");
    // Asking for .buffer moves a small typed array's bytes off the V8 heap, where they stay put.
    const buffer = into.buffer as ArrayBuffer;
    if (buffer.resizable || into.byteLength === 0) {
      throw invalid("into must be a non-empty view on a fixed-length buffer");
    }
  }
  const length = options.length === undefined ? into?.byteLength ?? Infinity : checkInteger(
    options.length,
    0,
    into?.byteLength ?? Number.MAX_SAFE_INTEGER,
    "length",
    operation,
  );
  const timeout = checkInteger(
    options.timeout ?? DEFAULT_TIMEOUT,
    0,
    0xffffffff,
    "timeout",
    operation,
  );
  const type = options.type;
  if (type !== undefined && type !== "bulk" && type !== "interrupt") {
    throw invalid(`type must be "bulk" or "interrupt", got ${String(type)}`);
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw invalid("signal must be an AbortSignal");
  }
  // Before touching the device: refuse at once where Deno refuses callbacks and pointers.
  let complete: (transfer: bigint) => void = () => {};
  let callback: TransferCallback;
  try {
    const handler = (transfer: bigint | number) => complete(BigInt(transfer));
    callback = new Deno.UnsafeCallback(CALLBACK, handler);
  } catch (error) {
    const denied = error instanceof Deno.errors.NotCapable ||
      error instanceof Deno.errors.PermissionDenied;
    if (!denied) throw error;
    throw new UsbError(LibusbError.NOT_SUPPORTED, {
      operation,
      detail: "several transfers in flight need unscoped ffi (Deno refuses callbacks and " +
        "pointers under an ffi grant scoped to the libusb path): opt in with --allow-ffi (no " +
        'path), or a Worker with usbWorkerPermissions({ ffi: "unscoped" }); or read one ' +
        "transfer at a time with transferIn / transferInAsync",
      cause: error,
    });
  }
  let constructing = false;
  try {
    if (!device.opened || usbDeviceInternals(device).handle() === 0n) {
      throw new UsbError(LibusbError.NO_DEVICE, { operation, detail: "the device is closed" });
    }
    const setup: InStreamSetup = {
      transfers,
      size,
      length,
      timeout,
      type: type ?? endpointType(device, endpoint),
      signal: options.signal,
      into,
      callback,
      bind: (fn) => complete = fn,
    };
    constructing = true; // from here on the stream closes the callback itself, even on failure
    return new UsbInStream(device, endpoint, setup);
  } catch (error) {
    if (!constructing) callback.close();
    throw error;
  }
}
