// UsbDevice against scripted libusb symbols: no USB hardware needed.
import assert from "node:assert/strict";
import { Status } from "../../src/status.ts";
import { DEFAULT_TIMEOUT, UsbDevice, type UsbDeviceSymbols } from "../../ffi/device.ts";
import { UsbError } from "../../ffi/errors.ts";
import { deviceInfo } from "../fixtures/usb_info.ts";

const HANDLE = 0xdead_b000n;
const INFO = deviceInfo();

interface Call {
  readonly name: string;
  readonly args: unknown[];
}

type Bulk = (
  endpoint: number,
  data: Uint8Array | null,
  length: number,
  transferred: Int32Array,
  timeout: number,
) => number;

/** Scripted symbols: records every call; `bulk`, `control` and `pending` decide the answers. */
function fakeLibusb(options: {
  bulk?: Bulk;
  control?: (args: unknown[]) => number;
  autoDetach?: number | null;
} = {}) {
  const calls: Call[] = [];
  const pending: {
    args: unknown[];
    settle: (code: number, transferred: number) => void;
  }[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  const record = (name: string) => (...args: unknown[]) => {
    calls.push({ name, args });
    return 0;
  };
  const symbols = {
    libusb_close: record("libusb_close"),
    libusb_set_auto_detach_kernel_driver: options.autoDetach === null
      ? null
      : (...args: unknown[]) => {
        calls.push({ name: "libusb_set_auto_detach_kernel_driver", args });
        return options.autoDetach ?? 0;
      },
    libusb_claim_interface: record("libusb_claim_interface"),
    libusb_release_interface: record("libusb_release_interface"),
    libusb_set_interface_alt_setting: record("libusb_set_interface_alt_setting"),
    libusb_clear_halt: record("libusb_clear_halt"),
    libusb_bulk_transfer: (
      handle: bigint,
      endpoint: number,
      data: Uint8Array | null,
      length: number,
      transferred: Int32Array,
      timeout: number,
    ) => {
      calls.push({ name: "libusb_bulk_transfer", args: [handle, endpoint, data, length, timeout] });
      return (options.bulk ?? (() => 0))(endpoint, data, length, transferred, timeout);
    },
    libusb_bulk_transfer_nonblocking: (
      handle: bigint,
      endpoint: number,
      data: Uint8Array,
      length: number,
      transferred: Int32Array,
      timeout: number,
    ) => {
      const args = [handle, endpoint, data, length, timeout];
      calls.push({ name: "libusb_bulk_transfer_nonblocking", args });
      const { promise, resolve } = Promise.withResolvers<number>();
      pending.push({
        args,
        settle: (code, count) => {
          transferred[0] = count;
          resolve(code);
        },
      });
      for (const waiter of waiters.filter((w) => pending.length >= w.count)) waiter.resolve();
      return promise;
    },
    libusb_control_transfer: (...args: unknown[]) => {
      calls.push({ name: "libusb_control_transfer", args });
      return options.control?.(args) ?? 0;
    },
  };
  return {
    calls,
    pending,
    names: () => calls.map((call) => call.name),
    /** Resolves once `count` async transfers have reached libusb. */
    started: (count: number): Promise<void> => {
      if (pending.length >= count) return Promise.resolve();
      const { promise, resolve } = Promise.withResolvers<void>();
      waiters.push({ count, resolve });
      return promise;
    },
    device: (onClosed?: () => void) =>
      new UsbDevice(symbols as unknown as UsbDeviceSymbols, HANDLE, INFO, onClosed),
  };
}

function isUsbError(name: string, status?: number) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof UsbError, String(error));
    assert.equal(error.name, name);
    if (status !== undefined) assert.equal(error.status, status);
    return true;
  };
}

Deno.test("claimInterface enables kernel-driver auto-detach first", () => {
  const fake = fakeLibusb();
  using dev = fake.device();
  dev.claimInterface(1);
  assert.deepEqual(fake.calls, [
    { name: "libusb_set_auto_detach_kernel_driver", args: [HANDLE, 1] },
    { name: "libusb_claim_interface", args: [HANDLE, 1] },
  ]);
});

Deno.test("claimInterface tolerates platforms without auto-detach, not other failures", () => {
  for (const autoDetach of [null, -12]) {
    const fake = fakeLibusb({ autoDetach });
    using dev = fake.device();
    dev.claimInterface(0);
    assert.equal(fake.names().at(-1), "libusb_claim_interface");
  }
  const fake = fakeLibusb({ autoDetach: -4 });
  using dev = fake.device();
  assert.throws(() => dev.claimInterface(0), isUsbError("LIBUSB_ERROR_NO_DEVICE"));
  assert.ok(!fake.names().includes("libusb_claim_interface"));
});

