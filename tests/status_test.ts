import assert from "node:assert/strict";
import {
  BufferDisposition,
  isSuccess,
  QueueError,
  type QueueErrorCode,
  Status,
  statusName,
  statusOfError,
  UsbStatus,
} from "../mod.ts";
import { LIBUSB_ERRORS } from "../ffi/errors.ts";

Deno.test("Status holds NTSTATUS values as signed 32-bit numbers", () => {
  const expected: Record<string, number> = {
    Success: 0,
    Unsuccessful: 0xC0000001,
    InvalidParameter: 0xC000000D,
    InsufficientResources: 0xC000009A,
    DeviceNotConnected: 0xC000009D,
    IoTimeout: 0xC00000B5,
    Cancelled: 0xC0000120,
    InvalidDeviceState: 0xC0000184,
  };
  for (const [name, unsigned] of Object.entries(expected)) {
    assert.equal(Status[name as keyof typeof Status], unsigned | 0, name);
    assert.equal(statusName(unsigned), name);
  }
});

Deno.test("isSuccess is status >= 0 as a signed number", () => {
  assert.equal(isSuccess(Status.Success), true);
  assert.equal(isSuccess(0x40000000), true);
  assert.equal(isSuccess(Status.Cancelled), false);
  assert.equal(isSuccess(0xC0000001), false);
});

Deno.test("statusName of an unnamed status is its hex", () => {
  assert.equal(statusName(0xC0001234), "0xC0001234");
  assert.equal(statusName(1), "0x00000001");
});

Deno.test("BufferDisposition is a numeric enum with Invalid = 0", () => {
  assert.equal(BufferDisposition.Invalid, 0);
  assert.notEqual(BufferDisposition.WorkComplete, BufferDisposition.WorkPending);
});

Deno.test("statusOfError reads a numeric status property, else Unsuccessful", () => {
  assert.equal(statusOfError(Object.assign(new Error(), { status: 0xC00000B5 })), Status.IoTimeout);
  assert.equal(statusOfError(new Error()), Status.Unsuccessful);
  assert.equal(statusOfError("text"), Status.Unsuccessful);
  assert.equal(statusOfError({ status: 1.5 }), Status.Unsuccessful);
});

Deno.test("every status tbq can produce has a name: the queue's, the USB layer's, libusb's", () => {
  const produced = [
    ...Object.values(Status),
    ...Object.values(UsbStatus),
    ...LIBUSB_ERRORS.map((row) => row.status),
    ...["InvalidConfig", "Closed", "LockTimeout", "WorkerFailed"].map((code) =>
      new QueueError(code as QueueErrorCode, "").status
    ),
  ];
  for (const code of produced) assert.doesNotMatch(statusName(code), /^0x/, `0x${code >>> 0}`);
  assert.equal(statusName(UsbStatus.AccessDenied), "AccessDenied");
});
