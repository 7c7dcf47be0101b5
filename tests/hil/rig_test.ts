/**
 * Smoke test of the HIL rig itself (not of tbq): the guest boots, sees both
 * QEMU USB devices, runs the host's deno with libusb through Deno.dlopen, and
 * bytes cross the FTDI device in both directions; QMP hot-unplug works while
 * a guest command runs. With `hotplug` and `keyboard`: one libusb context
 * (`Libusb.devices()`) sees the FTDI vanish after QMP `device_del` and come
 * back after `device_add` (the uevent relay at work), and the usb-kbd
 * enumerates. The same file is the guest-side program: run with
 * TBQ_HIL_GUEST=1 (the rig sets it in the guest) it does the guest's part
 * (argument `hotplug`: the hotplug half).
 *
 * Run: deno test -A tests/hil/rig_test.ts   (as root; prepares the rig first)
 */
import assert from "node:assert/strict";
import { Libusb } from "../../mod.ts";
import { hilTest } from "./gate.ts";
import { bootGuest, hostDeno, runInGuest, withTimeout } from "./rig.ts";

const THIS_FILE = new URL(import.meta.url).pathname;
const HELLO = "tbq-hil: hello from the guest\n";
const PING = "tbq-hil: ping from the host\n";

/** What the guest half reports back as its last stdout line. */
interface GuestReport {
  uptimeAtStart: number;
  uptimeAtReport: number;
  sysfs: string[];
  libusb: string[];
  kernelDriverActive: number;
  bulkOut: { rc: number; transferred: number };
  bulkIn: { payload: string; packets: number; statusBytes: number[] };
}

// ---------------------------------------------------------------- guest half

/** Throwaway libusb symbols, just enough to prove deno + libusb in the guest. */
const LIBUSB = {
  libusb_init: { parameters: ["buffer"], result: "i32" },
  libusb_exit: { parameters: ["pointer"], result: "void" },
  libusb_get_device_list: { parameters: ["pointer", "buffer"], result: "isize" },
  libusb_free_device_list: { parameters: ["pointer", "i32"], result: "void" },
  libusb_get_device_descriptor: { parameters: ["pointer", "buffer"], result: "i32" },
  libusb_open_device_with_vid_pid: { parameters: ["pointer", "u16", "u16"], result: "pointer" },
  libusb_kernel_driver_active: { parameters: ["pointer", "i32"], result: "i32" },
  libusb_claim_interface: { parameters: ["pointer", "i32"], result: "i32" },
  libusb_release_interface: { parameters: ["pointer", "i32"], result: "i32" },
  libusb_bulk_transfer: {
    parameters: ["pointer", "u8", "buffer", "i32", "buffer", "u32"],
    result: "i32",
  },
  libusb_close: { parameters: ["pointer"], result: "void" },
} as const;

async function uptime(): Promise<number> {
  return Number((await Deno.readTextFile("/proc/uptime")).split(" ")[0]);
}

