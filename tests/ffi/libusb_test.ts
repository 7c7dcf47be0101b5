import assert from "node:assert/strict";
import { Status } from "../../src/status.ts";
import { UsbError } from "../../ffi/errors.ts";
import { LibusbNotFoundError, libusbPath } from "../../ffi/library.ts";
import { Libusb } from "../../ffi/libusb.ts";
import { MemoryReader } from "../../ffi/memory_reader.ts";
import { libusbSymbols } from "../../ffi/symbols.ts";

Deno.test("Libusb loads libusb and reads its version", async () => {
  const usb = Libusb.open();
  assert.equal(usb.path, libusbPath());
  const version = usb.version;
  assert.equal(version.major, 1);
  assert.ok(version.minor >= 0 && version.micro >= 0 && version.nano >= 0);
  assert.ok(version.minor > 0 || version.micro >= 13, JSON.stringify(version));
  assert.match(version.describe ?? "", /libusb/);
  assert.equal(usb.version, version, "cached");
  usb.close();
  usb.close(); // idempotent
  await usb.closed;
  assert.equal(usb.version, version, "still readable once read");
  assert.throws(() => usb.devices(), UsbError);
});

Deno.test("on a machine without USB, devices() is [] and openDevice throws not-found", () => {
  using usb = Libusb.open({ path: libusbPath() });
  assert.deepEqual(usb.devices(), []);
  assert.deepEqual(usb.devices({ strings: false }), []);
  assert.throws(
    () => usb.openDevice({ vendorId: 0x46f4, productId: 0x0001, serialNumber: "X1" }),
    (error: unknown) => {
      assert.ok(error instanceof UsbError);
      assert.equal(error.name, "LIBUSB_ERROR_NOT_FOUND");
      assert.equal(error.code, -5);
      assert.equal(error.status, Status.DeviceNotConnected);
      assert.match(error.message, /openDevice\(46f4:0001 serial "X1"\)/);
      return true;
    },
  );
});

Deno.test("openDevice validates its filter", () => {
  using usb = Libusb.open();
  for (const filter of [{ vendorId: -1, productId: 1 }, { vendorId: 1, productId: 0x10000 }]) {
    assert.throws(() => usb.openDevice(filter), (error: unknown) => {
      assert.ok(error instanceof UsbError);
      assert.equal(error.status, Status.InvalidParameter);
      return true;
    });
  }
});

Deno.test("Libusb.open with a bad explicit path names it", () => {
  assert.throws(() => Libusb.open({ path: "/nonexistent/libusb-1.0.so.0" }), (error: unknown) => {
    assert.ok(error instanceof LibusbNotFoundError);
    assert.deepEqual(error.tried, ["/nonexistent/libusb-1.0.so.0"]);
    assert.match(error.message, /LIBUSB_PATH/);
    return true;
  });
});

Deno.test("the memory reader reads what libc's memcpy reads", () => {
  const usb = Deno.dlopen(libusbPath(), libusbSymbols);
  const libc = Deno.dlopen("libc.so.6", {
    memcpy: { parameters: ["buffer", "usize", "usize"], result: "usize" },
  });
  try {
    const reader = MemoryReader.create(usb.symbols);
    assert.equal(reader.via, "libusb_get_parent");
    assert.equal(reader.offset % 8n, 0n);
    const address = usb.symbols.libusb_get_version!();
    const expected = new Uint8Array(24); // struct libusb_version: 4 x u16, 2 pointers
    libc.symbols.memcpy(expected, address, 24n);
    assert.deepEqual(reader.bytes(address, 24), expected);
    assert.deepEqual(reader.bytes(address + 3n, 13), expected.subarray(3, 16), "unaligned");
    const describe = new DataView(expected.buffer).getBigUint64(16, true);
    const text = new Uint8Array(64);
    libc.symbols.memcpy(text, describe, 64n);
    assert.equal(reader.cString(describe), new TextDecoder().decode(text).split("\0")[0]);
    assert.throws(() => reader.word(0n), UsbError, "refuses NULL");

    // The device list path: the array libusb_get_device_list hands out ends with a NULL entry.
    const context = new BigUint64Array(1);
    assert.equal(usb.symbols.libusb_init(context), 0);
    const list = new BigUint64Array(1);
    const count = Number(usb.symbols.libusb_get_device_list(context[0], list));
    try {
      assert.ok(count >= 0 && list[0] !== 0n);
      const entries = new BigUint64Array(count + 1);
      libc.symbols.memcpy(entries, list[0], BigInt(8 * (count + 1)));
      for (let i = 0; i <= count; i++) {
        assert.equal(reader.word(list[0] + 8n * BigInt(i)), entries[i]);
      }
      assert.equal(reader.word(list[0] + 8n * BigInt(count)), 0n, "NULL terminator");
    } finally {
      usb.symbols.libusb_free_device_list(list[0], 1);
      usb.symbols.libusb_exit(context[0]);
    }
  } finally {
    libc.close();
    usb.close();
  }
});

