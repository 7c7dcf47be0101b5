/**
 * A libusb-1.0 context: {@linkcode Libusb}.
 *
 * @module
 */

import { UsbDevice, type UsbDeviceInfo } from "./device.ts";
import { LibusbError, unwrap, UsbError } from "./errors.ts";
import { LibusbNotFoundError, libusbPath } from "./library.ts";
import { type LibusbSymbols, libusbSymbols } from "./symbols.ts";

/**
 * The loaded libusb's version (`struct libusb_version`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Libusb, type LibusbVersion } from "../mod.ts";
 * using usb = Libusb.open();
 * const v: LibusbVersion = usb.version;
 * assert.equal(v.major, 1);
 * assert.match(`${v.major}.${v.minor}.${v.micro}`, /^1\.0\.\d+$/);
 * ```
 */
export interface LibusbVersion {
  /** Major version (1). */
  readonly major: number;
  /** Minor version. */
  readonly minor: number;
  /** Micro version. */
  readonly micro: number;
  /** Nano version (a build number). */
  readonly nano: number;
  /** Release-candidate suffix such as `"-rc1"`; absent for a release. */
  readonly rc?: string;
  /** libusb's own description (its web site). */
  readonly describe?: string;
}

/**
 * Options of {@linkcode Libusb.open}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Libusb, type LibusbOpenOptions, libusbPath } from "../mod.ts";
 * const options: LibusbOpenOptions = { path: libusbPath() };
 * using usb = Libusb.open(options);
 * assert.equal(usb.path, options.path);
 * ```
 */
export interface LibusbOpenOptions {
  /**
   * The library to load. Default: `libusbPath()`. Pass it explicitly where `Deno.env` and
   * `Deno.stat` are denied, e.g. in a Worker granted only this path as `ffi`.
   */
  readonly path?: string;
}

/**
 * Which device {@linkcode Libusb.openDevice} opens.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Libusb, Status, type UsbDeviceFilter } from "../mod.ts";
 * const filter: UsbDeviceFilter = { vendorId: 0xfffe, productId: 0x6001, serialNumber: "A50285BI" };
 * using usb = Libusb.open();
 * assert.throws(() => usb.openDevice(filter), { status: Status.DeviceNotConnected }); // none here
 * ```
 */
export interface UsbDeviceFilter {
  /** idVendor (0..0xffff). */
  readonly vendorId: number;
  /** idProduct (0..0xffff). */
  readonly productId: number;
  /** When given, only a device whose serial number string equals it. */
  readonly serialNumber?: string;
}

/**
 * Options of {@linkcode Libusb.devices}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type DevicesOptions, Libusb } from "../mod.ts";
 * const quick: DevicesOptions = { strings: false }; // ids and addresses only
 * using usb = Libusb.open();
 * assert.ok(usb.devices(quick).every((d) => d.product === undefined));
 * ```
 */
export interface DevicesOptions {
  /**
   * Read the manufacturer, product and serial number strings (opens each device briefly; devices
   * you may not open get none). Default `true`.
   */
  readonly strings?: boolean;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const DEVICE_DESCRIPTOR_SIZE = 18;
const POINTER_SIZE = 8n;

type Calibrate = (dev: BufferSource) => bigint;
type Peek = (address: bigint) => bigint;

/**
 * Reads process memory at an address without `Deno.UnsafePointerView`, through libusb alone.
 *
 * `libusb_get_parent(dev)` is a plain field read, `return dev->parent_dev;`, an 8-byte load at a
 * fixed offset from its argument. Called once with a buffer whose every 8-byte slot holds a marker
 * and its own offset, it returns the marker of the slot it read: that is the offset. Then
 * `libusb_get_parent(address - offset)` returns the 8 bytes at `address`. `libusb_get_device(handle)`
 * (`return handle->dev;`) is the fallback. Calibration uses two marker patterns and refuses any
 * answer that is not exactly one slot, so a libusb whose accessor does anything else (e.g. returns
 * NULL) is detected rather than trusted.
 *
 * Only for addresses libusb handed out (the device list, the version struct): reading a bad
 * address crashes the process, as in C.
 *
 * @example
 * ```ts ignore
 * import { MemoryReader } from "./libusb.ts";
 * const reader = MemoryReader.create(lib.symbols);
 * const firstWord = reader.word(address);
 * ```
 */
export class MemoryReader {
  /** The libusb function used, e.g. `"libusb_get_parent"`. */
  readonly via: string;
  /** Its calibrated field offset, in bytes. */
  readonly offset: bigint;
  #peek: Peek;

