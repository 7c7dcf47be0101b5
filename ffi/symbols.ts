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

  // ---- memory reading without UnsafePointerView ----------------------------------------------
  // libusb_get_parent(dev) is `return dev->parent_dev;`: a plain 8-byte load at dev + a fixed
  // offset. Called once on a patterned buffer it reveals that offset; afterwards, called with
  // `address - offset`, it reads the 8 bytes at any address. See MemoryReader in libusb.ts.
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
