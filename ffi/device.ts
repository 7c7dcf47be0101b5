/**
 * An open USB device: {@linkcode UsbDevice}.
 *
 * @module
 */

import { DescriptorType, type UsbConfiguration } from "./descriptors.ts";
import { DeviceConfigurations } from "./device_configurations.ts";
import { LibusbError, UsbError } from "./errors.ts";
import type { LibusbSymbols } from "./symbols.ts";
import {
  type AsyncTransferCall,
  runTransfer,
  runTransferAsync,
  type TransferCall,
} from "./transfer.ts";

/**
 * What `Libusb.devices()` reports for one device.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Libusb, type UsbDeviceInfo } from "../mod.ts";
 * using usb = Libusb.open();
 * const storage: UsbDeviceInfo[] = usb.devices().filter((d) => d.deviceClass === 0x08);
 * assert.ok(storage.every((d) => d.vendorId >= 0 && d.vendorId <= 0xffff));
 * const info: UsbDeviceInfo = {
 *   vendorId: 0x46f4, productId: 0x0001, busNumber: 1, deviceAddress: 4,
 *   deviceClass: 0, deviceSubclass: 0, deviceProtocol: 0, deviceVersion: 0x0100, usbVersion: 0x0200,
 * };
 * ```
 */
export interface UsbDeviceInfo {
  /** idVendor. */
  readonly vendorId: number;
  /** idProduct. */
  readonly productId: number;
  /** The bus the device is on. */
  readonly busNumber: number;
  /** The device's address on its bus. */
  readonly deviceAddress: number;
  /** bDeviceClass (0: each interface says its own). */
  readonly deviceClass: number;
  /** bDeviceSubClass. */
  readonly deviceSubclass: number;
  /** bDeviceProtocol. */
  readonly deviceProtocol: number;
  /** bcdDevice, e.g. 0x0100 for release 1.00. */
  readonly deviceVersion: number;
  /** bcdUSB, e.g. 0x0200 for USB 2.0. */
  readonly usbVersion: number;
  /** The manufacturer string, when the device has one and it could be read. */
  readonly manufacturer?: string;
  /** The product string, when the device has one and it could be read. */
  readonly product?: string;
  /** The serial number string, when the device has one and it could be read. */
  readonly serialNumber?: string;
}

/**
 * Options of a transfer.
 *
 * @example
 * ```ts
 * import type { TransferOptions } from "./device.ts";
 * const options: TransferOptions = { timeout: 250, signal: AbortSignal.timeout(1000) };
 * ```
 */
export interface TransferOptions {
  /**
   * Milliseconds before libusb gives up with `LIBUSB_ERROR_TIMEOUT`; 0 waits forever (which can
   * block a work handler, and the queue with it, for good). Default {@linkcode DEFAULT_TIMEOUT}.
   */
  readonly timeout?: number;
  /**
   * Aborts the transfer: it then throws (or rejects with) a `UsbError` named
   * `LIBUSB_ERROR_INTERRUPTED` (status `Cancelled`) whose `cause` is the signal's reason and
   * whose `transferred` (and, IN, `data`) say what moved. It settles within about 40 ms of the
   * abort. A blocking transfer holds its thread, so only an abort from another thread reaches it
   * while it runs: a queue item's `item.signal` does (the Worker's loop lets the transfer look at
   * the shared abort flag); a signal of this thread is looked at before the transfer starts.
   */
  readonly signal?: AbortSignal;
}

/**
 * How fast a device talks, from libusb's `LIBUSB_SPEED_*`: `"low"` 1.5 Mbit/s, `"full"` 12,
 * `"high"` 480, `"super"` 5000, `"super-plus"` 10000; `"unknown"` when the OS does not say.
 *
 * @example
 * ```ts
 * import type { UsbSpeed } from "./device.ts";
 * const fast: UsbSpeed[] = ["high", "super", "super-plus"];
 * ```
 */
export type UsbSpeed = "unknown" | "low" | "full" | "high" | "super" | "super-plus";

const SPEEDS: readonly UsbSpeed[] = ["unknown", "low", "full", "high", "super", "super-plus"];

/**
 * The timeout a transfer gets when its options give none, in milliseconds.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DEFAULT_TIMEOUT } from "../mod.ts";
 * assert.equal(DEFAULT_TIMEOUT, 5000); // ms, for a transfer whose options give no timeout
 * ```
 */
export const DEFAULT_TIMEOUT = 5000;

/**
 * The setup of a control transfer, as in WebUSB's `USBControlTransferParameters`.
 *
 * @example
 * ```ts
 * import type { ControlSetup } from "./device.ts";
 * const getStatus: ControlSetup = {
 *   requestType: "standard", recipient: "device", request: 0x00, value: 0, index: 0,
 * };
 * ```
 */