  private constructor(via: string, offset: bigint, peek: Peek) {
    this.via = via;
    this.offset = offset;
    this.#peek = peek;
  }

  /**
   * Calibrates a reader on a loaded libusb; throws a `UsbError` (`LIBUSB_ERROR_NOT_SUPPORTED`)
   * saying why when neither accessor behaves as a plain field read.
   *
   * @example
   * ```ts ignore
   * const reader = MemoryReader.create(lib.symbols);
   * console.log(reader.via, reader.offset);
   * ```
   */
  static create(
    symbols: Pick<
      LibusbSymbols,
      | "libusb_get_parent_calibrate"
      | "libusb_get_parent_peek"
      | "libusb_get_device_calibrate"
      | "libusb_get_device_peek"
    >,
  ): MemoryReader {
    const candidates: [string, Calibrate | null, Peek | null][] = [
      ["libusb_get_parent", symbols.libusb_get_parent_calibrate, symbols.libusb_get_parent_peek],
      ["libusb_get_device", symbols.libusb_get_device_calibrate, symbols.libusb_get_device_peek],
    ];
    const reasons: string[] = [];
    for (const [via, calibrate, peek] of candidates) {
      if (!calibrate || !peek) {
        reasons.push(`${via} is missing`);
        continue;
      }
      const offset = MemoryReader.#calibrate(calibrate);
      if (offset === undefined) {
        reasons.push(`${via} is not a plain field read in this libusb`);
        continue;
      }
      return new MemoryReader(via, offset, peek);
    }
    throw new UsbError(LibusbError.NOT_SUPPORTED, {
      operation: "reading libusb memory",
      detail: reasons.join("; "),
    });
  }

  static #calibrate(calibrate: Calibrate): bigint | undefined {
    let offset: bigint | undefined;
    for (const marker of [0x7e57_ab1e_0000_0000n, 0x0c0f_fee5_0000_0000n]) {
      const pattern = new BigUint64Array(128); // 1 KiB: larger than either struct's prefix
      for (let slot = 0; slot < pattern.length; slot++) pattern[slot] = marker | BigInt(slot * 8);
      const word = BigInt(calibrate(pattern));
      if ((word & ~0xffffn) !== marker) return undefined;
      const found = word & 0xffffn;
      if (offset !== undefined && found !== offset) return undefined;
      offset = found;
    }
    return offset;
  }

