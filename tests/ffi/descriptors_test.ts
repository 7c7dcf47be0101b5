// Descriptor parsing from raw GET_DESCRIPTOR bytes: no USB hardware needed.
import assert from "node:assert/strict";
import {
  configurationTotalLength,
  parseConfigurationDescriptor,
  parseDeviceDescriptor,
  parseEndpointDescriptor,
  parseLanguageIds,
  parseStringDescriptor,
  type UsbConfiguration,
} from "../../ffi/descriptors.ts";
import { LibusbError, UsbError } from "../../ffi/errors.ts";
import { UsbDevice, type UsbDeviceSymbols } from "../../ffi/device.ts";

/** A configuration descriptor: the 9-byte header (wTotalLength filled in) and the rest. */
function config(
  value: number,
  numInterfaces: number,
  rest: number[][],
  iConfiguration = 0,
): Uint8Array {
  const body = rest.flat();
  const total = 9 + body.length;
  return new Uint8Array([
    9,
    2,
    total & 0xff,
    total >> 8,
    numInterfaces,
    value,
    iConfiguration,
    0x80,
    50,
    ...body,
  ]);
}

function iface(
  number: number,
  alternate: number,
  endpoints: number,
  cls: number,
  sub: number,
  proto: number,
  iInterface = 0,
): number[] {
  return [9, 4, number, alternate, endpoints, cls, sub, proto, iInterface];
}

function endpoint(address: number, attributes: number, packetSize: number, interval = 0): number[] {
  return [7, 5, address, attributes, packetSize & 0xff, packetSize >> 8, interval];
}

const BULK = 2;
const INTERRUPT = 3;
const ISOCHRONOUS = 1;

function assertMalformed(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof UsbError, `expected a UsbError, got ${error}`);
    assert.equal(error.code, LibusbError.IO);
    assert.equal(error.name, "LIBUSB_ERROR_IO");
    assert.match(error.message, pattern);
    return true;
  });
}

Deno.test("mass storage: one interface, bulk IN 0x81 and OUT 0x02 of 512 bytes", () => {
  const bytes = config(1, 1, [
    iface(0, 0, 2, 0x08, 0x06, 0x50),
    endpoint(0x81, BULK, 512),
    endpoint(0x02, BULK, 512),
  ]);
  assert.equal(bytes.length, 32);
  assert.equal(configurationTotalLength(bytes.subarray(0, 9)), 32);
  const parsed = parseConfigurationDescriptor(bytes);
  const alternate = {
    alternateSetting: 0,
    interfaceClass: 0x08,
    interfaceSubclass: 0x06,
    interfaceProtocol: 0x50,
    endpoints: [
      { endpointNumber: 1, direction: "in", type: "bulk", packetSize: 512 },
      { endpointNumber: 2, direction: "out", type: "bulk", packetSize: 512 },
    ],
  };
  const expected: UsbConfiguration = {
    configurationValue: 1,
    interfaces: [{ interfaceNumber: 0, alternate, alternates: [alternate] }],
  } as UsbConfiguration;
  assert.deepEqual(parsed, expected);
  assert.equal(parsed.interfaces[0].alternate, parsed.interfaces[0].alternates[0]);
  assert.ok(!("configurationName" in parsed));
  assert.ok(!("interfaceName" in parsed.interfaces[0].alternate));
});

Deno.test("FTDI FT232: vendor-specific interface, bulk IN 0x81 / OUT 0x02 of 64 bytes", () => {
  const bytes = config(1, 1, [
    iface(0, 0, 2, 0xff, 0xff, 0xff, 2),
    endpoint(0x81, BULK, 64),
    endpoint(0x02, BULK, 64),
  ]);
  const asked: number[] = [];
  const parsed = parseConfigurationDescriptor(bytes, {
    strings: (index) => {
      asked.push(index);
      return index === 2 ? "FT232R USB UART" : undefined;
    },
  });
  assert.deepEqual(asked, [2], "index 0 (no string) is never looked up");
  const [ftdi] = parsed.interfaces;
  assert.equal(ftdi.alternate.interfaceClass, 0xff);
  assert.equal(ftdi.alternate.interfaceName, "FT232R USB UART");
  assert.deepEqual(ftdi.alternate.endpoints, [
    { endpointNumber: 1, direction: "in", type: "bulk", packetSize: 64 },
    { endpointNumber: 2, direction: "out", type: "bulk", packetSize: 64 },
  ]);
});

