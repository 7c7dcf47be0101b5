/**
 * A libusb-1.0 context: {@linkcode Libusb}.
 *
 * @module
 */

import { UsbDevice, type UsbDeviceInfo } from "./device.ts";
import { LibusbError, unwrap, UsbError, useLibusbErrorNames } from "./errors.ts";
import { LibusbNotFoundError, libusbPath } from "./library.ts";
import { MemoryReader } from "./memory_reader.ts";
import { type LibusbSymbols, libusbSymbols } from "./symbols.ts";
import { type UsbDeviceWatch, watchDevices, type WatchOptions } from "./watch.ts";

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
  /** How much libusb itself writes to stderr. Default `"none"` (see {@linkcode LibusbLogLevel}). */
  readonly logLevel?: LibusbLogLevel;
}

/**
 * How much libusb writes to stderr about what it does, from nothing to every call
 * (`LIBUSB_LOG_LEVEL_*`). The environment variable `LIBUSB_DEBUG`, where set, wins over this.
 *
 * @example
 * ```ts
 * import type { LibusbLogLevel } from "./libusb.ts";
 * const chatty: LibusbLogLevel = "debug";
 * ```
 */
export type LibusbLogLevel = "none" | "error" | "warning" | "info" | "debug";

const LOG_LEVELS: readonly LibusbLogLevel[] = ["none", "error", "warning", "info", "debug"];

/** The platforms this binding runs on: every pointer it handles is 64 bits wide. */
const SUPPORTED_ARCHES: readonly string[] = ["x86_64", "aarch64"];

/**
 * Throws a `UsbError` (`LIBUSB_ERROR_NOT_SUPPORTED`) on a platform whose pointers are not 64 bits
 * wide: the binding stores every address libusb hands out in 8-byte words.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkPlatform } from "./libusb.ts";
 * checkPlatform(Deno.build.arch); // x86_64 and aarch64 pass
 * assert.throws(() => checkPlatform("arm"), { name: "LIBUSB_ERROR_NOT_SUPPORTED" });
 * ```
 */
