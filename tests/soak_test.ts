/**
 * The soak (bench/soak.ts, `deno task soak`) for one minute, in a subprocess with an outer time
 * limit: mixed load from the main thread and two producer Workers; memory must stay flat after
 * the warm-up, every invariant hold and every promise settle (the script exits 1 otherwise).
 */
import assert from "node:assert/strict";
import { runLimited, tail } from "./fixtures/run_limited.ts";

const SECONDS = 60;
const LIMIT_MS = 120_000;

Deno.test("soak: a minute of mixed load from three threads, memory flat after the warm-up", async () => {
  const run = await runLimited([
    "run",
    "--allow-all",
    "--v8-flags=--expose-gc,--max-semi-space-size=2",
    "bench/soak.ts",
    "--seconds",
    String(SECONDS),
  ], LIMIT_MS);
  const output = `${tail(run.stdout)}\n${tail(run.stderr)}`;
  assert.ok(!run.timedOut, `the soak hung (killed after ${LIMIT_MS} ms):\n${output}`);
  const summary = run.stdout.match(/^SUMMARY .*$/m)?.[0];
  console.log(summary ?? "(no summary)");
  assert.equal(run.code, 0, output);
  assert.ok(summary, `no SUMMARY line:\n${output}`);
  assert.match(summary, /\bresult=PASS\b/);
  assert.match(summary, /\bgc=yes\b/);
  const field = (name: string) => Number(summary.match(new RegExp(`\\b${name}=([\\d.]+)`))?.[1]);
  assert.ok(field("seconds") >= SECONDS, summary);
  assert.ok(field("items") > 0, summary);
  assert.ok(field("quiet_phases") >= 5, `onIdle resolved in quiet phases: ${summary}`);
  for (const what of ["kept", "abort_rejected", "owner_completed", "idles", "flushes"]) {
    assert.ok(field(what) > 0, `the load included ${what}: ${summary}`);
  }
  assert.equal(field("failures"), 0, summary);
});
