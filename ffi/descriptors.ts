/**
 * USB descriptors parsed from the raw bytes a GET_DESCRIPTOR control request returns, into the
 * shape WebUSB gives them (`USBConfiguration`, `USBInterface`, `USBAlternateInterface`,
 * `USBEndpoint`). Pure functions of bytes: no libusb, no pointers, so they work in a Worker whose
 * only ffi grant is the libusb path.
 *
 * Malformed input (too short, a `bLength` of 0 or 1, a descriptor running past the end, a
 * `wTotalLength` larger than the bytes given, a wrong descriptor type, an interface that lists more
 * endpoints than follow it) throws a {@linkcode UsbError} with code `LIBUSB_ERROR_IO` (what libusb
 * itself reports for a bad descriptor; status `IoDeviceError`) whose message says which byte is
 * wrong. Input that is not a `Uint8Array` throws one with `LIBUSB_ERROR_INVALID_PARAM`. Every loop
 * advances by at least two bytes, so no input makes a parser loop forever.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseConfigurationDescriptor } from "./descriptors.ts";
 * const config = parseConfigurationDescriptor(new Uint8Array([
 *   9, 2, 32, 0, 1, 1, 0, 0x80, 50, // configuration 1, one interface, 32 bytes in all
 *   9, 4, 0, 0, 2, 0x08, 0x06, 0x50, 0, // interface 0: mass storage, SCSI, bulk-only
 *   7, 5, 0x81, 2, 0x00, 0x02, 0, // bulk IN 1, 512 bytes
 *   7, 5, 0x02, 2, 0x00, 0x02, 0, // bulk OUT 2, 512 bytes
 * ]));
 * assert.equal(config.interfaces[0].alternate.interfaceClass, 0x08);
 * assert.deepEqual(config.interfaces[0].alternate.endpoints.map((e) => e.direction), ["in", "out"]);
 * ```
 *
 * @module
 */

import { LibusbError, UsbError } from "./errors.ts";

/**
 * The standard descriptor types (`bDescriptorType`) the parsers know.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DescriptorType } from "./descriptors.ts";
 * assert.equal(DescriptorType.Configuration << 8 | 0, 0x0200); // wValue of GET_DESCRIPTOR(config 0)
 * ```
 */
export const DescriptorType = {
  /** DEVICE (1). */
  Device: 0x01,
  /** CONFIGURATION (2). */
  Configuration: 0x02,
  /** STRING (3). */
  String: 0x03,
  /** INTERFACE (4). */
  Interface: 0x04,
  /** ENDPOINT (5). */
  Endpoint: 0x05,
} as const;

/**
 * The direction of an endpoint, as in WebUSB's `USBDirection`.
 *
 * @example
 * ```ts
 * import type { UsbDirection } from "./descriptors.ts";
 * const reply: UsbDirection = "in"; // device to host
 * ```
 */
export type UsbDirection = "in" | "out";

/**
 * The transfer type of an endpoint (bits 1..0 of `bmAttributes`), as in WebUSB's
 * `USBEndpointType`, plus `"control"` for the rare control endpoint other than endpoint 0 (which
 * WebUSB has no name for).
 *
 * @example
 * ```ts
 * import type { UsbEndpointType } from "./descriptors.ts";
 * const keyboard: UsbEndpointType = "interrupt";
 * ```
 */
export type UsbEndpointType = "bulk" | "interrupt" | "isochronous" | "control";

/**
 * One endpoint descriptor, as WebUSB's `USBEndpoint`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseEndpointDescriptor, type UsbEndpoint } from "./descriptors.ts";
 * const endpoint: UsbEndpoint = parseEndpointDescriptor(new Uint8Array([7, 5, 0x81, 3, 8, 0, 10]));
 * assert.deepEqual(endpoint, { endpointNumber: 1, direction: "in", type: "interrupt", packetSize: 8 });
 * ```
 */
export interface UsbEndpoint {
  /** Bits 3..0 of `bEndpointAddress` (1..15); the address is `endpointNumber | 0x80` for IN. */
  readonly endpointNumber: number;
  /** Bit 7 of `bEndpointAddress`: set for `"in"`. */
  readonly direction: UsbDirection;
  /** Bits 1..0 of `bmAttributes`. */
  readonly type: UsbEndpointType;
  /** Bits 10..0 of `wMaxPacketSize`: the largest packet, in bytes. */
  readonly packetSize: number;
}