  /**
   * The 8 bytes at `address` as an unsigned 64-bit number (host byte order).
   *
   * @example
   * ```ts ignore
   * const entry = reader.word(listAddress + 8n * BigInt(i));
   * ```
   */
  word(address: bigint): bigint {
    if (address < 0x1000n) {
      throw new UsbError(LibusbError.INVALID_PARAM, {
        operation: "reading libusb memory",
        detail: `refusing to read address 0x${address.toString(16)}`,
      });
    }
    return BigInt.asUintN(64, BigInt(this.#peek(address - this.offset)));
  }

  /**
   * `length` bytes starting at `address`, read in aligned 8-byte words (so never across a page
   * boundary past the last word needed).
   *
   * @example
   * ```ts ignore
   * const versionStruct = reader.bytes(versionAddress, 8);
   * ```
   */
  bytes(address: bigint, length: number): Uint8Array {
    const out = new Uint8Array(length);
    const cell = new BigUint64Array(1);
    const cellBytes = new Uint8Array(cell.buffer);
    let base = address & ~7n;
    let skip = Number(address - base);
    let filled = 0;
    while (filled < length) {
      cell[0] = this.word(base);
      const take = Math.min(8 - skip, length - filled);
      out.set(cellBytes.subarray(skip, skip + take), filled);
      filled += take;
      skip = 0;
      base += 8n;
    }
    return out;
  }

  /**
   * The NUL-terminated UTF-8 string at `address` (at most `max` bytes).
   *
   * @example
   * ```ts ignore
   * const describe = reader.cString(describeAddress);
   * ```
   */
  cString(address: bigint, max = 4096): string {
    const collected: number[] = [];
    const cell = new BigUint64Array(1);
    const cellBytes = new Uint8Array(cell.buffer);
    let base = address & ~7n;
    let skip = Number(address - base);
    while (collected.length < max) {
      cell[0] = this.word(base);
      for (let i = skip; i < 8 && collected.length < max; i++) {
        if (cellBytes[i] === 0) return new TextDecoder().decode(new Uint8Array(collected));
        collected.push(cellBytes[i]);
      }
      skip = 0;
      base += 8n;
    }
    return new TextDecoder().decode(new Uint8Array(collected));
  }
}

function checkId(value: unknown, what: string, operation: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw new UsbError(LibusbError.INVALID_PARAM, {
      operation,
      detail: `${what} must be an integer in 0..0xffff, got ${String(value)}`,
    });
  }
  return value;
}

function idText(vendorId: number, productId: number): string {
  const four = (n: number) => (typeof n === "number" ? n.toString(16).padStart(4, "0") : String(n));
  return `${four(vendorId)}:${four(productId)}`;
}

interface Descriptor {
  readonly info: Omit<UsbDeviceInfo, "manufacturer" | "product" | "serialNumber">;
  readonly iManufacturer: number;
  readonly iProduct: number;
  readonly iSerialNumber: number;
}

/**
 * A libusb context on a loaded libusb-1.0: lists and opens devices. Disposable; closing it closes
 * the devices it opened, then the context and the library (after any in-flight async transfer).
 *
 * Where `libusb_init` fails for lack of a USB subsystem (no usbfs or sysfs, as in some containers),
 * `open` still succeeds: {@linkcode Libusb.initError} holds the error, `devices()` returns `[]` and
 * `openDevice` throws `LIBUSB_ERROR_NOT_FOUND`. Only `LIBUSB_ERROR_NO_MEM` makes `open` throw.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Libusb } from "../mod.ts";
 * using usb = Libusb.open();
 * assert.equal(usb.version.major, 1);
 * assert.ok(Array.isArray(usb.devices())); // [] on a machine without USB (see initError)
 * ```
 */
export class Libusb implements Disposable {
  /** The library file this context loaded. */
  readonly path: string;
  /** Why `libusb_init` failed, when it did (then there are no devices). */
  readonly initError: UsbError | undefined;
  /** Resolves once the context and the library are closed. */
  readonly closed: Promise<void>;

  #lib: Deno.DynamicLibrary<typeof libusbSymbols>;
  #symbols: LibusbSymbols;
  #context: bigint;
  #version: LibusbVersion | undefined;
  #reader: MemoryReader | UsbError | undefined;
  #devices = new Set<UsbDevice>();
  #closing = false;
  #finalized = false;
  #resolveClosed: () => void;

  /** @ignore Use `Libusb.open`. */
  private constructor(
    path: string,
    lib: Deno.DynamicLibrary<typeof libusbSymbols>,
    context: bigint,
    initError: UsbError | undefined,
  ) {
    this.path = path;
    this.#lib = lib;
    this.#symbols = lib.symbols;
    this.#context = context;
    this.initError = initError;
    const { promise, resolve } = Promise.withResolvers<void>();
    this.closed = promise;
    this.#resolveClosed = resolve;
  }

