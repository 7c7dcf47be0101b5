import assert from "node:assert/strict";
import { QueueError, Status, ThreadedBufferQueue } from "../mod.ts";
import { Cmd, P } from "./fixtures/probe.ts";
import { consistent, item, scripted, settled, within } from "./helpers.ts";

Deno.test("work's status reaches the waiter; an unsigned literal arrives signed", async () => {
  await using s = await scripted();
  const { queue } = s;
  await queue.start();
  assert.equal(await queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 1, 0)), Status.Success);
  assert.equal(
    await queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 2, 0xC00000B5)),
    Status.IoTimeout,
  );
  assert.equal(Status.IoTimeout, 0xC00000B5 | 0);
  assert.equal(
    await queue.enqueueAndWait(item(queue, Cmd.ASYNC_COMPLETE, 3, 0x40000001)),
    0x40000001,
  );
  const stats = consistent(queue, 4);
  assert.deepEqual([stats.completed, stats.failed], [2, 1]);
});

Deno.test("a handler that throws, rejects or returns an invalid disposition fails only its item", async () => {
  await using s = await scripted();
  const { queue, errors, reported } = s;
  await queue.start();
  const statuses = await within(Promise.all([
    queue.enqueueAndWait(item(queue, Cmd.THROW, 1)),
    queue.enqueueAndWait(item(queue, Cmd.THROW, 2, Status.DeviceNotConnected)),
    queue.enqueueAndWait(item(queue, Cmd.REJECT, 3)),
    queue.enqueueAndWait(item(queue, Cmd.INVALID, 4)),
  ]));
  assert.deepEqual(statuses, [
    Status.Unsuccessful,
    Status.DeviceNotConnected,
    Status.Unsuccessful,
    Status.Unsuccessful,
  ]);
  assert.equal(
    await queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 5)),
    Status.Success,
    "the loop goes on",
  );
  await reported(4);
  assert.deepEqual(errors.map(({ phase }) => phase), ["work", "work", "work", "work"]);
  assert.match(errors[0].error.message, /thrown/);
  assert.match(errors[2].error.message, /rejected/);
  assert.ok(errors[3].error instanceof QueueError);
  assert.equal((errors[3].error as QueueError).code, "InvalidDisposition");
  assert.match(errors[3].error.message, /invalid disposition/);
  const stats = consistent(queue, 4);
  assert.deepEqual([stats.failed, stats.completed], [4, 1]);
});

Deno.test("WorkPending completed by ctx.workCompleted in the worker: no stall, status delivered", async () => {
  await using s = await scripted();
  const { queue, probe } = s;
  await queue.start();
  // Pend one item and enqueue nothing after it: DMF would stall here.
  assert.equal(
    await within(queue.enqueueAndWait(item(queue, Cmd.PEND_WORKER, 1, Status.IoTimeout))),
    Status.IoTimeout,
  );
  // The loop goes on with the next item at once, while earlier ones are still pending.
  const pended = [2, 3].map((id) => queue.enqueueAndWait(item(queue, Cmd.PEND_WORKER, id, id)));
  assert.equal(await queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 4)), Status.Success);
  assert.deepEqual(await within(Promise.all(pended)), [2, 3]);
  await probe.until(P.PENDED_DONE, (n) => n === 3);
  await probe.until(P.CLEANUP, (n) => n === 4);
  consistent(queue, 4);
});

Deno.test("WorkPending completed from the owner thread with workCompleted", async () => {
  await using s = await scripted();
  const { queue } = s;
  await queue.start();
  const buffer = item(queue, Cmd.PEND_OWNER, 1);
  const waiting = queue.enqueueAndWait(buffer);
  // Items run in order, so once the second is done the first has been pended.
  assert.equal(await queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 2)), Status.Success);
  assert.equal(queue.stats().pending, 1);
  assert.equal(await settled(waiting), false, "still pending");
  queue.workCompleted(buffer, Status.DeviceNotConnected);
  assert.equal(await within(waiting), Status.DeviceNotConnected);
  assert.throws(
    () => queue.workCompleted(buffer, 0),
    (e: unknown) => (e as QueueError).code === "BufferState",
    "its status is final",
  );
  await queue.onIdle();
  consistent(queue, 4);
});

Deno.test("abort of enqueueAndWait removes an item not yet started; it never runs", async () => {
  await using s = await scripted();
  const { queue, probe } = s;
  const controller = new AbortController();
  const aborted = queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 1), { signal: controller.signal });
  const kept = queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 2));
  controller.abort(new Error("no longer needed"));
  await assert.rejects(aborted, /no longer needed/);
  assert.equal(queue.count(), 1);
  await queue.start();
  assert.equal(await kept, Status.Success);
  assert.deepEqual(probe.log(), [2]);
  await probe.until(P.CLEANUP, (n) => n === 2, 5000);
  const stats = consistent(queue, 4);
  assert.deepEqual([stats.cancelled, stats.completed], [1, 1]);
});

Deno.test("an already-aborted signal rejects at once and recycles the buffer", async () => {
  await using s = await scripted();
  const { queue, probe } = s;
  await queue.start();
  await assert.rejects(
    queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 1), { signal: AbortSignal.abort("stop") }),
    (reason) => reason === "stop",
  );
  assert.equal(queue.count(), 0);
  await probe.until(P.CLEANUP, (n) => n === 1);
  assert.equal(probe.get(P.WORK), 0);
  assert.equal(consistent(queue, 4).cancelled, 1);
});