Deno.test("HID keyboard: the HID descriptor (0x21) between interface and endpoint is skipped", () => {
  const hid = [9, 0x21, 0x11, 0x01, 0x00, 0x01, 0x22, 0x3f, 0x00];
  const bytes = config(1, 1, [
    iface(0, 0, 1, 0x03, 0x01, 0x01),
    hid,
    endpoint(0x81, INTERRUPT, 8, 10),
  ], 3);
  const parsed = parseConfigurationDescriptor(bytes, {
    strings: (index) => index === 3 ? "HID Keyboard" : undefined,
  });
  assert.equal(parsed.configurationName, "HID Keyboard");
  assert.equal(parsed.interfaces.length, 1);
  const { alternate } = parsed.interfaces[0];
  assert.deepEqual(
    [alternate.interfaceClass, alternate.interfaceSubclass, alternate.interfaceProtocol],
    [3, 1, 1],
  );
  assert.deepEqual(alternate.endpoints, [
    { endpointNumber: 1, direction: "in", type: "interrupt", packetSize: 8 },
  ]);
});

Deno.test("two alternate settings: grouped under one interface; the selected one is `alternate`", () => {
  // Interface 0 (control, no endpoints), interface 1 with alt 0 (no bandwidth) and alt 1
  // (isochronous IN 0x83 of 1023 bytes, high-bandwidth bits 12..11 set and masked away), an
  // interface association and a class-specific descriptor sprinkled in.
  const iad = [8, 0x0b, 0, 2, 0x01, 0x02, 0, 0];
  const classSpecific = [5, 0x24, 0x01, 0x00, 0x01];
  const bytes = config(1, 2, [
    iad,
    iface(0, 0, 0, 0x01, 0x01, 0x00),
    classSpecific,
    iface(1, 0, 0, 0x01, 0x02, 0x00),
    iface(1, 1, 1, 0x01, 0x02, 0x00, 7),
    classSpecific,
    endpoint(0x83, ISOCHRONOUS | 0x04, 1023 | 0x1000, 1),
  ]);
  const first = parseConfigurationDescriptor(bytes);
  assert.deepEqual(first.interfaces.map((i) => i.interfaceNumber), [0, 1]);
  const streaming = first.interfaces[1];
  assert.deepEqual(streaming.alternates.map((a) => a.alternateSetting), [0, 1]);
  assert.equal(streaming.alternate, streaming.alternates[0]);
  assert.deepEqual(streaming.alternates[0].endpoints, []);
  assert.deepEqual(streaming.alternates[1].endpoints, [
    { endpointNumber: 3, direction: "in", type: "isochronous", packetSize: 1023 },
  ]);

  const selected = parseConfigurationDescriptor(bytes, {
    selectedAlternate: (n) => n === 1 ? 1 : undefined,
  });
  assert.equal(selected.interfaces[1].alternate, selected.interfaces[1].alternates[1]);
  assert.equal(selected.interfaces[0].alternate.alternateSetting, 0);
  const unknown = parseConfigurationDescriptor(bytes, { selectedAlternate: () => 9 });
  assert.equal(
    unknown.interfaces[1].alternate.alternateSetting,
    0,
    "an unknown alternate: the first",
  );
});

