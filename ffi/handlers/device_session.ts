/**
 * The device session every ready-made USB handler shares: open a device by vendor, product and
 * serial number, claim its interface, keep it between `pre` and `post`, and, with
 * `absent: "fail-items"`, let it go when it vanishes and open it again on the next item; with
 * `absent: "wait"`, wait (asynchronously) until it is back. The bulk writers and the mass storage
 * handler hold one {@linkcode DeviceSlot} each.
 *
 * @module
 */

import { Status, statusOfError } from "../../src/status.ts";
import type { UsbDevice } from "../device.ts";
import { LibusbError, UsbError } from "../errors.ts";
import { Libusb } from "../libusb.ts";

/** The interface a session claims unless its options name another. */
export const DEFAULT_INTERFACE = 0;

/**
 * What an absent device does to a queue: fail `start()` (default), fail each item, or make items
 * wait until it is back (see {@linkcode DeviceSessionOptions.absent}).
 *
 * @example
 * ```ts
 * import type { AbsentMode } from "./device_session.ts";
 * const ridesOutUnplugs: AbsentMode = "wait";
 * ```
 */
export type AbsentMode = "fail-start" | "fail-items" | "wait";

/**
 * Milliseconds between two attempts to open a device that is away (`absent: "wait"`); also the
 * least time between letting a device go and opening it again.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { REOPEN_INTERVAL } from "./device_session.ts";
 * assert.equal(REOPEN_INTERVAL, 200);
 * ```
 */
export const REOPEN_INTERVAL = 200;

/**
 * Milliseconds a device that is back but refuses to open (an error other than "not connected",
 * e.g. access denied until udev has set its permissions, or a setup that fails while it still
 * enumerates) is retried before the waiting item fails with that error (`absent: "wait"`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { REOPEN_GRACE } from "./device_session.ts";
 * assert.equal(REOPEN_GRACE, 5000);
 * ```
 */
export const REOPEN_GRACE = 5000;

/** Milliseconds the GET_STATUS probe of a device that failed a transfer may take. */
const PROBE_TIMEOUT = 250;

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
   * When the device is absent or goes away:
   *
   * - `"fail-start"` (default): `pre`, and so `start()`, rejects.
   * - `"fail-items"`: each item completes with `DeviceNotConnected` instead, and the next item
   *   opens the device again, so the queue goes on after a replug (the items in between fail).
   * - `"wait"`: items stay queued, in order, instead of failing. The item that meets the absence
   *   waits asynchronously (the Worker's event loop runs on: `item.signal` and `ctx.signal` still
   *   fire) while the device is tried again every {@linkcode REOPEN_INTERVAL} ms; when the device
   *   with the same vendor, product and serial number (the options', else that of the device
   *   opened first; one without a serial number matches by ids alone) is back, it is opened,
   *   claimed and set up again, and the work goes on where it stopped: the bulk writers resend
   *   only the bytes a cut transfer had not moved (its `UsbError.transferred`), the mass
   *   storage handler repeats the WRITE (10). The wait has no time limit: it ends early only
   *   through the item's `item.signal` (its waiter gave up, or the queue stops or closes), and
   *   the item then completes with `Cancelled`. `start()` resolves with the device absent. A transfer that fails with the device still answering
   *   (GET_STATUS) fails its item as usual; one that no longer answers counts as unplugged (an
   *   unplug may first show as an I/O error, a stall or a timeout). A device that is back but
   *   refuses to open for {@linkcode REOPEN_GRACE} ms fails the waiting item with that error.
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
 * The device a handler holds between `pre` and `post`, opened (and in `"fail-items"` and `"wait"`
 * modes reopened) as its options say. `setup` runs on each open (e.g. wrap the device in a
 * protocol layer and wait until it is ready); its result is what {@linkcode DeviceSlot.get} and
 * {@linkcode DeviceSlot.whenOpen} return.
 *
 * @example
 * ```ts ignore
 * import { DeviceSlot } from "./device_session.ts";
 * const slot = new DeviceSlot((device) => device);
 * slot.open(options); // in pre
 * slot.get(options).transferOut(0x02, bytes); // in work
 * (await slot.whenOpen(options, item.signal)).transferOut(0x02, bytes); // in work, "wait" mode
 * slot.close(); // in post
 * ```
 */
export class DeviceSlot<O extends DeviceSessionOptions, T> {
  readonly #setup: (device: UsbDevice, options: O) => T;
  #session: DeviceSession<T> | undefined;
  /** The serial number of the first device opened since `open`: a reopen insists on it. */
  #serial: string | undefined;
  /** When the slot last let its device go (`performance.now()`), to pace the reopens. */
  #droppedAt = -Infinity;
  /** Bumped by `close()`, so that a wait begun before it does not reopen after it. */
  #closings = 0;