  /**
   * Loads libusb (from `options.path`, else {@linkcode libusbPath}) and creates a context. Throws a
   * `LibusbNotFoundError` when the library cannot be found or loaded, Deno's `NotCapable` when the
   * ffi permission is missing, and a `UsbError` when libusb runs out of memory.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Libusb, libusbPath, LibusbNotFoundError } from "../mod.ts";
   * using usb = Libusb.open({ path: libusbPath() });
   * assert.equal(usb.path, libusbPath());
   * assert.throws(() => Libusb.open({ path: "/nonexistent/libusb.so" }), LibusbNotFoundError);
   * ```
   */
  static open(options: LibusbOpenOptions = {}): Libusb {
    const path = options.path ?? libusbPath();
    let lib: Deno.DynamicLibrary<typeof libusbSymbols>;
    try {
      lib = Deno.dlopen(path, libusbSymbols);
    } catch (error) {
      if (
        error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
      ) {
        throw error;
      }
      throw new LibusbNotFoundError(
        [path],
        `loading ${JSON.stringify(path)} failed: ${(error as Error)?.message ?? error}`,
        { cause: error },
      );
    }
    const out = new BigUint64Array(1);
    const code = lib.symbols.libusb_init(out);
    if (code === LibusbError.NO_MEM) {
      lib.close();
      throw new UsbError(code, { operation: "libusb_init" });
    }
    const initError = code < 0
      ? new UsbError(code, {
        operation: "libusb_init",
        detail: "libusb found no usable USB subsystem; no devices will be listed",
      })
      : undefined;
    return new Libusb(path, lib, code < 0 ? 0n : out[0], initError);
  }

  #check(operation: string): void {
    if (this.#closing) {
      throw new UsbError(LibusbError.INVALID_PARAM, {
        operation,
        detail: "this Libusb is closed",
      });
    }
  }

  #memory(): MemoryReader {
    if (this.#reader === undefined) {
      try {
        this.#reader = MemoryReader.create(this.#symbols);
      } catch (error) {
        this.#reader = error as UsbError;
      }
    }
    if (this.#reader instanceof MemoryReader) return this.#reader;
    throw this.#reader;
  }

  /**
   * The loaded libusb's version, read from the static `struct libusb_version`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Libusb } from "../mod.ts";
   * using usb = Libusb.open();
   * const { major, minor, micro } = usb.version;
   * assert.ok(major === 1 && minor >= 0 && micro >= 0, `libusb ${major}.${minor}.${micro}`);
   * ```
   */
  get version(): LibusbVersion {
    if (this.#version) return this.#version;
    this.#check("version");
    const getVersion = this.#symbols.libusb_get_version;
    if (!getVersion) {
      throw new UsbError(LibusbError.NOT_SUPPORTED, {
        operation: "version",
        detail: "this libusb has no libusb_get_version (older than 1.0.13)",
      });
    }
    const address = BigInt(getVersion());
    const reader = this.#memory();
    const head = reader.bytes(address, 8);
    const numbers = new DataView(head.buffer);
    const [major, minor, micro, nano] = [0, 2, 4, 6].map((at) =>
      numbers.getUint16(at, LITTLE_ENDIAN)
    );
    if (major !== 1) {
      throw new UsbError(LibusbError.OTHER, {
        operation: "version",
        detail: `read an implausible version ${major}.${minor}.${micro} via ${reader.via}`,
      });
    }
    const rcAddress = reader.word(address + 8n);
    const describeAddress = reader.word(address + 16n);
    const rc = rcAddress === 0n ? "" : reader.cString(rcAddress, 64);
    const describe = describeAddress === 0n ? "" : reader.cString(describeAddress, 256);
    this.#version = {
      major,
      minor,
      micro,
      nano,
      ...(rc ? { rc } : {}),
      ...(describe ? { describe } : {}),
    };
    return this.#version;
  }

