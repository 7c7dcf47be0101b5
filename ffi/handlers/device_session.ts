/**
 * The device session every ready-made USB handler shares: open a device by vendor, product and
 * serial number, claim its interface, keep it between `pre` and `post`, and, with
 * `absent: "fail-items"`, let it go when it vanishes and open it again on the next item. The bulk
 * writers and the mass storage handler hold one {@linkcode DeviceSlot} each.
 *
 * @module
 */

import { Status, statusOfError } from "../../src/status.ts";
import type { UsbDevice } from "../device.ts";
import { LibusbError, UsbError } from "../errors.ts";
import { Libusb } from "../libusb.ts";

/** The interface a session claims unless its options name another. */
export const DEFAULT_INTERFACE = 0;

/** What an absent device does to a queue: fail `start()` (default) or fail each item. */
export type AbsentMode = "fail-start" | "fail-items";

/**
 * Which device a session opens and how it treats an absent one: the options every ready-made
 * USB handler shares.
 *
 * @example
 * ```ts
 * import type { DeviceSessionOptions } from "./device_session.ts";
 * const options: DeviceSessionOptions = { vendorId: 0x46f4, productId: 0x0001, absent: "fail-items" };
 * ```
 */
export interface DeviceSessionOptions {
  /** idVendor of the device. */
  readonly vendorId: number;
  /** idProduct of the device. */
  readonly productId: number;
  /** Only the device with this serial number, when given. */
  readonly serialNumber?: string;
  /** The interface to claim. Default {@linkcode DEFAULT_INTERFACE}. */
  readonly interface?: number;
  /** The library to load (pass the owner's `libusbPath()`); default: looked up in the Worker. */
  readonly libusbPath?: string;
  /**
   * When the device is absent or goes away: `"fail-start"` (default) makes `pre`, and so
   * `start()`, reject; `"fail-items"` completes each item with `DeviceNotConnected` instead and
   * opens the device again on the next item, so the queue rides out an unplug and a replug.
   */
  readonly absent?: AbsentMode;
}

/**
 * An open device with its interface claimed, and whatever the handler set up on it.
 *
 * @example
 * ```ts ignore
 * import { openDeviceSession } from "./device_session.ts";
 * using session = openDeviceSession({ vendorId: 0x46f4, productId: 1 }, (device) => device);
 * ```
 */
export interface DeviceSession<T> extends Disposable {
  /** The claimed device. */
  readonly device: UsbDevice;
  /** What the setup returned. */
  readonly value: T;
  /** Releases the interface and closes the device and the libusb context. Idempotent. */
  close(): void;
}

/**
 * Opens the device the options name, claims its interface and runs `setup` on it; if any step
 * throws, everything opened so far is closed again and the error propagates.
 *
 * @example
 * ```ts ignore
 * import { openDeviceSession } from "./device_session.ts";
 * using session = openDeviceSession({ vendorId: 0x46f4, productId: 1 }, (device) => device);
 * session.device.transferOut(0x02, new Uint8Array([1, 2, 3]));
 * ```
 */
export function openDeviceSession<O extends DeviceSessionOptions, T>(
  options: O,
  setup: (device: UsbDevice, options: O) => T,
): DeviceSession<T> {
  const usb = Libusb.open(options.libusbPath ? { path: options.libusbPath } : {});
  try {
    const device = usb.openDevice({
      vendorId: options.vendorId,
      productId: options.productId,
      ...(options.serialNumber !== undefined ? { serialNumber: options.serialNumber } : {}),
    });
    device.claimInterface(options.interface ?? DEFAULT_INTERFACE);
    const value = setup(device, options);
    const close = () => usb.close(); // closing a device releases what it claimed
    return { device, value, close, [Symbol.dispose]: close };
  } catch (error) {
    usb.close();
    throw error;
  }
}

/**
 * The error a handler's `work` meets when no device is open (before `pre`, or after it failed):
 * a `LIBUSB_ERROR_NO_DEVICE` `UsbError`, so the item completes with `DeviceNotConnected`.
 *
 * @example
 * ```ts
 * import { notOpen } from "./device_session.ts";
 * console.log(notOpen().name); // "LIBUSB_ERROR_NO_DEVICE"
 * ```
 */
export function notOpen(): UsbError {
  return new UsbError(LibusbError.NO_DEVICE, {
    operation: "device session",
    detail: "the device is not open (pre did not run or failed)",
  });
}

/**
 * The device a handler holds between `pre` and `post`, opened (and in `"fail-items"` mode
 * reopened) as its options say. `setup` runs on each open (e.g. wrap the device in a protocol
 * layer and wait until it is ready); its result is what {@linkcode DeviceSlot.get} returns.
 *
 * @example
 * ```ts ignore
 * import { DeviceSlot } from "./device_session.ts";
 * const slot = new DeviceSlot((device) => device);
 * slot.open(options); // in pre
 * slot.get(options).transferOut(0x02, bytes); // in work
 * slot.close(); // in post
 * ```
 */
export class DeviceSlot<O extends DeviceSessionOptions, T> {
  readonly #setup: (device: UsbDevice, options: O) => T;
  #session: DeviceSession<T> | undefined;

  /** An empty slot whose opens run `setup`. */
  constructor(setup: (device: UsbDevice, options: O) => T) {
    this.#setup = setup;
  }

  /** Opens and sets up the device (`pre`); in `"fail-items"` mode an absent device is no error. */
  open(options: O): void {
    this.close();
    try {
      this.#session = openDeviceSession(options, this.#setup);
    } catch (error) {
      if (!tolerates(options, error)) throw error;
    }
  }

  /** The open device's value; in `"fail-items"` mode it opens the device first if it is not. */
  get(options: O): T {
    if (!this.#session && options.absent === "fail-items") {
      this.#session = openDeviceSession(options, this.#setup);
    }
    if (!this.#session) throw notOpen();
    return this.#session.value;
  }

  /** After a failure: in `"fail-items"` mode a device that went away is let go (and reopened). */
  failed(options: O, error: unknown): void {
    if (tolerates(options, error)) this.close();
  }

  /** Releases the interface and closes the device, if open (`post`). */
  close(): void {
    this.#session?.close();
    this.#session = undefined;
  }
}

function tolerates(options: DeviceSessionOptions, error: unknown): boolean {
  return options.absent === "fail-items" && statusOfError(error) === Status.DeviceNotConnected;
}