  /** An empty slot whose opens run `setup`. */
  constructor(setup: (device: UsbDevice, options: O) => T) {
    this.#setup = setup;
  }

  /** True while a device is open (and set up). */
  get opened(): boolean {
    return this.#session !== undefined;
  }

  /**
   * Opens and sets up the device (`pre`); in `"fail-items"` and `"wait"` modes an absent device
   * is no error. Forgets the serial number of a device opened before.
   */
  open(options: O): void {
    this.close();
    this.#serial = undefined;
    try {
      this.#openNow(options);
    } catch (error) {
      if (!tolerates(options, error)) throw error;
    }
  }

  /**
   * The open device's value; in `"fail-items"` and `"wait"` modes it tries once to open the
   * device first if it is not (throwing what the open threw).
   */
  get(options: O): T {
    if (this.#session) return this.#session.value;
    if (options.absent === "fail-items" || options.absent === "wait") return this.#openNow(options);
    throw notOpen();
  }

  /**
   * The open device's value, waiting for it in `"wait"` mode: while the device is away it is
   * tried again every {@linkcode REOPEN_INTERVAL} ms (in a new libusb context each time, whose
   * listing is fresh even where no hotplug events reach libusb) until the one with the same
   * vendor, product and serial number is back. Never blocks the event loop between attempts.
   * Rejects with `signal.reason` when `signal` aborts first, with the open's error when a device
   * that is back refuses to open for {@linkcode REOPEN_GRACE} ms, and with {@linkcode notOpen}'s
   * error when `close()` is called meanwhile. In the other modes it is {@linkcode DeviceSlot.get}.
   */
  async whenOpen(options: O, signal?: AbortSignal): Promise<T> {
    if (this.#session) return this.#session.value;
    if (options.absent !== "wait") return this.get(options);
    const closings = this.#closings;
    let refusedSince: number | undefined;
    await delay(this.#droppedAt + REOPEN_INTERVAL - performance.now(), signal);
    for (;;) {
      signal?.throwIfAborted();
      if (this.#closings !== closings) throw notOpen();
      const opened = this.#session as DeviceSession<T> | undefined; // maybe opened meanwhile
      if (opened) return opened.value;
      try {
        return this.#openNow(options);
      } catch (error) {
        if (statusOfError(error) === Status.DeviceNotConnected) refusedSince = undefined;
        else if (performance.now() - (refusedSince ??= performance.now()) >= REOPEN_GRACE) {
          throw error;
        }
      }
      await delay(REOPEN_INTERVAL, signal);
    }
  }

  /**
   * After a failure: decides whether the device went away and, if so, lets it go (it is opened
   * again on the next item, or by {@linkcode DeviceSlot.whenOpen}); returns whether it did.
   * In `"fail-items"` mode a `DeviceNotConnected` failure means gone. In `"wait"` mode so does a
   * device that no longer answers a GET_STATUS request (250 ms), whatever the failure was. In
   * `"fail-start"` mode nothing is let go.
   */
  failed(options: O, error: unknown): boolean {
    if (options.absent !== "fail-items" && options.absent !== "wait") return false;
    let gone = statusOfError(error) === Status.DeviceNotConnected;
    if (!gone && options.absent === "wait" && this.#session) {
      gone = !answers(this.#session.device);
    }
    if (gone) this.#drop();
    return gone;
  }

  /** Releases the interface and closes the device, if open (`post`); ends waits in progress. */
  close(): void {
    this.#closings++;
    this.#drop();
  }

  #drop(): void {
    if (!this.#session) return;
    this.#session.close();
    this.#session = undefined;
    this.#droppedAt = performance.now();
  }

  #openNow(options: O): T {
    const again = options.absent === "wait" && options.serialNumber === undefined &&
      this.#serial !== undefined;
    const session = openDeviceSession(
      again ? { ...options, serialNumber: this.#serial } : options,
      this.#setup,
    );
    this.#session = session;
    this.#serial ??= session.device.info.serialNumber;
    return session.value;
  }
}

/** Whether a device still answers a standard GET_STATUS request. */
function answers(device: UsbDevice): boolean {
  try {
    device.controlTransferIn(
      { requestType: "standard", recipient: "device", request: 0x00, value: 0, index: 0 },
      2,
      { timeout: PROBE_TIMEOUT },
    );
    return true;
  } catch {
    return false;
  }
}

/** Resolves after `ms` (at once when not positive); rejects with `signal.reason` on abort. */
function delay(ms: number, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  if (!(ms > 0)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function tolerates(options: DeviceSessionOptions, error: unknown): boolean {
  return (options.absent === "fail-items" || options.absent === "wait") &&
    statusOfError(error) === Status.DeviceNotConnected;
}
