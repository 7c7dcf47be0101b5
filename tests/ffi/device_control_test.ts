// UsbDevice's USB-layer methods against a scripted device (no USB hardware): endpoint types from
// the descriptors, transfers into the caller's buffer, signals, configuration, alternate settings,
// reset, kernel drivers, speed and port path.
import assert from "node:assert/strict";
import { Status } from "../../src/status.ts";
import { UsbDevice, type UsbDeviceSymbols } from "../../ffi/device.ts";
import { LibusbError, UsbError } from "../../ffi/errors.ts";
import { ABORT_SLICE_MS } from "../../ffi/transfer.ts";
import { deviceInfo } from "../fixtures/usb_info.ts";

const HANDLE = 0xdead_b000n;
const DEVICE_PTR = 0xbeef_0000n;
const INFO = deviceInfo({ vendorId: 0x0627 });

const DEVICE_DESCRIPTOR = [18, 1, 0, 2, 0, 0, 0, 64, 0x27, 0x06, 1, 0, 0, 1, 0, 0, 0, 1];
// Configuration 1: interface 0 alternate 0 has interrupt IN 0x81 (8 bytes) and bulk OUT 0x02;
// alternate 1 has bulk IN 0x81 (64 bytes) instead.
// deno-fmt-ignore
const CONFIGURATION = [
  9, 2, 48, 0, 1, 1, 0, 0x80, 50,
  9, 4, 0, 0, 2, 3, 1, 1, 0,
  7, 5, 0x81, 3, 8, 0, 10,
  7, 5, 0x02, 2, 64, 0, 0,
  9, 4, 0, 1, 1, 0xff, 0, 0, 0,
  7, 5, 0x81, 2, 64, 0, 0,
];

type TransferScript = (
  name: string,
  endpoint: number,
  data: Uint8Array,
  length: number,
  transferred: Int32Array,
  timeout: number,
) => number;

interface Call {
  readonly name: string;
  readonly args: unknown[];
}

function scripted(options: {
  transfer?: TransferScript;
  codes?: Partial<Record<string, number>>;
  speed?: number;
  ports?: number[];
  activeValue?: number;
} = {}) {
  const calls: Call[] = [];
  let active = options.activeValue ?? 1;
  const code = (name: string, ...args: unknown[]) => {
    calls.push({ name, args });
    return options.codes?.[name] ?? 0;
  };
  const transfer = (name: string) =>
  (
    handle: bigint,
    endpoint: number,
    data: Uint8Array,
    length: number,
    transferred: Int32Array,
    timeout: number,
  ) => {
    calls.push({ name, args: [handle, endpoint, data, length, timeout] });
    return (options.transfer ?? (() => 0))(name, endpoint, data, length, transferred, timeout);
  };
  const later = (name: string) => {
    const sync = transfer(name);
    return (...args: Parameters<typeof sync>) =>
      new Promise<number>((resolve) =>
        // A slice that times out takes its timeout, as libusb's would.
        setTimeout(() => {
          const result = sync(...args);
          resolve(result);
        }, 0)
      );
  };
  const symbols = {
    libusb_close: (...args: unknown[]) => code("libusb_close", ...args),
    libusb_set_auto_detach_kernel_driver: (...a: unknown[]) => code("auto_detach", ...a),
    libusb_claim_interface: (...a: unknown[]) => code("libusb_claim_interface", ...a),
    libusb_release_interface: (...a: unknown[]) => code("libusb_release_interface", ...a),
    libusb_set_interface_alt_setting: (...a: unknown[]) => code("set_alt", ...a),
    libusb_clear_halt: (...a: unknown[]) => code("clear_halt", ...a),
    libusb_bulk_transfer: transfer("bulk"),
    libusb_bulk_transfer_nonblocking: later("bulk"),
    libusb_interrupt_transfer: transfer("interrupt"),
    libusb_interrupt_transfer_nonblocking: later("interrupt"),
    libusb_control_transfer: (
      _handle: bigint,
      _requestType: number,
      request: number,
      value: number,
      _index: number,
      data: Uint8Array | null,
      length: number,
    ) => {
      calls.push({ name: "control", args: [request, value] });
      if (request !== 0x06 || !data) return LibusbError.PIPE;
      const source = value >> 8 === 1 ? DEVICE_DESCRIPTOR : value >> 8 === 2 ? CONFIGURATION : [];
      if (source.length === 0) return LibusbError.PIPE;
      const n = Math.min(length, source.length);
      data.set(source.slice(0, n));
      return n;
    },
    libusb_get_configuration: (_handle: bigint, out: Int32Array) => {
      calls.push({ name: "get_configuration", args: [] });
      out[0] = active;
      return 0;
    },
    libusb_set_configuration: (handle: bigint, value: number) => {
      const result = code("set_configuration", handle, value);
      if (result === 0) active = value;
      return result;
    },
    libusb_reset_device: (...a: unknown[]) => code("reset", ...a),
    libusb_kernel_driver_active: (...a: unknown[]) => code("kernel_driver_active", ...a),
    libusb_detach_kernel_driver: (...a: unknown[]) => code("detach", ...a),
    libusb_attach_kernel_driver: (...a: unknown[]) => code("attach", ...a),
    libusb_get_device: (handle: bigint) => {
      assert.equal(handle, HANDLE);
      return DEVICE_PTR;
    },
    libusb_get_device_speed: (device: bigint) => {
      assert.equal(device, DEVICE_PTR);
      return options.speed ?? 2;
    },
    libusb_get_port_numbers: (device: bigint, out: Uint8Array, length: number) => {
      assert.equal(device, DEVICE_PTR);
      const ports = options.ports ?? [1, 4];
      if (ports.length > length) return LibusbError.OVERFLOW;
      out.set(ports);
      return ports.length;
    },
  };
  const device = new UsbDevice(symbols as unknown as UsbDeviceSymbols, HANDLE, INFO);
  return {
    device,
    calls,
    transfers: () => calls.filter((c) => c.name === "bulk" || c.name === "interrupt"),
  };
}