/**
 * One alternate setting of an interface, as WebUSB's `USBAlternateInterface`.
 *
 * @example
 * ```ts
 * import type { UsbAlternateInterface } from "./descriptors.ts";
 * const ftdi: UsbAlternateInterface = {
 *   alternateSetting: 0, interfaceClass: 0xff, interfaceSubclass: 0xff, interfaceProtocol: 0xff,
 *   endpoints: [{ endpointNumber: 1, direction: "in", type: "bulk", packetSize: 64 }],
 * };
 * ```
 */
export interface UsbAlternateInterface {
  /** `bAlternateSetting`. */
  readonly alternateSetting: number;
  /** `bInterfaceClass` (0x03 HID, 0x08 mass storage, 0xff vendor-specific, …). */
  readonly interfaceClass: number;
  /** `bInterfaceSubClass`. */
  readonly interfaceSubclass: number;
  /** `bInterfaceProtocol`. */
  readonly interfaceProtocol: number;
  /** The `iInterface` string, when the device has one and it could be read. */
  readonly interfaceName?: string;
  /** The endpoints, in descriptor order (endpoint 0 is never listed). */
  readonly endpoints: readonly UsbEndpoint[];
}

/**
 * An interface with all its alternate settings, as WebUSB's `USBInterface`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import type { UsbAlternateInterface, UsbInterface } from "./descriptors.ts";
 * const only: UsbAlternateInterface = {
 *   alternateSetting: 0, interfaceClass: 8, interfaceSubclass: 6, interfaceProtocol: 0x50,
 *   endpoints: [],
 * };
 * const storage: UsbInterface = { interfaceNumber: 0, alternate: only, alternates: [only] };
 * assert.ok(storage.alternates.includes(storage.alternate));
 * ```
 */
export interface UsbInterface {
  /** `bInterfaceNumber`. */
  readonly interfaceNumber: number;
  /**
   * The alternate setting currently selected: one of `alternates` (the same object). The parser
   * picks the one `selectedAlternate` names, else the first in descriptor order.
   */
  readonly alternate: UsbAlternateInterface;
  /** Every alternate setting, in descriptor order. */
  readonly alternates: readonly UsbAlternateInterface[];
}

/**
 * A configuration with its interfaces, as WebUSB's `USBConfiguration`.
 *
 * @example
 * ```ts
 * import type { UsbConfiguration } from "./descriptors.ts";
 * const empty: UsbConfiguration = { configurationValue: 1, interfaces: [] };
 * ```
 */
export interface UsbConfiguration {
  /** `bConfigurationValue`: what SET_CONFIGURATION takes. */
  readonly configurationValue: number;
  /** The `iConfiguration` string, when the device has one and it could be read. */
  readonly configurationName?: string;
  /** The interfaces, in the order of their first descriptor. */
  readonly interfaces: readonly UsbInterface[];
}

/**
 * The 18-byte device descriptor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseDeviceDescriptor, type UsbDeviceDescriptor } from "./descriptors.ts";
 * const ftdi: UsbDeviceDescriptor = parseDeviceDescriptor(new Uint8Array([
 *   18, 1, 0x00, 0x02, 0, 0, 0, 8, 0x03, 0x04, 0x01, 0x60, 0x00, 0x06, 1, 2, 3, 1,
 * ]));
 * assert.deepEqual([ftdi.vendorId, ftdi.productId, ftdi.numConfigurations], [0x0403, 0x6001, 1]);
 * ```
 */
export interface UsbDeviceDescriptor {
  /** `bcdUSB`, e.g. 0x0200 for USB 2.0. */
  readonly usbVersion: number;
  /** `bDeviceClass` (0: each interface says its own). */
  readonly deviceClass: number;
  /** `bDeviceSubClass`. */
  readonly deviceSubclass: number;
  /** `bDeviceProtocol`. */
  readonly deviceProtocol: number;
  /** `bMaxPacketSize0`: endpoint 0's packet size (8, 16, 32, 64; 9 meaning 512 for USB 3). */
  readonly maxPacketSize0: number;
  /** `idVendor`. */
  readonly vendorId: number;
  /** `idProduct`. */
  readonly productId: number;
  /** `bcdDevice`, e.g. 0x0100 for release 1.00. */
  readonly deviceVersion: number;
  /** `iManufacturer`: string descriptor index, 0 for none. */
  readonly manufacturerIndex: number;
  /** `iProduct`: string descriptor index, 0 for none. */
  readonly productIndex: number;
  /** `iSerialNumber`: string descriptor index, 0 for none. */
  readonly serialNumberIndex: number;
  /** `bNumConfigurations`. */
  readonly numConfigurations: number;
}

