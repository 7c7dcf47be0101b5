/**
 * Attach and detach events by polling: {@linkcode watchDevices} (what `usb.watch()` returns).
 * libusb's hotplug callbacks need a pointer-taking `UnsafeCallback`, which a Worker granted only
 * the libusb path may not create, so the watch compares `devices()` listings instead.
 *
 * @module
 */

import type { UsbDeviceInfo } from "./device.ts";
import { LibusbError, UsbError } from "./errors.ts";
import type { Libusb } from "./libusb.ts";

/**
 * One change on the bus: a device came (`"attach"`) or went (`"detach"`). A detach carries the
 * info the device was attached with (strings included), since a gone device cannot be asked.
 *
 * @example
 * ```ts
 * import type { UsbDeviceEvent } from "./watch.ts";
 * const event: UsbDeviceEvent = {
 *   type: "attach",
 *   device: {
 *     vendorId: 0x0403, productId: 0x6001, busNumber: 1, deviceAddress: 5, deviceClass: 0,
 *     deviceSubclass: 0, deviceProtocol: 0, deviceVersion: 0x0400, usbVersion: 0x0200,
 *   },
 * };
 * ```
 */
export interface UsbDeviceEvent {
  /** Whether the device came or went. */
  readonly type: "attach" | "detach";
  /** The device, as `devices()` reports it. */
  readonly device: UsbDeviceInfo;
}

/**
 * Options of {@linkcode watchDevices}.
 *
 * @example
 * ```ts
 * import type { WatchOptions } from "./watch.ts";
 * const options: WatchOptions = { signal: AbortSignal.timeout(10_000), interval: 100 };
 * ```
 */
export interface WatchOptions {
  /** Ends the watch: the pending (or next) `next()` rejects with `signal.reason`. */
  readonly signal?: AbortSignal;
  /** Milliseconds between two listings (> 0). Default {@linkcode DEFAULT_WATCH_INTERVAL}. */
  readonly interval?: number;
}

/**
 * Milliseconds between two listings unless the options say otherwise: a replug (which takes
 * longer than this to enumerate) is seen as a detach and an attach, not missed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DEFAULT_WATCH_INTERVAL } from "./watch.ts";
 * assert.equal(DEFAULT_WATCH_INTERVAL, 250);
 * ```
 */
export const DEFAULT_WATCH_INTERVAL = 250;

/**
 * What a watch polls: the devices connected now. {@linkcode watchDevices} wraps a `Libusb`;
 * tests pass their own.
 *
 * @example
 * ```ts
 * import type { DeviceSource } from "./watch.ts";
 * const nothing: DeviceSource = { list: () => [] };
 * ```
 */
export interface DeviceSource {
  /**
   * The devices connected now, with their strings when `strings` (asked only when some device
   * is new, since reading strings opens every device), or `undefined` once the source is closed
   * (the watch then ends). A throw ends the watch with that error.
   */
  list(strings: boolean): readonly UsbDeviceInfo[] | undefined;
  /** Settles when the source closes, so a sleeping watch ends at once. */
  readonly closed?: Promise<unknown>;
}

/**
 * The key a device is known by between two listings: bus, address and ids. A replugged device
 * gets a new address, so it is reported as a detach and an attach.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { deviceKey } from "./watch.ts";
 * const ftdi = {
 *   vendorId: 0x0403, productId: 0x6001, busNumber: 1, deviceAddress: 2, deviceClass: 0,
 *   deviceSubclass: 0, deviceProtocol: 0, deviceVersion: 0x0400, usbVersion: 0x0200,
 * };
 * assert.notEqual(deviceKey(ftdi), deviceKey({ ...ftdi, deviceAddress: 3 }));
 * ```
 */
export function deviceKey(device: UsbDeviceInfo): string {
  return `${device.busNumber}:${device.deviceAddress}:${device.vendorId}:${device.productId}`;
}

function invalid(detail: string): UsbError {
  return new UsbError(LibusbError.INVALID_PARAM, { operation: "watch", detail });
}

