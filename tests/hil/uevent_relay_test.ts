/**
 * The uevent relay's message format, checked against the real libudev on the host (no QEMU):
 * MurmurHash2 against the constants libudev itself puts in its BPF filter, and a full round trip:
 * a synthetic uevent re-sent by {@linkcode UeventSocket.sendToUdev} to netlink group 2 arrives
 * through `udev_monitor_receive_device` with its action, devnode, sysname and properties, while
 * one whose DEVTYPE does not match the monitor's filter is dropped by the kernel. The events use a
 * made-up subsystem ("tbqtest"), so no real udev listener on the host (e.g. libusb's, which
 * filters "usb") ever sees them.
 *
 * Registered through `hilTest`: sending to a netlink group needs root, like the rig.
 *
 * Run: deno test -A tests/hil/uevent_relay_test.ts
 */
import assert from "node:assert/strict";
import { hilTest } from "./gate.ts";
import {
  murmurHash2,
  parseKernelUevent,
  UDEV_HEADER_SIZE,
  UDEV_MONITOR_MAGIC,
  udevMessage,
  UeventSocket,
} from "./uevent_relay.ts";

const encoder = new TextEncoder();
const cstr = (s: string) => encoder.encode(s + "\0");

const LIBUDEV = {
  udev_new: { parameters: [], result: "pointer" },
  udev_unref: { parameters: ["pointer"], result: "pointer" },
  udev_monitor_new_from_netlink: { parameters: ["pointer", "buffer"], result: "pointer" },
  udev_monitor_filter_add_match_subsystem_devtype: {
    parameters: ["pointer", "buffer", "buffer"],
    result: "i32",
  },
  udev_monitor_filter_update: { parameters: ["pointer"], result: "i32" },
  udev_monitor_enable_receiving: { parameters: ["pointer"], result: "i32" },
  udev_monitor_get_fd: { parameters: ["pointer"], result: "i32" },
  udev_monitor_receive_device: { parameters: ["pointer"], result: "pointer" },
  udev_monitor_unref: { parameters: ["pointer"], result: "pointer" },
  udev_device_get_action: { parameters: ["pointer"], result: "pointer" },
  udev_device_get_devnode: { parameters: ["pointer"], result: "pointer" },
  udev_device_get_sysname: { parameters: ["pointer"], result: "pointer" },
  udev_device_get_subsystem: { parameters: ["pointer"], result: "pointer" },
  udev_device_get_devtype: { parameters: ["pointer"], result: "pointer" },
  udev_device_get_property_value: { parameters: ["pointer", "buffer"], result: "pointer" },
  udev_device_get_is_initialized: { parameters: ["pointer"], result: "i32" },
  udev_device_unref: { parameters: ["pointer"], result: "pointer" },
} as const;

const LIBC = {
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
} as const;

function kernelEvent(seq: number, devtype: string): Uint8Array {
  return encoder.encode(
    `add@/devices/tbq/usb1/1-9\0ACTION=add\0DEVPATH=/devices/tbq/usb1/1-9\0` +
      `SUBSYSTEM=tbqtest\0DEVTYPE=${devtype}\0DEVNAME=bus/usb/001/042\0BUSNUM=001\0` +
      `DEVNUM=042\0MAJOR=189\0MINOR=41\0SEQNUM=${seq}\0`,
  );
}

Deno.test("uevent relay: parse and encode", () => {
  const raw = kernelEvent(5, "tbq_device");
  const ev = parseKernelUevent(raw)!;
  assert.equal(ev.action, "add");
  assert.equal(ev.subsystem, "tbqtest");
  assert.equal(ev.properties.get("BUSNUM"), "001");
  const msg = udevMessage(ev);
  const v = new DataView(msg.buffer);
  assert.deepEqual([...msg.subarray(0, 8)], [...cstr("libudev")]);
  assert.equal(v.getUint32(8, false), UDEV_MONITOR_MAGIC);
  assert.equal(v.getUint32(12, true), UDEV_HEADER_SIZE);
  assert.equal(v.getUint32(16, true), UDEV_HEADER_SIZE);
  assert.equal(v.getUint32(20, true), raw.length - raw.indexOf(0) - 1);
  assert.equal(v.getUint32(24, false), murmurHash2(encoder.encode("tbqtest")));
  assert.equal(v.getUint32(28, false), murmurHash2(encoder.encode("tbq_device")));
  assert.deepEqual(msg.subarray(UDEV_HEADER_SIZE), raw.subarray(raw.indexOf(0) + 1));
  // A libudev message (or garbage) on the kernel group is not a kernel uevent.
  assert.equal(parseKernelUevent(msg), null);
  assert.equal(parseKernelUevent(encoder.encode("add@/x\0ACTION=add\0")), null);
});

