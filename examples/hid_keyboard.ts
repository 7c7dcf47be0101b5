/**
 * HID keyboard reader: finds a USB keyboard (an interface of class 3 HID, subclass 1 boot,
 * protocol 1 keyboard), takes it from the kernel's driver, reads its 8-byte boot reports from its
 * interrupt IN endpoint and prints each key as it goes down, one line each: `key h`, `key H`
 * (with Shift), `key Enter`, `key Ctrl+c`. Ends on Ctrl-C or after `--seconds`, then gives the
 * interface back to the kernel's driver (so the keyboard types into the console again) and prints
 * `keys <count>`. With no keyboard it says so and exits 0; a bad argument exits 2.
 *
 * ```sh
 * deno run --allow-ffi --allow-read --allow-env examples/hid_keyboard.ts [--seconds=10] [--device=vvvv:pppp]
 * ```
 *
 * On Linux, reading a keyboard needs write access to its `/dev/bus/usb/BBB/DDD` node (root, or a
 * udev rule), and while this runs the keys do not reach the console or the desktop.
 *
 * @module
 */

import {
  type ControlSetup,
  Libusb,
  LibusbError,
  type UsbDevice,
  type UsbDeviceInfo,
  UsbError,
} from "../mod.ts";
import { describeUsbDevice, usbIds } from "./usb_lookup.ts";

/** The command line: how long to read, and which keyboard. */
interface KeyboardArgs {
  /** Seconds to read before stopping (`--seconds`); undefined: until Ctrl-C. */
  readonly seconds?: number;
  /** Only a keyboard with these ids (`--device=vvvv:pppp`). */
  readonly device?: { readonly vendorId: number; readonly productId: number };
}

const USAGE = "usage: hid_keyboard.ts [--seconds=N] [--device=vvvv:pppp]";

function parseArgs(args: string[]): KeyboardArgs | string {
  let seconds: number | undefined;
  let device: KeyboardArgs["device"];
  for (const arg of args) {
    const [key, value] = arg.split(/=(.*)/s, 2);
    if (key === "--seconds" && value !== undefined && Number(value) > 0) seconds = Number(value);
    else if (key === "--device" && /^[0-9a-f]{4}:[0-9a-f]{4}$/i.test(value ?? "")) {
      const [vendorId, productId] = value.split(":").map((id) => parseInt(id, 16));
      device = { vendorId, productId };
    } else return `bad argument ${JSON.stringify(arg)}\n${USAGE}`;
  }
  return { seconds, device };
}

// ---------------------------------------------------------------- boot reports → key names

const LETTERS = "abcdefghijklmnopqrstuvwxyz";
const DIGITS = ["1234567890", "!@#$%^&*()"];
/** Usages 0x2d..0x38: - = [ ] \ # ; ' ` , . / and their shifted forms. */
const PUNCTUATION = ["-=[]\\#;'`,./", '_+{}|~:"~<>?'];
const NAMED: Record<number, string> = {
  0x28: "Enter",
  0x29: "Escape",
  0x2a: "Backspace",
  0x2b: "Tab",
  0x2c: "Space",
  0x39: "CapsLock",
  0x46: "PrintScreen",
  0x47: "ScrollLock",
  0x48: "Pause",
  0x49: "Insert",
  0x4a: "Home",
  0x4b: "PageUp",
  0x4c: "Delete",
  0x4d: "End",
  0x4e: "PageDown",
  0x4f: "Right",
  0x50: "Left",
  0x51: "Down",
  0x52: "Up",
  0x53: "NumLock",
  0x54: "Keypad/",
  0x55: "Keypad*",
  0x56: "Keypad-",
  0x57: "Keypad+",
  0x58: "KeypadEnter",
  0x62: "Keypad0",
  0x63: "Keypad.",
};
/** Modifier byte bits: left Ctrl, Shift, Alt, Meta, then the right ones. */
const CTRL = 0x11;
const SHIFT = 0x22;
const ALT = 0x44;
const META = 0x88;

