/**
 * libusb-1.0 through `Deno.dlopen`, usable inside a Worker whose only ffi grant is the library's
 * path: {@linkcode Libusb} (a context), {@linkcode UsbDevice} (an open device),
 * {@linkcode UsbError} (every failure), {@linkcode libusbPath} (what to grant).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Libusb, libusbPath } from "./mod.ts";
 * using usb = Libusb.open({ path: libusbPath() });
 * assert.equal(usb.version.major, 1);
 * console.log(usb.devices()); // [] on a machine without USB
 * ```
 *
 * @module
 */

export {
  type ControlSetup,
  DEFAULT_TIMEOUT,
  type TransferOptions,
  type UsbData,
  UsbDevice,
  type UsbDeviceInfo,
  type UsbSpeed,
} from "./device.ts";
export { ABORT_SLICE_MS } from "./transfer.ts";
export { type InStreamOptions, openInStream, UsbInStream } from "./stream.ts";
export {
  DEFAULT_WATCH_INTERVAL,
  type UsbDeviceEvent,
  type UsbDeviceWatch,
  watchDevices,
  type WatchOptions,
} from "./watch.ts";
export {
  DescriptorType,
  parseConfigurationDescriptor,
  type ParseConfigurationOptions,
  parseDeviceDescriptor,
  type UsbAlternateInterface,
  type UsbConfiguration,
  type UsbDeviceDescriptor,
  type UsbDirection,
  type UsbEndpoint,
  type UsbEndpointType,
  type UsbInterface,
} from "./descriptors.ts";
export { LibusbError, UsbError, type UsbErrorOptions, UsbStatus } from "./errors.ts";
export { LibusbNotFoundError, libusbPath } from "./library.ts";
export {
  type DevicesOptions,
  Libusb,
  type LibusbLogLevel,
  type LibusbOpenOptions,
  type LibusbVersion,
  type UsbDeviceFilter,
} from "./libusb.ts";
export { type UsbPermissionsOptions, usbWorkerPermissions } from "./permissions.ts";
export {
  bulkWriterHandlers,
  pipelinedBulkWriterHandlers,
  requestResponseHandlers,
} from "./ready_made.ts";
export type { AnswerEnd, RequestResponseOptions } from "./handlers/request_response.ts";
export type { BulkWriterOptions } from "./handlers/bulk_writer.ts";
export type { AbsentMode, DeviceSessionOptions } from "./handlers/device_session.ts";
export type { StatusCode } from "../src/status.ts";
export type { WorkerPermissions } from "../src/config.ts";