  #withDeviceList<T>(operation: string, use: (devices: bigint[]) => T): T {
    const out = new BigUint64Array(1);
    const count = unwrap(this.#symbols.libusb_get_device_list(this.#context, out), {
      operation,
      detail: "libusb_get_device_list",
    });
    const list = out[0];
    try {
      const devices: bigint[] = [];
      if (count > 0) {
        const reader = this.#memory();
        for (let i = 0; i < count; i++) {
          devices.push(reader.word(list + POINTER_SIZE * BigInt(i)));
        }
      }
      return use(devices);
    } finally {
      this.#symbols.libusb_free_device_list(list, 1);
    }
  }

  #describe(device: bigint): Descriptor {
    const raw = new Uint8Array(DEVICE_DESCRIPTOR_SIZE);
    unwrap(this.#symbols.libusb_get_device_descriptor(device, raw), "libusb_get_device_descriptor");
    const view = new DataView(raw.buffer);
    return {
      info: {
        vendorId: view.getUint16(8, LITTLE_ENDIAN),
        productId: view.getUint16(10, LITTLE_ENDIAN),
        busNumber: this.#symbols.libusb_get_bus_number(device),
        deviceAddress: this.#symbols.libusb_get_device_address(device),
        deviceClass: raw[4],
        deviceSubclass: raw[5],
        deviceProtocol: raw[6],
        deviceVersion: view.getUint16(12, LITTLE_ENDIAN),
        usbVersion: view.getUint16(2, LITTLE_ENDIAN),
      },
      iManufacturer: raw[14],
      iProduct: raw[15],
      iSerialNumber: raw[16],
    };
  }

  #string(handle: bigint, index: number): string | undefined {
    if (index === 0) return undefined;
    const buffer = new Uint8Array(256);
    const length = this.#symbols.libusb_get_string_descriptor_ascii(
      handle,
      index,
      buffer,
      buffer.length,
    );
    if (length < 0) return undefined;
    return String.fromCharCode(...buffer.subarray(0, length));
  }

  #strings(handle: bigint, descriptor: Descriptor): UsbDeviceInfo {
    const manufacturer = this.#string(handle, descriptor.iManufacturer);
    const product = this.#string(handle, descriptor.iProduct);
    const serialNumber = this.#string(handle, descriptor.iSerialNumber);
    return {
      ...descriptor.info,
      ...(manufacturer !== undefined ? { manufacturer } : {}),
      ...(product !== undefined ? { product } : {}),
      ...(serialNumber !== undefined ? { serialNumber } : {}),
    };
  }

  /** Opens a device; returns the handle or the (negative) libusb error code. */
  #open(device: bigint): bigint | number {
    const out = new BigUint64Array(1);
    const code = this.#symbols.libusb_open(device, out);
    return code < 0 ? code : out[0];
  }

  /**
   * Lists the connected USB devices (hubs included). Strings are present when readable, else
   * absent. Returns `[]` on a machine without USB.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Libusb } from "../mod.ts";
   * using usb = Libusb.open();
   * for (const d of usb.devices()) {
   *   console.log(d.vendorId.toString(16), d.productId.toString(16), d.product ?? "");
   * }
   * if (usb.initError) assert.deepEqual(usb.devices(), []); // no USB subsystem here
   * ```
   */
  devices(options: DevicesOptions = {}): UsbDeviceInfo[] {
    this.#check("devices");
    if (this.#context === 0n) return [];
    const strings = options.strings ?? true;
    return this.#withDeviceList("devices", (devices) =>
      devices.map((device) => {
        const descriptor = this.#describe(device);
        const wanted = descriptor.iManufacturer || descriptor.iProduct || descriptor.iSerialNumber;
        if (!strings || !wanted) return descriptor.info;
        const handle = this.#open(device);
        if (typeof handle === "number") return descriptor.info;
        try {
          return this.#strings(handle, descriptor);
        } finally {
          this.#symbols.libusb_close(handle);
        }
      }));
  }

  /**
   * Opens the first device with these ids (and serial number, when given). Throws a `UsbError`:
   * `LIBUSB_ERROR_NOT_FOUND` (status `DeviceNotConnected`) when none is connected, or the error
   * that opening a matching device gave (e.g. `LIBUSB_ERROR_ACCESS`). Never returns null.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Libusb, Status, UsbError } from "../mod.ts";
   * using usb = Libusb.open();
   * // With the device plugged in: using dev = usb.openDevice(…); dev.claimInterface(0);
   * assert.throws(() => usb.openDevice({ vendorId: 0xfffe, productId: 0x0001 }), (error) =>
   *   error instanceof UsbError && error.name === "LIBUSB_ERROR_NOT_FOUND" &&
   *   error.status === Status.DeviceNotConnected);
   * ```
   */
  openDevice(filter: UsbDeviceFilter): UsbDevice {
    const operation = `openDevice(${idText(filter?.vendorId, filter?.productId)}${
      filter?.serialNumber !== undefined ? ` serial ${JSON.stringify(filter.serialNumber)}` : ""
    })`;
    this.#check(operation);
    if (typeof filter !== "object" || filter === null) {
      throw new UsbError(LibusbError.INVALID_PARAM, { operation, detail: "a filter is required" });
    }
    const vendorId = checkId(filter.vendorId, "vendorId", operation);
    const productId = checkId(filter.productId, "productId", operation);
    if (filter.serialNumber !== undefined && typeof filter.serialNumber !== "string") {
      throw new UsbError(LibusbError.INVALID_PARAM, {
        operation,
        detail: "serialNumber must be a string",
      });
    }
    if (this.#context === 0n) {
      throw new UsbError(LibusbError.NOT_FOUND, {
        operation,
        detail: `no USB subsystem: ${this.initError?.name}`,
        cause: this.initError,
      });
    }
    let seen = 0;
    let openError: UsbError | undefined;
    const found = this.#withDeviceList(operation, (devices) => {
      seen = devices.length;
      for (const device of devices) {
        const descriptor = this.#describe(device);
        if (descriptor.info.vendorId !== vendorId || descriptor.info.productId !== productId) {
          continue;
        }
        const handle = this.#open(device);
        if (typeof handle === "number") {
          openError ??= new UsbError(handle, {
            operation,
            detail: `bus ${descriptor.info.busNumber} address ${descriptor.info.deviceAddress}`,
          });
          continue;
        }
        const info = this.#strings(handle, descriptor);
        if (filter.serialNumber !== undefined && info.serialNumber !== filter.serialNumber) {
          this.#symbols.libusb_close(handle);
          continue;
        }
        return { handle, info };
      }
      return undefined;
    });
    if (!found) {
      throw openError ?? new UsbError(LibusbError.NOT_FOUND, {
        operation,
        detail: `no such device among the ${seen} connected`,
      });
    }
    const device: UsbDevice = new UsbDevice(this.#symbols, found.handle, found.info, () => {
      this.#devices.delete(device);
      if (this.#closing && this.#devices.size === 0) this.#finalize();
    });
    this.#devices.add(device);
    return device;
  }

  #finalize(): void {
    if (this.#finalized) return;
    this.#finalized = true;
    if (this.#context !== 0n) this.#symbols.libusb_exit(this.#context);
    this.#context = 0n;
    this.#lib.close();
    this.#resolveClosed();
  }

  /**
   * Closes every device this context opened, then the context and the library. Idempotent. With
   * async transfers in flight the last steps wait for them (see {@linkcode Libusb.closed}).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Libusb } from "../mod.ts";
   * const usb = Libusb.open();
   * usb.close();
   * usb.close(); // idempotent
   * await usb.closed;
   * assert.throws(() => usb.devices());
   * ```
   */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    for (const device of [...this.#devices]) device.close();
    if (this.#devices.size === 0) this.#finalize();
  }

  /**
   * Same as {@linkcode Libusb.close}, for `using`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Libusb } from "../mod.ts";
   * let escaped: Libusb;
   * {
   *   using usb = Libusb.open();
   *   escaped = usb;
   * } // closed here
   * await escaped.closed;
   * assert.throws(() => escaped.devices());
   * ```
   */
  [Symbol.dispose](): void {
    this.close();
  }
}