export interface ControlSetup {
  /** Bits 6..5 of bmRequestType. */
  readonly requestType: "standard" | "class" | "vendor";
  /** Bits 4..0 of bmRequestType. */
  readonly recipient: "device" | "interface" | "endpoint" | "other";
  /** bRequest (0..255). */
  readonly request: number;
  /** wValue (0..65535). */
  readonly value: number;
  /** wIndex (0..65535). */
  readonly index: number;
}

/**
 * The libusb functions a {@linkcode UsbDevice} calls (a subset of `LibusbSymbols`).
 *
 * @example
 * ```ts
 * import type { UsbDeviceSymbols } from "./device.ts";
 * type Claim = UsbDeviceSymbols["libusb_claim_interface"];
 * ```
 */
export type UsbDeviceSymbols = Pick<
  LibusbSymbols,
  | "libusb_close"
  | "libusb_set_auto_detach_kernel_driver"
  | "libusb_claim_interface"
  | "libusb_release_interface"
  | "libusb_set_interface_alt_setting"
  | "libusb_clear_halt"
  | "libusb_bulk_transfer"
  | "libusb_bulk_transfer_nonblocking"
  | "libusb_control_transfer"
  | "libusb_interrupt_transfer"
  | "libusb_interrupt_transfer_nonblocking"
  | "libusb_get_configuration"
  | "libusb_set_configuration"
  | "libusb_reset_device"
  | "libusb_kernel_driver_active"
  | "libusb_detach_kernel_driver"
  | "libusb_attach_kernel_driver"
  | "libusb_get_device"
  | "libusb_get_device_speed"
  | "libusb_get_port_numbers"
>;

/**
 * Bytes to send: any typed array or `DataView` (including views on a `SharedArrayBuffer`, such as
 * a queue item's `data`), or a whole `ArrayBuffer` / `SharedArrayBuffer`. Used in place, not copied.
 *
 * @example
 * ```ts
 * import type { UsbData } from "./device.ts";
 * const data: UsbData = new Uint8Array(new SharedArrayBuffer(64), 0, 16);
 * ```
 */
export type UsbData = ArrayBufferView | ArrayBufferLike;

const REQUEST_TYPES = { standard: 0x00, class: 0x20, vendor: 0x40 } as const;
const RECIPIENTS = { device: 0x00, interface: 0x01, endpoint: 0x02, other: 0x03 } as const;
const ENDPOINT_IN = 0x80;
const GET_DESCRIPTOR = 0x06;
const MAX_LENGTH = 0x7fffffff;

function hex(value: number, digits = 2): string {
  return `0x${value.toString(16).padStart(digits, "0")}`;
}

function invalid(operation: string, detail: string): UsbError {
  return new UsbError(LibusbError.INVALID_PARAM, { operation, detail });
}

function checkInteger(value: unknown, max: number, what: string, operation: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > max) {
    throw invalid(operation, `${what} must be an integer in 0..${max}, got ${String(value)}`);
  }
  return value;
}

function timeoutOf(options: TransferOptions | undefined, operation: string): number {
  const timeout = options?.timeout ?? DEFAULT_TIMEOUT;
  return checkInteger(timeout, 0xffffffff, "timeout", operation);
}

function bytesOf(data: UsbData, operation: string): Uint8Array {
  let bytes: Uint8Array;
  if (data instanceof Uint8Array) bytes = data;
  else if (ArrayBuffer.isView(data)) {
    bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  } else if (data instanceof ArrayBuffer || data instanceof SharedArrayBuffer) {
    bytes = new Uint8Array(data);
  } else {
    throw invalid(operation, "data must be an ArrayBuffer, a SharedArrayBuffer or a view on one");
  }
  if (bytes.byteLength > MAX_LENGTH) throw invalid(operation, "data is longer than 2^31-1 bytes");
  return bytes;
}

/** What the binding's other modules (not its users) need of an open device. */
export interface UsbDeviceInternals {
  /** The loaded library's symbols (the whole table when the device came from `Libusb`). */
  readonly symbols: LibusbSymbols;
  /** The `libusb_context *` the device was opened in (0n when unknown, e.g. in tests). */
  readonly context: bigint;
  /** The `libusb_device_handle *`, or 0n once the device is closed. */
  handle(): bigint;
  /**
   * Counts transfers in flight outside the device (+1 / -1) on an endpoint, so `close()` waits
   * for them and other transfers on that endpoint are refused with `LIBUSB_ERROR_BUSY` meanwhile.
   */
  busy(add: 1 | -1, endpoint: number): void;
}

const internals = new WeakMap<UsbDevice, UsbDeviceInternals>();

/**
 * The handle, context and symbols behind a device, for the binding's own modules (such as the
 * streaming reader); not exported from the package.
 *
 * @example
 * ```ts ignore
 * const { symbols, context, handle } = usbDeviceInternals(dev);
 * ```
 */
