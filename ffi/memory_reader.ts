/**
 * Reading memory libusb hands out (the device list, the version struct, error names) without
 * `Deno.UnsafePointerView`, which a Worker granted only the libusb path may not use:
 * {@linkcode MemoryReader}.
 *
 * @module
 */

import { LibusbError, UsbError } from "./errors.ts";
import type { LibusbSymbols } from "./symbols.ts";

type Calibrate = (dev: BufferSource) => bigint;
type Peek = (address: bigint) => bigint;

/**
 * Reads process memory at an address without `Deno.UnsafePointerView`, through libusb alone.
 *
 * `libusb_get_parent(dev)` is a plain field read, `return dev->parent_dev;`, an 8-byte load at a
 * fixed offset from its argument. Called once with a buffer whose every 8-byte slot holds a marker
 * and its own offset, it returns the marker of the slot it read: that is the offset. Then
 * `libusb_get_parent(address - offset)` returns the 8 bytes at `address`. `libusb_get_device(handle)`
 * (`return handle->dev;`) is the fallback. Calibration uses two marker patterns and refuses any
 * answer that is not exactly one slot, so a libusb whose accessor does anything else (e.g. returns
 * NULL) is detected rather than trusted.
 *
 * Only for addresses libusb handed out (the device list, the version struct): reading a bad
 * address crashes the process, as in C.
 *
 * @example
 * ```ts ignore
 * import { MemoryReader } from "./memory_reader.ts";
 * const reader = MemoryReader.create(lib.symbols);
 * const firstWord = reader.word(address);
 * ```
 */
export class MemoryReader {
  /** The libusb function used, e.g. `"libusb_get_parent"`. */
  readonly via: string;
  /** Its calibrated field offset, in bytes. */
  readonly offset: bigint;
  #peek: Peek;

  private constructor(via: string, offset: bigint, peek: Peek) {
    this.via = via;
    this.offset = offset;
    this.#peek = peek;
  }

  /**
   * Calibrates a reader on a loaded libusb; throws a `UsbError` (`LIBUSB_ERROR_NOT_SUPPORTED`)
   * saying why when neither accessor behaves as a plain field read.
   *
   * @example
   * ```ts ignore
   * const reader = MemoryReader.create(lib.symbols);
   * console.log(reader.via, reader.offset);
   * ```
   */
  static create(
    symbols: Pick<
      LibusbSymbols,
      | "libusb_get_parent_calibrate"
      | "libusb_get_parent_peek"
      | "libusb_get_device_calibrate"
      | "libusb_get_device_peek"
    >,
  ): MemoryReader {
    const candidates: [string, Calibrate | null, Peek | null][] = [
      ["libusb_get_parent", symbols.libusb_get_parent_calibrate, symbols.libusb_get_parent_peek],
      ["libusb_get_device", symbols.libusb_get_device_calibrate, symbols.libusb_get_device_peek],
    ];
    const reasons: string[] = [];
    for (const [via, calibrate, peek] of candidates) {
      if (!calibrate || !peek) {
        reasons.push(`${via} is missing`);
        continue;
      }
      const offset = MemoryReader.#calibrate(calibrate);
      if (offset === undefined) {
        reasons.push(`${via} is not a plain field read in this libusb`);
        continue;
      }
      return new MemoryReader(via, offset, peek);
    }
    throw new UsbError(LibusbError.NOT_SUPPORTED, {
      operation: "reading libusb memory",
      detail: reasons.join("; "),
    });
  }

  static #calibrate(calibrate: Calibrate): bigint | undefined {
    let offset: bigint | undefined;
    for (const marker of [0x7e57_ab1e_0000_0000n, 0x0c0f_fee5_0000_0000n]) {
      const pattern = new BigUint64Array(128); // 1 KiB: larger than either struct's prefix
      for (let slot = 0; slot < pattern.length; slot++) pattern[slot] = marker | BigInt(slot * 8);
      const word = BigInt(calibrate(pattern));
      if ((word & ~0xffffn) !== marker) return undefined;
      const found = word & 0xffffn;
      if (offset !== undefined && found !== offset) return undefined;
      offset = found;
    }
    return offset;
  }

  /**
   * The 8 bytes at `address` as an unsigned 64-bit number (host byte order).
   *
   * @example
   * ```ts ignore
   * const entry = reader.word(listAddress + 8n * BigInt(i));
   * ```
   */
  word(address: bigint): bigint {
    if (address < 0x1000n) {
      throw new UsbError(LibusbError.INVALID_PARAM, {
        operation: "reading libusb memory",
        detail: `refusing to read address 0x${address.toString(16)}`,
      });
    }
    return BigInt.asUintN(64, BigInt(this.#peek(address - this.offset)));
  }

  /**
   * `length` bytes starting at `address`, read in aligned 8-byte words (so never across a page
   * boundary past the last word needed).
   *
   * @example
   * ```ts ignore
   * const versionStruct = reader.bytes(versionAddress, 8);
   * ```
   */
  bytes(address: bigint, length: number): Uint8Array {
    const out = new Uint8Array(length);
    const cell = new BigUint64Array(1);
    const cellBytes = new Uint8Array(cell.buffer);
    let base = address & ~7n;
    let skip = Number(address - base);
    let filled = 0;
    while (filled < length) {
      cell[0] = this.word(base);
      const take = Math.min(8 - skip, length - filled);
      out.set(cellBytes.subarray(skip, skip + take), filled);
      filled += take;
      skip = 0;
      base += 8n;
    }
    return out;
  }

  /**
   * The NUL-terminated UTF-8 string at `address` (at most `max` bytes).
   *
   * @example
   * ```ts ignore
   * const describe = reader.cString(describeAddress);
   * ```
   */
  cString(address: bigint, max = 4096): string {
    const collected: number[] = [];
    const cell = new BigUint64Array(1);
    const cellBytes = new Uint8Array(cell.buffer);
    let base = address & ~7n;
    let skip = Number(address - base);
    while (collected.length < max) {
      cell[0] = this.word(base);
      for (let i = skip; i < 8 && collected.length < max; i++) {
        if (cellBytes[i] === 0) return new TextDecoder().decode(new Uint8Array(collected));
        collected.push(cellBytes[i]);
      }
      skip = 0;
      base += 8n;
    }
    return new TextDecoder().decode(new Uint8Array(collected));
  }
}
