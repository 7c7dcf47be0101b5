/**
 * ffi/stream.ts without hardware: the refusal under a scoped ffi grant (a real Worker), argument
 * checks, the `struct libusb_transfer` layout against the real libusb, and the stream's bookkeeping
 * against a libusb double written in JS that fills buffers and calls the real completion callback
 * through its function pointer (order, `length`, short chunks, failures, aborts, close, frees).
 * The rig test (tests/hil/stream_test.ts) runs it against a device.
 *
 * This file is also the program of the scoped Worker (it registers no tests there).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { UsbDevice, type UsbDeviceSymbols } from "../../ffi/device.ts";
import { LibusbError, UsbError } from "../../ffi/errors.ts";
import { libusbPath } from "../../ffi/library.ts";
import { usbWorkerPermissions } from "../../ffi/permissions.ts";
import { type InStreamOptions, openInStream, TRANSFER_LAYOUT } from "../../ffi/stream.ts";
import { libusbSymbols } from "../../ffi/symbols.ts";
import { deviceInfo } from "../fixtures/usb_info.ts";

const L = TRANSFER_LAYOUT;
const HANDLE = 0x5a5a00n;
const CONTEXT = 0x7c7c00n;
const INFO = deviceInfo({ usbVersion: 0x0300 });

/**
 * What the double does with a submission: complete it (maybe short, or failed), or hold it as a
 * device with no more data would (`held` bytes arrived before that; a cancel reports them).
 */
type Plan = { status?: number; actual?: number } | { held: number };

interface FakeOptions {
  /** Per submission (0, 1, …): default, complete in full with status 0. */
  plan?: (index: number) => Plan;
  /** libusb_submit_transfer's result per submission (default 0). */
  submit?: (index: number) => number;
  /** Complete each event round's transfers in reverse order (libusb would not, on one endpoint). */
  reverse?: boolean;
}

/** The byte at stream offset `i` of the double's endless source. */
const sourceByte = (i: number) => (i * 7 + (i >> 8)) & 0xff;

/**
 * libusb's async API, in JS, on memory this side owns: transfers are ArrayBuffers whose addresses
 * the stream writes through `UnsafePointerView`; completing one fills its buffer, sets status and
 * actual_length at the layout's offsets and calls the callback pointer the stream stored.
 */
