/**
 * Lists the USB devices libusb sees: `deno run --allow-ffi --allow-read --allow-env examples/list_devices.ts`
 *
 * @module
 */

import { Libusb } from "../mod.ts";
import { describeUsbDevice, usbIds } from "./usb_lookup.ts";

using usb = Libusb.open(); // the library at LIBUSB_PATH, else the platform's libusb-1.0
const devices = usb.devices(); // [] when there is no USB subsystem (see usb.initError)
if (devices.length === 0) console.log("no USB devices");
for (const d of devices) console.log(`${usbIds(d.vendorId, d.productId)}  ${describeUsbDevice(d)}`);