Deno.test("bytes past wTotalLength are ignored; a 9-byte audio endpoint parses", () => {
  const bytes = config(1, 1, [
    iface(0, 0, 1, 0x01, 0x02, 0x00),
    [9, 5, 0x01, ISOCHRONOUS, 0xc0, 0x00, 1, 0, 0],
  ]);
  const padded = new Uint8Array([...bytes, 0, 0, 0, 0xff]);
  const parsed = parseConfigurationDescriptor(padded);
  assert.deepEqual(parsed.interfaces[0].alternate.endpoints, [
    { endpointNumber: 1, direction: "out", type: "isochronous", packetSize: 192 },
  ]);
  assert.equal(parseEndpointDescriptor(new Uint8Array([7, 5, 0x00, 0, 8, 0, 0])).type, "control");
});

Deno.test("device descriptor: all 18 bytes; the string descriptors", () => {
  const bytes = new Uint8Array([
    18,
    1,
    0x10,
    0x02,
    0xef,
    0x02,
    0x01,
    64,
    0x03,
    0x04,
    0x01,
    0x60,
    0x00,
    0x06,
    1,
    2,
    3,
    2,
  ]);
  assert.deepEqual(parseDeviceDescriptor(bytes), {
    usbVersion: 0x0210,
    deviceClass: 0xef,
    deviceSubclass: 0x02,
    deviceProtocol: 0x01,
    maxPacketSize0: 64,
    vendorId: 0x0403,
    productId: 0x6001,
    deviceVersion: 0x0600,
    manufacturerIndex: 1,
    productIndex: 2,
    serialNumberIndex: 3,
    numConfigurations: 2,
  });
  const text = "FTDI ünï";
  const utf16 = new Uint8Array(new Uint16Array([...text].map((c) => c.charCodeAt(0))).buffer);
  assert.equal(parseStringDescriptor(new Uint8Array([2 + utf16.length, 3, ...utf16])), text);
  assert.equal(parseStringDescriptor(new Uint8Array([2, 3])), "");
  assert.deepEqual(parseLanguageIds(new Uint8Array([6, 3, 0x09, 0x04, 0x07, 0x04])), [
    0x0409,
    0x0407,
  ]);
});

Deno.test("malformed configurations throw LIBUSB_ERROR_IO and never loop", () => {
  const good = config(1, 1, [iface(0, 0, 1, 0xff, 0, 0), endpoint(0x81, BULK, 64)]);
  assert.equal(good.length, 25);
  // Truncated header.
  assertMalformed(() => parseConfigurationDescriptor(new Uint8Array(0)), /at least 9 bytes, got 0/);
  assertMalformed(() => parseConfigurationDescriptor(good.subarray(0, 5)), /got 5/);
  // Not a configuration.
  const wrongType = good.slice();
  wrongType[1] = 1;
  assertMalformed(() => parseConfigurationDescriptor(wrongType), /bDescriptorType is 1/);
  // bLength of the header too small.
  const shortHeader = good.slice();
  shortHeader[0] = 4;
  assertMalformed(() => parseConfigurationDescriptor(shortHeader), /bLength is 4/);
  // wTotalLength lies: larger than the bytes given (truncated read).
  assertMalformed(
    () => parseConfigurationDescriptor(good.subarray(0, 20)),
    /wTotalLength is 25 but only 20/,
  );
  // wTotalLength lies: smaller than the header.
  const tiny = good.slice();
  tiny[2] = 3;
  assertMalformed(() => parseConfigurationDescriptor(tiny), /wTotalLength 3 is shorter/);
  // wTotalLength lies: smaller than the content, cutting the endpoint in two.
  const cut = good.slice();
  cut[2] = 22;
  assertMalformed(() => parseConfigurationDescriptor(cut), /byte 18 .* runs past wTotalLength 22/);
  // bLength 0 and 1 inside (would loop forever if trusted).
  for (const length of [0, 1]) {
    const zero = good.slice();
    zero[18] = length;
    assertMalformed(
      () => parseConfigurationDescriptor(zero),
      new RegExp(`bLength ${length} at byte 18`),
    );
  }
  // bLength past the end.
  const long = good.slice();
  long[9] = 200;
  assertMalformed(() => parseConfigurationDescriptor(long), /byte 9 .* runs past/);
  // A single stray byte before wTotalLength.
  assertMalformed(
    () => parseConfigurationDescriptor(config(1, 1, [iface(0, 0, 0, 0xff, 0, 0), [0]])),
    /1 stray byte at offset 18/,
  );
  // Fewer endpoints than bNumEndpoints.
  assertMalformed(
    () =>
      parseConfigurationDescriptor(
        config(1, 1, [iface(0, 0, 2, 0xff, 0, 0), endpoint(0x81, BULK, 64)]),
      ),
    /bNumEndpoints 2, but 1 endpoint/,
  );
  // An endpoint before any interface.
  assertMalformed(
    () => parseConfigurationDescriptor(config(1, 0, [endpoint(0x81, BULK, 64)])),
    /comes before any interface/,
  );
  // Short interface and endpoint descriptors.
  assertMalformed(
    () => parseConfigurationDescriptor(config(1, 1, [[5, 4, 0, 0, 0]])),
    /interface descriptor at byte 9 has bLength 5/,
  );
  assertMalformed(
    () => parseConfigurationDescriptor(config(1, 1, [iface(0, 0, 1, 0xff, 0, 0), [4, 5, 0x81, 2]])),
    /endpoint descriptor at byte 18 has bLength 4/,
  );
  // A nested configuration descriptor.
  assertMalformed(
    () => parseConfigurationDescriptor(config(1, 1, [[9, 2, 9, 0, 0, 1, 0, 0x80, 50]])),
    /type 2 at byte 9/,
  );
});