function fakeLibusb(options: FakeOptions = {}) {
  const transfers = new Map<bigint, { memory: Uint8Array; view: DataView }>();
  const flying: { address: bigint; index: number; cancelled: boolean }[] = [];
  const log = {
    allocs: 0,
    submitted: 0,
    maxFlying: 0,
    freed: 0,
    freedWhileFlying: 0,
    eventRounds: 0,
    contexts: new Set<bigint>(),
    handles: new Set<bigint>(),
    types: new Set<number>(),
    lengths: [] as number[],
  };
  let offset = 0; // next source byte
  /** The "device" puts its data into a transfer; false when the plan holds it. */
  const fill = (entry: { address: bigint; index: number; cancelled: boolean }) => {
    const { view } = transfers.get(entry.address)!;
    const length = view.getInt32(L.length, true);
    const planned = options.plan?.(entry.index) ?? {};
    if ("held" in planned && !entry.cancelled) return false;
    // A cancelled transfer reports what had arrived before it.
    const plan: { status?: number; actual?: number } = entry.cancelled
      ? { status: 3, actual: "held" in planned ? planned.held : 0 }
      : planned as { status?: number; actual?: number };
    const actual = Math.min(plan.actual ?? length, length);
    const buffer = new Uint8Array(
      Deno.UnsafePointerView.getArrayBuffer(
        Deno.UnsafePointer.create(view.getBigUint64(L.buffer, true))!,
        length,
      ),
    );
    for (let i = 0; i < actual; i++) buffer[i] = sourceByte(offset + i);
    offset += actual;
    view.setInt32(L.status, plan.status ?? 0, true);
    view.setInt32(L.actualLength, actual, true);
    return true;
  };
  /** libusb calls the transfer's callback. */
  const callBack = (entry: { address: bigint }) => {
    const { view } = transfers.get(entry.address)!;
    const callback = new Deno.UnsafeFnPointer(
      Deno.UnsafePointer.create(view.getBigUint64(L.callback, true))!,
      { parameters: ["usize"], result: "void" },
    );
    flying.splice(flying.indexOf(flying.find((f) => f.address === entry.address)!), 1);
    callback.call(entry.address);
  };
  const handleEvents = (context: bigint) => {
    log.eventRounds++;
    log.contexts.add(BigInt(context));
    // Data lands in submission order; callbacks may come in another order.
    const done = [...flying].filter(fill);
    if (options.reverse) done.reverse();
    for (const entry of done) callBack(entry);
    return 0;
  };
  const symbols = {
    libusb_close: () => {},
    libusb_release_interface: () => 0,
    libusb_alloc_transfer: (iso: number) => {
      log.allocs++;
      const memory = new Uint8Array(new ArrayBuffer(L.size + 16 * iso));
      const view = new DataView(memory.buffer);
      view.setInt32(L.numIsoPackets, iso, true);
      const address = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(memory)));
      transfers.set(address, { memory, view });
      return address;
    },
    libusb_free_transfer: (address: bigint) => {
      if (flying.some((f) => f.address === address)) log.freedWhileFlying++;
      assert.ok(transfers.delete(address), "freed a transfer that is not allocated");
      log.freed++;
    },
    libusb_submit_transfer: (address: bigint) => {
      const index = log.submitted++;
      const code = options.submit?.(index) ?? 0;
      if (code < 0) return code;
      const { view } = transfers.get(address)!;
      log.handles.add(view.getBigUint64(L.devHandle, true));
      log.types.add(view.getUint8(L.type));
      log.lengths.push(view.getInt32(L.length, true));
      assert.equal(view.getUint8(L.endpoint), 0x81);
      flying.push({ address, index, cancelled: false });
      log.maxFlying = Math.max(log.maxFlying, flying.length);
      return 0;
    },
    libusb_cancel_transfer: (address: bigint) => {
      const entry = flying.find((f) => f.address === address);
      if (!entry) return LibusbError.NOT_FOUND;
      entry.cancelled = true;
      return 0;
    },
    libusb_handle_events_timeout_completed: (context: bigint) => handleEvents(context),
    // Descriptors are not readable here: the stream falls back to bulk.
    libusb_control_transfer: () => LibusbError.PIPE,
  };
  return {
    log,
    flying,
    allocated: () => transfers.size,
    device: () =>
      new UsbDevice(symbols as unknown as UsbDeviceSymbols, HANDLE, INFO, undefined, CONTEXT),
  };
}

function expected(from: number, length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => sourceByte(from + i));
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** `promise`, or a failure after `ms`: a stream that never settles fails its test, not the run. */
async function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function isUsbError(name: string) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof UsbError, String(error));
    assert.equal(error.name, name, error.message);
    return true;
  };
}

// ------------------------------------------------------------------- the scoped Worker's side

interface WorkerReport {
  error?: { name: string; code: number; message: string; isUsbError: boolean };
  /** Bytes read through the stream when it opened. */
  read?: number;
  /** libusb_alloc_transfer and libusb_submit_transfer calls the double saw. */
  allocs: number;
  submitted: number;
}

/** The Worker loads this file with `?worker`. */
const workerScope = new URL(import.meta.url).searchParams.has("worker")
  ? globalThis as unknown as {
    onmessage: (() => void) | null;
    postMessage(message: WorkerReport): void;
  }
  : undefined;