Deno.test("abort of a running item rejects the waiter; the item finishes and its buffer returns", async () => {
  await using s = await scripted();
  const { queue, probe } = s;
  await queue.start();
  const controller = new AbortController();
  const waiting = queue.enqueueAndWait(item(queue, Cmd.BLOCK_ASYNC, 1), {
    signal: controller.signal,
  });
  await probe.until(P.IN_GATE, (v) => v === 1);
  controller.abort(new Error("timeout"));
  await assert.rejects(waiting, /timeout/);
  assert.equal(queue.stats().running, 1);
  probe.openGate();
  await probe.until(P.CLEANUP, (n) => n === 1);
  const buffers = [await within(queue.acquire()), await within(queue.acquire())];
  assert.equal(consistent(queue, 4).held, 2);
  for (const buffer of buffers) queue.reuse(buffer);
});

Deno.test("abort with AbortSignal.timeout while the loop is stopped", async () => {
  await using s = await scripted();
  const { queue } = s;
  await assert.rejects(
    queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 1), { signal: AbortSignal.timeout(20) }),
    (reason: unknown) => reason instanceof DOMException && reason.name === "TimeoutError",
  );
  assert.equal(queue.count(), 0);
});

Deno.test("reuseCleanup runs exactly once for every buffer returning to the pool", async () => {
  const s = await scripted({ bufferCount: 8, bufferSize: 16 });
  const { queue, probe } = s;
  await queue.start();
  await queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 1)); // work complete
  await queue.enqueueAndWait(item(queue, Cmd.PEND_WORKER, 2)); // completed pending
  queue.reuse(queue.fetch()!); // reuse
  await assert.rejects(
    queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 3), { signal: AbortSignal.abort() }),
  ); // abort
  await queue.stop();
  queue.enqueue(item(queue, Cmd.COMPLETE, 4));
  queue.flush(); // flush
  queue.enqueue(item(queue, Cmd.COMPLETE, 5)); // closed while queued
  queue.fetch(); // closed while held
  const stats = await queue.close();
  assert.equal(probe.get(P.CLEANUP), 7);
  assert.equal(stats.free, 8);
  assert.deepEqual([stats.completed, stats.cancelled, stats.failed], [2, 3, 0]);
});

Deno.test("a handler module with work only (no pre, post, reuseCleanup) runs", async () => {
  const { ThreadedBufferQueue } = await import("../mod.ts");
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 2, bufferSize: 8 },
    handlers: new URL("./fixtures/minimal_handlers.ts", import.meta.url),
  });
  await queue.start();
  const buffer = queue.fetch()!;
  assert.equal(await queue.enqueueAndWait(buffer), Status.Success);
  assert.ok(queue.fetch(), "with no reuseCleanup, the buffer is free when the waiter resolves");
  await queue.stop();
});

Deno.test("workCompleted while work still runs completes the item only once work returns", async () => {
  await using s = await scripted();
  const { queue, probe } = s;
  await queue.start();
  const buffer = item(queue, Cmd.BLOCK_ASYNC_PEND, 1);
  const waiting = queue.enqueueAndWait(buffer);
  await probe.until(P.IN_GATE, (v) => v === 1);
  queue.workCompleted(buffer, Status.IoTimeout);
  assert.throws(
    () => queue.workCompleted(buffer, Status.Success),
    (e: unknown) => (e as QueueError).code === "BufferState",
    "a second completion is refused",
  );
  assert.equal(queue.stats().running, 1, "the buffer stays with the running handler");
  assert.equal(await settled(waiting), false);
  probe.openGate();
  assert.equal(await within(waiting), Status.IoTimeout);
  consistent(queue, 4);
});

Deno.test("work returning WorkComplete after workCompleted: the first status stands, reported", async () => {
  await using s = await scripted();
  const { queue, probe, errors, reported } = s;
  await queue.start();
  const buffer = item(queue, Cmd.BLOCK_ASYNC, 1, Status.Success);
  const waiting = queue.enqueueAndWait(buffer);
  await probe.until(P.IN_GATE, (v) => v === 1);
  queue.workCompleted(buffer, Status.DeviceNotConnected);
  probe.openGate();
  assert.equal(await within(waiting), Status.DeviceNotConnected);
  await reported(1);
  assert.match(errors[0].error.message, /already completed/);
  assert.equal(consistent(queue, 4).failed, 1);
});

Deno.test("item.capacity is bufferSize: a handler can grow size to it and read a reply in", async () => {
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 2, bufferSize: 100 },
    handlers: new URL("./fixtures/capacity_handlers.ts", import.meta.url),
  });
  await queue.start();
  const buffer = await queue.acquire();
  buffer.size = 3; // a short request
  assert.equal(await queue.enqueueAndWait(buffer, { keep: true }), 100);
  assert.equal(buffer.size, 99);
  assert.ok(buffer.data.every((byte) => byte === 0x5a));
  queue.reuse(buffer);
});

Deno.test("a saturated loop still lets the handler's timers run, and stop() is heard at once", async () => {
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 8, bufferSize: 16 },
    handlers: new URL("./fixtures/busy_timer_handlers.ts", import.meta.url),
  });
  await queue.start();
  const until = performance.now() + 300;
  let last: Promise<number> = Promise.resolve(0);
  while (performance.now() < until) { // keep the queue from running dry
    const buffer = await queue.acquire();
    last = queue.enqueueAndWait(buffer);
  }
  const ticks = await last;
  assert.ok(ticks >= 3, `the interval fired ${ticks} times in 300 ms of back-to-back items`);
  const more = Array.from({ length: 4 }, () => queue.fetch()).filter((b) => b !== null);
  for (const buffer of more) queue.enqueue(buffer);
  const stopping = performance.now();
  await within(queue.stop(), 2000, "stop while items are queued");
  assert.ok(performance.now() - stopping < 1000);
});