/** The name of a key (a HID keyboard usage) as typed with these modifiers held. */
function keyName(usage: number, modifiers: number): string {
  const shift = (modifiers & SHIFT) !== 0 ? 1 : 0;
  let name: string;
  if (usage >= 0x04 && usage <= 0x1d) {
    const letter = LETTERS[usage - 0x04];
    name = shift ? letter.toUpperCase() : letter;
  } else if (usage >= 0x1e && usage <= 0x27) name = DIGITS[shift][usage - 0x1e];
  else if (usage >= 0x2d && usage <= 0x38) name = PUNCTUATION[shift][usage - 0x2d];
  else if (usage >= 0x3a && usage <= 0x45) name = `F${usage - 0x39}`;
  else if (usage >= 0x59 && usage <= 0x61) name = `Keypad${usage - 0x58}`;
  else name = NAMED[usage] ?? `0x${usage.toString(16).padStart(2, "0")}`;
  const held = [[CTRL, "Ctrl+"], [ALT, "Alt+"], [META, "Meta+"]] as const;
  return held.filter(([bits]) => (modifiers & bits) !== 0).map(([, text]) => text).join("") +
    name;
}

/**
 * The keys that went down in `report` (not held in `previous`), named. A boot report is
 * `modifiers, reserved, key1..key6`; keys 0 (none) and 1..3 (rollover and errors) are no keys.
 */
function pressedKeys(report: Uint8Array, previous: Uint8Array): string[] {
  if (report.length < 3) return [];
  const keys = report.subarray(2, 8);
  if (keys.some((usage) => usage >= 0x01 && usage <= 0x03)) return []; // too many keys at once
  const before = new Set(previous.subarray(2, 8));
  return [...keys].filter((usage) => usage > 0x03 && !before.has(usage))
    .map((usage) => keyName(usage, report[0]));
}

// ---------------------------------------------------------------- finding and reading it

/** A keyboard interface of an open device: its number and interrupt IN endpoint. */
interface KeyboardInterface {
  readonly interfaceNumber: number;
  readonly endpoint: number;
  readonly packetSize: number;
}

/** The device's boot keyboard interface in its active configuration, if it has one. */
function keyboardInterface(device: UsbDevice): KeyboardInterface | undefined {
  for (const iface of device.configuration?.interfaces ?? []) {
    const alt = iface.alternate;
    if (alt.interfaceClass !== 3 || alt.interfaceSubclass !== 1 || alt.interfaceProtocol !== 1) {
      continue;
    }
    const input = alt.endpoints.find((e) => e.direction === "in" && e.type === "interrupt");
    if (input) {
      return {
        interfaceNumber: iface.interfaceNumber,
        endpoint: 0x80 | input.endpointNumber,
        packetSize: input.packetSize,
      };
    }
  }
  return undefined;
}

/** The first keyboard libusb can open (with `filter`: those ids only), and why others failed. */
function findKeyboard(
  usb: Libusb,
  filter: KeyboardArgs["device"],
): { device: UsbDevice; keyboard: KeyboardInterface } | { problems: string[] } {
  const problems: string[] = [];
  const candidates = usb.devices().filter((d: UsbDeviceInfo) =>
    (!filter || (d.vendorId === filter.vendorId && d.productId === filter.productId)) &&
    (d.deviceClass === 0 || d.deviceClass === 3) // keyboards name their class per interface
  );
  for (const info of candidates) {
    let device: UsbDevice;
    try {
      device = usb.openDevice(info); // that very device: ids, serial number, bus and address
    } catch (error) {
      problems.push(`${usbIds(info.vendorId, info.productId)}: ${(error as Error).message}`);
      continue;
    }
    try {
      const keyboard = keyboardInterface(device);
      if (keyboard) return { device, keyboard };
    } catch (error) {
      problems.push(`${usbIds(info.vendorId, info.productId)}: ${(error as Error).message}`);
    }
    device.close();
  }
  return { problems };
}