async function guestMain(): Promise<void> {
  const uptimeAtStart = await uptime();
  const sysfs: string[] = [];
  for await (const e of Deno.readDir("/sys/bus/usb/devices")) {
    const dir = `/sys/bus/usb/devices/${e.name}`;
    try {
      const vid = (await Deno.readTextFile(`${dir}/idVendor`)).trim();
      const pid = (await Deno.readTextFile(`${dir}/idProduct`)).trim();
      sysfs.push(`${vid}:${pid}`);
    } catch { /* an interface, not a device */ }
  }

  const lib = Deno.dlopen("libusb-1.0.so.0", LIBUSB);
  const usb = lib.symbols;
  const ctxOut = new BigUint64Array(1);
  assert.equal(usb.libusb_init(ctxOut), 0, "libusb_init");
  const ctx = Deno.UnsafePointer.create(ctxOut[0]);

  const listOut = new BigUint64Array(1);
  const n = Number(usb.libusb_get_device_list(ctx, listOut));
  assert.ok(n > 0, `libusb_get_device_list returned ${n}`);
  const list = Deno.UnsafePointer.create(listOut[0])!;
  const view = new Deno.UnsafePointerView(list);
  const libusb: string[] = [];
  const desc = new Uint8Array(18);
  const dv = new DataView(desc.buffer);
  for (let i = 0; i < n; i++) {
    const dev = Deno.UnsafePointer.create(view.getBigUint64(i * 8));
    assert.equal(usb.libusb_get_device_descriptor(dev, desc), 0);
    const hex = (v: number) => v.toString(16).padStart(4, "0");
    libusb.push(`${hex(dv.getUint16(8, true))}:${hex(dv.getUint16(10, true))}`);
  }
  usb.libusb_free_device_list(list, 1);

  const h = usb.libusb_open_device_with_vid_pid(ctx, 0x0403, 0x6001);
  assert.ok(h, "open FTDI 0403:6001");
  const kernelDriverActive = usb.libusb_kernel_driver_active(h, 0);
  assert.equal(usb.libusb_claim_interface(h, 0), 0, "claim FTDI interface 0");

  const transferred = new Int32Array(1);
  const out = new TextEncoder().encode(HELLO);
  const rc = usb.libusb_bulk_transfer(h, 0x02, out, out.length, transferred, 2000);
  const bulkOut = { rc, transferred: transferred[0] };

  // Tell the host we are ready for input, then read bulk IN until the ping
  // arrives. Each IN packet carries 2 modem-status bytes before its data;
  // with no data the device NAKs and the transfer waits out its timeout.
  console.log("guest-ready");
  const inBuf = new Uint8Array(64);
  let payload = "";
  let packets = 0;
  let statusBytes: number[] = [];
  for (let tries = 0; tries < 40 && !payload.includes(PING); tries++) {
    const r = usb.libusb_bulk_transfer(h, 0x81, inBuf, inBuf.length, transferred, 250);
    if (r !== 0 && r !== -7 /* LIBUSB_ERROR_TIMEOUT */) throw new Error(`bulk IN: ${r}`);
    if (transferred[0] >= 2) {
      packets++;
      statusBytes = [inBuf[0], inBuf[1]];
      payload += new TextDecoder().decode(inBuf.subarray(2, transferred[0]));
    }
  }
  usb.libusb_release_interface(h, 0);
  usb.libusb_close(h);
  usb.libusb_exit(ctx);
  lib.close();

  const report: GuestReport = {
    uptimeAtStart,
    uptimeAtReport: await uptime(),
    sysfs: sysfs.sort(),
    libusb: libusb.sort(),
    kernelDriverActive,
    bulkOut,
    bulkIn: { payload, packets, statusBytes },
  };
  console.log(`REPORT ${JSON.stringify(report)}`);
}

/** What the hotplug half of the guest saw: one line per change of the FTDI's presence. */
interface HotplugReport {
  /** `vid:pid@bus.address` of every device at start. */
  initial: string[];
  /** Each change of the FTDI's presence: guest ms since the host was told "watching". */
  changes: { at: number; present: boolean; id: string | null }[];
}

const FTDI_ID = "0403:6001";
const KBD_ID = "0627:0001";

/**
 * One libusb context, polled every 20 ms: prints "gone" once the FTDI has left its device list
 * and "back" once it is there again (the host drives device_del/device_add in between).
 */
