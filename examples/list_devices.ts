/**
 * Lists the USB devices libusb sees, each with its descriptor tree (configurations → interfaces →
 * alternate settings → endpoints), its speed and the port it is plugged into, for the devices it
 * can open; for the others it says why not (e.g. access denied: run as root or add a udev rule).
 *
 * ```sh
 * deno run --allow-ffi --allow-read --allow-env examples/list_devices.ts
 * ```
 *
 * Output, one device (the first line is the same as without the tree):
 *
 * ```text
 * 0403:6001  QEMU USB SERIAL, serial 1, bus 1 address 2
 *   port 1-2, full speed, USB 2.00, device class 00/00/00, release 4.00
 *   configuration 1 (active)
 *     interface 0, alternate 0 selected
 *       alternate 0: class ff/ff/ff
 *         endpoint 0x81 in bulk, 64 B packets
 *         endpoint 0x02 out bulk, 64 B packets
 * ```
 *
 * With no USB devices (or no USB subsystem) it says so and exits 0.
 *
 * @module
 */

import { Libusb, type UsbConfiguration, type UsbDevice, type UsbDeviceInfo } from "../mod.ts";
import { describeUsbDevice, usbIds } from "./usb_lookup.ts";

const hex2 = (n: number) => n.toString(16).padStart(2, "0");

/** `2.00` for bcd 0x0200. */
function bcd(value: number): string {
  return `${(value >> 8).toString(16)}.${hex2(value & 0xff)}`;
}

/** The device's own line under its header: where it is plugged in, how fast, what it is. */
function deviceLine(info: UsbDeviceInfo, device: UsbDevice): string {
  const ports = device.portPath;
  const where = ports.length > 0
    ? `port ${info.busNumber}-${ports.join(".")}` // as sysfs names it
    : `root hub of bus ${info.busNumber}`;
  const speed = device.speed === "unknown" ? "unknown speed" : `${device.speed} speed`;
  const kind = [info.deviceClass, info.deviceSubclass, info.deviceProtocol].map(hex2).join("/");
  return `${where}, ${speed}, USB ${bcd(info.usbVersion)}, ` +
    `device class ${kind}, release ${bcd(info.deviceVersion)}`;
}

const named = (name: string | undefined) => name ? ` "${name}"` : "";

/** The lines of one configuration's tree, indented under the device. */
function configurationLines(configuration: UsbConfiguration, active: boolean): string[] {
  const lines = [
    `configuration ${configuration.configurationValue}${named(configuration.configurationName)}` +
    (active ? " (active)" : ""),
  ];
  for (const iface of configuration.interfaces) {
    lines.push(
      `  interface ${iface.interfaceNumber}` +
        (active ? `, alternate ${iface.alternate.alternateSetting} selected` : ""),
    );
    for (const alt of iface.alternates) {
      const kind = [alt.interfaceClass, alt.interfaceSubclass, alt.interfaceProtocol].map(hex2);
      lines.push(
        `    alternate ${alt.alternateSetting}: class ${kind.join("/")}${named(alt.interfaceName)}`,
      );
      for (const e of alt.endpoints) {
        const address = e.endpointNumber | (e.direction === "in" ? 0x80 : 0);
        lines.push(
          `      endpoint 0x${hex2(address)} ${e.direction} ${e.type}, ${e.packetSize} B packets`,
        );
      }
    }
  }
  return lines;
}

/** The tree of one device, or why it cannot be shown. */
function treeOf(usb: Libusb, info: UsbDeviceInfo): string[] {
  let device: UsbDevice;
  try {
    device = usb.openDevice(info); // that very device: ids, serial number, bus and address
  } catch (error) {
    return [`cannot open it: ${(error as Error).message}`];
  }
  try {
    const lines = [deviceLine(info, device)];
    const active = device.configuration?.configurationValue;
    if (active === undefined) lines.push("unconfigured (no active configuration)");
    for (const configuration of device.configurations) {
      lines.push(...configurationLines(configuration, configuration.configurationValue === active));
    }
    return lines;
  } catch (error) {
    return [`cannot read its descriptors: ${(error as Error).message}`];
  } finally {
    device.close();
  }
}

using usb = Libusb.open(); // the library at LIBUSB_PATH, else the platform's libusb-1.0
const devices = usb.devices(); // [] when there is no USB subsystem (see usb.initError)
if (devices.length === 0) {
  console.log("no USB devices");
  if (usb.initError) console.log(`(libusb found no USB subsystem: ${usb.initError.name})`);
}
for (const d of devices) {
  console.log(`${usbIds(d.vendorId, d.productId)}  ${describeUsbDevice(d)}`);
  for (const line of treeOf(usb, d)) console.log(`  ${line}`);
}
