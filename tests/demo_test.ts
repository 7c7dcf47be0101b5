/**
 * Runs `examples/demo/demo.ts` as a subprocess (with the flags of `deno task demo`): the normal run
 * must verify every record and exit 0; each injected device fault must be caught and exit 1.
 */

import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);
/** The flags `deno task demo` uses (see deno.json). */
const flags = ["--allow-read", "--allow-env", "--allow-ffi", "--unstable-worker-options"];

async function runDemo(...args: string[]): Promise<{ code: number; output: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, "examples/demo/demo.ts", ...args],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code, output: decoder.decode(stdout) + decoder.decode(stderr) };
}

Deno.test("demo: every record reaches the simulated device exactly once, exit 0", async () => {
  const { code, output } = await runDemo("--device=simulated");
  assert.equal(code, 0, output);
  assert.match(
    output.split("\n")[0],
    /SIMULATED/,
    "the first line must say the device is simulated",
  );
  const summary = output.match(/^SUMMARY items=(\d+) device_writes=(\d+) .* result=PASS$/m);
  assert.ok(summary, `no passing SUMMARY line in:\n${output}`);
  assert.ok(Number(summary[1]) > 0, summary[0]);
  assert.equal(summary[2], summary[1], "device writes must equal items sent");
  assert.match(output, /^VERIFIED: all [\d,]+ records reached the SIMULATED device exactly once/m);
  assert.match(output, /^enqueueAndWait latency \([\d,]+ waits\): p50 [\d,]+ µs, p99 [\d,]+ µs/m);
  assert.match(output, /^\s+\d+\.\d\d s {2}device writes /m, "progress lines are printed");
});

/** Each fault the simulated device can inject, and the complaint the checker must make. */
const faults: [fault: string, complaint: RegExp][] = [
  ["drop", /FAIL: P\d: 1 record\(s\) never reached the device \(missing\), first #\d+/],
  ["duplicate", /FAIL: P\d record #\d+: reached the device more than once \(duplicate\)/],
  ["corrupt", /FAIL: P\d record #\d+: corrupted \(device has \d+ B, checksum 0x[0-9a-f]{8}; /],
  ["reorder", /FAIL: P\d record #\d+: out of order, arrived after #\d+/],
  ["timeout", /FAIL: P\d: 1 record\(s\) never reached the device \(missing\)/],
];

for (const [fault, complaint] of faults) {
  Deno.test(`demo: --fault=${fault} is caught by the checker, exit 1`, async () => {
    const { code, output } = await runDemo("--duration=300", `--fault=${fault}`);
    assert.equal(code, 1, output);
    assert.match(output, /^SUMMARY items=[1-9]\d* .* result=FAIL$/m, output);
    assert.match(output, /^VERIFICATION FAILED: \d+ problem\(s\)$/m, output);
    assert.match(output, complaint, output);
    assert.doesNotMatch(output, /never injected/, output);
  });
}

Deno.test("demo: an unknown argument prints usage, exit 2", async () => {
  const { code, output } = await runDemo("--fault=bogus");
  assert.equal(code, 2, output);
  assert.match(output, /usage: demo\.ts/);
});

Deno.test("demo without flags picks a device itself and says which, and why when simulated", async () => {
  const { code, output } = await runDemo("--duration=300");
  assert.equal(code, 0, output);
  const [first, second] = output.split("\n");
  assert.match(first, /device = (USB [0-9a-f]{4}:[0-9a-f]{4}|SIMULATED)/);
  if (/SIMULATED/.test(first)) assert.match(second, /simulated because: \S/);
});
