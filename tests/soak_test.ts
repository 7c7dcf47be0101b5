/**
 * The soak (bench/soak.ts, `deno task soak`) for one minute, in a subprocess with an outer time
 * limit: mixed load from the main thread and two producer Workers; memory must stay flat after
 * the warm-up, every invariant hold and every promise settle (the script exits 1 otherwise).
 */
import assert from "node:assert/strict";
import { runWithSummary } from "./fixtures/run_limited.ts";

const SECONDS = 60;
const LIMIT_MS = 120_000;

Deno.test("soak: a minute of mixed load from three threads, memory flat after the warm-up", async () => {
  const { summary, field } = await runWithSummary(
    [
      "run",
      "--allow-all",
      "--v8-flags=--expose-gc,--max-semi-space-size=2",
      "bench/soak.ts",
      "--seconds",
      String(SECONDS),
    ],
    LIMIT_MS,
    "SUMMARY",
  );
  assert.match(summary, /\bresult=PASS\b/);
  assert.match(summary, /\bgc=yes\b/);
  assert.ok(field("seconds") >= SECONDS, summary);
  assert.ok(field("items") > 0, summary);
  assert.ok(field("quiet_phases") >= 5, `onIdle resolved in quiet phases: ${summary}`);
  for (const what of ["kept", "abort_rejected", "owner_completed", "idles", "flushes"]) {
    assert.ok(field(what) > 0, `the load included ${what}: ${summary}`);
  }
  assert.equal(field("failures"), 0, summary);
});
