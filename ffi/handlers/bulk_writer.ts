/**
 * A ready-made handler module: each queue item's bytes go to a bulk OUT endpoint, one transfer at a
 * time. `pre` opens the device and claims the interface, `post` releases and closes it.
 *
 * Each item completes with `Status.Success` or the failure's status (`UsbError.status`, e.g.
 * `IoTimeout`, `DeviceNotConnected`). When the item's context has at least 4 bytes, its first 4
 * receive the number of bytes written (little-endian u32), also on failure (bytes sent before a
 * timeout).
 *
 * @example
 * ```ts ignore
 * import { libusbPath, ThreadedBufferQueue } from "../../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 16, bufferSize: 4096, contextSize: 4 },
 *   handlers: new URL("./bulk_writer.ts", import.meta.url),
 *   handlerOptions: { vendorId: 0x46f4, productId: 0x0001, endpoint: 0x02, libusbPath: libusbPath() },
 *   permissions: { ffi: [libusbPath()], read: true },
 * });
 * ```
 *
 * @module
 */

import { defineWorkHandlers, type WorkHandlers } from "../../src/handlers.ts";
import { BufferDisposition, Status, statusOfError } from "../../src/status.ts";
import type { UsbDevice } from "../device.ts";
import { LibusbError, UsbError } from "../errors.ts";
import { Libusb } from "../libusb.ts";

/**
 * The `handlerOptions` of the bulk writer handler modules.
 *
 * @example
 * ```ts
 * import type { BulkWriterOptions } from "./bulk_writer.ts";
 * const options: BulkWriterOptions = {
 *   vendorId: 0x46f4, productId: 0x0001, endpoint: 0x02, timeout: 500,
 *   libusbPath: "/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0",
 * };
 * ```
 */
export interface BulkWriterOptions {
  /** idVendor of the device. */
  readonly vendorId: number;
  /** idProduct of the device. */
  readonly productId: number;
  /** Only the device with this serial number, when given. */
  readonly serialNumber?: string;
  /** The interface to claim. Default 0. */
  readonly interface?: number;
  /** The bulk OUT endpoint address. Default 0x01. */
  readonly endpoint?: number;
  /** Milliseconds per transfer. Default 1000. */
  readonly timeout?: number;
  /** The library to load (pass the owner's `libusbPath()`); default: looked up in the Worker. */
  readonly libusbPath?: string;
  /** Pipelined writer only: transfers kept in flight. Default 4. */
  readonly depth?: number;
  /**
   * When the device is absent or goes away: `"fail-start"` (default) makes `pre`, and so
   * `start()`, reject; `"fail-items"` completes each item with `DeviceNotConnected` instead and
   * opens the device again on the next item, so the queue rides out an unplug and a replug.
   */
  readonly absent?: "fail-start" | "fail-items";
}

/**
 * An open, claimed device, as the bulk writers hold it between `pre` and `post`.
 *
 * @example
 * ```ts ignore
 * import { openWriterDevice } from "./bulk_writer.ts";
 * const session = openWriterDevice({ vendorId: 0x46f4, productId: 1 });
 * session.close();
 * ```
 */
export interface WriterSession extends Disposable {
  /** The claimed device. */
  readonly device: UsbDevice;
  /** Releases the interface, closes the device and the libusb context. */
  close(): void;
}

/**
 * Opens the device and claims the interface the options name (what `pre` does).
 *
 * @example
 * ```ts ignore
 * import { openWriterDevice } from "./bulk_writer.ts";
 * using session = openWriterDevice({ vendorId: 0x46f4, productId: 1 });
 * ```
 */
export function openWriterDevice(options: BulkWriterOptions): WriterSession {
  const usb = Libusb.open(options.libusbPath ? { path: options.libusbPath } : {});
  try {
    const device = usb.openDevice({
      vendorId: options.vendorId,
      productId: options.productId,
      ...(options.serialNumber !== undefined ? { serialNumber: options.serialNumber } : {}),
    });
    device.claimInterface(options.interface ?? 0);
    return { device, close: () => usb.close(), [Symbol.dispose]: () => usb.close() };
  } catch (error) {
    usb.close();
    throw error;
  }
}