/** A device with nothing to say: every slice NAKs until its timeout. */
const nothingToRead: TransferScript = (_name, _endpoint, _data, _length, transferred) => {
  transferred[0] = 0;
  return LibusbError.TIMEOUT;
};

function usbError(name: string, check?: (error: UsbError) => void) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof UsbError, String(error));
    assert.equal(error.name, name);
    check?.(error);
    return true;
  };
}

Deno.test("the endpoint's type picks libusb's call: interrupt IN 0x81, bulk OUT 0x02", () => {
  const { device, transfers } = scripted();
  device.transferIn(0x81, 8);
  device.transferOut(0x02, new Uint8Array(4));
  assert.deepEqual(transfers().map((c) => [c.name, c.args[1]]), [
    ["interrupt", 0x81],
    ["bulk", 0x02],
  ]);
  device.close();
});

Deno.test("selectAlternateInterface: `alternate` follows it, and so does the call", () => {
  const { device, transfers, calls } = scripted();
  assert.equal(device.configurations[0].interfaces[0].alternate.alternateSetting, 0);
  device.claimInterface(0);
  device.selectAlternateInterface(0, 1);
  assert.deepEqual(calls.find((c) => c.name === "set_alt")?.args, [HANDLE, 0, 1]);
  const iface = device.configurations[0].interfaces[0];
  assert.equal(iface.alternate.alternateSetting, 1);
  assert.equal(iface.alternate, iface.alternates[1]);
  assert.equal(device.configuration?.interfaces[0].alternate.alternateSetting, 1);
  device.transferIn(0x81, 64);
  assert.equal(transfers().at(-1)?.name, "bulk");
  device.close();
});

Deno.test("a failed alternate selection changes nothing", () => {
  const { device } = scripted({ codes: { set_alt: LibusbError.NOT_FOUND } });
  assert.throws(() => device.selectAlternateInterface(0, 1), usbError("LIBUSB_ERROR_NOT_FOUND"));
  assert.equal(device.configurations[0].interfaces[0].alternate.alternateSetting, 0);
  device.close();
});

Deno.test("transferIn into the caller's Uint8Array: no copy, the result views the same memory", () => {
  const { device } = scripted({
    transfer: (_name, _endpoint, data, _length, transferred) => {
      data.set([1, 2, 3]);
      transferred[0] = 3;
      return 0;
    },
  });
  const pool = new Uint8Array(new SharedArrayBuffer(64));
  const room = pool.subarray(16, 24);
  const reply = device.transferIn(0x81, room);
  assert.deepEqual([...reply], [1, 2, 3]);
  assert.equal(reply.buffer, pool.buffer);
  assert.equal(reply.byteOffset, 16);
  assert.deepEqual([...pool.subarray(16, 19)], [1, 2, 3]);
  assert.throws(
    () => device.transferIn(0x81, new Uint16Array(4) as unknown as Uint8Array),
    usbError("LIBUSB_ERROR_INVALID_PARAM"),
  );
  device.close();
});

Deno.test("with no signal, a transfer is one libusb call with the whole timeout", () => {
  const { device, transfers } = scripted();
  device.transferOut(0x02, new Uint8Array(10), { timeout: 2500 });
  assert.deepEqual(transfers().map((c) => c.args[4]), [2500]);
  device.close();
});