/**
 * Options of {@linkcode parseConfigurationDescriptor}.
 *
 * @example
 * ```ts
 * import type { ParseConfigurationOptions } from "./descriptors.ts";
 * const options: ParseConfigurationOptions = {
 *   strings: (index) => index === 4 ? "Keyboard" : undefined,
 *   selectedAlternate: (interfaceNumber) => interfaceNumber === 1 ? 1 : undefined,
 * };
 * ```
 */
export interface ParseConfigurationOptions {
  /**
   * Looks up a string descriptor by index (never called with 0); `undefined` leaves the name out.
   * Gives `configurationName` and `interfaceName`.
   */
  readonly strings?: (index: number) => string | undefined;
  /**
   * The alternate setting selected on an interface (`undefined`: the first in descriptor order).
   * A value that names no alternate of that interface also falls back to the first.
   */
  readonly selectedAlternate?: (interfaceNumber: number) => number | undefined;
}

const OPERATION = "parse descriptor";

function malformed(what: string, detail: string): UsbError {
  return new UsbError(LibusbError.IO, { operation: `${OPERATION} (${what})`, detail });
}

function checkBytes(bytes: unknown, what: string): Uint8Array {
  if (!(bytes instanceof Uint8Array)) {
    throw new UsbError(LibusbError.INVALID_PARAM, {
      operation: `${OPERATION} (${what})`,
      detail: "the descriptor bytes must be a Uint8Array",
    });
  }
  return bytes;
}

function word(bytes: Uint8Array, at: number): number {
  return bytes[at] | (bytes[at + 1] << 8);
}

const ENDPOINT_TYPES: readonly UsbEndpointType[] = ["control", "isochronous", "bulk", "interrupt"];

/**
 * Parses the 18-byte device descriptor (GET_DESCRIPTOR, wValue 0x0100). Bytes after the first
 * `bLength` are ignored.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseDeviceDescriptor } from "./descriptors.ts";
 * const storage = parseDeviceDescriptor(new Uint8Array([
 *   18, 1, 0x00, 0x02, 0, 0, 0, 64, 0xf4, 0x46, 0x01, 0x00, 0x00, 0x01, 1, 2, 3, 1,
 * ]));
 * assert.equal(storage.vendorId, 0x46f4);
 * assert.throws(() => parseDeviceDescriptor(new Uint8Array([18, 1, 0])), /LIBUSB_ERROR_IO/);
 * ```
 */
export function parseDeviceDescriptor(bytes: Uint8Array): UsbDeviceDescriptor {
  const what = "device";
  checkBytes(bytes, what);
  if (bytes.length < 18) {
    throw malformed(what, `a device descriptor is 18 bytes, got ${bytes.length}`);
  }
  if (bytes[1] !== DescriptorType.Device) {
    throw malformed(what, `bDescriptorType is ${bytes[1]}, expected 1 (DEVICE)`);
  }
  if (bytes[0] < 18) throw malformed(what, `bLength is ${bytes[0]}, expected 18`);
  return {
    usbVersion: word(bytes, 2),
    deviceClass: bytes[4],
    deviceSubclass: bytes[5],
    deviceProtocol: bytes[6],
    maxPacketSize0: bytes[7],
    vendorId: word(bytes, 8),
    productId: word(bytes, 10),
    deviceVersion: word(bytes, 12),
    manufacturerIndex: bytes[14],
    productIndex: bytes[15],
    serialNumberIndex: bytes[16],
    numConfigurations: bytes[17],
  };
}

/**
 * Reads `wTotalLength` from the first 9 bytes of a configuration descriptor: how many bytes to ask
 * for in the second GET_DESCRIPTOR, which returns the configuration with all its interfaces and
 * endpoints.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { configurationTotalLength } from "./descriptors.ts";
 * assert.equal(configurationTotalLength(new Uint8Array([9, 2, 0x22, 0x01, 1, 1, 0, 0x80, 50])), 0x122);
 * ```
 */
export function configurationTotalLength(bytes: Uint8Array): number {
  const what = "configuration";
  checkBytes(bytes, what);
  if (bytes.length < 9) {
    throw malformed(what, `a configuration descriptor is at least 9 bytes, got ${bytes.length}`);
  }
  if (bytes[1] !== DescriptorType.Configuration) {
    throw malformed(what, `bDescriptorType is ${bytes[1]}, expected 2 (CONFIGURATION)`);
  }
  if (bytes[0] < 9) throw malformed(what, `bLength is ${bytes[0]}, expected at least 9`);
  const total = word(bytes, 2);
  if (total < bytes[0]) {
    throw malformed(
      what,
      `wTotalLength ${total} is shorter than the descriptor's bLength ${bytes[0]}`,
    );
  }
  return total;
}