Deno.test("malformed device, endpoint and string descriptors throw LIBUSB_ERROR_IO", () => {
  const device = new Uint8Array([18, 1, 0, 2, 0, 0, 0, 64, 1, 2, 3, 4, 0, 1, 0, 0, 0, 1]);
  assertMalformed(() => parseDeviceDescriptor(device.subarray(0, 17)), /18 bytes, got 17/);
  const wrongType = device.slice();
  wrongType[1] = 2;
  assertMalformed(() => parseDeviceDescriptor(wrongType), /bDescriptorType is 2/);
  const zero = device.slice();
  zero[0] = 0;
  assertMalformed(() => parseDeviceDescriptor(zero), /bLength is 0/);
  assertMalformed(() => parseEndpointDescriptor(new Uint8Array([7, 5, 0x81])), /at least 7 bytes/);
  assertMalformed(
    () => parseEndpointDescriptor(new Uint8Array([7, 4, 0x81, 2, 64, 0, 0])),
    /expected 5/,
  );
  assertMalformed(() => parseStringDescriptor(new Uint8Array([3])), /1 bytes/);
  assertMalformed(() => parseStringDescriptor(new Uint8Array([10, 3, 0x41, 0])), /bLength is 10/);
  assertMalformed(() => parseStringDescriptor(new Uint8Array([0, 3])), /bLength is 0/);
  assertMalformed(() => parseLanguageIds(new Uint8Array([4, 2, 9, 4])), /expected 3/);
});

Deno.test("input that is not a Uint8Array: LIBUSB_ERROR_INVALID_PARAM", () => {
  assert.throws(
    () => parseConfigurationDescriptor([9, 2, 9, 0, 0, 1, 0, 0x80, 50] as unknown as Uint8Array),
    (error: unknown) => error instanceof UsbError && error.code === LibusbError.INVALID_PARAM,
  );
});