Deno.test("a signal slices the transfer; partial progress is kept, nothing is sent twice", () => {
  const sent: number[] = [];
  let round = 0;
  const { device, transfers } = scripted({
    // Each slice moves 3 bytes, then times out; the third slice finishes.
    transfer: (_name, _endpoint, data, length, transferred) => {
      const n = round++ < 2 ? Math.min(3, length) : length;
      sent.push(...data.subarray(0, n));
      transferred[0] = n;
      return n === length ? 0 : LibusbError.TIMEOUT;
    },
  });
  const bytes = Uint8Array.from({ length: 10 }, (_, i) => i);
  const written = device.transferOut(0x02, bytes, {
    timeout: 5000,
    signal: new AbortController().signal,
  });
  assert.equal(written, 10);
  assert.deepEqual(sent, [...bytes]);
  assert.deepEqual(transfers().map((c) => c.args[3]), [10, 7, 4]);
  assert.ok(transfers().every((c) => (c.args[4] as number) <= ABORT_SLICE_MS));
  device.close();
});

Deno.test("a blocking transfer sees an abort made on another thread (the queue's poll hook)", () => {
  const controller = new AbortController();
  let polls = 0;
  // What the Worker loop hangs on item.signal: a synchronous look at shared memory.
  Object.defineProperty(controller.signal, Symbol.for("tbq.pollAbort"), {
    value: () => {
      if (++polls === 3) controller.abort(new Error("waiter gave up"));
    },
  });
  const { device, transfers } = scripted({
    transfer: (_name, _endpoint, data, _length, transferred) => {
      data[0] = 0xaa;
      transferred[0] = 1;
      return LibusbError.TIMEOUT;
    },
  });
  assert.throws(
    () => device.transferIn(0x81, 8, { timeout: 0, signal: controller.signal }),
    usbError("LIBUSB_ERROR_INTERRUPTED", (error) => {
      assert.equal(error.status, Status.Cancelled);
      assert.equal((error.cause as Error).message, "waiter gave up");
      assert.equal(error.transferred, 2);
      assert.deepEqual([...error.data!], [0xaa, 0xaa]);
    }),
  );
  assert.equal(transfers().length, 2);
  device.close();
});

Deno.test("an already aborted signal: no libusb call at all", async () => {
  const { device, transfers } = scripted();
  const signal = AbortSignal.abort(new Error("no"));
  assert.throws(
    () => device.transferOut(0x02, new Uint8Array(1), { signal }),
    usbError("LIBUSB_ERROR_INTERRUPTED", (e) => assert.equal(e.transferred, 0)),
  );
  await assert.rejects(
    device.transferInAsync(0x81, 8, { signal }),
    usbError("LIBUSB_ERROR_INTERRUPTED"),
  );
  assert.equal(transfers().length, 0);
  device.close();
});

Deno.test("an async transfer with nothing to read settles soon after its abort", async () => {
  const { device } = scripted({ transfer: nothingToRead });
  const controller = new AbortController();
  const reading = device.transferInAsync(0x81, 8, { timeout: 0, signal: controller.signal });
  await new Promise((resolve) => setTimeout(resolve, 30));
  const abortedAt = performance.now();
  controller.abort(new Error("stop"));
  await assert.rejects(reading, usbError("LIBUSB_ERROR_INTERRUPTED"));
  assert.ok(performance.now() - abortedAt < 100);
  device.close();
});

Deno.test("the signal's timeout still holds: a sliced transfer times out with its count", () => {
  const { device } = scripted({ transfer: nothingToRead });
  const started = performance.now();
  assert.throws(
    () => device.transferIn(0x81, 8, { timeout: 1, signal: new AbortController().signal }),
    usbError("LIBUSB_ERROR_TIMEOUT", (e) => assert.equal(e.transferred, 0)),
  );
  assert.ok(performance.now() - started < 1000);
  device.close();
});

Deno.test("a bad signal is a clear InvalidParameter error", () => {
  const { device } = scripted();
  assert.throws(
    () => device.transferOut(0x02, new Uint8Array(1), { signal: {} as AbortSignal }),
    usbError("LIBUSB_ERROR_INVALID_PARAM", (e) => assert.match(e.message, /AbortSignal/)),
  );
  device.close();
});

Deno.test("selectConfiguration: refused while an interface is claimed; resets alternates", () => {
  const { device, calls } = scripted();
  device.claimInterface(0);
  device.selectAlternateInterface(0, 1);
  assert.throws(
    () => device.selectConfiguration(1),
    usbError("LIBUSB_ERROR_BUSY", (e) => assert.match(e.message, /release interface 0/)),
  );
  device.releaseInterface(0);
  device.selectConfiguration(1);
  assert.deepEqual(calls.find((c) => c.name === "set_configuration")?.args, [HANDLE, 1]);
  assert.equal(device.configurations[0].interfaces[0].alternate.alternateSetting, 0);
  device.close();
});