function guestHotplug(): void {
  using usb = Libusb.open();
  const hex = (n: number) => n.toString(16).padStart(4, "0");
  const list = () =>
    usb.devices({ strings: false }).map((d) =>
      `${hex(d.vendorId)}:${hex(d.productId)}@${d.busNumber}.${d.deviceAddress}`
    );
  const ftdi = () => list().find((id) => id.startsWith(FTDI_ID)) ?? null;
  const report: HotplugReport = { initial: list().sort(), changes: [] };
  let present = ftdi() !== null;
  console.log("watching");
  const t0 = performance.now();
  while (report.changes.length < 2 && performance.now() - t0 < 30_000) {
    const id = ftdi();
    if ((id !== null) !== present) {
      present = id !== null;
      report.changes.push({ at: Math.round(performance.now() - t0), present, id });
      console.log(present ? "back" : "gone");
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
  console.log(`REPORT ${JSON.stringify(report)}`);
}

// ----------------------------------------------------------------- host half

if (Deno.env.get("TBQ_HIL_GUEST") === "1") {
  if (Deno.args[0] === "hotplug") guestHotplug();
  else await guestMain();
} else {
  hilTest("hil rig: devices, deno + libusb in the guest, FTDI both ways", async () => {
    await using guest = await bootGuest({
      command: [hostDeno(), "run", "-A", "--no-lock", THIS_FILE],
      timeoutMs: 120_000,
    });
    const startMs = await guest.commandStarted;
    await guest.waitForStdout("guest-ready", 90_000);
    const readyMs = guest.elapsedMs();
    await guest.serial!.write(PING);
    const r = await guest.wait();
    const diag = `code ${r.code}\nstderr:\n${r.stderr}\nconsole:\n${r.console}\nqemu: ${
      JSON.stringify(r.qemu)
    }`;
    assert.equal(r.code, 0, diag);
    assert.equal(r.timedOut, false);

    const line = r.stdout.split("\n").find((l) => l.startsWith("REPORT "));
    assert.ok(line, `no REPORT line in stdout:\n${r.stdout}\n${diag}`);
    const rep = JSON.parse(line.slice("REPORT ".length)) as GuestReport;
    for (const id of ["46f4:0001", "0403:6001"]) {
      assert.ok(rep.sysfs.includes(id), `sysfs lacks ${id}: ${rep.sysfs}`);
      assert.ok(rep.libusb.includes(id), `libusb lacks ${id}: ${rep.libusb}`);
    }
    assert.equal(rep.kernelDriverActive, 0, "ftdi_sio must not be bound");
    assert.deepEqual(rep.bulkOut, { rc: 0, transferred: HELLO.length });

    // What the guest wrote through the FTDI reached the host's chardev file.
    const fromGuest = await Deno.readTextFile(guest.serial!.filePath);
    assert.equal(fromGuest, HELLO);
    assert.equal(new TextDecoder().decode(r.serialOutput), HELLO);
    // And the host's bytes reached the guest through bulk IN.
    assert.equal(rep.bulkIn.payload, PING);

    const ms = (n: number | null) => `${n === null ? "?" : n.toFixed(0)} ms`;
    console.log(
      `HIL timings: command start ${ms(startMs)} after QEMU spawn; ` +
        `guest script ready ${ms(readyMs)}; QEMU exit ${ms(r.totalMs)}; ` +
        `guest uptime at deno's first line ${rep.uptimeAtStart} s; ` +
        `FTDI modem status bytes [${rep.bulkIn.statusBytes}] in ${rep.bulkIn.packets} packet(s)`,
    );
    assert.ok(startMs !== null && startMs < 30_000, `boot took ${startMs} ms`);
  });

  hilTest("hil rig: cpus: 2 gives the guest two CPUs and a TSC clock (for timings)", async () => {
    const r = await runInGuest({
      command: "nproc; cat /sys/devices/system/clocksource/clocksource0/current_clocksource",
      cpus: 2,
      disk: false,
      serial: false,
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 0, `stderr:\n${r.stderr}\nconsole:\n${r.console}`);
    const [cpus, clock] = r.stdout.trim().split("\n");
    assert.equal(cpus, "2");
    // The rig passes the host's TSC rate; without it the guest falls back to 4 ms jiffies.
    if (!/tsc/.test(clock)) console.log(`clocksource ${clock} (the host has no cpu MHz line?)`);
  });

  hilTest("hil rig: QMP hot-unplug of usb-storage while a guest command runs", async () => {
    const script = [
      "has() { grep -qx 46f4 /sys/bus/usb/devices/*/idVendor 2>/dev/null; }",
      "has || { echo missing; exit 1; }",
      "echo present",
      "i=0",
      "while has && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done",
      "has && { echo still-there; exit 1; }",
      "echo gone",
    ].join("\n");
    await using guest = await bootGuest({ command: script, serial: false, timeoutMs: 60_000 });
    await guest.waitForStdout("present", 45_000);
    await guest.qmp.execute("device_del", { id: "storage" });
    await guest.qmp.waitForEvent("DEVICE_DELETED", 10_000, (e) => e.data?.device === "storage");
    const r = await guest.wait();
    assert.equal(r.code, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}\nconsole:\n${r.console}`);
    assert.equal(r.stdout, "present\ngone\n");
  });

  hilTest(
    "hil rig: libusb sees the FTDI leave and come back (hotplug relay); usb-kbd",
    async () => {
      await using guest = await bootGuest({
        command: [hostDeno(), "run", "-A", "--no-lock", THIS_FILE, "hotplug"],
        hotplug: true,
        keyboard: true,
        timeoutMs: 120_000,
      });
      const startMs = await guest.commandStarted;
      await guest.waitForStdout("watching", 60_000);
      const t0 = performance.now();
      await guest.qmp.execute("device_del", { id: "ftdi" });
      await guest.qmp.waitForEvent("DEVICE_DELETED", 10_000, (e) => e.data?.device === "ftdi");
      await guest.waitForStdout("gone", 10_000);
      const goneMs = performance.now() - t0;
      const t1 = performance.now();
      await guest.qmp.execute("device_add", {
        driver: "usb-serial",
        id: "ftdi",
        chardev: "ftdi",
        bus: "xhci.0",
        "always-plugged": true,
      });
      await guest.waitForStdout("back", 10_000);
      const backMs = performance.now() - t1;
      const r = await withTimeout(guest.wait(), 30_000, "guest exit");
      const diag = `stdout:\n${r.stdout}\nstderr:\n${r.stderr}\nrelay:\n${r.relayLog}\n` +
        `console:\n${r.console}`;
      assert.equal(r.code, 0, diag);
      const line = r.stdout.split("\n").find((l) => l.startsWith("REPORT "));
      assert.ok(line, diag);
      const rep = JSON.parse(line.slice("REPORT ".length)) as HotplugReport;
      const ids = rep.initial.map((id) => id.split("@")[0]);
      for (const id of ["46f4:0001", FTDI_ID, KBD_ID]) {
        assert.ok(ids.includes(id), `${id} in ${ids}`);
      }
      assert.deepEqual(
        rep.changes.map((c) => c.present),
        [false, true],
        diag,
      );
      // The FTDI came back at a new address (a new device, not the stale entry).
      const before = rep.initial.find((id) => id.startsWith(FTDI_ID));
      assert.notEqual(rep.changes[1].id, before);
      // The relay forwarded the FTDI's remove and add (usb_device events).
      assert.match(r.relayLog, /^listening$/m);
      assert.match(r.relayLog, / remove \S+ usb\/usb_device$/m);
      assert.match(r.relayLog, / add \S+ usb\/usb_device$/m);
      assert.ok(goneMs < 5000 && backMs < 5000, `gone after ${goneMs} ms, back after ${backMs} ms`);
      console.log(
        `hotplug: command start ${startMs?.toFixed(0)} ms after spawn; libusb saw the FTDI gone ` +
          `${goneMs.toFixed(0)} ms after device_del, back ${
            backMs.toFixed(0)
          } ms after device_add ` +
          `(${rep.changes[1].id}, was ${before}); initial ${rep.initial.join(" ")}`,
      );
    },
  );
}
