/**
 * A stand-in for udevd's netlink re-broadcast, for the rig's guest (which runs no udevd).
 *
 * Debian's libusb (udev backend) learns of devices arriving and leaving only through libudev's
 * monitor, which listens on netlink group 2 ("udev") for messages udevd sends after processing a
 * kernel uevent. Without udevd, a libusb context's device list never changes after `libusb_init`.
 * This relay listens to the kernel's uevents (NETLINK_KOBJECT_UEVENT, group 1) and re-sends each
 * one, with the same properties, in libudev's format to group 2, so libudev's receiver
 * (systemd's `device_monitor_receive_device`) accepts it:
 *
 * - the 40-byte `monitor_netlink_header`: `"libudev\0"`, magic 0xfeedcafe in network order,
 *   `header_size` 40, `properties_off` 40, `properties_len`, then MurmurHash2 (seed 0) of
 *   SUBSYSTEM and DEVTYPE in network order (libudev's in-kernel BPF filter compares them; libusb
 *   asks for "usb"/"usb_device") and an empty tag bloom;
 * - then the kernel's `KEY=VALUE\0` properties unchanged (ACTION, DEVPATH, SUBSYSTEM, SEQNUM,
 *   DEVNAME, DEVTYPE, BUSNUM, DEVNUM, ...: what libudev needs and libusb reads);
 * - sent by root: the kernel attaches the sender's credentials (SCM_CREDENTIALS, uid 0), which
 *   the receiver requires; the sender's address carries group 2, as udevd's does.
 *
 * Run in the guest as root: `deno run -A --no-lock --no-config uevent_relay.ts [READY_FILE]`.
 * It creates READY_FILE once its socket listens, then prints one line per relayed event. The rig
 * starts it when `GuestOptions.hotplug` is set (see README.md).
 *
 * @module
 */

