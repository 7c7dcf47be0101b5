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

/** The lines list_devices printed for the device `ids` (its header and indented tree). */
function treeOf(stdout: string, ids: string): string[] {
  const lines = stdout.split("\n");
  const at = lines.findIndex((l) => l.startsWith(`${ids}  `));
  if (at < 0) return [];
  const end = lines.findIndex((l, i) => i > at && !l.startsWith("  "));
  return lines.slice(at, end < 0 ? undefined : end);
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
    console.log(r.stdout);
    assert.equal(r.code, 0, diag);

    // list_devices: the three trees.
    assert.match(r.stdout, /^LIST-EXIT 0$/m, diag);
    const kbd = treeOf(r.stdout, "0627:0001");
    assert.match(kbd[0] ?? "", /, bus 1 address \d+$/, diag);
    assert.ok(kbd.includes("  configuration 1 (active)"), diag);
    assert.ok(kbd.includes("      alternate 0: class 03/01/01"), diag);
    assert.ok(kbd.includes("        endpoint 0x81 in interrupt, 8 B packets"), diag);
    const storage = treeOf(r.stdout, "46f4:0001");
    assert.ok(storage.includes("        endpoint 0x81 in bulk, 1024 B packets"), diag);
    const ftdi = treeOf(r.stdout, "0403:6001");
    assert.ok(ftdi.includes("        endpoint 0x02 out bulk, 64 B packets"), diag);

    // hid_keyboard: usbhid before, the keys in order, the count, usbhid again after.
    assert.match(r.stdout, /^DRIVER-BEFORE usbhid$/m, diag);
    assert.match(r.stdout, /^KBD-EXIT 0$/m, diag);
    assert.match(r.stdout, /^DRIVER-AFTER usbhid$/m, diag);
    console.log(`typed at ${typedAt.toFixed(0)} ms, total ${r.totalMs.toFixed(0)} ms`);
  },
);