Deno.test("fuzz: random and mutated bytes parse or throw a UsbError, never hang", () => {
  const seed = config(1, 2, [
    iface(0, 0, 1, 3, 1, 1),
    [9, 0x21, 0x11, 0x01, 0x00, 0x01, 0x22, 0x3f, 0x00],
    endpoint(0x81, INTERRUPT, 8, 10),
    iface(1, 0, 2, 0xff, 0, 0),
    endpoint(0x82, BULK, 64),
    endpoint(0x03, BULK, 64),
    iface(1, 1, 0, 0xff, 0, 0),
  ]);
  let state = 0x2545f491;
  const random = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  let parsed = 0;
  for (let round = 0; round < 20_000; round++) {
    let bytes: Uint8Array;
    if (round % 2 === 0) {
      bytes = seed.slice(0, seed.length - (random() % 4 === 0 ? random() % seed.length : 0));
      for (let flips = random() % 4; flips >= 0; flips--) bytes[random() % bytes.length] = random();
    } else {
      bytes = new Uint8Array(random() % 64).map(() => random());
      if (bytes.length > 1) bytes[1] = 2;
    }
    try {
      parseConfigurationDescriptor(bytes);
      parsed++;
    } catch (error) {
      assert.ok(error instanceof UsbError, `round ${round}: ${error}`);
      assert.equal(error.code, LibusbError.IO);
    }
  }
  assert.ok(parsed > 0, "some mutations still parse");
});

// ---- UsbDevice.configurations / .configuration over scripted control transfers ----------------

interface ControlCall {
  readonly requestType: number;
  readonly request: number;
  readonly value: number;
  readonly index: number;
  readonly length: number;
}

/** A UsbDevice whose control transfers answer from `descriptors` (keyed by wValue) and `active`. */
function scriptedDevice(
  descriptors: Map<number, Uint8Array>,
  options: { active?: number; strings?: Map<number, string>; languages?: number[] } = {},
) {
  const calls: ControlCall[] = [];
  const utf16 = (text: string) =>
    [...text].flatMap((c) => [c.charCodeAt(0) & 0xff, c.charCodeAt(0) >> 8]);
  const control = (
    _handle: bigint,
    requestType: number,
    request: number,
    value: number,
    index: number,
    data: Uint8Array | null,
    length: number,
  ): number => {
    calls.push({ requestType, request, value, index, length });
    let reply: Uint8Array | undefined;
    if (request === 0x08) reply = new Uint8Array([options.active ?? 1]);
    else if (request === 0x06 && value === 0x0300) {
      if (options.languages === undefined) return LibusbError.PIPE;
      const ids = options.languages.flatMap((id) => [id & 0xff, id >> 8]);
      reply = new Uint8Array([2 + ids.length, 3, ...ids]);
    } else if (request === 0x06 && value >> 8 === 3) {
      const text = options.strings?.get(value & 0xff);
      if (text === undefined) return LibusbError.PIPE;
      reply = new Uint8Array([2 + text.length * 2, 3, ...utf16(text)]);
    } else if (request === 0x06) reply = descriptors.get(value);
    if (reply === undefined) return LibusbError.PIPE;
    const count = Math.min(length, reply.length);
    data?.set(reply.subarray(0, count));
    return count;
  };
  const symbols = {
    libusb_close: () => {},
    libusb_control_transfer: control,
    // libusb answers from the kernel's cached value (no bus traffic); recorded like a request.
    libusb_get_configuration: (_handle: bigint, out: Int32Array) => {
      calls.push({ requestType: 0x80, request: 0x08, value: 0, index: 0, length: 1 });
      out[0] = options.active ?? 1;
      return 0;
    },
  } as unknown as UsbDeviceSymbols;
  const device = new UsbDevice(symbols, 0x1000n, {
    vendorId: 0x0403,
    productId: 0x6001,
    busNumber: 1,
    deviceAddress: 2,
    deviceClass: 0,
    deviceSubclass: 0,
    deviceProtocol: 0,
    deviceVersion: 0x600,
    usbVersion: 0x200,
  });
  return { device, calls };
}

function deviceDescriptor(numConfigurations: number): Uint8Array {
  return new Uint8Array([
    18,
    1,
    0,
    2,
    0,
    0,
    0,
    64,
    3,
    4,
    1,
    0x60,
    0,
    6,
    1,
    2,
    3,
    numConfigurations,
  ]);
}

