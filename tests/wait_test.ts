/**
 * Waiting for a free buffer (`src/wait.ts`, `pollThenWait`): where a core is spare and the loop's
 * items are short, a producer polls for a while without counting itself as a sleeper, so that the
 * loop frees buffers without paying for a wake; past its budget, or with no core to spare, it
 * sleeps as a counted sleeper and needs a notify. Nothing is left open behind it (the test
 * sanitizers check the MessageChannel it turns its event loop with).
 */
import assert from "node:assert/strict";
import { POLL_MAX_MS, pollBudget, pollThenWait } from "../src/wait.ts";

const WORD = 0;
const SLEEPERS = 16;
const POLLERS = 32;
const cores = navigator.hardwareConcurrency;

function words(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(64 * 4));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Awaits a wait that this same thread notified: the promise of an `Atomics.waitAsync` keeps no
 * event loop alive, so a timer does until it settles (in use, the notify comes from another
 * thread, and the queue's Worker keeps the process alive).
 */
async function settled(waiting: Promise<void>): Promise<void> {
  const keepAlive = setTimeout(() => {}, 10_000);
  try {
    await waiting;
  } finally {
    clearTimeout(keepAlive);
  }
}

Deno.test("pollBudget: two steps of a fast loop, nothing for a slow or unknown one", () => {
  assert.equal(pollBudget(0), 0);
  assert.equal(pollBudget(0.08), 0.16);
  assert.equal(pollBudget(POLL_MAX_MS), POLL_MAX_MS);
  assert.equal(pollBudget(POLL_MAX_MS * 1.5), 0);
});

Deno.test("a poller hears a change that came with no notify, and counts as no sleeper", async () => {
  const w = words();
  let resolved = false;
  const waiting = pollThenWait(w, WORD, 0, undefined, SLEEPERS, POLLERS, 200).then(() => {
    resolved = true;
  });
  await sleep(5); // past the synchronous spin: the poller lets timers run
  if (cores > 1) {
    assert.equal(Atomics.load(w, POLLERS), 1, "polling");
    assert.equal(Atomics.load(w, SLEEPERS), 0, "not a sleeper: a waker may skip the notify");
    Atomics.store(w, WORD, 1); // no notify
    await waiting;
    assert.ok(resolved);
    assert.equal(Atomics.load(w, POLLERS), 0, "the poller count is given back");
  } else {
    // One core: polling would take it from the loop, so the waiter sleeps at once.
    assert.equal(Atomics.load(w, SLEEPERS), 1);
    Atomics.store(w, WORD, 1);
    Atomics.notify(w, WORD);
    await settled(waiting);
  }
});

Deno.test("past its budget a poller sleeps as a counted sleeper, and a notify ends it", async () => {
  const w = words();
  const waiting = pollThenWait(w, WORD, 0, undefined, SLEEPERS, POLLERS, 2);
  await sleep(30);
  assert.equal(Atomics.load(w, POLLERS), 0);
  assert.equal(Atomics.load(w, SLEEPERS), 1);
  Atomics.store(w, WORD, 1);
  Atomics.notify(w, WORD);
  await settled(waiting);
  assert.equal(Atomics.load(w, SLEEPERS), 0);
});

Deno.test("with every spare core polling already, a waiter sleeps at once", async () => {
  const w = words();
  Atomics.store(w, POLLERS, Math.max(cores - 1, 0));
  const waiting = pollThenWait(w, WORD, 0, undefined, SLEEPERS, POLLERS, 200);
  await sleep(5);
  assert.equal(Atomics.load(w, SLEEPERS), 1);
  Atomics.store(w, WORD, 1);
  Atomics.notify(w, WORD);
  await settled(waiting);
  assert.equal(Atomics.load(w, POLLERS), Math.max(cores - 1, 0), "no poller count taken");
});

Deno.test("an abort while polling rejects with its reason and gives the poller count back", async () => {
  const w = words();
  const controller = new AbortController();
  const reason = new Error("gave up");
  const waiting = pollThenWait(w, WORD, 0, controller.signal, SLEEPERS, POLLERS, 200);
  await sleep(5);
  controller.abort(reason);
  await assert.rejects(waiting, (error) => error === reason);
  assert.equal(Atomics.load(w, POLLERS), 0);
  assert.equal(Atomics.load(w, SLEEPERS), 0);
});