Deno.test("configuration: undefined while unconfigured", () => {
  const { device } = scripted({ activeValue: 0 });
  assert.equal(device.configuration, undefined);
  assert.equal(device.configurations.length, 1);
  device.close();
});

Deno.test("reset: a re-enumerated device says to open it again", () => {
  const ok = scripted();
  ok.device.reset();
  assert.ok(ok.calls.some((c) => c.name === "reset"));
  ok.device.close();
  const gone = scripted({ codes: { reset: LibusbError.NOT_FOUND } });
  assert.throws(
    () => gone.device.reset(),
    usbError("LIBUSB_ERROR_NOT_FOUND", (e) => assert.match(e.message, /open it again/)),
  );
  gone.device.close();
});

Deno.test("kernel drivers: active, detach and attach, with the platform's answers", () => {
  const bound = scripted({ codes: { kernel_driver_active: 1 } });
  assert.equal(bound.device.kernelDriverActive(0), true);
  assert.equal(bound.device.detachKernelDriver(0), true);
  bound.device.attachKernelDriver(0);
  assert.deepEqual(bound.calls.map((c) => c.name), ["kernel_driver_active", "detach", "attach"]);
  bound.device.close();

  const free = scripted({ codes: { detach: LibusbError.NOT_FOUND } });
  assert.equal(free.device.kernelDriverActive(0), false);
  assert.equal(free.device.detachKernelDriver(0), false);
  free.device.close();

  const mac = scripted({ codes: { kernel_driver_active: LibusbError.NOT_SUPPORTED } });
  assert.equal(mac.device.kernelDriverActive(0), false);
  mac.device.close();

  const claimed = scripted({ codes: { attach: LibusbError.BUSY } });
  assert.throws(() => claimed.device.attachKernelDriver(0), usbError("LIBUSB_ERROR_BUSY"));
  assert.throws(
    () => claimed.device.kernelDriverActive(256),
    usbError("LIBUSB_ERROR_INVALID_PARAM"),
  );
  claimed.device.close();
});

Deno.test("speed and port path", () => {
  const names = ["unknown", "low", "full", "high", "super", "super-plus", "unknown"];
  names.forEach((name, speed) => {
    const { device } = scripted({ speed });
    assert.equal(device.speed, name);
    device.close();
  });
  const { device } = scripted({ ports: [2, 1, 3] });
  assert.deepEqual(device.portPath, [2, 1, 3]);
  device.close();
  assert.throws(() => device.portPath, usbError("LIBUSB_ERROR_NO_DEVICE"));
});

Deno.test("right after an async transfer settles, the endpoint takes a blocking one", async () => {
  const { device } = scripted({ transfer: nothingToRead });
  const controller = new AbortController();
  const reading = device.transferInAsync(0x81, 8, { timeout: 0, signal: controller.signal });
  controller.abort();
  await assert.rejects(reading, usbError("LIBUSB_ERROR_INTERRUPTED"));
  assert.equal(device.pendingTransfers, 0);
  assert.throws(() => device.transferIn(0x81, 8, { timeout: 5 }), usbError("LIBUSB_ERROR_TIMEOUT"));
  await device.transferOutAsync(0x02, new Uint8Array(1)).catch(() => {});
  assert.throws(
    () => device.transferOut(0x02, new Uint8Array(1)),
    usbError("LIBUSB_ERROR_TIMEOUT"),
  );
  device.close();
});

Deno.test("a driver the user detached stays detached across claim and release", () => {
  const { device, calls } = scripted({ codes: { kernel_driver_active: 1 } });
  const names = () => calls.map((c) => `${c.name}${c.name === "auto_detach" ? c.args[1] : ""}`);
  device.claimInterface(0);
  device.releaseInterface(0); // claimInterface's own detach: libusb re-attaches on release
  assert.deepEqual(names(), ["auto_detach1", "libusb_claim_interface", "libusb_release_interface"]);
  calls.length = 0;
  assert.equal(device.detachKernelDriver(0), true);
  device.claimInterface(0);
  device.releaseInterface(0); // released with auto-detach off: the driver stays away
  assert.deepEqual(names(), [
    "detach",
    "auto_detach1",
    "libusb_claim_interface",
    "auto_detach0",
    "libusb_release_interface",
    "auto_detach1",
  ]);
  calls.length = 0;
  device.attachKernelDriver(0);
  device.claimInterface(0);
  device.releaseInterface(0);
  assert.deepEqual(names(), [
    "attach",
    "auto_detach1",
    "libusb_claim_interface",
    "libusb_release_interface",
  ]);
  device.close();
});
