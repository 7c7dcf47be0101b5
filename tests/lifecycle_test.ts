import assert from "node:assert/strict";
import { QueueError, Status } from "../mod.ts";
import { Cmd, P } from "./fixtures/probe.ts";
import { consistent, item, scripted, settled, statsOf, within } from "./helpers.ts";

Deno.test("start runs pre once, then the loop; items enqueued while stopped run after start", async () => {
  await using s = await scripted();
  const { queue, probe } = s;
  const waits = [1, 2, 3].map((id) => queue.enqueueAndWait(item(queue, Cmd.COMPLETE, id)));
  assert.equal(queue.count(), 3);
  assert.equal(probe.get(P.WORK), 0);
  await queue.start();
  assert.equal(probe.get(P.PRE), 1);
  assert.deepEqual(await within(Promise.all(waits)), [0, 0, 0]);
  assert.deepEqual(probe.log(), [1, 2, 3]);
  assert.equal(queue.running, true);
});

Deno.test("start on a running queue rejects with InvalidDeviceState and changes nothing", async () => {
  await using s = await scripted();
  await s.queue.start();
  await assert.rejects(s.queue.start(), (error: unknown) => {
    assert.ok(error instanceof QueueError);
    assert.equal(error.code, "AlreadyRunning");
    assert.equal(error.status, Status.InvalidDeviceState);
    return true;
  });
  assert.equal(s.probe.get(P.PRE), 1);
  assert.equal(await s.queue.enqueueAndWait(item(s.queue, Cmd.COMPLETE, 1)), Status.Success);
});

Deno.test("start rejects with what pre threw; the loop does not run; a later start works", async () => {
  await using s = await scripted();
  const { queue, probe } = s;
  probe.set(P.PRE_THROWS, 1);
  queue.enqueue(item(queue, Cmd.COMPLETE, 7));
  await assert.rejects(queue.start(), (error: unknown) => {
    assert.ok(error instanceof Error);
    assert.match(error.message, /pre failed on purpose/);
    assert.equal((error as { status?: number }).status, Status.DeviceNotConnected);
    return true;
  });
  assert.equal(queue.running, false);
  assert.equal(queue.count(), 1, "the queued item did not run");
  assert.equal(probe.get(P.WORK), 0);
  probe.set(P.PRE_THROWS, 0);
  await queue.start();
  await probe.until(P.WORK, (n) => n === 1);
  assert.deepEqual(probe.log(), [7]);
});

Deno.test("stop lets the running item finish, keeps queued items, runs post with an aborted signal", async () => {
  await using s = await scripted();
  const { queue, probe } = s;
  await queue.start();
  const running = queue.enqueueAndWait(item(queue, Cmd.BLOCK_ASYNC, 1));
  await probe.until(P.IN_GATE, (v) => v === 1);
  const queued = [2, 3].map((id) => queue.enqueueAndWait(item(queue, Cmd.COMPLETE, id)));
  const stopping = queue.stop();
  assert.equal(await settled(stopping), false, "stop waits for the item in progress");
  assert.equal(probe.get(P.POST), 0, "post waits for the item in progress");
  probe.openGate();
  await within(stopping);
  assert.equal(await running, Status.Success);
  assert.equal(probe.get(P.POST), 1);
  assert.equal(probe.get(P.POST_SAW_ABORT), 1, "ctx.signal is aborted by the time post runs");
  assert.equal(queue.count(), 2, "queued items stay queued");
  assert.deepEqual(probe.log(), [1]);
  assert.equal(queue.running, false);
  consistent(queue, 4);
  await queue.start();
  assert.equal(probe.get(P.PRE_SAW_ABORT), 0, "each start gives a fresh signal");
  assert.deepEqual(await within(Promise.all(queued)), [0, 0]);
  assert.deepEqual(probe.log(), [1, 2, 3]);
});

Deno.test("stop does not wait for the whole drain (unlike DMF)", async () => {
  await using s = await scripted({ bufferCount: 16, bufferSize: 16 });
  const { queue, probe } = s;
  await queue.start();
  queue.enqueue(item(queue, Cmd.BLOCK_ASYNC, 0));
  await probe.until(P.IN_GATE, (v) => v === 1);
  for (let id = 1; id < 16; id++) queue.enqueue(item(queue, Cmd.COMPLETE, id));
  const stopping = queue.stop();
  probe.openGate();
  await within(stopping);
  assert.equal(probe.get(P.WORK), 1, "only the item in progress ran");
  assert.equal(queue.count(), 15);
});