export function checkPlatform(arch: string): void {
  if (!SUPPORTED_ARCHES.includes(arch)) {
    throw new UsbError(LibusbError.NOT_SUPPORTED, {
      operation: "Libusb.open",
      detail: `tbq's libusb binding needs 64-bit pointers (${
        SUPPORTED_ARCHES.join(" or ")
      }); this is ${arch}`,
    });
  }
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
  /**
   * When given with `deviceAddress`, only the device at that place: so `openDevice(info)` with an
   * entry of `devices()` opens that very device, even among identical ones without serial numbers.
   */
  readonly busNumber?: number;
  /** The device's address on its bus (see `busNumber`). */
  readonly deviceAddress?: number;
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

/** A filter's bus and address, both or neither (each 0..255). */
function placeOf(
  filter: UsbDeviceFilter,
  operation: string,
): { busNumber: number; deviceAddress: number } | undefined {
  const { busNumber, deviceAddress } = filter;
  if (busNumber === undefined && deviceAddress === undefined) return undefined;
  const ok = (value: unknown) =>
    typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 255;
  if (!ok(busNumber) || !ok(deviceAddress)) {
    throw new UsbError(LibusbError.INVALID_PARAM, {
      operation,
      detail: "busNumber and deviceAddress go together, each an integer in 0..255",
    });
  }
  return { busNumber: busNumber!, deviceAddress: deviceAddress! };
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
  #forgetErrorNames: () => void = () => {};

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
    checkPlatform(Deno.build.arch);
    if (options.logLevel !== undefined && !LOG_LEVELS.includes(options.logLevel)) {
      throw new UsbError(LibusbError.INVALID_PARAM, {
        operation: "Libusb.open",
        detail: `logLevel must be one of ${LOG_LEVELS.join(", ")}`,
      });
    }
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
    const usb = new Libusb(path, lib, code < 0 ? 0n : out[0], initError);
    if (options.logLevel !== undefined) usb.setLogLevel(options.logLevel);
    usb.#forgetErrorNames = useLibusbErrorNames((code) => usb.#errorNameOrUndefined(code));
    return usb;
  }

  /**
   * Sets how much libusb writes to stderr for this context (see {@linkcode LibusbLogLevel}).
   *
   * @example
   * ```ts
   * import { Libusb } from "../mod.ts";
   * using usb = Libusb.open();
   * usb.setLogLevel("warning");
   * usb.setLogLevel("none");
   * ```
   */
  setLogLevel(level: LibusbLogLevel): void {
    const operation = `setLogLevel(${JSON.stringify(level)})`;
    this.#check(operation);
    const index = LOG_LEVELS.indexOf(level);
    if (index < 0) {
      throw new UsbError(LibusbError.INVALID_PARAM, {
        operation,
        detail: `the level must be one of ${LOG_LEVELS.join(", ")}`,
      });
    }
    const setDebug = this.#symbols.libusb_set_debug;
    if (!setDebug) {
      throw new UsbError(LibusbError.NOT_SUPPORTED, {
        operation,
        detail: "this libusb has no libusb_set_debug",
      });
    }
    if (this.#context !== 0n) setDebug(this.#context, index);
  }

  /**
   * libusb's own name for an error code (`libusb_error_name`), e.g. `"LIBUSB_ERROR_NO_DEVICE"`
   * for -4; `undefined` for a code libusb does not know. `UsbError` uses it for codes newer than
   * tbq's table.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Libusb } from "../mod.ts";
   * using usb = Libusb.open();
   * assert.equal(usb.errorName(-4), "LIBUSB_ERROR_NO_DEVICE");
   * assert.equal(usb.errorName(-1234), undefined);
   * ```
   */
  errorName(code: number): string | undefined {
    this.#check("errorName");
    if (!Number.isInteger(code) || code < -0x8000_0000 || code > 0x7fff_ffff) {
      throw new UsbError(LibusbError.INVALID_PARAM, {
        operation: "errorName",
        detail: "the code must be a 32-bit integer",
      });
    }
    const address = BigInt(this.#symbols.libusb_error_name(code));
    if (address === 0n) return undefined;
    const name = this.#memory().cString(address, 64);
    return /^LIBUSB_[A-Z0-9_]+$/.test(name) ? name : undefined;
  }

  #errorNameOrUndefined(code: number): string | undefined {
    if (this.#closing) return undefined;
    try {
      return this.errorName(code);
    } catch {
      return undefined;
    }
  }

  /**
   * Attach and detach events, found by listing the devices every `interval` ms (libusb's hotplug
   * callbacks are out of reach where the ffi grant is the library path alone). See
   * {@linkcode watchDevices} for the details.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Libusb } from "../mod.ts";
   * using usb = Libusb.open();
   * const controller = new AbortController();
   * setTimeout(() => controller.abort(new Error("done watching")), 100);
   * await assert.rejects(async () => {
   *   for await (const { type, device } of usb.watch({ signal: controller.signal, interval: 20 })) {
   *     console.log(type, device.vendorId.toString(16), device.productId.toString(16));
   *   }
   * }, { message: "done watching" });
   * ```
   */
  watch(options?: WatchOptions): UsbDeviceWatch {
    return watchDevices(this, options);
  }

  /**
   * False once `close()` was called (the context then lists and opens nothing).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Libusb } from "../mod.ts";
   * const usb = Libusb.open();
   * assert.equal(usb.opened, true);
   * usb.close();
   * assert.equal(usb.opened, false);
   * ```
   */
  get opened(): boolean {
    return !this.#closing;
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
   * Opens the first device with these ids (and serial number, and bus and address, when given:
   * `usb.openDevice(info)` with an entry of `devices()` opens that very device). Throws a `UsbError`:
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
    const place = placeOf(filter, operation);
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
        if (
          place && (descriptor.info.busNumber !== place.busNumber ||
            descriptor.info.deviceAddress !== place.deviceAddress)
        ) continue;
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
    }, this.#context);
    this.#devices.add(device);
    return device;
  }

  #finalize(): void {
    if (this.#finalized) return;
    this.#finalized = true;
    this.#forgetErrorNames();
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
