/**
 * **tbq**: a port of Microsoft DMF's `DMF_ThreadedBufferQueue` to Deno. Producers on any thread
 * fetch preallocated buffers, fill and enqueue them; one work loop in a dedicated Worker takes
 * each in order and runs your handler on it (for example a USB transfer through libusb); the
 * buffer then returns to the pool. All queue state lives in one SharedArrayBuffer, so the hot
 * path is `Atomics`, never `postMessage`. USB devices are reached through libusb with
 * {@linkcode Libusb} and {@linkcode UsbDevice}, usable in a Worker granted only the library.
 *
 * ```ts
 * import assert from "node:assert/strict";
 * import { Status, ThreadedBufferQueue } from "./mod.ts";
 *
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 16, bufferSize: 4096, contextSize: 16 },
 *   handlers: new URL("./examples/quick_start_handlers.ts", import.meta.url), // upper-cases
 *   handlerOptions: { vendorId: 0x0403, productId: 0x6001 },
 * });
 * await queue.start();
 * const buffer = await queue.acquire();
 * buffer.size = new TextEncoder().encodeInto("hello\n", buffer.data).written;
 * const status = await queue.enqueueAndWait(buffer, { keep: true });
 * assert.equal(status, Status.Success);
 * assert.equal(new TextDecoder().decode(buffer.data.subarray(0, buffer.size)), "HELLO\n");
 * queue.reuse(buffer);
 * ```
 *
 * @module
 */

export {
  type BufferQueueConfig,
  type CloseOptions,
  ThreadedBufferQueue,
  type ThreadedBufferQueueConfig,
  type WorkerPermissions,
} from "./src/threaded_buffer_queue.ts";
export {
  type EnqueueWaitOptions,
  QueueProducer,
  type QueueShare,
  type WaitOptions,
  WorkBuffer,
} from "./src/producer.ts";
export type { QueueStats } from "./src/pool.ts";
export { QueueError, type QueueErrorCode } from "./src/errors.ts";
export {
  defineWorkHandlers,
  type WorkContext,
  type WorkHandlers,
  type WorkItem,
  type WorkResult,
} from "./src/handlers.ts";
export {
  BufferDisposition,
  isSuccess,
  registerStatusNames,
  Status,
  type StatusCode,
  statusName,
  statusOfError,
} from "./src/status.ts";
export {
  type AbsentMode,
  type AnswerEnd,
  bulkWriterHandlers,
  type BulkWriterOptions,
  type ControlSetup,
  DEFAULT_TIMEOUT,
  type DeviceSessionOptions,
  type DevicesOptions,
  type InStreamOptions,
  Libusb,
  LibusbError,
  type LibusbLogLevel,
  LibusbNotFoundError,
  type LibusbOpenOptions,
  libusbPath,
  type LibusbVersion,
  openInStream,
  pipelinedBulkWriterHandlers,
  requestResponseHandlers,
  type RequestResponseOptions,
  type TransferOptions,
  type UsbAlternateInterface,
  type UsbConfiguration,
  type UsbData,
  UsbDevice,
  type UsbDeviceDescriptor,
  type UsbDeviceEvent,
  type UsbDeviceFilter,
  type UsbDeviceInfo,
  type UsbDeviceWatch,
  type UsbDirection,
  type UsbEndpoint,
  type UsbEndpointType,
  UsbError,
  type UsbErrorOptions,
  UsbInStream,
  type UsbInterface,
  type UsbPermissionsOptions,
  type UsbSpeed,
  UsbStatus,
  usbWorkerPermissions,
  type WatchOptions,
} from "./ffi/mod.ts";