hilTest("uevent relay: libudev's BPF filter hashes and a round trip through libudev", async () => {
  const libudev = Deno.dlopen("libudev.so.1", LIBUDEV);
  const udev = libudev.symbols;
  const libc = Deno.dlopen("libc.so.6", LIBC);
  const ctx = udev.udev_new();
  assert.ok(ctx, "udev_new");
  const mon = udev.udev_monitor_new_from_netlink(ctx, cstr("udev"));
  assert.ok(mon, "udev_monitor_new_from_netlink");
  try {
    // 1. The hashes libudev compiles into its filter for libusb's match are ours.
    const probe = udev.udev_monitor_new_from_netlink(ctx, cstr("udev"))!;
    assert.equal(
      udev.udev_monitor_filter_add_match_subsystem_devtype(probe, cstr("usb"), cstr("usb_device")),
      0,
    );
    assert.equal(udev.udev_monitor_filter_update(probe), 0);
    const prog = new Uint8Array(8 * 64);
    const count = new Uint32Array([64]);
    const SO_GET_FILTER = 26;
    const rc = libc.symbols.getsockopt(
      udev.udev_monitor_get_fd(probe),
      1,
      SO_GET_FILTER,
      prog,
      new Uint8Array(count.buffer),
    );
    assert.equal(rc, 0, "getsockopt(SO_GET_FILTER)");
    const constants = Array.from(
      { length: count[0] },
      (_, i) => new DataView(prog.buffer).getUint32(i * 8 + 4, true),
    );
    udev.udev_monitor_unref(probe);
    for (const s of ["usb", "usb_device"]) {
      assert.ok(constants.includes(murmurHash2(encoder.encode(s))), `hash of ${s} in ${constants}`);
    }
    assert.ok(constants.includes(UDEV_MONITOR_MAGIC));

    // 2. Round trip: libudev's receiver accepts what the relay sends.
    assert.equal(
      udev.udev_monitor_filter_add_match_subsystem_devtype(
        mon,
        cstr("tbqtest"),
        cstr("tbq_device"),
      ),
      0,
    );
    assert.equal(udev.udev_monitor_enable_receiving(mon), 0);
    using sender = new UeventSocket(0);
    const seq = 4_000_000_000 + (Date.now() % 1000);
    sender.sendToUdev(parseKernelUevent(kernelEvent(seq + 1, "other_type"))!); // filtered out
    sender.sendToUdev(parseKernelUevent(kernelEvent(seq, "tbq_device"))!);
    let dev: Deno.PointerValue = null;
    const deadline = performance.now() + 3000;
    while (!dev && performance.now() < deadline) {
      dev = udev.udev_monitor_receive_device(mon); // the socket is non-blocking
      if (!dev) await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(dev, "libudev received nothing from the relay's socket within 3 s");
    const text = (p: Deno.PointerValue) => p ? Deno.UnsafePointerView.getCString(p) : null;
    const got = {
      action: text(udev.udev_device_get_action(dev)),
      devnode: text(udev.udev_device_get_devnode(dev)),
      sysname: text(udev.udev_device_get_sysname(dev)),
      subsystem: text(udev.udev_device_get_subsystem(dev)),
      devtype: text(udev.udev_device_get_devtype(dev)),
      busnum: text(udev.udev_device_get_property_value(dev, cstr("BUSNUM"))),
      seqnum: text(udev.udev_device_get_property_value(dev, cstr("SEQNUM"))),
      initialized: udev.udev_device_get_is_initialized(dev),
    };
    udev.udev_device_unref(dev);
    assert.deepEqual(got, {
      action: "add",
      devnode: "/dev/bus/usb/001/042",
      sysname: "1-9",
      subsystem: "tbqtest",
      devtype: "tbq_device",
      busnum: "001",
      seqnum: String(seq),
      initialized: 1,
    });
    // The message with the other DEVTYPE never reached the monitor.
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(udev.udev_monitor_receive_device(mon), null);
  } finally {
    udev.udev_monitor_unref(mon);
    udev.udev_unref(ctx);
    libc.close();
    libudev.close();
  }
});