Deno.test("the memory reader refuses accessors that are not plain field reads", () => {
  const peek = (address: bigint) => address;
  // Returns NULL, like libusb-compatible libraries without hub topology.
  assert.throws(
    () =>
      MemoryReader.create({
        libusb_get_parent_calibrate: () => 0n,
        libusb_get_parent_peek: peek,
        libusb_get_device_calibrate: null,
        libusb_get_device_peek: null,
      }),
    (error: unknown) =>
      error instanceof UsbError && error.name === "LIBUSB_ERROR_NOT_SUPPORTED" &&
      /libusb_get_parent is not a plain field read/.test(error.message) &&
      /libusb_get_device is missing/.test(error.message),
  );
  // Falls back to libusb_get_device, and calibrates its offset from the slot it reads.
  let calls = 0;
  const reader = MemoryReader.create({
    libusb_get_parent_calibrate: null,
    libusb_get_parent_peek: null,
    libusb_get_device_calibrate: (dev) => {
      calls++;
      return (dev as BigUint64Array)[5];
    },
    libusb_get_device_peek: (address) => address + 40n, // echo the address it would load
  });
  assert.equal(reader.via, "libusb_get_device");
  assert.equal(reader.offset, 40n);
  assert.equal(calls, 2, "two marker patterns");
  assert.equal(reader.word(0x5000n), 0x5000n);
  // An accessor that reads a different slot each time is refused.
  let slot = 2;
  assert.throws(() =>
    MemoryReader.create({
      libusb_get_parent_calibrate: (dev) => (dev as BigUint64Array)[slot++],
      libusb_get_parent_peek: peek,
      libusb_get_device_calibrate: null,
      libusb_get_device_peek: null,
    }), UsbError);
});

Deno.test("errorName: libusb's own names, read through libusb; unknown codes give undefined", () => {
  using usb = Libusb.open();
  assert.equal(usb.errorName(-4), "LIBUSB_ERROR_NO_DEVICE");
  assert.equal(usb.errorName(-99), "LIBUSB_ERROR_OTHER");
  assert.equal(usb.errorName(-1234), undefined);
  assert.throws(() => usb.errorName(1.5), { name: "LIBUSB_ERROR_INVALID_PARAM" });
  // While a context is open, UsbError asks it about codes outside tbq's table.
  assert.equal(new UsbError(-1234).name, "LIBUSB_ERROR_UNKNOWN(-1234)");
});

async function libusbStderr(level: string): Promise<string> {
  const program = `
    import { Libusb } from ${JSON.stringify(new URL("../../ffi/libusb.ts", import.meta.url).href)};
    using usb = Libusb.open({ logLevel: ${JSON.stringify(level)} });
    usb.devices();
    usb.openDevice({ vendorId: 0xfffe, productId: 1 }).close();
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-lock", program],
    env: { LIBUSB_DEBUG: "" },
    stdout: "null",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(out.stderr);
}

Deno.test("logLevel: libusb's own messages appear on stderr at debug, not at none", async () => {
  const [debug, none] = await Promise.all([libusbStderr("debug"), libusbStderr("none")]);
  assert.match(debug, /libusb: debug/);
  assert.doesNotMatch(none, /libusb: debug/);
  assert.throws(
    () => Libusb.open({ logLevel: "loud" as "debug" }),
    { name: "LIBUSB_ERROR_INVALID_PARAM" },
  );
});

Deno.test("openDevice by place: bus and address go together, each 0..255", () => {
  using usb = Libusb.open();
  const at = { vendorId: 0xfffe, productId: 1 };
  assert.throws(() => usb.openDevice({ ...at, busNumber: 1 }), {
    name: "LIBUSB_ERROR_INVALID_PARAM",
    message: /busNumber and deviceAddress go together/,
  });
  assert.throws(() => usb.openDevice({ ...at, busNumber: 1, deviceAddress: 256 }), {
    name: "LIBUSB_ERROR_INVALID_PARAM",
  });
  // A well-formed place that holds no such device: not found, like any absent device.
  assert.throws(() => usb.openDevice({ ...at, busNumber: 1, deviceAddress: 2 }), {
    name: "LIBUSB_ERROR_NOT_FOUND",
  });
});
