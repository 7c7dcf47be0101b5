// A work handler blocked in a USB transfer holds its Worker's thread, so the loop cannot run the
// code that aborts item.signal or ctx.signal. The transfer polls the queue's shared memory between
// slices instead (ffi/transfer.ts, src/worker_loop.ts): these tests fail by hanging without it,
// so they run in a subprocess with an outer time limit.
import assert from "node:assert/strict";
import { runLimited } from "./fixtures/run_limited.ts";

Deno.test("a blocking transfer ends on its waiter's abort and on stop()", async () => {
  const run = await runLimited(
    ["run", "-A", "--no-lock", "tests/fixtures/transfer_abort_child.ts"],
    60_000,
  );
  assert.equal(run.timedOut, false, `hung: ${run.stderr}`);
  assert.equal(run.code, 0, run.stderr);
  const { itemMs, stopMs } = JSON.parse(run.stdout.trim().split("\n").at(-1)!);
  console.log(`abort → next item done: ${itemMs.toFixed(1)} ms; stop(): ${stopMs.toFixed(1)} ms`);
  // Behaviour, not speed: a slice is 40 ms; without the poll neither would ever end.
  assert.ok(itemMs < 2000, `item abort took ${itemMs} ms`);
  assert.ok(stopMs < 2000, `stop took ${stopMs} ms`);
});