function byKey(devices: readonly UsbDeviceInfo[]): Map<string, UsbDeviceInfo> {
  return new Map(devices.map((device) => [deviceKey(device), device]));
}

/**
 * What {@linkcode watchDevices} returns: an async iterable iterator of events whose `return()`
 * (called by `break` in `for await`) stops the polling at once.
 *
 * @example
 * ```ts
 * import { type UsbDeviceWatch, watchDeviceSource } from "./watch.ts";
 * const watch: UsbDeviceWatch = watchDeviceSource({ list: () => [] });
 * await watch.return();
 * ```
 */
export interface UsbDeviceWatch extends AsyncIterableIterator<UsbDeviceEvent, undefined> {
  /** Ends the watch: a pending `next()` resolves done; no timer is left behind. */
  return(): Promise<IteratorReturnResult<undefined>>;
}

const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };

/** The iterator behind a watch: one listing per `interval` while someone waits on `next()`. */
class DevicePoll implements UsbDeviceWatch {
  readonly #source: DeviceSource;
  readonly #interval: number;
  readonly #signal: AbortSignal | undefined;
  #known: Map<string, UsbDeviceInfo> = new Map();
  readonly #ready: UsbDeviceEvent[] = [];
  #done = false;
  #sourceClosed = false;
  /** An error met while taking the first listing, thrown by the first `next()`. */
  #failure: { error: unknown } | undefined;
  /** Ends the current sleep early (return, abort, the source closing). */
  #wake: (() => void) | undefined;
  /** `next()` calls run one after another. */
  #chain: Promise<unknown> = Promise.resolve();

  constructor(source: DeviceSource, options: WatchOptions) {
    const interval = options.interval ?? DEFAULT_WATCH_INTERVAL;
    if (typeof interval !== "number" || !Number.isFinite(interval) || interval <= 0) {
      throw invalid(`interval must be a finite number of milliseconds > 0, got ${interval}`);
    }
    this.#source = source;
    this.#interval = interval;
    this.#signal = options.signal;
    // The baseline is taken now, not at the first next(): a change after this call is reported.
    try {
      const devices = source.list(false);
      if (devices === undefined) this.#done = true;
      else this.#known = byKey(devices);
    } catch (error) {
      this.#failure = { error };
    }
    // One reaction for the watch's life (not one per sleep, which would pile up on the promise).
    source.closed?.then(() => {
      this.#sourceClosed = true;
      this.#wake?.();
    }, () => {});
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<UsbDeviceEvent, undefined>> {
    const result = this.#chain.then(() => this.#next());
    this.#chain = result.catch(() => {});
    return result;
  }

  /** Stops polling at once (a pending `next()` resolves done); no timer is left behind. */
  return(): Promise<IteratorReturnResult<undefined>> {
    this.#finish();
    return Promise.resolve(DONE);
  }

  #finish(): void {
    this.#done = true;
    this.#ready.length = 0;
    this.#wake?.();
  }