export function usbDeviceInternals(device: UsbDevice): UsbDeviceInternals {
  const found = internals.get(device);
  if (!found) throw new TypeError("not a UsbDevice");
  return found;
}

/**
 * An open libusb device handle, made by `Libusb.openDevice`. Methods follow WebUSB's `USBDevice`
 * where WebUSB has the same operation, but are synchronous (they block the calling thread up to
 * their timeout, which is what a queue's work handler wants) except for the `…Async` variants.
 * Every failure throws a {@linkcode UsbError}; bad arguments throw one with
 * `LIBUSB_ERROR_INVALID_PARAM`.
 *
 * Async transfers on one endpoint run one after another, in call order (two concurrent
 * `libusb_bulk_transfer` calls on one endpoint could reach the device in either order); transfers
 * on different endpoints overlap. `close()` while async transfers are in flight closes the handle
 * once the running one ends (its timeout bounds that); queued ones that have not started reject
 * with `LIBUSB_ERROR_INTERRUPTED`.
 *
 * @example
 * ```ts ignore
 * import { Libusb } from "./libusb.ts";
 * using usb = Libusb.open();
 * using dev = usb.openDevice({ vendorId: 0x46f4, productId: 0x0001 });
 * dev.claimInterface(0);
 * const written = dev.transferOut(0x02, new TextEncoder().encode("hello"), { timeout: 1000 });
 * const reply = await dev.transferInAsync(0x81, 64, { timeout: 1000 });
 * ```
 */
export class UsbDevice implements Disposable {
  /** What the device reported when it was opened. */
  readonly info: UsbDeviceInfo;
  /** Resolves once the libusb handle is really closed (after in-flight async transfers end). */
  readonly closed: Promise<void>;

