import assert from "node:assert/strict";
import { isSuccess, Status, statusName } from "../../src/status.ts";
import {
  LIBUSB_ERRORS,
  LibusbError,
  libusbError,
  unwrap,
  UsbError,
  UsbStatus,
} from "../../ffi/errors.ts";

// The values of `enum libusb_error` in libusb.h, written out independently of errors.ts.
const LIBUSB_H: Record<string, number> = {
  LIBUSB_SUCCESS: 0,
  LIBUSB_ERROR_IO: -1,
  LIBUSB_ERROR_INVALID_PARAM: -2,
  LIBUSB_ERROR_ACCESS: -3,
  LIBUSB_ERROR_NO_DEVICE: -4,
  LIBUSB_ERROR_NOT_FOUND: -5,
  LIBUSB_ERROR_BUSY: -6,
  LIBUSB_ERROR_TIMEOUT: -7,
  LIBUSB_ERROR_OVERFLOW: -8,
  LIBUSB_ERROR_PIPE: -9,
  LIBUSB_ERROR_INTERRUPTED: -10,
  LIBUSB_ERROR_NO_MEM: -11,
  LIBUSB_ERROR_NOT_SUPPORTED: -12,
  LIBUSB_ERROR_OTHER: -99,
};

Deno.test("error table: every libusb error code has its libusb.h name and a status", () => {
  assert.equal(LIBUSB_ERRORS.length, Object.keys(LIBUSB_H).length);
  for (const [name, code] of Object.entries(LIBUSB_H)) {
    const info = libusbError(code);
    assert.equal(info.name, name, `name of ${code}`);
    assert.equal(info.code, code);
    assert.ok(Number.isInteger(info.status) && info.status === (info.status | 0), name);
    assert.equal(isSuccess(info.status), code === 0, `${name} success-ness`);
    assert.ok(info.hint.length > 0);
    const short = name.replace(/^LIBUSB_(ERROR_)?/, "") as keyof typeof LibusbError;
    assert.equal(LibusbError[short], code, `LibusbError.${short}`);
  }
});

Deno.test("error table: statuses follow the contract", () => {
  const expected: Record<number, number> = {
    [-7]: Status.IoTimeout,
    [-4]: Status.DeviceNotConnected,
    [-5]: Status.DeviceNotConnected,
    [-2]: Status.InvalidParameter,
    [-11]: Status.InsufficientResources,
    [-10]: Status.Cancelled,
    [-99]: Status.Unsuccessful,
    [-3]: 0xC0000022 | 0,
    [-6]: 0x80000011 | 0,
    [-8]: 0xC000003C | 0,
    [-9]: 0xC000014B | 0,
    [-1]: 0xC0000185 | 0,
    [-12]: 0xC00000BB | 0,
  };
  for (const [code, status] of Object.entries(expected)) {
    assert.equal(libusbError(Number(code)).status, status, `status of ${code}`);
  }
  // Local NTSTATUS values never shadow one that src/status.ts already names; each has its name.
  const queueStatuses = new Set<number>(Object.values(Status));
  for (const [name, value] of Object.entries(UsbStatus)) {
    assert.ok(!queueStatuses.has(value), `${name} duplicates a Status`);
    assert.equal(statusName(value), name);
  }
});

Deno.test("unknown codes are Unsuccessful with a descriptive name", () => {
  const info = libusbError(-42);
  assert.equal(info.name, "LIBUSB_ERROR_UNKNOWN(-42)");
  assert.equal(info.status, Status.Unsuccessful);
});

Deno.test("UsbError carries code, name, status, advice and transfer facts", () => {
  const error = new UsbError(-7, { operation: "transferOut(0x02)", transferred: 64 });
  assert.ok(error instanceof Error);
  assert.equal(error.code, -7);
  assert.equal(error.name, "LIBUSB_ERROR_TIMEOUT");
  assert.equal(error.status, Status.IoTimeout);
  assert.equal(error.transferred, 64);
  assert.match(error.message, /^transferOut\(0x02\) failed: LIBUSB_ERROR_TIMEOUT/);
  assert.match(error.message, /64 bytes transferred/);
  assert.match(String(error), /^LIBUSB_ERROR_TIMEOUT: /);

  assert.match(new UsbError(-3).message, /udev rule/);
  assert.match(new UsbError(-6).message, /another process or kernel driver/);
  assert.match(new UsbError(-9).message, /clearHalt/);
  const cause = new Error("inner");
  assert.equal(new UsbError(-1, { cause }).cause, cause);
});

Deno.test("unwrap passes results through and throws UsbError for negatives", () => {
  assert.equal(unwrap(0), 0);
  assert.equal(unwrap(17), 17);
  assert.equal(unwrap(3n), 3);
  assert.throws(() => unwrap(-4, "libusb_open"), (error: unknown) => {
    assert.ok(error instanceof UsbError);
    assert.equal(error.name, "LIBUSB_ERROR_NO_DEVICE");
    assert.equal(error.status, Status.DeviceNotConnected);
    assert.match(error.message, /^libusb_open failed/);
    return true;
  });
  assert.throws(() => unwrap(-99n), { name: "LIBUSB_ERROR_OTHER" });
});
