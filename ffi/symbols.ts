/**
 * The libusb-1.0 symbol table for `Deno.dlopen`.
 *
 * Every pointer, in either direction, is declared as `"usize"` (an address as a bigint) or passed as
 * a `"buffer"` (a typed array whose memory libusb reads or writes). No `"pointer"` type appears: in a
 * Worker whose only grant is the library path, Deno refuses `Deno.UnsafePointer` and
 * `Deno.UnsafePointerView`, so pointer objects would be of no use there.
 *
 * @module
 */

/**
 * The libusb functions this binding calls, as a `Deno.ForeignLibraryInterface`. Symbols marked
 * `optional` are missing from some libusb builds (very old releases, or libusb-compatible
 * implementations); they load as `null` there.
 *
 * @example
 * ```ts
 * import { libusbSymbols } from "./symbols.ts";
 * import { libusbPath } from "./library.ts";
 * const lib = Deno.dlopen(libusbPath(), libusbSymbols);
 * console.log(lib.symbols.libusb_has_capability(0x0000) !== 0);
 * lib.close();
 * ```
 */
export const libusbSymbols = {
  // ---- library and context -------------------------------------------------------------------
  libusb_init: {
    parameters: [
      "buffer", // libusb_context **ctx: a BigUint64Array(1) that receives the new context address
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code
  },
  libusb_exit: {
    parameters: [
      "usize", // libusb_context *ctx: the address libusb_init stored
    ],
    result: "void",
  },
  libusb_get_version: {
    parameters: [],
    result: "usize", // const struct libusb_version *: address of a static struct (read it by peeking)
    optional: true,
  },
  libusb_has_capability: {
    parameters: [
      "u32", // uint32_t capability: LIBUSB_CAP_* number
    ],
    result: "i32", // non-zero when the capability is present
  },
  libusb_set_debug: {
    parameters: [
      "usize", // libusb_context *ctx: the context whose log level changes
      "i32", // int level: LIBUSB_LOG_LEVEL_NONE (0) .. LIBUSB_LOG_LEVEL_DEBUG (4)
    ],
    result: "void", // (libusb_set_option is variadic, which Deno cannot call portably)
    optional: true,
  },
  libusb_error_name: {
    parameters: [
      "i32", // int errcode: a LIBUSB_ERROR or LIBUSB_TRANSFER status number
    ],
    result: "usize", // const char *: address of a static ASCII name (read it by peeking)
  },

  // ---- enumeration ---------------------------------------------------------------------------
  libusb_get_device_list: {
    parameters: [
      "usize", // libusb_context *ctx
      "buffer", // libusb_device ***list: a BigUint64Array(1) that receives the array's address
    ],
    result: "isize", // number of devices (the array also ends with NULL), or a LIBUSB_ERROR code
  },
  libusb_free_device_list: {
    parameters: [
      "usize", // libusb_device **list: the address libusb_get_device_list stored
      "i32", // int unref_devices: 1 to drop the list's reference on every device
    ],
    result: "void",
  },
  libusb_get_device_descriptor: {
    parameters: [
      "usize", // libusb_device *dev
      "buffer", // struct libusb_device_descriptor *desc: an 18-byte Uint8Array, host byte order
    ],
    result: "i32", // 0 (always, since libusb 1.0.16)
  },
  libusb_get_bus_number: {
    parameters: [
      "usize", // libusb_device *dev
    ],
    result: "u8", // the bus number
  },
  libusb_get_device_address: {
    parameters: [
      "usize", // libusb_device *dev
    ],
    result: "u8", // the device address on its bus
  },
  libusb_get_device_speed: {
    parameters: [
      "usize", // libusb_device *dev
    ],
    result: "i32", // LIBUSB_SPEED_*: 0 unknown, 1 low, 2 full, 3 high, 4 super, 5 super plus
  },
  libusb_get_port_numbers: {
    parameters: [
      "usize", // libusb_device *dev
      "buffer", // uint8_t *port_numbers: a Uint8Array(7) that receives the ports, root first
      "i32", // int port_numbers_len: its length (USB 3.0 allows at most 7 tiers)
    ],
    result: "i32", // number of ports written, or LIBUSB_ERROR_OVERFLOW
  },
  libusb_get_device: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
    ],
    result: "usize", // libusb_device *: the device the handle was opened on (not referenced)
  },

  // ---- device handles ------------------------------------------------------------------------
  libusb_open: {
    parameters: [
      "usize", // libusb_device *dev
      "buffer", // libusb_device_handle **handle: a BigUint64Array(1) that receives the handle
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code
  },
  libusb_close: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
    ],
    result: "void",
  },
  libusb_get_string_descriptor_ascii: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "u8", // uint8_t desc_index: iManufacturer / iProduct / iSerialNumber
      "buffer", // unsigned char *data: receives the ASCII text (no terminator counted)
      "i32", // int length: size of data
    ],
    result: "i32", // number of bytes written, or a LIBUSB_ERROR code
  },
  libusb_set_auto_detach_kernel_driver: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "i32", // int enable: 1 to detach a kernel driver on claim and re-attach it on release
    ],
    result: "i32", // 0, or LIBUSB_ERROR_NOT_SUPPORTED where the platform has no kernel drivers
    optional: true,
  },
  libusb_claim_interface: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "i32", // int interface_number: bInterfaceNumber
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code
  },
  libusb_release_interface: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "i32", // int interface_number: bInterfaceNumber
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code
  },
  libusb_set_interface_alt_setting: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "i32", // int interface_number: a claimed bInterfaceNumber
      "i32", // int alternate_setting: bAlternateSetting
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code
  },
  libusb_clear_halt: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "u8", // unsigned char endpoint: endpoint address, direction bit included
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code
  },
  libusb_get_configuration: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "buffer", // int *config: an Int32Array(1) that receives bConfigurationValue (0: unconfigured)
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code
  },
  libusb_set_configuration: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "i32", // int configuration: bConfigurationValue, or -1 to unconfigure
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code (BUSY while an interface is claimed)
  },
  libusb_reset_device: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
    ],
    result: "i32", // 0, or LIBUSB_ERROR_NOT_FOUND when the device re-enumerated (reopen it)
  },
  libusb_kernel_driver_active: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "i32", // int interface_number: bInterfaceNumber
    ],
    result: "i32", // 1 active, 0 none, or a LIBUSB_ERROR code (NOT_SUPPORTED off Linux)
  },
  libusb_detach_kernel_driver: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "i32", // int interface_number: bInterfaceNumber
    ],
    result: "i32", // 0, or LIBUSB_ERROR_NOT_FOUND when no driver is bound, or another code
  },
  libusb_attach_kernel_driver: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "i32", // int interface_number: bInterfaceNumber
    ],
    result: "i32", // 0, or LIBUSB_ERROR_NOT_FOUND / BUSY (interface claimed) / another code
  },

  // ---- synchronous I/O -----------------------------------------------------------------------
  libusb_bulk_transfer: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "u8", // unsigned char endpoint: address; bit 7 set for IN
      "buffer", // unsigned char *data: bytes to send, or room for bytes received
      "i32", // int length: bytes to send / room available
      "buffer", // int *actual_length: an Int32Array(1) that receives the bytes moved
      "u32", // unsigned int timeout: milliseconds, 0 for none
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code (actual_length is valid on TIMEOUT too)
  },
  libusb_bulk_transfer_nonblocking: {
    name: "libusb_bulk_transfer",
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "u8", // unsigned char endpoint: address; bit 7 set for IN
      "buffer", // unsigned char *data: must stay referenced until the promise settles
      "i32", // int length: bytes to send / room available
      "buffer", // int *actual_length: an Int32Array(1), kept referenced like data
      "u32", // unsigned int timeout: milliseconds, 0 for none
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code
    nonblocking: true, // runs on Deno's blocking thread pool; the calling thread goes on
  },
  libusb_interrupt_transfer: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "u8", // unsigned char endpoint: address of an interrupt endpoint; bit 7 set for IN
      "buffer", // unsigned char *data: bytes to send, or room for bytes received
      "i32", // int length: bytes to send / room available
      "buffer", // int *actual_length: an Int32Array(1) that receives the bytes moved
      "u32", // unsigned int timeout: milliseconds, 0 for none
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code (actual_length is valid on TIMEOUT too)
  },
  libusb_interrupt_transfer_nonblocking: {
    name: "libusb_interrupt_transfer",
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "u8", // unsigned char endpoint: address of an interrupt endpoint; bit 7 set for IN
      "buffer", // unsigned char *data: must stay referenced until the promise settles
      "i32", // int length: bytes to send / room available
      "buffer", // int *actual_length: an Int32Array(1), kept referenced like data
      "u32", // unsigned int timeout: milliseconds, 0 for none
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code
    nonblocking: true, // runs on Deno's blocking thread pool; the calling thread goes on
  },
  libusb_control_transfer: {
    parameters: [
      "usize", // libusb_device_handle *dev_handle
      "u8", // uint8_t bmRequestType: direction | type | recipient
      "u8", // uint8_t bRequest
      "u16", // uint16_t wValue
      "u16", // uint16_t wIndex
      "buffer", // unsigned char *data: payload (OUT) or room for the reply (IN); null when empty
      "u16", // uint16_t wLength: payload / room size
      "u32", // unsigned int timeout: milliseconds, 0 for none
    ],
    result: "i32", // bytes moved, or a LIBUSB_ERROR code
  },

  // ---- asynchronous I/O (only with unscoped ffi: see ffi/stream.ts) ------------------------
  // A transfer's completion callback is a Deno.UnsafeCallback, which a Worker whose ffi grant is
  // the library path alone may not create; these are used by the opt-in streaming reader only.
  libusb_alloc_transfer: {
    parameters: [
      "i32", // int iso_packets: number of isochronous packet descriptors (0 for bulk/interrupt)
    ],
    result: "usize", // struct libusb_transfer *, or 0 when out of memory
  },
  libusb_free_transfer: {
    parameters: [
      "usize", // struct libusb_transfer *transfer: not in flight
    ],
    result: "void",
  },
  libusb_submit_transfer: {
    parameters: [
      "usize", // struct libusb_transfer *transfer: filled in (handle, endpoint, type, buffer, callback)
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code (NO_DEVICE, BUSY when already submitted, ...)
  },
  libusb_cancel_transfer: {
    parameters: [
      "usize", // struct libusb_transfer *transfer: in flight
    ],
    result: "i32", // 0, or LIBUSB_ERROR_NOT_FOUND when it already completed
  },
  libusb_handle_events_timeout_completed: {
    parameters: [
      "usize", // libusb_context *ctx
      "buffer", // struct timeval *tv: a BigInt64Array(2) of seconds and microseconds
      "buffer", // int *completed: an Int32Array(1); returns early once it is non-zero
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code
  },
  libusb_handle_events_timeout_completed_nonblocking: {
    name: "libusb_handle_events_timeout_completed",
    parameters: [
      "usize", // libusb_context *ctx
      "buffer", // struct timeval *tv: a BigInt64Array(2), kept referenced until it settles
      "buffer", // int *completed: an Int32Array(1) or null, kept referenced likewise
    ],
    result: "i32", // 0 or a LIBUSB_ERROR code
    nonblocking: true, // callbacks then come from that thread: they must be threadSafe
  },

  // ---- memory reading without UnsafePointerView ----------------------------------------------
  // libusb_get_parent(dev) is `return dev->parent_dev;`: a plain 8-byte load at dev + a fixed
  // offset. Called once on a patterned buffer it reveals that offset; afterwards, called with
  // `address - offset`, it reads the 8 bytes at any address. See ffi/memory_reader.ts.
  libusb_get_parent_calibrate: {
    name: "libusb_get_parent",
    parameters: [
      "buffer", // libusb_device *dev: a patterned BigUint64Array standing in for a device
    ],
    result: "usize", // the word found at offsetof(struct libusb_device, parent_dev)
    optional: true,
  },
  libusb_get_parent_peek: {
    name: "libusb_get_parent",
    parameters: [
      "usize", // libusb_device *dev: the address to read minus the calibrated offset
    ],
    result: "usize", // the 8 bytes at that address
    optional: true,
  },
  // libusb_get_device(handle) is `return handle->dev;`: the fallback reader, used the same way.
  libusb_get_device_calibrate: {
    name: "libusb_get_device",
    parameters: [
      "buffer", // libusb_device_handle *dev_handle: a patterned buffer standing in for a handle
    ],
    result: "usize", // the word found at offsetof(struct libusb_device_handle, dev)
    optional: true,
  },
  libusb_get_device_peek: {
    name: "libusb_get_device",
    parameters: [
      "usize", // libusb_device_handle *dev_handle: the address to read minus the offset
    ],
    result: "usize", // the 8 bytes at that address
    optional: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * The callable symbols of a loaded libusb (what `Deno.dlopen(path, libusbSymbols).symbols` is).
 *
 * @example
 * ```ts
 * import type { LibusbSymbols } from "./symbols.ts";
 * function hasHotplug(symbols: LibusbSymbols): boolean {
 *   return symbols.libusb_has_capability(0x0001) !== 0;
 * }
 * ```
 */
export type LibusbSymbols = Deno.DynamicLibrary<typeof libusbSymbols>["symbols"];