  async #next(): Promise<IteratorResult<UsbDeviceEvent, undefined>> {
    for (;;) {
      if (this.#done) return DONE;
      if (this.#signal?.aborted) {
        this.#finish();
        throw this.#signal.reason;
      }
      if (this.#failure) {
        const { error } = this.#failure;
        this.#finish();
        throw error;
      }
      const event = this.#ready.shift();
      if (event) return { done: false, value: event };
      if (this.#sourceClosed) {
        this.#finish();
        return DONE;
      }
      await this.#sleep();
      if (this.#done || this.#signal?.aborted || this.#sourceClosed) continue;
      try {
        this.#poll();
      } catch (error) {
        this.#failure = { error };
      }
    }
  }

  /** Waits one interval, or less when the watch ends meanwhile. */
  #sleep(): Promise<void> {
    return new Promise((resolve) => {
      const signal = this.#signal;
      const wake = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", wake);
        this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(wake, this.#interval);
      signal?.addEventListener("abort", wake, { once: true });
      this.#wake = wake;
    });
  }

  /** Lists the devices and queues what changed: detaches first, then attaches. */
  #poll(): void {
    const devices = this.#source.list(false);
    if (devices === undefined) {
      this.#sourceClosed = true;
      return;
    }
    const now = byKey(devices);
    for (const [key, device] of this.#known) {
      if (now.has(key)) now.set(key, device); // keeps the info it came with (strings included)
      else this.#ready.push({ type: "detach", device });
    }
    const added = [...now.keys()].filter((key) => !this.#known.has(key));
    if (added.length > 0) {
      // Only new devices need their strings, and only then is every device opened to read them.
      const described = byKey(this.#source.list(true) ?? []);
      for (const key of added) {
        const device = described.get(key) ?? now.get(key)!;
        now.set(key, device);
        this.#ready.push({ type: "attach", device });
      }
    }
    this.#known = now;
  }
}

/**
 * Like {@linkcode watchDevices}, over any {@linkcode DeviceSource}: what it polls is the
 * source's `list`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { watchDeviceSource } from "./watch.ts";
 * const device = {
 *   vendorId: 0x0403, productId: 0x6001, busNumber: 1, deviceAddress: 2, deviceClass: 0,
 *   deviceSubclass: 0, deviceProtocol: 0, deviceVersion: 0x0400, usbVersion: 0x0200,
 * };
 * let plugged = false;
 * const events = watchDeviceSource({ list: () => (plugged ? [device] : []) }, { interval: 10 });
 * plugged = true; // after the baseline: reported
 * const { value } = await events.next();
 * assert.equal(value?.type, "attach");
 * await events.return();
 * ```
 */
export function watchDeviceSource(
  source: DeviceSource,
  options: WatchOptions = {},
): UsbDeviceWatch {
  return new DevicePoll(source, options);
}

/**
 * Attach and detach events of a libusb context (`usb.watch(options)` is this): an async iterable
 * that lists the devices every `interval` ms (default {@linkcode DEFAULT_WATCH_INTERVAL}) while it
 * is being iterated, and yields what changed since the previous listing, detaches before
 * attaches. Polling, because libusb's hotplug callbacks are not allowed in a Worker granted only
 * the libusb path; libusb's device list follows the system's hotplug events (udev on Linux).
 *
 * - Devices present when `watchDevices` is called are **not** reported (as with WebUSB's
 *   `connect` event): the first listing, taken during the call, is the baseline. For "every
 *   device, now and later", create the watch first, then call `usb.devices()`.
 * - A device is known by bus, address and ids ({@linkcode deviceKey}); a replug gets a new
 *   address, so it shows as a detach and an attach, even if both happen within one interval.
 *   Attach events carry the strings (read from the new devices only); a detach carries what its
 *   attach (or the baseline) saw, without strings for a device present at the start.
 * - Abort of `signal`: the pending (or next) `next()` rejects with `signal.reason`, then the
 *   watch is over. Breaking out of `for await` (or `return()`) stops it at once: no timer, no
 *   listener is left behind. Closing the `Libusb` ends the iteration (done). A failed listing
 *   rejects `next()` with its `UsbError` and ends the watch.
 * - A bad `interval` throws a `UsbError` (`LIBUSB_ERROR_INVALID_PARAM`) at the call.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Libusb } from "../mod.ts";
 * import { watchDevices } from "./watch.ts";
 * using usb = Libusb.open();
 * const signal = AbortSignal.timeout(300);
 * const seen: string[] = [];
 * await assert.rejects(async () => {
 *   for await (const { type, device } of watchDevices(usb, { signal, interval: 100 })) {
 *     seen.push(`${type} ${device.vendorId.toString(16)}:${device.productId.toString(16)}`);
 *   }
 * }, { name: "TimeoutError" }); // the signal's reason
 * console.log(seen); // [] unless a device came or went within those 300 ms
 * ```
 */
export function watchDevices(
  usb: Libusb,
  options: WatchOptions = {},
): UsbDeviceWatch {
  return watchDeviceSource({
    list: (strings) => (usb.opened ? usb.devices({ strings }) : undefined),
    closed: usb.closed,
  }, options);
}