/** A class request to the keyboard's interface; a refusal (stall) is fine: the default is kept. */
function classRequest(device: UsbDevice, interfaceNumber: number, request: number): void {
  const setup: ControlSetup = {
    requestType: "class",
    recipient: "interface",
    request,
    value: 0,
    index: interfaceNumber,
  };
  try {
    device.controlTransferOut(setup, undefined, { timeout: 500 });
  } catch (error) {
    if (!(error instanceof UsbError && error.code === LibusbError.PIPE)) throw error;
  }
}

const SET_IDLE = 0x0a; // value 0: report only when a key changes
const SET_PROTOCOL = 0x0b; // value 0: boot protocol, the 8-byte reports decoded here

/** Reads reports until `signal` aborts; prints each key that goes down; returns the count. */
async function readKeys(
  device: UsbDevice,
  keyboard: KeyboardInterface,
  signal: AbortSignal,
): Promise<number> {
  let previous = new Uint8Array(8);
  let count = 0;
  while (!signal.aborted) {
    let report: Uint8Array;
    try {
      // Async, so that Ctrl-C and the time limit are heard while it waits for a key.
      report = await device.transferInAsync(keyboard.endpoint, Math.max(8, keyboard.packetSize), {
        timeout: 1000,
        signal,
      });
    } catch (error) {
      if (error instanceof UsbError && error.code === LibusbError.TIMEOUT) continue; // no key
      if (signal.aborted) break;
      throw error;
    }
    for (const key of pressedKeys(report, previous)) {
      console.log(`key ${key}`);
      count++;
    }
    previous = report.slice();
  }
  return count;
}

async function main(args: string[]): Promise<number> {
  const parsed = parseArgs(args);
  if (typeof parsed === "string") {
    console.error(parsed);
    return 2;
  }
  using usb = Libusb.open();
  const found = findKeyboard(usb, parsed.device);
  if ("problems" in found) {
    const which = parsed.device
      ? ` ${usbIds(parsed.device.vendorId, parsed.device.productId)}`
      : "";
    console.log(`no USB keyboard${which} found`);
    for (const problem of found.problems) console.log(`  could not look at ${problem}`);
    return 0;
  }
  using device = found.device;
  const { keyboard } = found;
  const n = keyboard.interfaceNumber;
  console.log(
    `keyboard ${usbIds(device.info.vendorId, device.info.productId)}  ` +
      `${describeUsbDevice(device.info)}, interface ${n}, endpoint 0x${
        keyboard.endpoint.toString(16)
      }`,
  );
  const hadDriver = device.kernelDriverActive(n);
  if (hadDriver) {
    device.detachKernelDriver(n);
    console.log(`detached the kernel driver from interface ${n}`);
  }
  const stop = new AbortController();
  const onInterrupt = () => stop.abort(new Error("Ctrl-C"));
  Deno.addSignalListener("SIGINT", onInterrupt);
  const timer = parsed.seconds !== undefined
    ? setTimeout(() => stop.abort(new Error("time is up")), parsed.seconds * 1000)
    : undefined;
  let count = 0;
  let code = 0;
  try {
    device.claimInterface(n);
    classRequest(device, n, SET_PROTOCOL);
    classRequest(device, n, SET_IDLE);
    console.log(
      parsed.seconds !== undefined
        ? `reading keys for ${parsed.seconds} s (Ctrl-C stops)`
        : "reading keys (Ctrl-C stops)",
    );
    count = await readKeys(device, keyboard, stop.signal);
  } catch (error) {
    console.error(`reading the keyboard failed: ${(error as Error).message}`);
    code = 1;
  } finally {
    clearTimeout(timer);
    Deno.removeSignalListener("SIGINT", onInterrupt);
  }
  try {
    device.releaseInterface(n);
  } catch { /* not claimed, or unplugged */ }
  if (hadDriver) {
    try {
      // libusb's release re-attaches it already where claimInterface detached automatically.
      if (!device.kernelDriverActive(n)) device.attachKernelDriver(n);
      console.log(`re-attached the kernel driver to interface ${n}`); // it types again
    } catch (error) {
      console.error(`could not re-attach the kernel driver: ${(error as Error).message}`);
      code = 1;
    }
  }
  console.log(`keys ${count}`);
  return code;
}

Deno.exit(await main(Deno.args));
