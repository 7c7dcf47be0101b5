/** The rig's gate: where the rig cannot run, CI fails loudly and a developer is told, never silence. */
import assert from "node:assert/strict";

async function runRigTests(env: Record<string, string>) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "tests/hil/rig_test.ts"],
    cwd: new URL("../", import.meta.url),
    env: { ...env, TBQ_HIL_UNAVAILABLE: "no QEMU on this test machine", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  return { code, text };
}

Deno.test("under CI=true a machine that cannot run the rig fails its tests with the reason", async () => {
  const { code, text } = await runRigTests({ CI: "true" });
  assert.notEqual(code, 0);
  assert.match(
    text,
    /CI=true and this machine cannot run the USB rig: .*no QEMU on this test machine/,
  );
});

Deno.test("elsewhere the rig tests are reported NOT RUN, loudly, with the reason", async () => {
  const { code, text } = await runRigTests({ CI: "false" });
  assert.equal(code, 0);
  assert.match(text, /!!! \[hil\] NOT RUN: .*\n!!! .*no QEMU on this test machine/);
  // Every test of the file is ignored, none passes or fails.
  const summary = text.match(/ok \| (\d+) passed \| (\d+) failed \| (\d+) ignored/);
  assert.ok(summary, text);
  assert.deepEqual([summary[1], summary[2]], ["0", "0"]);
  assert.ok(Number(summary[3]) >= 2, summary[0]);
});