/**
 * Parses one endpoint descriptor (7 bytes; audio endpoints have 9, the extra bytes are ignored).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseEndpointDescriptor } from "./descriptors.ts";
 * const out = parseEndpointDescriptor(new Uint8Array([7, 5, 0x02, 2, 0x40, 0, 0]));
 * assert.deepEqual(out, { endpointNumber: 2, direction: "out", type: "bulk", packetSize: 64 });
 * ```
 */
export function parseEndpointDescriptor(bytes: Uint8Array): UsbEndpoint {
  const what = "endpoint";
  checkBytes(bytes, what);
  if (bytes.length < 7 || bytes[0] < 7 || bytes[0] > bytes.length) {
    throw malformed(
      what,
      `an endpoint descriptor is at least 7 bytes; bLength is ${bytes[0] ?? "missing"}, ` +
        `${bytes.length} bytes given`,
    );
  }
  if (bytes[1] !== DescriptorType.Endpoint) {
    throw malformed(what, `bDescriptorType is ${bytes[1]}, expected 5 (ENDPOINT)`);
  }
  const address = bytes[2];
  return {
    endpointNumber: address & 0x0f,
    direction: address & 0x80 ? "in" : "out",
    type: ENDPOINT_TYPES[bytes[3] & 0x03],
    packetSize: word(bytes, 4) & 0x07ff,
  };
}

interface Building {
  interfaceNumber: number;
  alternates: UsbAlternateInterface[];
}

/**
 * Parses a whole configuration descriptor (GET_DESCRIPTOR, wValue `0x0200 | index`, read with
 * `wTotalLength` bytes): the configuration, each interface with its alternate settings, and their
 * endpoints. Class-specific and unknown descriptors (HID 0x21, CDC functional descriptors,
 * interface associations, SuperSpeed companions, …) are skipped. Bytes past `wTotalLength` are
 * ignored; fewer than `wTotalLength` throw.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseConfigurationDescriptor } from "./descriptors.ts";
 * const keyboard = parseConfigurationDescriptor(new Uint8Array([
 *   9, 2, 34, 0, 1, 1, 4, 0xa0, 50, // configuration 1, iConfiguration 4
 *   9, 4, 0, 0, 1, 3, 1, 1, 5, // interface 0: HID, boot keyboard, iInterface 5
 *   9, 0x21, 0x11, 0x01, 0, 1, 0x22, 63, 0, // HID descriptor: skipped
 *   7, 5, 0x81, 3, 8, 0, 10, // interrupt IN 1, 8 bytes
 * ]), { strings: (index) => ({ 4: "Default", 5: "Keyboard" } as Record<number, string>)[index] });
 * assert.equal(keyboard.configurationName, "Default");
 * assert.equal(keyboard.interfaces[0].alternate.interfaceName, "Keyboard");
 * assert.equal(keyboard.interfaces[0].alternate.endpoints[0].type, "interrupt");
 * assert.throws(() => parseConfigurationDescriptor(new Uint8Array([9, 2, 34, 0])), /LIBUSB_ERROR_IO/);
 * ```
 */
