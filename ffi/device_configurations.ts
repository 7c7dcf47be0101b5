/**
 * What an open device says about itself, read once with standard GET_DESCRIPTOR requests and kept:
 * its configurations in WebUSB's shape, with each interface's `alternate` following the alternate
 * settings selected since, and the type of each endpoint of the active configuration (so a
 * transfer can pick libusb's bulk or interrupt call).
 *
 * @module
 */

import {
  configurationTotalLength,
  DescriptorType,
  parseConfigurationDescriptor,
  parseDeviceDescriptor,
  parseLanguageIds,
  parseStringDescriptor,
  type UsbConfiguration,
  type UsbEndpointType,
} from "./descriptors.ts";

/**
 * Reads one descriptor with a standard GET_DESCRIPTOR request: `(type << 8) | index` as wValue,
 * the language as wIndex, at most `length` bytes. Throws a `UsbError` when the device refuses.
 *
 * @example
 * ```ts
 * import type { DescriptorReader } from "./device_configurations.ts";
 * const none: DescriptorReader = () => new Uint8Array(0);
 * ```
 */
export type DescriptorReader = (
  type: number,
  index: number,
  language: number,
  length: number,
) => Uint8Array;

/**
 * A device's configurations and selected alternate settings, as one {@linkcode UsbDevice} knows
 * them. The bytes are read on first use and kept; selecting a configuration or an alternate
 * setting only changes what is derived from them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DeviceConfigurations } from "./device_configurations.ts";
 * // A device descriptor with one configuration, and that configuration: one interface with a
 * // bulk IN and a bulk OUT endpoint.
 * const device = new Uint8Array([18, 1, 0, 2, 0, 0, 0, 64, 0xf4, 0x46, 1, 0, 0, 1, 0, 0, 0, 1]);
 * const config = new Uint8Array([
 *   9, 2, 32, 0, 1, 1, 0, 0x80, 50,
 *   9, 4, 0, 0, 2, 8, 6, 80, 0,
 *   7, 5, 0x81, 2, 0, 2, 0,
 *   7, 5, 0x02, 2, 0, 2, 0,
 * ]);
 * const known = new DeviceConfigurations(
 *   (type, _index, _language, length) => (type === 1 ? device : config).subarray(0, length),
 *   () => 1, // the active configuration's value
 * );
 * assert.equal(known.all[0].interfaces[0].alternate.interfaceClass, 8);
 * assert.equal(known.endpointType(0x81), "bulk");
 * assert.equal(known.endpointType(0x83), undefined);
 * ```
 */
export class DeviceConfigurations {
  readonly #read: DescriptorReader;
  readonly #active: () => number;
  #bytes: Uint8Array[] | undefined;
  #strings = new Map<number, string | undefined>();
  #language: number | null | undefined; // null: string descriptors are not readable
  #parsed: readonly UsbConfiguration[] | undefined;
  #alternates = new Map<number, number>();
  #activeValue: number | undefined;
  #types: Map<number, UsbEndpointType> | undefined;

  /**
   * Reads descriptors through `read` when first asked; `active` tells the active configuration's
   * value (0: unconfigured), asked once and again after {@linkcode DeviceConfigurations.reset}.
   */
  constructor(read: DescriptorReader, active: () => number) {
    this.#read = read;
    this.#active = active;
  }

  /** The active configuration's value (0: unconfigured), as last learned. */
  get activeValue(): number {
    return this.#activeValue ??= this.#active();
  }

  /**
   * Every configuration, in descriptor order; each interface of the active configuration shows
   * the alternate setting selected on it (the first until one is selected).
   */
  get all(): readonly UsbConfiguration[] {
    if (this.#parsed) return this.#parsed;
    const bytes = this.#bytes ??= this.#readAll();
    this.#parsed = bytes.map((config) =>
      parseConfigurationDescriptor(config, {
        strings: (index) => this.#string(index),
        selectedAlternate: (interfaceNumber) =>
          config[5] === this.activeValue ? this.#alternates.get(interfaceNumber) : undefined,
      })
    );
    return this.#parsed;
  }

  /**
   * The type of an endpoint (address, direction bit included) in the active configuration's
   * selected alternate settings; `undefined` when none of them has it or the descriptors could not
   * be read.
   */
  endpointType(endpoint: number): UsbEndpointType | undefined {
    this.#types ??= this.#endpointTypes();
    return this.#types.get(endpoint);
  }

  #endpointTypes(): Map<number, UsbEndpointType> {
    const types = new Map<number, UsbEndpointType>();
    try {
      const value = this.activeValue;
      const active = this.all.find((c) => c.configurationValue === value);
      for (const { alternate } of active?.interfaces ?? []) {
        for (const e of alternate.endpoints) {
          types.set(e.endpointNumber | (e.direction === "in" ? 0x80 : 0), e.type);
        }
      }
    } catch {
      // Descriptors the device will not give: no endpoint has a known type (asked again only
      // after a configuration change or a reset), and transfers use libusb's bulk call.
    }
    return types;
  }

  /** The active configuration's value, as just asked of the device: a change is an activation. */
  observed(value: number): void {
    if (value !== this.#activeValue) this.activated(value);
  }

  /** The device now runs configuration `value` (0: none): every interface is at alternate 0. */
  activated(value: number): void {
    this.#activeValue = value;
    this.#alternates.clear();
    this.#changed();
  }

  /** The device was reset: the active configuration is asked again, alternates are back at 0. */
  reset(): void {
    this.#activeValue = undefined;
    this.#alternates.clear();
    this.#changed();
  }

  /** An alternate setting was selected on an interface of the active configuration. */
  selected(interfaceNumber: number, alternateSetting: number): void {
    this.#alternates.set(interfaceNumber, alternateSetting);
    this.#changed();
  }

  #changed(): void {
    this.#parsed = undefined;
    this.#types = undefined;
  }

  #readAll(): Uint8Array[] {
    const device = parseDeviceDescriptor(this.#read(DescriptorType.Device, 0, 0, 18));
    const configurations: Uint8Array[] = [];
    for (let i = 0; i < device.numConfigurations; i++) {
      const header = this.#read(DescriptorType.Configuration, i, 0, 9);
      const total = configurationTotalLength(header);
      configurations.push(this.#read(DescriptorType.Configuration, i, 0, total));
    }
    return configurations;
  }

  #string(index: number): string | undefined {
    if (this.#strings.has(index)) return this.#strings.get(index);
    let text: string | undefined;
    try {
      if (this.#language === undefined) {
        this.#language = null;
        this.#language = parseLanguageIds(this.#read(DescriptorType.String, 0, 0, 255))[0] ??
          null;
      }
      if (this.#language !== null) {
        text = parseStringDescriptor(this.#read(DescriptorType.String, index, this.#language, 255));
      }
    } catch {
      text = undefined; // no string, or not readable: the name is left out
    }
    this.#strings.set(index, text);
    return text;
  }
}
