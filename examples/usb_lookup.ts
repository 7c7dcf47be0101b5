/**
 * Finding a USB device for the examples: its `vvvv:pppp` name, what it says about itself, and
 * the bulk-writer options that address it.
 *
 * @module
 */

import { type BulkWriterOptions, Libusb, type UsbDeviceInfo } from "../mod.ts";

/** `0403:6001`. */
export function usbIds(vendorId: number, productId: number): string {
  return [vendorId, productId].map((id) => id.toString(16).padStart(4, "0")).join(":");
}

/** What the device says about itself, e.g. `FTDI FT232R USB UART, serial A1, bus 1 address 2`. */
export function describeUsbDevice(info: UsbDeviceInfo): string {
  const name = [info.manufacturer, info.product].filter(Boolean).join(" ");
  return [
    name || undefined,
    info.serialNumber !== undefined ? `serial ${info.serialNumber}` : undefined,
    `bus ${info.busNumber} address ${info.deviceAddress}`,
  ].filter(Boolean).join(", ");
}

/**
 * The attached device with these ids, through the libusb at `path`; throws an error that says
 * what libusb sees instead when there is none.
 */
export function findUsbDevice(path: string, vendorId: number, productId: number): UsbDeviceInfo {
  using usb = Libusb.open({ path });
  if (usb.initError) throw new Error(`libusb cannot list devices: ${usb.initError.message}`);
  const all = usb.devices();
  const found = all.find((d) => d.vendorId === vendorId && d.productId === productId);
  if (found) return found;
  const seen = all.map((d) => usbIds(d.vendorId, d.productId)).join(", ") || "none";
  const { major, minor, micro } = usb.version;
  throw new Error(
    `no USB device ${usbIds(vendorId, productId)} is attached ` +
      `(libusb ${major}.${minor}.${micro} sees: ${seen})`,
  );
}

/** Bulk-writer options for exactly this device (its serial number pins it when it has one). */
export function writerOptions(
  info: UsbDeviceInfo,
  endpoint: number,
  libusbPath: string,
): BulkWriterOptions {
  return {
    vendorId: info.vendorId,
    productId: info.productId,
    ...(info.serialNumber !== undefined ? { serialNumber: info.serialNumber } : {}),
    endpoint,
    timeout: 2000,
    libusbPath,
  };
}