export function parseConfigurationDescriptor(
  bytes: Uint8Array,
  options: ParseConfigurationOptions = {},
): UsbConfiguration {
  const what = "configuration";
  const total = configurationTotalLength(bytes);
  if (total > bytes.length) {
    throw malformed(
      what,
      `wTotalLength is ${total} but only ${bytes.length} bytes were given (read it again ` +
        `asking for wTotalLength bytes, or the device reports a wrong length)`,
    );
  }
  const name = (index: number): string | undefined =>
    index === 0 || options.strings === undefined ? undefined : options.strings(index);

  const interfaces: Building[] = [];
  const byNumber = new Map<number, Building>();
  let current: { endpoints: UsbEndpoint[]; expected: number; at: number } | undefined;
  const finish = () => {
    if (current !== undefined && current.endpoints.length < current.expected) {
      throw malformed(
        what,
        `the interface descriptor at byte ${current.at} has bNumEndpoints ` +
          `${current.expected}, but ${current.endpoints.length} endpoint descriptors follow it`,
      );
    }
  };

  let at = bytes[0];
  while (at < total) {
    if (total - at < 2) {
      throw malformed(
        what,
        `${total - at} stray byte at offset ${at}, before wTotalLength ${total}`,
      );
    }
    const length = bytes[at];
    const type = bytes[at + 1];
    if (length < 2) {
      throw malformed(what, `bLength ${length} at byte ${at} (a descriptor is at least 2 bytes)`);
    }
    if (at + length > total) {
      throw malformed(
        what,
        `the descriptor at byte ${at} (type ${type}, bLength ${length}) runs past ` +
          `wTotalLength ${total}`,
      );
    }
    const descriptor = bytes.subarray(at, at + length);
    if (type === DescriptorType.Interface) {
      finish();
      if (length < 9) {
        throw malformed(what, `the interface descriptor at byte ${at} has bLength ${length} < 9`);
      }
      const interfaceNumber = descriptor[2];
      const endpoints: UsbEndpoint[] = [];
      const interfaceName = name(descriptor[8]);
      const alternate: UsbAlternateInterface = {
        alternateSetting: descriptor[3],
        interfaceClass: descriptor[5],
        interfaceSubclass: descriptor[6],
        interfaceProtocol: descriptor[7],
        ...(interfaceName === undefined ? {} : { interfaceName }),
        endpoints,
      };
      let entry = byNumber.get(interfaceNumber);
      if (entry === undefined) {
        entry = { interfaceNumber, alternates: [] };
        byNumber.set(interfaceNumber, entry);
        interfaces.push(entry);
      }
      entry.alternates.push(alternate);
      current = { endpoints, expected: descriptor[4], at };
    } else if (type === DescriptorType.Endpoint) {
      if (current === undefined) {
        throw malformed(what, `the endpoint descriptor at byte ${at} comes before any interface`);
      }
      if (length < 7) {
        throw malformed(what, `the endpoint descriptor at byte ${at} has bLength ${length} < 7`);
      }
      // Endpoints beyond bNumEndpoints are ignored, as libusb does.
      if (current.endpoints.length < current.expected) {
        current.endpoints.push(parseEndpointDescriptor(descriptor));
      }
    } else if (type === DescriptorType.Configuration || type === DescriptorType.Device) {
      throw malformed(what, `a descriptor of type ${type} at byte ${at}, inside a configuration`);
    }
    at += length;
  }
  finish();

  const configurationName = name(bytes[6]);
  return {
    configurationValue: bytes[5],
    ...(configurationName === undefined ? {} : { configurationName }),
    interfaces: interfaces.map(({ interfaceNumber, alternates }) => {
      const selected = options.selectedAlternate?.(interfaceNumber);
      const alternate = alternates.find((a) => a.alternateSetting === selected) ?? alternates[0];
      return { interfaceNumber, alternate, alternates };
    }),
  };
}

/**
 * Parses a string descriptor (GET_DESCRIPTOR, wValue `0x0300 | index`): UTF-16LE text. An odd
 * trailing byte is dropped.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseStringDescriptor } from "./descriptors.ts";
 * assert.equal(parseStringDescriptor(new Uint8Array([8, 3, 0x48, 0, 0x49, 0, 0x44, 0])), "HID");
 * ```
 */
export function parseStringDescriptor(bytes: Uint8Array): string {
  const what = "string";
  const body = stringBody(bytes, what);
  return new TextDecoder("utf-16le").decode(body.subarray(0, body.length & ~1));
}

/**
 * Parses string descriptor 0: the language IDs the device's strings come in (0x0409 is US
 * English).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseLanguageIds } from "./descriptors.ts";
 * assert.deepEqual(parseLanguageIds(new Uint8Array([4, 3, 0x09, 0x04])), [0x0409]);
 * ```
 */
export function parseLanguageIds(bytes: Uint8Array): number[] {
  const body = stringBody(bytes, "language ids");
  const ids: number[] = [];
  for (let i = 0; i + 1 < body.length; i += 2) ids.push(word(body, i));
  return ids;
}

function stringBody(bytes: Uint8Array, what: string): Uint8Array {
  checkBytes(bytes, what);
  if (bytes.length < 2) throw malformed(what, `${bytes.length} bytes, a descriptor has at least 2`);
  if (bytes[1] !== DescriptorType.String) {
    throw malformed(what, `bDescriptorType is ${bytes[1]}, expected 3 (STRING)`);
  }
  if (bytes[0] < 2 || bytes[0] > bytes.length) {
    throw malformed(what, `bLength is ${bytes[0]}, with ${bytes.length} bytes given`);
  }
  return bytes.subarray(2, bytes[0]);
}