/** The magic libudev puts in (and checks on) every message, before byte-swapping. */
export const UDEV_MONITOR_MAGIC = 0xfeedcafe;
/** `sizeof(struct monitor_netlink_header)`: prefix[8] + 8 unsigned ints. */
export const UDEV_HEADER_SIZE = 40;
/** Netlink multicast group of kernel uevents. */
export const GROUP_KERNEL = 1;
/** Netlink multicast group udevd re-broadcasts to (libudev monitors named "udev"). */
export const GROUP_UDEV = 2;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * MurmurHash2 (32-bit, Austin Appleby's, little-endian word reads) as systemd's
 * `string_hash32()` uses it with seed 0 for libudev's subsystem and devtype filter hashes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { murmurHash2 } from "./uevent_relay.ts";
 * // The constants libudev's BPF filter compares for libusb's "usb" / "usb_device" match.
 * assert.equal(murmurHash2(new TextEncoder().encode("usb")), 0x0577c5e5);
 * assert.equal(murmurHash2(new TextEncoder().encode("usb_device")), 0x27f8f50c);
 * ```
 */
export function murmurHash2(data: Uint8Array, seed = 0): number {
  const m = 0x5bd1e995;
  let h = (seed ^ data.length) >>> 0;
  let i = 0;
  for (; i + 4 <= data.length; i += 4) {
    let k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
    k = Math.imul(k, m);
    k ^= k >>> 24;
    k = Math.imul(k, m);
    h = Math.imul(h, m) ^ k;
  }
  switch (data.length - i) {
    case 3:
      h ^= data[i + 2] << 16;
    // falls through
    case 2:
      h ^= data[i + 1] << 8;
    // falls through
    case 1:
      h ^= data[i];
      h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h >>> 0;
}

/** A kernel uevent as the kernel multicasts it. */
export interface KernelUevent {
  /** `ACTION`, e.g. `add`, `remove`, `bind`. */
  readonly action: string;
  /** `DEVPATH`, below /sys, e.g. `/devices/pci0000:00/0000:00:04.0/usb1/1-2`. */
  readonly devpath: string;
  /** `SUBSYSTEM`, e.g. `usb`. */
  readonly subsystem: string;
  /** `DEVTYPE` when present, e.g. `usb_device` or `usb_interface`. */
  readonly devtype?: string;
  /** Every `KEY=VALUE` property in the kernel's order. */
  readonly properties: ReadonlyMap<string, string>;
  /** The properties as the kernel sent them: `KEY=VALUE\0` each. */
  readonly propertyBytes: Uint8Array;
}

/**
 * Parses a kernel uevent datagram (`ACTION@DEVPATH\0KEY=VALUE\0...`); null for anything else
 * (a libudev message, a truncated one, one without ACTION, DEVPATH or SUBSYSTEM).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseKernelUevent } from "./uevent_relay.ts";
 * const raw = new TextEncoder().encode(
 *   "add@/devices/x/usb1/1-2\0ACTION=add\0DEVPATH=/devices/x/usb1/1-2\0SUBSYSTEM=usb\0" +
 *     "DEVTYPE=usb_device\0DEVNAME=bus/usb/001/003\0SEQNUM=7\0",
 * );
 * const ev = parseKernelUevent(raw)!;
 * assert.equal(ev.action, "add");
 * assert.equal(ev.devtype, "usb_device");
 * assert.equal(ev.properties.get("DEVNAME"), "bus/usb/001/003");
 * ```
 */
export function parseKernelUevent(message: Uint8Array): KernelUevent | null {
  const headerEnd = message.indexOf(0);
  if (headerEnd < 4 || headerEnd + 1 >= message.length) return null;
  const header = decoder.decode(message.subarray(0, headerEnd));
  if (!header.includes("@/")) return null;
  const propertyBytes = message.subarray(headerEnd + 1);
  const properties = new Map<string, string>();
  for (const entry of decoder.decode(propertyBytes).split("\0")) {
    const eq = entry.indexOf("=");
    if (eq > 0) properties.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  const action = properties.get("ACTION");
  const devpath = properties.get("DEVPATH");
  const subsystem = properties.get("SUBSYSTEM");
  if (!action || !devpath || !subsystem || !properties.has("SEQNUM")) return null;
  const devtype = properties.get("DEVTYPE");
  return {
    action,
    devpath,
    subsystem,
    ...(devtype ? { devtype } : {}),
    properties,
    propertyBytes,
  };
}

/**
 * The datagram udevd would send to group 2 for `event`: libudev's header, then the kernel's
 * properties unchanged.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseKernelUevent, UDEV_HEADER_SIZE, udevMessage } from "./uevent_relay.ts";
 * const ev = parseKernelUevent(new TextEncoder().encode(
 *   "remove@/d/1-2\0ACTION=remove\0DEVPATH=/d/1-2\0SUBSYSTEM=usb\0SEQNUM=9\0",
 * ))!;
 * const msg = udevMessage(ev);
 * assert.equal(new TextDecoder().decode(msg.subarray(0, 7)), "libudev");
 * assert.equal(new DataView(msg.buffer).getUint32(8), 0xfeedcafe); // network order
 * assert.equal(msg.length, UDEV_HEADER_SIZE + ev.propertyBytes.length);
 * ```
 */
export function udevMessage(event: KernelUevent): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(UDEV_HEADER_SIZE + event.propertyBytes.length);
  out.set(encoder.encode("libudev"), 0); // prefix[8], NUL-terminated by the zeroed byte 7
  const view = new DataView(out.buffer);
  view.setUint32(8, UDEV_MONITOR_MAGIC, false);
  view.setUint32(12, UDEV_HEADER_SIZE, true); // host order (x86-64, aarch64: little-endian)
  view.setUint32(16, UDEV_HEADER_SIZE, true); // properties_off
  view.setUint32(20, event.propertyBytes.length, true); // properties_len
  view.setUint32(24, murmurHash2(encoder.encode(event.subsystem)), false);
  if (event.devtype) view.setUint32(28, murmurHash2(encoder.encode(event.devtype)), false);
  // 32..39: tag bloom hi/lo stay 0: the kernel's events carry no udev tags.
  out.set(event.propertyBytes, UDEV_HEADER_SIZE);
  return out;
}

// ---------------------------------------------------------------------------------- the relay

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_KOBJECT_UEVENT = 15;
const SOL_SOCKET = 1;
const SO_RCVBUFFORCE = 33;
const EINTR = 4;
const ECONNREFUSED = 111;

const LIBC = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  recvfrom: {
    parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"],
    result: "isize",
  },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** `struct sockaddr_nl` (12 bytes): family, pad, pid, groups (host order). */
function netlinkAddress(pid: number, groups: number): Uint8Array<ArrayBuffer> {
  const a = new Uint8Array(12);
  const v = new DataView(a.buffer);
  v.setUint16(0, AF_NETLINK, true);
  v.setUint32(4, pid, true);
  v.setUint32(8, groups, true);
  return a;
}

/**
 * A NETLINK_KOBJECT_UEVENT socket through the C library (Linux; `--allow-ffi`; sending to a
 * group needs root). Bound to `groups` (a bit mask: 1 = kernel uevents, 0 = send only).
 *
 * @example
 * ```ts
 * import { GROUP_KERNEL, UeventSocket } from "./uevent_relay.ts";
 * // In the guest, as root: the relay's loop.
 * function relayOnce(socket: UeventSocket): void {
 *   const event = socket.receive(); // blocks
 *   if (event) socket.sendToUdev(event);
 * }
 * const open = () => new UeventSocket(GROUP_KERNEL);
 * ```
 */
export class UeventSocket implements Disposable {
  #libc = Deno.dlopen("libc.so.6", LIBC);
  #fd: number;
  #buf = new Uint8Array(16384);
  #from = new Uint8Array(12);
  #fromLength = new Uint32Array(1);

  /** Opens and binds the socket (throws with errno on failure). */
  constructor(groups: number) {
    const c = this.#libc.symbols;
    this.#fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
    if (this.#fd < 0) this.#fail("socket(AF_NETLINK, NETLINK_KOBJECT_UEVENT)");
    if (groups !== 0) {
      // A burst of events (a hub with its devices) must not overflow the default buffer.
      const size = new Int32Array([4 << 20]);
      c.setsockopt(this.#fd, SOL_SOCKET, SO_RCVBUFFORCE, new Uint8Array(size.buffer), 4);
    }
    const local = netlinkAddress(0, groups);
    if (c.bind(this.#fd, local, local.length) < 0) this.#fail(`bind(groups ${groups})`);
  }

  #errno(): number {
    return new Deno.UnsafePointerView(this.#libc.symbols.__errno_location()!).getInt32();
  }

  #fail(what: string): never {
    const errno = this.#errno();
    this.close();
    throw new Error(`uevent socket: ${what} failed, errno ${errno}`);
  }

  /**
   * Blocks until a datagram arrives; returns it parsed when it is a kernel uevent (sender port id
   * 0), else null.
   */
  receive(): KernelUevent | null {
    const c = this.#libc.symbols;
    for (;;) {
      this.#fromLength[0] = this.#from.length;
      const fromLength = new Uint8Array(this.#fromLength.buffer);
      const n = Number(
        c.recvfrom(this.#fd, this.#buf, BigInt(this.#buf.length), 0, this.#from, fromLength),
      );
      if (n < 0) {
        if (this.#errno() === EINTR) continue;
        this.#fail("recvfrom");
      }
      if (new DataView(this.#from.buffer).getUint32(4, true) !== 0) return null;
      return parseKernelUevent(this.#buf.slice(0, n));
    }
  }

  /** Sends `event` to group 2 in libudev's format (as udevd does after processing it). */
  sendToUdev(event: KernelUevent): void {
    const msg = udevMessage(event);
    const to = netlinkAddress(0, GROUP_UDEV);
    // Sending to a group also unicasts to the kernel's socket, which refuses: expected.
    const n = Number(
      this.#libc.symbols.sendto(this.#fd, msg, BigInt(msg.length), 0, to, to.length),
    );
    if (n < 0 && this.#errno() !== ECONNREFUSED) this.#fail("sendto(group 2)");
  }

  /** Closes the socket and unloads the C library. */
  close(): void {
    if (this.#fd >= 0) this.#libc.symbols.close(this.#fd);
    this.#fd = -1;
    this.#libc.close();
  }

  /** Same as {@linkcode UeventSocket.close}. */
  [Symbol.dispose](): void {
    if (this.#fd >= 0) this.close();
  }
}

/**
 * Runs the relay forever (root, Linux): creates `readyFile` once it listens, then re-sends every
 * kernel uevent to group 2 and prints one line per event (`ms seqnum action devpath type`).
 *
 * @example
 * ```ts
 * import { runRelay } from "./uevent_relay.ts";
 * const start = () => runRelay("/run/tbq-uevent-relay.ready"); // in the guest, as root
 * ```
 */
export function runRelay(readyFile?: string): never {
  const socket = new UeventSocket(GROUP_KERNEL);
  if (readyFile) Deno.writeTextFileSync(readyFile, `${Deno.pid}\n`);
  console.log("listening");
  const t0 = performance.now();
  for (;;) {
    const event = socket.receive();
    if (!event) continue;
    socket.sendToUdev(event);
    const type = event.devtype ? `${event.subsystem}/${event.devtype}` : event.subsystem;
    const ms = (performance.now() - t0).toFixed(0);
    console.log(`${ms} ${event.properties.get("SEQNUM")} ${event.action} ${event.devpath} ${type}`);
  }
}

if (import.meta.main) runRelay(Deno.args[0]);