Deno.test("transferOut sends the bytes in place and returns the count written", () => {
  const shared = new Uint8Array(new SharedArrayBuffer(16)).subarray(4, 10);
  const fake = fakeLibusb({
    bulk: (_endpoint, _data, length, transferred) => {
      transferred[0] = length;
      return 0;
    },
  });
  using dev = fake.device();
  assert.equal(dev.transferOut(0x02, shared, { timeout: 250 }), 6);
  assert.deepEqual(fake.calls[0].args, [HANDLE, 0x02, shared, 6, 250]);
  assert.equal(fake.calls[0].args[2], shared, "passed in place, not copied");
  dev.transferOut(0x02, new Uint8Array(1));
  assert.equal(fake.calls[1].args[4], DEFAULT_TIMEOUT);
});

Deno.test("a short OUT write returns the count; a timeout part-way reports it in the error", () => {
  let code = 0;
  const fake = fakeLibusb({
    bulk: (_e, _d, _l, transferred) => {
      transferred[0] = 3;
      return code;
    },
  });
  using dev = fake.device();
  assert.equal(dev.transferOut(0x01, new Uint8Array(8)), 3);
  code = -7;
  assert.throws(() => dev.transferOut(0x01, new Uint8Array(8)), (error: unknown) => {
    assert.ok(isUsbError("LIBUSB_ERROR_TIMEOUT", Status.IoTimeout)(error));
    assert.equal((error as UsbError).transferred, 3);
    return true;
  });
});

Deno.test("transferIn returns exactly the bytes received; errors keep partial data", () => {
  let code = 0;
  const fake = fakeLibusb({
    bulk: (_endpoint, data, _length, transferred) => {
      data!.set([9, 8, 7]);
      transferred[0] = 3;
      return code;
    },
  });
  using dev = fake.device();
  const reply = dev.transferIn(0x81, 512, { timeout: 10 });
  assert.deepEqual([...reply], [9, 8, 7]);
  assert.equal(fake.calls[0].args[3], 512);
  code = -8;
  assert.throws(() => dev.transferIn(0x81, 512), (error: unknown) => {
    assert.ok(isUsbError("LIBUSB_ERROR_OVERFLOW")(error));
    assert.deepEqual([...(error as UsbError).data!], [9, 8, 7]);
    return true;
  });
});

Deno.test("bad arguments throw InvalidParameter UsbErrors without calling libusb", async () => {
  const fake = fakeLibusb();
  using dev = fake.device();
  const invalid = isUsbError("LIBUSB_ERROR_INVALID_PARAM", Status.InvalidParameter);
  assert.throws(() => dev.transferOut(0x81, new Uint8Array(1)), invalid, "IN address for OUT");
  assert.throws(() => dev.transferIn(0x02, 8), invalid, "OUT address for IN");
  assert.throws(() => dev.transferIn(0x81, -1), invalid);
  assert.throws(() => dev.transferIn(0x81, 1.5), invalid);
  assert.throws(() => dev.transferOut(0x100, new Uint8Array(1)), invalid);
  assert.throws(() => dev.transferOut(0x01, new Uint8Array(1), { timeout: -1 }), invalid);
  assert.throws(() => dev.transferOut(0x01, "text" as unknown as Uint8Array), invalid);
  assert.throws(() => dev.claimInterface(256), invalid);
  const setup = { requestType: "vendor", recipient: "device", request: 1, value: 0, index: 0 };
  assert.throws(() => dev.controlTransferIn({ ...setup, requestType: "x" } as never, 1), invalid);
  assert.throws(() => dev.controlTransferIn({ ...setup, value: 0x10000 } as never, 1), invalid);
  assert.throws(() => dev.controlTransferIn(setup as never, 0x10000), invalid);
  await assert.rejects(dev.transferOutAsync(0x81, new Uint8Array(1)), invalid);
  await assert.rejects(dev.transferInAsync(0x81, -5), invalid);
  assert.deepEqual(fake.calls, []);
});

Deno.test("control transfers encode bmRequestType like WebUSB's setup", () => {
  const fake = fakeLibusb({
    control: (args) => {
      const data = args[5] as Uint8Array | null;
      if (((args[1] as number) & 0x80) !== 0) {
        data!.set([0x34, 0x12]);
        return 2;
      }
      return (args[6] as number);
    },
  });
  using dev = fake.device();
  const reply = dev.controlTransferIn(
    { requestType: "standard", recipient: "device", request: 0x06, value: 0x0100, index: 0 },
    18,
    { timeout: 100 },
  );
  assert.deepEqual([...reply], [0x34, 0x12]);
  assert.deepEqual(fake.calls[0].args.slice(1, 5), [0x80, 0x06, 0x0100, 0]);
  assert.equal(fake.calls[0].args[6], 18);
  assert.equal(fake.calls[0].args[7], 100);

  const payload = new Uint8Array([1, 2, 3]);
  const written = dev.controlTransferOut(
    { requestType: "class", recipient: "interface", request: 0x09, value: 0x0200, index: 2 },
    payload,
  );
  assert.equal(written, 3);
  assert.deepEqual(fake.calls[1].args.slice(1, 7), [0x21, 0x09, 0x0200, 2, payload, 3]);

  dev.controlTransferOut({
    requestType: "vendor",
    recipient: "other",
    request: 1,
    value: 0,
    index: 0,
  });
  assert.deepEqual(fake.calls[2].args.slice(1, 7), [0x43, 1, 0, 0, null, 0], "no data stage");
  dev.controlTransferOut({
    requestType: "vendor",
    recipient: "endpoint",
    request: 1,
    value: 0,
    index: 0x81,
  });
  assert.equal(fake.calls[3].args[1], 0x42);
});

