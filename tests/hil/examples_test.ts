/**
 * HIL: the USB examples on the guest's real Linux USB stack, in one boot (storage, FTDI, usb-kbd;
 * usbhid loaded). `examples/list_devices.ts` prints the three devices' descriptor trees; then
 * `examples/hid_keyboard.ts --seconds=N` takes the keyboard from usbhid, the host types keys
 * through QMP, and the example prints them in order, counts them, and gives the keyboard back to
 * usbhid (sysfs is read before and after it).
 *
 * Run: flock /tmp/tbq-qemu.lock env CI=true deno test --allow-all tests/hil/examples_test.ts
 */
import assert from "node:assert/strict";
import { hilTest } from "./gate.ts";
import { bootGuest, type GuestResult, hostDeno, shellQuote, withTimeout } from "./rig.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const SECONDS = 6;
/** QEMU qcodes typed, and the names the example prints for them. */
const KEYS = ["t", "b", "q", "1", "ret"];
const NAMES = ["t", "b", "q", "1", "Enter"];

/** The usb-kbd's interface 0 driver from sysfs, as `DRIVER-<when> <name>` (empty: none). */
const KBD_DRIVER = (when: string) =>
  `for d in /sys/bus/usb/devices/*; do ` +
  `if [ "$(cat "$d/idVendor" 2>/dev/null):$(cat "$d/idProduct" 2>/dev/null)" = 0627:0001 ]; ` +
  `then l=$(readlink "$d/\${d##*/}:1.0/driver"); echo "DRIVER-${when} \${l##*/}"; fi; done`;

function diagnostics(r: GuestResult): string {
  return `code ${r.code} (timed out: ${r.timedOut})\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}` +
    `\nconsole (tail):\n${r.console.slice(-2000)}`;
}

/** list_devices' tree of each device, after its header line (which has serial and address). */
const TREES: Record<string, { header: RegExp; tree: string[] }> = {
  "46f4:0001": {
    header: /^46f4:0001 {2}QEMU QEMU USB HARDDRIVE, serial \S+, bus 2 address \d+$/,
    tree: [
      "port 2-1, super speed, USB 3.00, device class 00/00/00, release 0.00",
      'configuration 1 "Super speed config (usb 3.0)" (active)',
      ...["  interface 0, alternate 0 selected", "    alternate 0: class 08/06/50"],
      "      endpoint 0x81 in bulk, 1024 B packets",
      "      endpoint 0x02 out bulk, 1024 B packets",
    ],
  },
  "0403:6001": {
    header: /^0403:6001 {2}QEMU QEMU USB SERIAL, serial \S+, bus 1 address \d+$/,
    tree: [
      "port 1-2, full speed, USB 2.00, device class 00/00/00, release 4.00",
      "configuration 1 (active)",
      ...["  interface 0, alternate 0 selected", "    alternate 0: class ff/ff/ff"],
      "      endpoint 0x81 in bulk, 64 B packets",
      "      endpoint 0x02 out bulk, 64 B packets",
    ],
  },
  "0627:0001": {
    header: /^0627:0001 {2}QEMU QEMU USB Keyboard, serial \S+, bus 1 address \d+$/,
    tree: [
      "port 1-3, high speed, USB 2.00, device class 00/00/00, release 0.00",
      'configuration 1 "HID Keyboard" (active)',
      ...["  interface 0, alternate 0 selected", "    alternate 0: class 03/01/01"],
      "      endpoint 0x81 in interrupt, 8 B packets",
    ],
  },
};

/** The lines after `ids`' header in list_devices' output, unindented by 2, and the header. */
function treeOf(stdout: string, ids: string): { header: string; tree: string[] } {
  const lines = stdout.split("\n");
  const at = lines.findIndex((l) => l.startsWith(`${ids}  `));
  if (at < 0) return { header: "", tree: [] };
  const end = lines.findIndex((l, i) => i > at && !l.startsWith("  "));
  const tree = lines.slice(at + 1, end < 0 ? undefined : end).map((l) => l.slice(2));
  return { header: lines[at], tree };
}

hilTest(
  "examples: list_devices shows all three trees; hid_keyboard reads typed keys, usbhid back",
  async () => {
    const deno = `${shellQuote(hostDeno())} run --no-lock --allow-ffi --allow-read --allow-env`;
    await using guest = await bootGuest({
      command: [
        `${deno} examples/list_devices.ts`,
        `echo "LIST-EXIT $?"`,
        KBD_DRIVER("BEFORE"),
        `${deno} examples/hid_keyboard.ts --seconds=${SECONDS}`,
        `echo "KBD-EXIT $?"`,
        KBD_DRIVER("AFTER"),
      ].join("\n"),
      workdir: ROOT,
      keyboard: true,
      modules: ["usbhid"],
      timeoutMs: 120_000,
    });
    try {
      await guest.waitForStdout(`reading keys for ${SECONDS} s`, 90_000);
    } catch (error) {
      await guest.kill();
      throw new Error(`${(error as Error).message}\n${diagnostics(await guest.wait())}`);
    }
    const typedAt = guest.elapsedMs();
    await guest.typeKeys(KEYS);
    const r = await withTimeout(guest.wait(), 60_000, "guest exit");
    const diag = diagnostics(r);
    assert.equal(r.code, 0, diag);

    // list_devices: the three devices' trees (root hubs may come between them).
    const [list, rest] = r.stdout.split(/^LIST-EXIT 0\n/m);
    assert.ok(rest !== undefined, `list_devices failed:\n${diag}`);
    for (const [ids, want] of Object.entries(TREES)) {
      const got = treeOf(list, ids);
      assert.match(got.header, want.header, `${ids} header\n${diag}`);
      assert.deepEqual(got.tree, want.tree, `${ids} tree\n${diag}`);
    }

    // hid_keyboard: usbhid bound before; its whole output; usbhid bound again after.
    const kbd = rest.split("\n");
    assert.equal(kbd[0], "DRIVER-BEFORE usbhid", diag);
    assert.match(
      kbd[1],
      /^keyboard 0627:0001 {2}QEMU QEMU USB Keyboard, .*, interface 0, endpoint 0x81$/,
      diag,
    );
    assert.deepEqual(kbd.slice(2), [
      "detached the kernel driver from interface 0",
      `reading keys for ${SECONDS} s (Ctrl-C stops)`,
      ...NAMES.map((name) => `key ${name}`),
      "re-attached the kernel driver to interface 0",
      `keys ${NAMES.length}`,
      "KBD-EXIT 0",
      "DRIVER-AFTER usbhid",
      "",
    ], diag);
    assert.equal(r.stderr, "", diag);
    const s = (ms: number | null) => `${((ms ?? NaN) / 1000).toFixed(1)} s`;
    console.log(
      `examples: command start ${s(r.bootMs)}, keys typed at ${s(typedAt)}, ` +
        `QEMU exit ${s(r.totalMs)} after spawn`,
    );
  },
);