if (workerScope) {
  workerScope.onmessage = async () => {
    const fake = fakeLibusb();
    const dev = fake.device();
    const report: WorkerReport = { allocs: 0, submitted: 0 };
    try {
      const stream = openInStream(dev, 0x81, { transfers: 2, size: 16, length: 64, type: "bulk" });
      let read = 0;
      for await (const chunk of stream) read += chunk.length;
      report.read = read;
    } catch (error) {
      const e = error as UsbError;
      report.error = {
        name: e.name,
        code: e.code,
        message: e.message,
        isUsbError: e instanceof UsbError,
      };
    }
    report.allocs = fake.log.allocs;
    report.submitted = fake.log.submitted;
    dev.close();
    workerScope.postMessage(report);
  };
} else {
  registerTests();
}

async function inWorker(ffi: "scoped" | "unscoped"): Promise<WorkerReport> {
  const root = new URL("../../", import.meta.url);
  const base = usbWorkerPermissions({ ffi });
  const worker = new Worker(`${import.meta.url}?worker`, {
    type: "module",
    deno: {
      permissions: {
        ...(base as Record<string, unknown>),
        read: [
          fileURLToPath(new URL("ffi/", root)),
          fileURLToPath(new URL("src/", root)),
          fileURLToPath(import.meta.url),
        ],
      },
    },
  } as WorkerOptions);
  try {
    const { promise, resolve, reject } = Promise.withResolvers<WorkerReport>();
    worker.onmessage = (event) => resolve(event.data);
    worker.onerror = (event) => {
      event.preventDefault();
      reject(new Error(`worker failed: ${event.message}`));
    };
    worker.postMessage("go");
    return await promise;
  } finally {
    worker.terminate();
  }
}

// ------------------------------------------------------------------------------- the tests