Deno.test("control transfer failures map to UsbError (a stall is PIPE)", () => {
  const fake = fakeLibusb({ control: () => -9 });
  using dev = fake.device();
  assert.throws(
    () =>
      dev.controlTransferIn({
        requestType: "vendor",
        recipient: "device",
        request: 1,
        value: 0,
        index: 0,
      }, 4),
    isUsbError("LIBUSB_ERROR_PIPE"),
  );
});

Deno.test("async transfers on one endpoint run one at a time, in call order", async () => {
  const fake = fakeLibusb();
  using dev = fake.device();
  const a = new Uint8Array([1]);
  const b = new Uint8Array([2, 2]);
  const first = dev.transferOutAsync(0x02, a, { timeout: 50 });
  const second = dev.transferOutAsync(0x02, b, { timeout: 50 });
  const other = dev.transferInAsync(0x81, 64, { timeout: 50 });
  await fake.started(2);
  await new Promise((resolve) => setTimeout(resolve, 0)); // let any wrongly started one arrive
  // Endpoint 0x02's second transfer waits; endpoint 0x81's runs alongside.
  assert.deepEqual(fake.pending.map((p) => p.args[1]), [0x02, 0x81]);
  assert.equal(fake.pending[0].args[2], a);
  assert.equal(dev.pendingTransfers, 3);
  assert.throws(() => dev.transferOut(0x02, a), isUsbError("LIBUSB_ERROR_BUSY"), "sync cuts in");
  fake.pending[0].settle(0, 1);
  assert.equal(await first, 1);
  await fake.started(3);
  assert.equal(fake.pending[2].args[2], b);
  fake.pending[2].settle(-7, 1);
  await assert.rejects(second, (error: unknown) => {
    assert.ok(isUsbError("LIBUSB_ERROR_TIMEOUT", Status.IoTimeout)(error));
    assert.equal((error as UsbError).transferred, 1);
    return true;
  });
  (fake.pending[1].args[2] as Uint8Array).set([5, 6, 7]);
  fake.pending[1].settle(0, 3);
  assert.deepEqual([...await other], [5, 6, 7]);
  await Promise.allSettled([first, second, other]);
  await new Promise((resolve) => setTimeout(resolve, 0)); // bookkeeping runs in .finally
  assert.equal(dev.pendingTransfers, 0);
  dev.transferOut(0x02, a); // idle again
});

Deno.test("close waits for the running async transfer and cancels queued ones", async () => {
  const fake = fakeLibusb();
  let closedCallbacks = 0;
  const dev = fake.device(() => closedCallbacks++);
  dev.claimInterface(0);
  const running = dev.transferOutAsync(0x02, new Uint8Array(4));
  const queued = dev.transferOutAsync(0x02, new Uint8Array(4));
  await fake.started(1);
  dev.close();
  assert.equal(dev.opened, false);
  assert.ok(!fake.names().includes("libusb_close"), "not while libusb uses the handle");
  assert.throws(
    () => dev.transferOut(0x02, new Uint8Array(1)),
    isUsbError("LIBUSB_ERROR_NO_DEVICE"),
  );
  await assert.rejects(dev.transferOutAsync(0x02, new Uint8Array(1)), UsbError);
  fake.pending[0].settle(0, 4);
  assert.equal(await running, 4);
  await assert.rejects(queued, isUsbError("LIBUSB_ERROR_INTERRUPTED", Status.Cancelled));
  await dev.closed;
  assert.equal(fake.pending.length, 1, "the queued transfer never reached libusb");
  assert.deepEqual(fake.names().slice(-2), ["libusb_release_interface", "libusb_close"]);
  assert.equal(closedCallbacks, 1);
  dev.close();
  assert.equal(closedCallbacks, 1, "idempotent");
});

Deno.test("close releases claimed interfaces, then closes the handle", async () => {
  const fake = fakeLibusb();
  {
    using dev = fake.device();
    dev.claimInterface(0);
    dev.claimInterface(2);
    dev.releaseInterface(0);
  }
  assert.deepEqual(fake.calls.slice(-2), [
    { name: "libusb_release_interface", args: [HANDLE, 2] },
    { name: "libusb_close", args: [HANDLE] },
  ]);
  const dev = fake.device();
  dev.close();
  await dev.closed;
});
