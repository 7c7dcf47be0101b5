/**
 * Producer Workers killed at random moments in tight fetch / enqueue / enqueueAndWait / keep /
 * abort / reuse loops, thousands of times, across several queues (sync and async reuseCleanup,
 * handlers that pend), while the main thread produces too; a few die in the middle of a queue
 * call, some holding the pool's lock. Nothing may hang, the stats must add up to the pool at every
 * checkpoint, and every `close()` must give back every buffer. The run is
 * tests/fixtures/kill_stress_run.ts, in a subprocess with an outer time limit.
 */
import assert from "node:assert/strict";
import { runWithSummary } from "./fixtures/run_limited.ts";

/**
 * Kills in all (each costs a Worker start: ~20–50 ms of CPU on this shared 2-core machine, whose
 * speed varies by 2× from hour to hour, so the deadline leaves room for the slow hours).
 */
const KILLS = 3000;
/** Of which this many are armed to die mid-call (half of them just after taking the lock). */
const SUDDEN = 24;
/** The run stops itself at this deadline; the process is killed at the outer limit. */
const DEADLINE_S = 300;
const LIMIT_MS = 360_000;

Deno.test("kill stress: producer Workers terminated at random moments, nothing hangs, close() recovers every buffer", async () => {
  const { summary, field } = await runWithSummary(
    [
      "run",
      "--allow-all",
      "tests/fixtures/kill_stress_run.ts",
      "--kills",
      String(KILLS),
      "--sudden",
      String(SUDDEN),
      "--deadline",
      String(DEADLINE_S),
    ],
    LIMIT_MS,
    "KILL_STRESS",
  );
  assert.ok(field("kills") >= KILLS, summary);
  assert.equal(field("zombies"), 0, summary);
  assert.equal(field("failures"), 0, summary);
  assert.ok(field("diedMidCall") > 0, `some Workers died mid-call: ${summary}`);
  assert.ok(field("diedHoldingLock") > 0, `some died holding the pool's lock: ${summary}`);
  assert.ok(field("queues") >= 4, `several queues: ${summary}`);
});