function registerTests(): void {
  Deno.test("under usbWorkerPermissions() a stream is refused at once with a typed error", async () => {
    const report = await inWorker("scoped");
    assert.ok(report.error, JSON.stringify(report));
    assert.equal(report.error.isUsbError, true);
    assert.equal(report.error.name, "LIBUSB_ERROR_NOT_SUPPORTED");
    assert.equal(report.error.code, LibusbError.NOT_SUPPORTED);
    assert.match(report.error.message, /usbWorkerPermissions\(\{ ffi: "unscoped" \}\)/);
    assert.match(report.error.message, /--allow-ffi/);
    assert.deepEqual([report.allocs, report.submitted], [0, 0], "libusb called before refusing");
  });

  Deno.test('under usbWorkerPermissions({ ffi: "unscoped" }) the same stream runs', async () => {
    const report = await inWorker("unscoped");
    assert.equal(report.error, undefined, JSON.stringify(report));
    assert.deepEqual([report.read, report.allocs, report.submitted], [64, 2, 4]);
  });

  Deno.test("struct libusb_transfer: the layout follows libusb.h's fields under the C ABI", () => {
    // The members of struct libusb_transfer in libusb.h, in order, with their C types.
    const fields: [keyof typeof L, "ptr" | "u8" | "u32" | "i32"][] = [
      ["devHandle", "ptr"], // libusb_device_handle *dev_handle
      ["flags", "u8"], // uint8_t flags
      ["endpoint", "u8"], // unsigned char endpoint
      ["type", "u8"], // unsigned char type
      ["timeout", "u32"], // unsigned int timeout
      ["status", "i32"], // enum libusb_transfer_status status
      ["length", "i32"], // int length
      ["actualLength", "i32"], // int actual_length
      ["callback", "ptr"], // libusb_transfer_cb_fn callback
      ["userData", "ptr"], // void *user_data
      ["buffer", "ptr"], // unsigned char *buffer
      ["numIsoPackets", "i32"], // int num_iso_packets
    ];
    const sizes = { ptr: 8, u8: 1, u32: 4, i32: 4 }; // LP64: natural alignment = size
    let at = 0;
    for (const [name, type] of fields) {
      at = Math.ceil(at / sizes[type]) * sizes[type];
      assert.equal(L[name], at, name);
      at += sizes[type];
    }
    // Then struct libusb_iso_packet_descriptor iso_packet_desc[] (3 unsigned ints): 4-aligned.
    assert.equal(L.size, Math.ceil(at / 8) * 8);

    // The real libusb hands out a zeroed struct at least that long, which this side may view.
    const lib = Deno.dlopen(libusbPath(), libusbSymbols);
    try {
      const transfer = BigInt(lib.symbols.libusb_alloc_transfer(0));
      assert.notEqual(transfer, 0n);
      try {
        const bytes = new Uint8Array(
          Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(transfer)!, L.size),
        );
        assert.ok(bytes.every((b) => b === 0), "libusb_alloc_transfer left a field non-zero");
        // Never submitted: cancel finds nothing in flight.
        assert.equal(lib.symbols.libusb_cancel_transfer(transfer), LibusbError.NOT_FOUND);
      } finally {
        lib.symbols.libusb_free_transfer(transfer);
      }
    } finally {
      lib.close();
    }
  });

  Deno.test("openInStream checks its arguments before anything else", () => {
    const fake = fakeLibusb();
    using dev = fake.device();
    const bad: [number, InStreamOptions, RegExp][] = [
      [0x02, {}, /OUT address/],
      [0x100, {}, /endpoint/],
      [0x81, { transfers: 0 }, /transfers/],
      [0x81, { transfers: 257 }, /transfers/],
      [0x81, { size: 0 }, /size/],
      [0x81, { size: 1.5 }, /size/],
      [0x81, { length: -1 }, /length/],
      [0x81, { timeout: -1 }, /timeout/],
      [0x81, { type: "isochronous" as "bulk" }, /type/],
      [0x81, { signal: {} as AbortSignal }, /signal/],
    ];
    for (const [endpoint, options, message] of bad) {
      assert.throws(() => openInStream(dev, endpoint, options), (error: unknown) => {
        isUsbError("LIBUSB_ERROR_INVALID_PARAM")(error);
        assert.match((error as Error).message, message);
        return true;
      });
    }
    assert.equal(fake.log.submitted, 0);
    assert.equal(fake.allocated(), 0);
    dev.close();
    assert.throws(() => openInStream(dev, 0x81), isUsbError("LIBUSB_ERROR_NO_DEVICE"));
  });

  Deno.test("chunks arrive in order (callbacks out of order), the last one shortened to `length`", async () => {
    const fake = fakeLibusb({ reverse: true });
    const dev = fake.device();
    const stream = openInStream(dev, 0x81, { transfers: 4, size: 64, length: 1000 });
    assert.equal(stream.inFlight, 4);
    assert.equal(dev.pendingTransfers, 1, "the stream counts as busy on the device");
    const chunks: Uint8Array[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.deepEqual(chunks.map((c) => c.length), [...Array(15).fill(64), 40]);
    assert.deepEqual(concat(chunks), expected(0, 1000));
    assert.equal(stream.bytesRead, 1000);
    assert.deepEqual(fake.log.lengths, [...Array(15).fill(64), 40]);
    assert.equal(fake.log.maxFlying, 4);
    assert.deepEqual([...fake.log.handles], [HANDLE]);
    assert.deepEqual([...fake.log.contexts], [CONTEXT]);
    assert.deepEqual([...fake.log.types], [2], "bulk when the descriptors say nothing");
    assert.equal(fake.log.freed, 4);
    assert.equal(fake.log.freedWhileFlying, 0);
    assert.equal(dev.pendingTransfers, 0);
    assert.equal(await stream.read(), null);
    dev.close();
    await dev.closed;
  });

  Deno.test("into: the data lands in the caller's memory, chunks are views on it", async () => {
    const fake = fakeLibusb({ plan: (i) => (i === 2 ? { actual: 5 } : {}) });
    using dev = fake.device();
    const into = new Uint8Array(new SharedArrayBuffer(200), 8, 100);
    const chunks: Uint8Array[] = [];
    for await (const chunk of openInStream(dev, 0x81, { transfers: 3, size: 32, into })) {
      chunks.push(chunk);
    }
    assert.deepEqual(chunks.map((c) => c.length), [32, 32, 5, 4], "length defaults to into's");
    assert.ok(chunks.every((c) => c.buffer === into.buffer), "a chunk was not a view on into");
    assert.deepEqual(chunks.map((c) => c.byteOffset - into.byteOffset), [0, 32, 64, 96]);
    assert.deepEqual(into.subarray(0, 69), expected(0, 69));
    assert.ok(into.subarray(69, 96).every((b) => b === 0), "the short slot's rest was written");
    assert.deepEqual(into.subarray(96), expected(69, 4));
    assert.equal(fake.log.freed, 3);
    for (
      const [options, message] of [
        [{ into, length: 101 }, /length/],
        [{ into: new Uint8Array(0) }, /into/],
        [{ into: new Uint8Array(new ArrayBuffer(8, { maxByteLength: 16 })) }, /into/],
        [{ into: [1, 2] as unknown as Uint8Array }, /into/],
      ] as const
    ) {
      assert.throws(() => openInStream(dev, 0x81, options), (error: unknown) => {
        isUsbError("LIBUSB_ERROR_INVALID_PARAM")(error);
        assert.match((error as Error).message, message);
        return true;
      });
    }
  });

  Deno.test("a short transfer is a short chunk; the stream goes on", async () => {
    const fake = fakeLibusb({ plan: (i) => (i === 1 ? { actual: 10 } : {}) });
    using dev = fake.device();
    await using stream = openInStream(dev, 0x81, { transfers: 2, size: 32, length: 96 });
    const chunks: Uint8Array[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    // `length` is what is asked for: 96 bytes in 3 transfers, one of which came back short.
    assert.deepEqual(chunks.map((c) => c.length), [32, 10, 32]);
    assert.deepEqual(concat(chunks), expected(0, 74));
  });

  Deno.test("a failed transfer: the chunks before it, then its UsbError with its data", async () => {
    const fake = fakeLibusb({ plan: (i) => (i === 5 ? { status: 2, actual: 10 } : {}) });
    using dev = fake.device();
    const stream = openInStream(dev, 0x81, { transfers: 3, size: 16, type: "interrupt" });
    const chunks: Uint8Array[] = [];
    const error = await (async () => {
      try {
        for (;;) chunks.push((await stream.read())!);
      } catch (error) {
        return error as UsbError;
      }
    })();
    assert.ok(error instanceof UsbError);
    assert.equal(error.name, "LIBUSB_ERROR_TIMEOUT");
    assert.equal(chunks.length, 5);
    assert.deepEqual(concat(chunks), expected(0, 80));
    assert.deepEqual(error.data, expected(80, 10));
    assert.equal(error.transferred, 10);
    assert.deepEqual([...fake.log.types], [3]);
    assert.equal(fake.log.freed, 3, "freed once everything came back");
    assert.equal(fake.log.freedWhileFlying, 0);
    await assert.rejects(stream.read(), (e) => e === error, "the failure is sticky");
    assert.equal(dev.pendingTransfers, 0);
  });

  Deno.test("an abort cancels what is in flight, keeps what arrived, rejects with the reason", async () => {
    const fake = fakeLibusb({ plan: (i): Plan => (i < 3 ? {} : { held: i === 3 ? 5 : 0 }) });
    using dev = fake.device();
    const controller = new AbortController();
    const stream = openInStream(dev, 0x81, { transfers: 2, size: 8, signal: controller.signal });
    const first = [await stream.read(), await stream.read(), await stream.read()];
    assert.deepEqual(concat(first as Uint8Array[]), expected(0, 24));
    const pending = stream.read(); // transfers 3 and 4 are held by the "device"
    const t0 = performance.now();
    setTimeout(() => controller.abort(new Error("enough")), 30);
    // The 5 bytes transfer 3 had received when it was cancelled come first, then the reason.
    assert.deepEqual(await within(1000, pending), expected(24, 5));
    await assert.rejects(within(1000, stream.read()), /enough/);
    assert.ok(performance.now() - t0 < 30 + 100, "settled within 100 ms of the abort");
    assert.equal(fake.flying.length, 0);
    assert.equal(fake.log.freed, 2);
    assert.equal(fake.log.freedWhileFlying, 0);
    assert.equal(dev.pendingTransfers, 0);
  });

  Deno.test("an already aborted signal: nothing is delivered, read rejects", async () => {
    const fake = fakeLibusb();
    using dev = fake.device();
    const stream = openInStream(dev, 0x81, { signal: AbortSignal.abort("no") });
    await assert.rejects(stream.read(), (reason) => reason === "no");
    assert.equal(fake.log.freed, 4);
  });

  Deno.test("close() mid-stream cancels, waits for every transfer, frees; read() is then null", async () => {
    const fake = fakeLibusb({ plan: (i): Plan => (i < 1 ? {} : { held: 0 }) });
    const dev = fake.device();
    const stream = openInStream(dev, 0x81, { transfers: 4, size: 8 });
    assert.ok(await stream.read());
    const pending = stream.read();
    dev.close(); // waits for the stream
    let devClosed = false;
    dev.closed.then(() => devClosed = true);
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(devClosed, false, "the device closed under the stream");
    await within(1000, stream.close());
    assert.equal(await pending, null);
    assert.equal(await stream.read(), null);
    assert.equal(fake.flying.length, 0);
    assert.equal(fake.log.freed, 4);
    assert.equal(fake.log.freedWhileFlying, 0);
    await dev.closed;
    await stream.close(); // idempotent
  });

  Deno.test("leaving a for-await loop early closes the stream", async () => {
    const fake = fakeLibusb();
    using dev = fake.device();
    const stream = openInStream(dev, 0x81, { transfers: 3, size: 4 });
    let n = 0;
    await within(
      1000,
      (async () => {
        for await (const _ of stream) if (++n === 5) break;
      })(),
    );
    assert.equal(fake.log.freed, 3);
    assert.equal(fake.flying.length, 0);
    assert.equal(dev.pendingTransfers, 0);
  });

  Deno.test("a first submission libusb refuses fails the open, with nothing left behind", () => {
    const fake = fakeLibusb({ submit: () => LibusbError.NO_DEVICE });
    using dev = fake.device();
    assert.throws(() => openInStream(dev, 0x81), isUsbError("LIBUSB_ERROR_NO_DEVICE"));
    assert.equal(fake.allocated(), 0);
    assert.equal(dev.pendingTransfers, 0);
  });

  Deno.test("a later submission refused ends the stream after the chunks before it", async () => {
    const fake = fakeLibusb({ submit: (i) => (i === 4 ? LibusbError.IO : 0) });
    using dev = fake.device();
    const stream = openInStream(dev, 0x81, { transfers: 2, size: 4 });
    const chunks: Uint8Array[] = [];
    await assert.rejects(async () => {
      for await (const chunk of stream) chunks.push(chunk);
    }, isUsbError("LIBUSB_ERROR_IO"));
    assert.deepEqual(concat(chunks), expected(0, 16));
    assert.equal(fake.allocated(), 0);
  });

  Deno.test("length 0: an empty stream that submits nothing", async () => {
    const fake = fakeLibusb();
    using dev = fake.device();
    const stream = openInStream(dev, 0x81, { length: 0 });
    assert.equal(await stream.read(), null);
    assert.equal(fake.log.submitted, 0);
    assert.equal(fake.allocated(), 0);
  });
}
