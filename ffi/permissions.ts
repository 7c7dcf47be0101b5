/**
 * Least privilege for a queue whose handler drives USB.
 *
 * @module
 */

import type { WorkerPermissions } from "../src/config.ts";
import { LibusbError, UsbError } from "./errors.ts";
import { libusbPath } from "./library.ts";

/**
 * Options for {@linkcode usbWorkerPermissions}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type UsbPermissionsOptions, usbWorkerPermissions } from "../mod.ts";
 * const options: UsbPermissionsOptions = { libusbPath: "/opt/libusb-1.0.so.0", read: ["/srv/firmware.bin"] };
 * assert.deepEqual(usbWorkerPermissions(options), {
 *   ffi: ["/opt/libusb-1.0.so.0"], read: ["/srv/firmware.bin"],
 *   env: false, net: false, run: false, sys: false, write: false, import: false,
 * });
 * ```
 */
export interface UsbPermissionsOptions {
  /** The libusb to grant (default: {@linkcode libusbPath}, what `Libusb.open()` would load). */
  readonly libusbPath?: string;
  /** Further files or folders the handler reads (its own module is added by the queue). */
  readonly read?: readonly (string | URL)[];
  /**
   * `"scoped"` (the default): ffi for the libusb path alone; every call of the binding works, one
   * transfer at a time per endpoint. `"unscoped"`: ffi for any library (`ffi: true`), which the
   * streaming reader (`openInStream`, several IN transfers in flight) needs, because Deno refuses
   * callbacks and pointers under a path-scoped grant. The cost: the handler may then load any
   * native library and read or write any memory of the process, so the sandbox no longer holds
   * against it (native code can do what the process can). Opt in only where the gain counts.
   */
  readonly ffi?: "scoped" | "unscoped";
}

/**
 * The Worker permissions a USB handler needs and nothing more: ffi for the libusb library's
 * absolute path only, read for the given files only (the queue adds its own modules and the
 * handler module); no net, env, write, run or sys. Pass it as the queue's `permissions`, and
 * `libusbPath()` as a handler option, since the Worker may not read the environment or stat files.
 * `{ ffi: "unscoped" }` grants ffi without a path instead, for `openInStream`; see
 * {@linkcode UsbPermissionsOptions.ffi} for what that gives away.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bulkWriterHandlers, libusbPath, ThreadedBufferQueue, usbWorkerPermissions } from "../mod.ts";
 * assert.deepEqual(usbWorkerPermissions(), usbWorkerPermissions({ libusbPath: libusbPath() }));
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 8, bufferSize: 4096 },
 *   handlers: bulkWriterHandlers, // loads under these permissions; pre opens the device at start()
 *   handlerOptions: { vendorId: 0x0403, productId: 0x6001, endpoint: 0x02, libusbPath: libusbPath() },
 *   permissions: usbWorkerPermissions(),
 * });
 * assert.equal(queue.running, false);
 * // The opt-in for several IN transfers in flight (openInStream): ffi for any library.
 * assert.deepEqual(usbWorkerPermissions({ ffi: "unscoped" }), {
 *   ffi: true, read: [], env: false, net: false, run: false, sys: false, write: false, import: false,
 * });
 * ```
 */
export function usbWorkerPermissions(options: UsbPermissionsOptions = {}): WorkerPermissions {
  if (options.ffi !== undefined && options.ffi !== "scoped" && options.ffi !== "unscoped") {
    throw new UsbError(LibusbError.INVALID_PARAM, {
      operation: "usbWorkerPermissions",
      detail: `ffi must be "scoped" or "unscoped", got ${String(options.ffi)}`,
    });
  }
  return {
    ffi: options.ffi === "unscoped" ? true : [options.libusbPath ?? libusbPath()],
    read: [...(options.read ?? [])],
    net: false,
    env: false,
    write: false,
    run: false,
    sys: false,
    import: false,
  };
}
