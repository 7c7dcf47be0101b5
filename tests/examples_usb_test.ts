/**
 * Runs the USB examples `examples/list_devices.ts` and `examples/hid_keyboard.ts` as subprocesses,
 * with the flags their documentation gives, where no device they look for is attached: each says
 * so and exits 0; a bad argument exits 2. (On a machine with USB devices, the listing's shape is
 * checked instead: every device line is followed by its tree or the reason it has none.) What they
 * print with devices attached is checked in the rig (QEMU's FTDI and keyboard).
 */

import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);
const FLAGS = ["--allow-ffi", "--allow-read", "--allow-env"];

async function run(
  example: string,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...FLAGS, `examples/${example}`, ...args],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

Deno.test("list_devices: each device with its tree or why not; none: says so, exit 0", async () => {
  const { code, stdout, stderr } = await run("list_devices.ts");
  assert.equal(code, 0, stderr);
  const lines = stdout.trimEnd().split("\n");
  if (lines[0] === "no USB devices") {
    assert.ok(lines.length <= 2, stdout);
    return;
  }
  let device = "";
  for (const line of lines) {
    if (/^[0-9a-f]{4}:[0-9a-f]{4} {2}/.test(line)) device = line;
    else {
      assert.ok(device, `a line before any device: ${line}`);
      assert.match(
        line,
        /^ {2}(port \d+-[\d.]+, |root hub of bus \d+, |configuration \d+|cannot |unconfigured| {2})/,
        `under ${device}`,
      );
    }
  }
});

Deno.test("hid_keyboard: no such keyboard attached: says so, exit 0", async () => {
  const { code, stdout, stderr } = await run(
    "hid_keyboard.ts",
    "--device=fffe:0001",
    "--seconds=1",
  );
  assert.equal(code, 0, stderr);
  assert.equal(stdout.split("\n")[0], "no USB keyboard fffe:0001 found");
});

Deno.test("hid_keyboard: a bad argument prints usage, exit 2", async () => {
  for (const bad of ["--seconds=0", "--seconds=x", "--device=403:6001", "--verbose"]) {
    const { code, stdout, stderr } = await run("hid_keyboard.ts", bad);
    assert.equal(code, 2, `${bad}: ${stdout}${stderr}`);
    assert.match(stderr, /^bad argument .*\nusage: hid_keyboard\.ts \[--seconds=N\]/, bad);
    assert.equal(stdout, "");
  }
});