/**
 * Stores a byte count in the first 4 bytes of an item's context (little-endian), if it has room.
 *
 * @example
 * ```ts
 * import { recordWritten } from "./bulk_writer.ts";
 * const context = new Uint8Array(8);
 * recordWritten(context, 300);
 * console.log(context[0], context[1]); // 44 1
 * ```
 */
export function recordWritten(context: Uint8Array, written: number): void {
  if (context.byteLength >= 4) {
    new DataView(context.buffer, context.byteOffset, 4).setUint32(0, written, true);
  }
}

/**
 * The error `work` throws when no device is open (before `pre`, or after it failed): a
 * `LIBUSB_ERROR_NO_DEVICE` `UsbError`, so the item completes with `DeviceNotConnected`.
 *
 * @example
 * ```ts
 * import { notOpen } from "./bulk_writer.ts";
 * console.log(notOpen().name); // "LIBUSB_ERROR_NO_DEVICE"
 * ```
 */
export function notOpen(): UsbError {
  return new UsbError(LibusbError.NO_DEVICE, {
    operation: "bulk writer",
    detail: "the device is not open (pre did not run or failed)",
  });
}

/**
 * The device a bulk writer holds between `pre` and `post`, opened (and in `"fail-items"` mode
 * reopened) as its options say.
 *
 * @example
 * ```ts ignore
 * import { DeviceSlot } from "./bulk_writer.ts";
 * const slot = new DeviceSlot();
 * slot.open(options); // in pre
 * slot.device(options).transferOut(0x02, bytes); // in work
 * slot.close(); // in post
 * ```
 */
export class DeviceSlot {
  #session: WriterSession | undefined;

  /** Opens and claims the device; in `"fail-items"` mode an absent device is not an error. */
  open(options: BulkWriterOptions): void {
    this.close();
    try {
      this.#session = openWriterDevice(options);
    } catch (error) {
      if (!tolerates(options, error)) throw error;
    }
  }

  /** The open device; in `"fail-items"` mode it tries to open it first if it is not. */
  device(options: BulkWriterOptions): UsbDevice {
    if (!this.#session && options.absent === "fail-items") {
      this.#session = openWriterDevice(options);
    }
    if (!this.#session) throw notOpen();
    return this.#session.device;
  }

  /** After a failed transfer: in `"fail-items"` mode a device that went away is let go. */
  failed(options: BulkWriterOptions, error: unknown): void {
    if (tolerates(options, error)) this.close();
  }

  /** Releases the interface and closes the device, if open. */
  close(): void {
    this.#session?.close();
    this.#session = undefined;
  }
}

function tolerates(options: BulkWriterOptions, error: unknown): boolean {
  return options.absent === "fail-items" && statusOfError(error) === Status.DeviceNotConnected;
}

const slot = new DeviceSlot();

/**
 * The handler module's callbacks (its default export), for a queue's `handlers`.
 *
 * @example
 * ```ts
 * import handlers from "./bulk_writer.ts";
 * console.log(typeof handlers.work); // "function"
 * ```
 */
const handlers: WorkHandlers<BulkWriterOptions> = defineWorkHandlers<BulkWriterOptions>({
  pre(ctx) {
    slot.open(ctx.options);
  },
  work(item, ctx) {
    try {
      const written = slot.device(ctx.options).transferOut(
        ctx.options.endpoint ?? 0x01,
        item.data,
        {
          timeout: ctx.options.timeout ?? 1000,
        },
      );
      recordWritten(item.context, written); // a short write is not an error: the count says it
      return { disposition: BufferDisposition.WorkComplete, status: Status.Success };
    } catch (error) {
      recordWritten(item.context, error instanceof UsbError ? error.transferred ?? 0 : 0);
      slot.failed(ctx.options, error);
      return { disposition: BufferDisposition.WorkComplete, status: statusOfError(error) };
    }
  },
  post() {
    slot.close();
  },
});

export default handlers;