Deno.test("UsbDevice.configurations: GET_DESCRIPTOR device, then each config 9 bytes and wTotalLength", () => {
  const first = config(1, 1, [
    iface(0, 0, 2, 0xff, 0xff, 0xff, 2),
    endpoint(0x81, BULK, 64),
    endpoint(0x02, BULK, 64),
  ], 4);
  const second = config(2, 1, [iface(0, 0, 1, 0x03, 1, 1), endpoint(0x81, INTERRUPT, 8, 10)]);
  const { device, calls } = scriptedDevice(
    new Map([[0x0100, deviceDescriptor(2)], [0x0200, first], [0x0201, second]]),
    {
      active: 2,
      languages: [0x0407, 0x0409],
      strings: new Map([[2, "FT232R UART"], [4, "Bus Powered"]]),
    },
  );
  using _ = device;
  const configurations = device.configurations;
  assert.equal(configurations.length, 2);
  assert.equal(configurations[0].configurationName, "Bus Powered");
  assert.equal(configurations[0].interfaces[0].alternate.interfaceName, "FT232R UART");
  assert.deepEqual(
    configurations[0],
    parseConfigurationDescriptor(first, {
      strings: (i) => ({ 2: "FT232R UART", 4: "Bus Powered" } as Record<number, string>)[i],
    }),
  );
  assert.equal(configurations[1].interfaces[0].alternate.endpoints[0].type, "interrupt");
  assert.ok(calls.every((c) => c.requestType === 0x80), "standard, device, IN");
  const descriptorCalls = calls.filter((c) => c.request === 0x06).map((
    c,
  ) => [c.value, c.index, c.length]);
  assert.deepEqual(descriptorCalls, [
    [0x0100, 0, 18],
    [0x0200, 0, 9],
    [0x0200, 0, first.length],
    [0x0201, 0, 9],
    [0x0201, 0, second.length],
    [0x0300, 0, 255], // language ids, once
    [0x0302, 0x0407, 255], // in the first language
    [0x0304, 0x0407, 255],
  ]);

  const count = calls.length;
  assert.equal(device.configurations, configurations, "read once, then kept");
  assert.equal(calls.length, count);
  assert.equal(device.configuration, configurations[1], "the active one is the same object");
  assert.deepEqual(calls.slice(count).map((c) => [c.request, c.length]), [[0x08, 1]]);
});

Deno.test("UsbDevice.configuration: undefined when unconfigured; no strings when unreadable", () => {
  const bytes = config(1, 1, [iface(0, 0, 0, 0xff, 0, 0, 5)], 3);
  const { device, calls } = scriptedDevice(
    new Map([[0x0100, deviceDescriptor(1)], [0x0200, bytes]]),
    { active: 0 },
  );
  using _ = device;
  assert.equal(device.configuration, undefined);
  const [only] = device.configurations;
  assert.ok(!("configurationName" in only));
  assert.ok(!("interfaceName" in only.interfaces[0].alternate));
  assert.equal(
    calls.filter((c) => c.value === 0x0300).length,
    1,
    "a refused language list: asked once",
  );
});

Deno.test("UsbDevice.configurations: a lying wTotalLength or a closed device throws UsbError", () => {
  const good = config(1, 1, [iface(0, 0, 1, 0xff, 0, 0), endpoint(0x81, BULK, 64)]);
  const lying = good.slice();
  lying[2] = 40; // says 40, the device sends 25
  const { device } = scriptedDevice(new Map([[0x0100, deviceDescriptor(1)], [0x0200, lying]]));
  assertMalformed(() => device.configurations, /wTotalLength is 40 but only 25/);
  device.close();
  assert.throws(
    () => device.configurations,
    (error: unknown) => error instanceof UsbError && error.code === LibusbError.NO_DEVICE,
  );
});