  #symbols: UsbDeviceSymbols;
  #handle: bigint;
  #onClosed: (() => void) | undefined;
  #resolveClosed: () => void;
  #closing = false;
  #finalized = false;
  #claimed = new Set<number>();
  /** Interfaces whose kernel driver the user detached: it stays detached until they attach it. */
  #userDetached = new Set<number>();
  #pending = 0;
  #pendingByEndpoint = new Map<number, number>();
  #chains = new Map<number, Promise<void>>();
  #known = new DeviceConfigurations(
    (type, index, language, length) => this.#descriptor(type, index, language, length),
    () => this.#activeConfigurationValue(),
  );

  /**
   * Wraps an open `libusb_device_handle *`. Use `Libusb.openDevice` instead; this is for the
   * binding itself (and tests that supply their own symbols).
   *
   * @ignore
   */
  constructor(
    symbols: UsbDeviceSymbols,
    handle: bigint,
    info: UsbDeviceInfo,
    onClosed?: () => void,
    context = 0n,
  ) {
    this.#symbols = symbols;
    this.#handle = handle;
    this.info = info;
    this.#onClosed = onClosed;
    internals.set(this, {
      symbols: symbols as LibusbSymbols,
      context,
      handle: () => this.#handle,
      busy: (add, endpoint) => {
        this.#pending += add;
        const left = (this.#pendingByEndpoint.get(endpoint) ?? 0) + add;
        if (left <= 0) this.#pendingByEndpoint.delete(endpoint);
        else this.#pendingByEndpoint.set(endpoint, left);
        if (this.#closing && this.#pending === 0) this.#finalize();
      },
    });
    const { promise, resolve } = Promise.withResolvers<void>();
    this.closed = promise;
    this.#resolveClosed = resolve;
  }

  /** False once `close()` was called. */
  get opened(): boolean {
    return !this.#closing;
  }

  /** Async transfers accepted and not yet settled, on all endpoints. */
  get pendingTransfers(): number {
    return this.#pending;
  }

  /**
   * Every configuration of the device, WebUSB-shaped, read from its descriptors with standard
   * GET_DESCRIPTOR control requests (the device descriptor for `bNumConfigurations`, then each
   * configuration's first 9 bytes and its `wTotalLength` bytes) on the first access, then kept.
   * Names come from the string descriptors, in the device's first language, where readable. Works
   * in a Worker whose only ffi grant is the libusb path. Each interface's `alternate` is the
   * alternate setting selected on it with {@linkcode UsbDevice.selectAlternateInterface} (in the
   * active configuration; the first one before that, or after a configuration change or a reset).
   * Throws a {@linkcode UsbError} when the device does not answer or its descriptors are
   * malformed (`LIBUSB_ERROR_IO`).
   *
   * @example
   * ```ts ignore
   * const bulkIn = dev.configurations[0].interfaces[0].alternate.endpoints
   *   .find((e) => e.type === "bulk" && e.direction === "in");
   * ```
   */
  get configurations(): readonly UsbConfiguration[] {
    this.#check("configurations");
    return this.#known.all;
  }

  /**
   * The active configuration (one of {@linkcode UsbDevice.configurations}, the same object), from
   * libusb's `libusb_get_configuration` (on Linux the kernel's cached value, no bus traffic);
   * `undefined` while the device is unconfigured (configuration value 0).
   *
   * @example
   * ```ts ignore
   * console.log(dev.configuration?.configurationValue); // 1
   * ```
   */
  get configuration(): UsbConfiguration | undefined {
    this.#check("configuration");
    const value = this.#activeConfigurationValue();
    this.#known.observed(value);
    if (value === 0) return undefined;
    return this.#known.all.find((c) => c.configurationValue === value);
  }

  #activeConfigurationValue(): number {
    const out = new Int32Array(1);
    const code = this.#symbols.libusb_get_configuration(this.#handle, out);
    if (code < 0) throw new UsbError(code, { operation: "configuration" });
    return out[0];
  }

  /**
   * Makes another configuration active (`bConfigurationValue`, as in
   * {@linkcode UsbDevice.configurations}); every interface goes back to its first alternate
   * setting. Release claimed interfaces first: libusb refuses with `LIBUSB_ERROR_BUSY` while any
   * is claimed. Selecting the active configuration again is a lightweight reset of the device's
   * endpoints (halts cleared, toggles reset).
   *
   * @example
   * ```ts ignore
   * dev.selectConfiguration(dev.configurations[1].configurationValue);
   * ```
   */
  selectConfiguration(configurationValue: number): void {
    const operation = `selectConfiguration(${configurationValue})`;
    this.#check(operation);
    checkInteger(configurationValue, 0xff, "configurationValue", operation);
    if (this.#claimed.size > 0) {
      throw new UsbError(LibusbError.BUSY, {
        operation,
        detail: `release interface ${[...this.#claimed].join(", ")} first`,
      });
    }
    const code = this.#symbols.libusb_set_configuration(this.#handle, configurationValue);
    if (code < 0) throw new UsbError(code, { operation });
    this.#known.activated(configurationValue);
  }

  /**
   * Resets the device (a USB port reset), then restores its configuration and the interfaces
   * this handle claimed. The device's state (alternate settings, halts, data toggles, whatever
   * its firmware keeps) starts over. When the device comes back as a different one (its
   * descriptors changed), libusb cannot restore it: this throws `LIBUSB_ERROR_NOT_FOUND` and the
   * device must be opened again. Async transfers in flight fail; await them first.
   *
   * @example
   * ```ts ignore
   * dev.reset();
   * dev.transferOut(0x02, command); // works as after a fresh open
   * ```
   */
  reset(): void {
    const operation = "reset";
    this.#check(operation);
    if (this.#pending > 0) {
      throw new UsbError(LibusbError.BUSY, {
        operation,
        detail: `${this.#pending} async transfers are in flight; await them first`,
      });
    }
    const code = this.#symbols.libusb_reset_device(this.#handle);
    this.#known.reset();
    if (code === LibusbError.NOT_FOUND) {
      throw new UsbError(code, {
        operation,
        detail: "the device re-enumerated as a different device: close it and open it again",
      });
    }
    if (code < 0) throw new UsbError(code, { operation });
  }

  /**
   * Whether a kernel driver is bound to an interface (and so `claimInterface` will detach it).
   * False where the platform has no kernel drivers to ask about (libusb says NOT_SUPPORTED, as on
   * macOS and Windows).
   *
   * @example
   * ```ts ignore
   * if (dev.kernelDriverActive(0)) console.log("usbhid has it");
   * ```
   */
  kernelDriverActive(interfaceNumber: number): boolean {
    const operation = `kernelDriverActive(${interfaceNumber})`;
    this.#check(operation);
    checkInteger(interfaceNumber, 0xff, "interfaceNumber", operation);
    const code = this.#symbols.libusb_kernel_driver_active(this.#handle, interfaceNumber);
    if (code === LibusbError.NOT_SUPPORTED) return false;
    if (code < 0) throw new UsbError(code, { operation });
    return code === 1;
  }

  /**
   * Detaches the kernel driver bound to an interface; returns false when none was bound (nothing
   * to do). The driver stays detached until {@linkcode UsbDevice.attachKernelDriver} (or the
   * device is replugged); `claimInterface` does this on its own and re-attaches on release.
   *
   * @example
   * ```ts ignore
   * const detached = dev.detachKernelDriver(0);
   * dev.claimInterface(0);
   * // …
   * dev.releaseInterface(0);
   * if (detached) dev.attachKernelDriver(0);
   * ```
   */
  detachKernelDriver(interfaceNumber: number): boolean {
    const operation = `detachKernelDriver(${interfaceNumber})`;
    this.#check(operation);
    checkInteger(interfaceNumber, 0xff, "interfaceNumber", operation);
    const code = this.#symbols.libusb_detach_kernel_driver(this.#handle, interfaceNumber);
    if (code === LibusbError.NOT_FOUND || code === LibusbError.NOT_SUPPORTED) return false;
    if (code < 0) throw new UsbError(code, { operation });
    this.#userDetached.add(interfaceNumber);
    return true;
  }

  /**
   * Binds the kernel's driver to an interface again (after
   * {@linkcode UsbDevice.detachKernelDriver}). Throws `LIBUSB_ERROR_BUSY` while the interface is
   * claimed, `LIBUSB_ERROR_NOT_FOUND` when no driver wants it.
   *
   * @example
   * ```ts ignore
   * dev.attachKernelDriver(0);
   * ```
   */
  attachKernelDriver(interfaceNumber: number): void {
    const operation = `attachKernelDriver(${interfaceNumber})`;
    this.#check(operation);
    checkInteger(interfaceNumber, 0xff, "interfaceNumber", operation);
    const code = this.#symbols.libusb_attach_kernel_driver(this.#handle, interfaceNumber);
    if (code < 0) throw new UsbError(code, { operation });
    this.#userDetached.delete(interfaceNumber);
  }

  /**
   * The speed the device runs at on its port.
   *
   * @example
   * ```ts ignore
   * console.log(dev.speed); // "high"
   * ```
   */
  get speed(): UsbSpeed {
    this.#check("speed");
    const device = this.#symbols.libusb_get_device(this.#handle);
    return SPEEDS[this.#symbols.libusb_get_device_speed(device)] ?? "unknown";
  }

  /**
   * The ports from the root hub down to the device (e.g. `[1, 4]`: port 4 of the hub on root
   * port 1); with `info.busNumber` it names where the device is plugged in, which stays the same
   * across a replug into the same socket while its address changes.
   *
   * @example
   * ```ts ignore
   * console.log(`${dev.info.busNumber}-${dev.portPath.join(".")}`); // "1-1.4", as in sysfs
   * ```
   */
  get portPath(): number[] {
    const operation = "portPath";
    this.#check(operation);
    const device = this.#symbols.libusb_get_device(this.#handle);
    const ports = new Uint8Array(7); // USB allows at most 7 tiers
    const count = this.#symbols.libusb_get_port_numbers(device, ports, ports.length);
    if (count < 0) throw new UsbError(count, { operation });
    return [...ports.subarray(0, count)];
  }

  #descriptor(type: number, index: number, language: number, length: number): Uint8Array {
    return this.controlTransferIn(
      {
        requestType: "standard",
        recipient: "device",
        request: GET_DESCRIPTOR,
        value: (type << 8) | index,
        index: type === DescriptorType.String ? language : 0,
      },
      length,
    );
  }

  #check(operation: string): void {
    if (this.#closing) {
      throw new UsbError(LibusbError.NO_DEVICE, { operation, detail: "the device is closed" });
    }
  }

  #checkIdle(endpoint: number, operation: string): void {
    if (this.#pendingByEndpoint.get(endpoint)) {
      throw new UsbError(LibusbError.BUSY, {
        operation,
        detail: `async transfers on endpoint ${hex(endpoint)} are in flight; await them first`,
      });
    }
  }

  #endpoint(endpoint: number, direction: "in" | "out", operation: string): number {
    checkInteger(endpoint, 0xff, "endpoint", operation);
    if ((endpoint & ENDPOINT_IN) !== (direction === "in" ? ENDPOINT_IN : 0)) {
      throw invalid(
        operation,
        direction === "in"
          ? `endpoint ${hex(endpoint)} is an OUT address; IN endpoints have bit 7 set (0x8n)`
          : `endpoint ${hex(endpoint)} is an IN address; OUT endpoints have bit 7 clear`,
      );
    }
    return endpoint;
  }

  /**
   * Claims an interface, first asking libusb to detach a kernel driver bound to it (re-attached on
   * release; a no-op where the platform has none). A driver detached with
   * {@linkcode UsbDevice.detachKernelDriver} stays detached after the release.
   *
   * @example
   * ```ts ignore
   * dev.claimInterface(0);
   * ```
   */
  claimInterface(interfaceNumber: number): void {
    const operation = `claimInterface(${interfaceNumber})`;
    this.#check(operation);
    checkInteger(interfaceNumber, 0xff, "interfaceNumber", operation);
    const autoDetach = this.#symbols.libusb_set_auto_detach_kernel_driver;
    if (autoDetach) {
      const code = autoDetach(this.#handle, 1);
      if (code < 0 && code !== LibusbError.NOT_SUPPORTED) {
        throw new UsbError(code, { operation, detail: "enabling kernel driver auto-detach" });
      }
    }
    const code = this.#symbols.libusb_claim_interface(this.#handle, interfaceNumber);
    if (code < 0) throw new UsbError(code, { operation });
    this.#claimed.add(interfaceNumber);
  }

  /**
   * Releases a claimed interface (and re-attaches its kernel driver, if one was detached).
   *
   * @example
   * ```ts ignore
   * dev.releaseInterface(0);
   * ```
   */
  releaseInterface(interfaceNumber: number): void {
    const operation = `releaseInterface(${interfaceNumber})`;
    this.#check(operation);
    checkInteger(interfaceNumber, 0xff, "interfaceNumber", operation);
    const code = this.#release(interfaceNumber);
    this.#claimed.delete(interfaceNumber);
    if (code < 0) throw new UsbError(code, { operation });
  }

  /**
   * libusb's auto-detach re-attaches the kernel driver on every release; an interface whose driver
   * the user detached explicitly is released with it switched off, so the driver stays away.
   */
  #release(interfaceNumber: number): number {
    const autoDetach = this.#symbols.libusb_set_auto_detach_kernel_driver;
    const keepDetached = this.#userDetached.has(interfaceNumber) && autoDetach;
    if (keepDetached) autoDetach(this.#handle, 0);
    try {
      return this.#symbols.libusb_release_interface(this.#handle, interfaceNumber);
    } finally {
      if (keepDetached) autoDetach(this.#handle, 1);
    }
  }

  /**
   * Selects an alternate setting of a claimed interface.
   *
   * @example
   * ```ts ignore
   * dev.selectAlternateInterface(0, 1);
   * ```
   */
  selectAlternateInterface(interfaceNumber: number, alternateSetting: number): void {
    const operation = `selectAlternateInterface(${interfaceNumber}, ${alternateSetting})`;
    this.#check(operation);
    checkInteger(interfaceNumber, 0xff, "interfaceNumber", operation);
    checkInteger(alternateSetting, 0xff, "alternateSetting", operation);
    const code = this.#symbols.libusb_set_interface_alt_setting(
      this.#handle,
      interfaceNumber,
      alternateSetting,
    );
    if (code < 0) throw new UsbError(code, { operation });
    this.#known.selected(interfaceNumber, alternateSetting);
  }

  /**
   * Clears a halt (stall) on an endpoint, given by address (direction bit included).
   *
   * @example
   * ```ts ignore
   * dev.clearHalt(0x81);
   * ```
   */
  clearHalt(endpoint: number): void {
    const operation = operationName("clearHalt", endpoint);
    this.#check(operation);
    checkInteger(endpoint, 0xff, "endpoint", operation);
    this.#checkIdle(endpoint, operation);
    const code = this.#symbols.libusb_clear_halt(this.#handle, endpoint);
    if (code < 0) throw new UsbError(code, { operation });
  }

  /**
   * Whether libusb's interrupt call drives this endpoint (the active configuration's selected
   * alternate settings say it is an interrupt endpoint) rather than its bulk call. Descriptors
   * the device will not give count as bulk, as before they were read.
   */
  #isInterrupt(endpoint: number): boolean {
    return this.#known.endpointType(endpoint) === "interrupt";
  }

  #syncCall(endpoint: number): TransferCall {
    const call = this.#isInterrupt(endpoint)
      ? this.#symbols.libusb_interrupt_transfer
      : this.#symbols.libusb_bulk_transfer;
    return (data, length, transferred, timeout) =>
      call(this.#handle, endpoint, data, length, transferred, timeout);
  }

  #asyncCall(endpoint: number): AsyncTransferCall {
    const call = this.#isInterrupt(endpoint)
      ? this.#symbols.libusb_interrupt_transfer_nonblocking
      : this.#symbols.libusb_bulk_transfer_nonblocking;
    return (data, length, transferred, timeout) =>
      call(this.#handle, endpoint, data, length, transferred, timeout);
  }

  /**
   * Sends bytes to a bulk or interrupt OUT endpoint (libusb's call for the endpoint's type, from
   * the descriptors) and returns how many were written. libusb writes everything or fails; a
   * failure part-way throws a `UsbError` whose `transferred` says how much went out.
   *
   * @example
   * ```ts ignore
   * const written = dev.transferOut(0x02, new Uint8Array([1, 2, 3]), { timeout: 1000 });
   * ```
   */
  transferOut(endpoint: number, data: UsbData, options?: TransferOptions): number {
    const operation = operationName("transferOut", endpoint);
    this.#check(operation);
    this.#endpoint(endpoint, "out", operation);
    const bytes = bytesOf(data, operation);
    const plan = planOf(bytes, "out", options, operation);
    this.#checkIdle(endpoint, operation);
    return runTransfer(this.#syncCall(endpoint), plan);
  }

  /**
   * Reads from a bulk or interrupt IN endpoint. Given a length, up to that many bytes land in a
   * new array; given a `Uint8Array` (such as a queue item's `data`), they land in it, with no
   * allocation, and the result is the filled part of it (a view on the same memory). A short
   * packet ends the transfer early: the result is then shorter. Ask for a multiple of the
   * endpoint's max packet size, or a larger packet overflows (`LIBUSB_ERROR_OVERFLOW`).
   *
   * @example
   * ```ts ignore
   * const reply = dev.transferIn(0x81, 512, { timeout: 1000 });
   * const report = dev.transferIn(0x83, item.data.subarray(0, 8), { signal: item.signal });
   * ```
   */
  transferIn(
    endpoint: number,
    lengthOrBuffer: number | Uint8Array,
    options?: TransferOptions,
  ): Uint8Array {
    const operation = operationName("transferIn", endpoint);
    this.#check(operation);
    this.#endpoint(endpoint, "in", operation);
    const buffer = roomOf(lengthOrBuffer, operation);
    const plan = planOf(buffer, "in", options, operation);
    this.#checkIdle(endpoint, operation);
    return buffer.subarray(0, runTransfer(this.#syncCall(endpoint), plan));
  }

  #queue<T>(endpoint: number, operation: string, run: () => Promise<T>): Promise<T> {
    this.#pending++;
    this.#pendingByEndpoint.set(endpoint, (this.#pendingByEndpoint.get(endpoint) ?? 0) + 1);
    const previous = this.#chains.get(endpoint) ?? Promise.resolve();
    const start = (): Promise<T> => {
      if (this.#closing) {
        return Promise.reject(
          new UsbError(LibusbError.INTERRUPTED, {
            operation,
            detail: "the device was closed before this transfer started",
          }),
        );
      }
      return run();
    };
    // The count drops before the caller's await resumes, so the endpoint is free for a blocking
    // transfer right after (a reaction on the result would run a microtask too late).
    const settle = () => {
      this.#pending--;
      const left = (this.#pendingByEndpoint.get(endpoint) ?? 1) - 1;
      if (left === 0) this.#pendingByEndpoint.delete(endpoint);
      else this.#pendingByEndpoint.set(endpoint, left);
      if (this.#chains.get(endpoint) === tail) this.#chains.delete(endpoint);
      if (this.#closing && this.#pending === 0) this.#finalize();
    };
    const result = previous.then(start).finally(settle);
    const tail: Promise<void> = result.then(() => {}, () => {});
    this.#chains.set(endpoint, tail);
    return result;
  }

  /**
   * Like {@linkcode UsbDevice.transferOut}, but the transfer runs on another thread and this
   * thread goes on. `data` is used in place (not copied): leave it unchanged until the promise
   * settles; the device keeps it referenced until then.
   *
   * @example
   * ```ts ignore
   * const writes = [dev.transferOutAsync(0x02, a), dev.transferOutAsync(0x02, b)];
   * const written = await Promise.all(writes); // sent in call order
   * ```
   */
  transferOutAsync(
    endpoint: number,
    data: UsbData,
    options?: TransferOptions,
  ): Promise<number> {
    const operation = operationName("transferOutAsync", endpoint);
    try {
      this.#check(operation);
      this.#endpoint(endpoint, "out", operation);
      const plan = planOf(bytesOf(data, operation), "out", options, operation);
      return this.#queue(
        endpoint,
        operation,
        () => runTransferAsync(this.#asyncCall(endpoint), plan),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Like {@linkcode UsbDevice.transferIn}, but the transfer runs on another thread and this thread
   * goes on. A given `Uint8Array` is written in place: leave it alone until the promise settles.
   *
   * @example
   * ```ts ignore
   * const reply = await dev.transferInAsync(0x81, 512, { timeout: 1000, signal });
   * ```
   */
  transferInAsync(
    endpoint: number,
    lengthOrBuffer: number | Uint8Array,
    options?: TransferOptions,
  ): Promise<Uint8Array> {
    const operation = operationName("transferInAsync", endpoint);
    try {
      this.#check(operation);
      this.#endpoint(endpoint, "in", operation);
      const buffer = roomOf(lengthOrBuffer, operation);
      const plan = planOf(buffer, "in", options, operation);
      return this.#queue(
        endpoint,
        operation,
        async () => buffer.subarray(0, await runTransferAsync(this.#asyncCall(endpoint), plan)),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #control(
    direction: number,
    setup: ControlSetup,
    buffer: Uint8Array | null,
    length: number,
    options: TransferOptions | undefined,
    operation: string,
  ): number {
    this.#check(operation);
    if (typeof setup !== "object" || setup === null) throw invalid(operation, "setup is required");
    const type = REQUEST_TYPES[setup.requestType];
    const recipient = RECIPIENTS[setup.recipient];
    if (type === undefined) {
      throw invalid(operation, `requestType must be standard, class or vendor`);
    }
    if (recipient === undefined) {
      throw invalid(operation, `recipient must be device, interface, endpoint or other`);
    }
    checkInteger(setup.request, 0xff, "request", operation);
    checkInteger(setup.value, 0xffff, "value", operation);
    checkInteger(setup.index, 0xffff, "index", operation);
    checkInteger(length, 0xffff, "length", operation);
    const timeout = timeoutOf(options, operation);
    const code = this.#symbols.libusb_control_transfer(
      this.#handle,
      direction | type | recipient,
      setup.request,
      setup.value,
      setup.index,
      length === 0 ? null : buffer,
      length,
      timeout,
    );
    if (code < 0) throw new UsbError(code, { operation });
    return code;
  }

  /**
   * Sends a control request with an optional data stage; returns the bytes written.
   *
   * @example
   * ```ts ignore
   * dev.controlTransferOut(
   *   { requestType: "vendor", recipient: "device", request: 0x01, value: 0, index: 0 },
   *   new Uint8Array([0xff]),
   *   { timeout: 500 },
   * );
   * ```
   */
  controlTransferOut(
    setup: ControlSetup,
    data?: UsbData,
    options?: TransferOptions,
  ): number {
    const operation = `controlTransferOut(${setup?.request ?? "?"})`;
    const bytes = data === undefined ? new Uint8Array(0) : bytesOf(data, operation);
    return this.#control(0, setup, bytes, bytes.byteLength, options, operation);
  }

  /**
   * Sends a control request with an IN data stage of up to `length` bytes (0..65535); returns what
   * the device sent (possibly fewer bytes).
   *
   * @example
   * ```ts ignore
   * const status = dev.controlTransferIn(
   *   { requestType: "standard", recipient: "device", request: 0x00, value: 0, index: 0 },
   *   2,
   * );
   * ```
   */
  controlTransferIn(
    setup: ControlSetup,
    length: number,
    options?: TransferOptions,
  ): Uint8Array {
    const operation = `controlTransferIn(${setup?.request ?? "?"})`;
    checkInteger(length, 0xffff, "length", operation);
    const buffer = new Uint8Array(length);
    const count = this.#control(ENDPOINT_IN, setup, buffer, length, options, operation);
    return buffer.subarray(0, Math.min(count, length));
  }

  #finalize(): void {
    if (this.#finalized) return;
    this.#finalized = true;
    for (const interfaceNumber of this.#claimed) {
      // Best effort: re-attaches a driver claimInterface detached; fails harmlessly if unplugged.
      this.#release(interfaceNumber);
    }
    this.#claimed.clear();
    this.#symbols.libusb_close(this.#handle);
    this.#handle = 0n;
    this.#resolveClosed();
    this.#onClosed?.();
  }

  /**
   * Releases claimed interfaces and closes the handle. Idempotent. With async transfers in flight,
   * the handle closes when the running one ends (see {@linkcode UsbDevice.closed}); further calls
   * throw `LIBUSB_ERROR_NO_DEVICE` at once.
   *
   * @example
   * ```ts ignore
   * dev.close();
   * await dev.closed;
   * ```
   */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#pending === 0) this.#finalize();
  }

  /**
   * Same as {@linkcode UsbDevice.close}, for `using`.
   *
   * @example
   * ```ts ignore
   * { using dev = usb.openDevice({ vendorId: 0x46f4, productId: 0x0001 }); }
   * ```
   */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** `transferOut(0x02)`: how a call names itself in its errors. */
function operationName(name: string, endpoint: unknown): string {
  return `${name}(${typeof endpoint === "number" ? hex(endpoint) : endpoint})`;
}

/** Where an IN transfer's bytes land: a new array of that length, or the caller's own. */
function roomOf(lengthOrBuffer: number | Uint8Array, operation: string): Uint8Array {
  if (lengthOrBuffer instanceof Uint8Array) {
    if (lengthOrBuffer.byteLength > MAX_LENGTH) {
      throw invalid(operation, "the buffer is longer than 2^31-1 bytes");
    }
    return lengthOrBuffer;
  }
  return new Uint8Array(checkInteger(lengthOrBuffer, MAX_LENGTH, "length", operation));
}

function planOf(
  bytes: Uint8Array,
  direction: "in" | "out",
  options: TransferOptions | undefined,
  operation: string,
) {
  const timeout = timeoutOf(options, operation);
  const signal = options?.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw invalid(operation, "signal must be an AbortSignal");
  }
  return { bytes, timeout, direction, operation, ...(signal ? { signal } : {}) };
}