Deno.test("stop on a stopped queue resolves without running post again; pre and post pair", async () => {
  await using s = await scripted();
  const { queue, probe } = s;
  await queue.stop();
  assert.equal(probe.get(P.POST), 0);
  for (let round = 1; round <= 3; round++) {
    await queue.start();
    assert.equal(await queue.enqueueAndWait(item(queue, Cmd.COMPLETE, round)), Status.Success);
    await queue.stop();
    await queue.stop();
    assert.equal(probe.get(P.PRE), round);
    assert.equal(probe.get(P.POST), round);
  }
  assert.deepEqual(probe.log(), [1, 2, 3]);
});

Deno.test("start and stop called without awaiting run in order", async () => {
  await using s = await scripted();
  const { queue, probe } = s;
  const calls = [queue.start(), queue.stop(), queue.start(), queue.stop()];
  await within(Promise.all(calls));
  assert.equal(probe.get(P.PRE), 2);
  assert.equal(probe.get(P.POST), 2);
});

Deno.test("close cancels queued and pended waiters, reclaims held buffers, and pairs post", async () => {
  const s = await scripted();
  const { queue, probe } = s;
  await queue.start();
  const pended = queue.enqueueAndWait(item(queue, Cmd.PEND_OWNER, 1));
  await probe.until(P.WORK, (n) => n === 1);
  await queue.stop();
  const queued = queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 2));
  const held = [queue.fetch()!, queue.fetch()!];
  held[0].data.fill(0xff);
  const acquiring = queue.acquire();
  assert.equal(await settled(acquiring), false, "acquire waits: the last buffer is taken");
  const stats = await within(queue.close());
  assert.equal(await pended, Status.Cancelled);
  assert.equal(await queued, Status.Cancelled);
  await assert.rejects(acquiring, (error: unknown) => (error as QueueError).code === "Closed");
  assert.deepEqual(
    { ...stats, completed: 0 },
    statsOf({ free: 4, cancelled: 2 }),
  );
  assert.equal(probe.get(P.POST), 1, "post ran once, at stop, not again at close");
  assert.equal(
    probe.get(P.CLEANUP),
    4,
    "reuseCleanup ran for the pended, queued and two held buffers",
  );
});

Deno.test("close on a running queue runs post; afterwards every method throws Closed", async () => {
  const s = await scripted();
  const { queue, probe } = s;
  await queue.start();
  const buffer = queue.fetch()!;
  await queue.close();
  assert.equal(probe.get(P.POST), 1);
  const closed = (error: unknown) => error instanceof QueueError && error.code === "Closed";
  for (
    const call of [
      () => queue.fetch(),
      () => queue.enqueue(buffer),
      () => queue.enqueueAtHead(buffer),
      () => queue.reuse(buffer),
      () => queue.flush(),
      () => queue.count(),
      () => queue.stats(),
      () => queue.workCompleted(buffer, 0),
      () => queue.share(),
    ]
  ) assert.throws(call, closed);
  for (
    const call of [
      () => queue.start(),
      () => queue.stop(),
      () => queue.acquire(),
      () => queue.enqueueAndWait(buffer),
      () => queue.enqueueAtHeadAndWait(buffer),
    ]
  ) await assert.rejects(call(), closed);
  assert.deepEqual(await queue.close(), await queue.close(), "close is idempotent");
});

Deno.test("close waits for a pending start, and await using closes", async () => {
  let queueRef;
  {
    await using s = await scripted();
    queueRef = s.queue;
    void s.queue.start();
  }
  assert.throws(
    () => queueRef.count(),
    (error: unknown) => (error as QueueError).code === "Closed",
  );
});

Deno.test("close reports a post that throws and still closes", async () => {
  const s = await scripted();
  await s.queue.start();
  s.probe.set(P.POST_THROWS, 1);
  const stats = await within(s.queue.close());
  assert.equal(stats.free, 4);
  await s.reported(1);
  assert.ok(s.errors.some(({ error }) => /post failed on purpose/.test(error.message)));
});

Deno.test("stop rejects with what post threw, and the loop is stopped", async () => {
  await using s = await scripted();
  await s.queue.start();
  s.probe.set(P.POST_THROWS, 1);
  await assert.rejects(s.queue.stop(), /post failed on purpose/);
  assert.equal(s.queue.running, false);
  s.probe.set(P.POST_THROWS, 0);
  await s.queue.start();
});
