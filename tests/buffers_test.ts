import assert from "node:assert/strict";
import { QueueError, Status, ThreadedBufferQueue, type WorkBuffer } from "../mod.ts";
import { Cmd, P } from "./fixtures/probe.ts";
import { consistent, item, returned, scripted, settled, within } from "./helpers.ts";

const code = (expected: string) => (error: unknown) => {
  assert.ok(error instanceof QueueError, `a QueueError, got ${error}`);
  assert.equal(error.code, expected);
  return true;
};

Deno.test("fetch returns zero-filled buffers of bufferSize, then null when none is free", async () => {
  await using s = await scripted({ bufferCount: 2, bufferSize: 32, contextSize: 8 });
  const { queue } = s;
  await queue.start();
  const first = queue.fetch()!;
  first.data.fill(0xaa);
  first.context.fill(0xbb);
  first.size = 5;
  first.data[0] = Cmd.COMPLETE;
  await queue.enqueueAndWait(first);
  const fetched = [queue.fetch()!, queue.fetch()!];
  assert.equal(queue.fetch(), null);
  for (const buffer of fetched) {
    assert.equal(buffer.data.length, 32);
    assert.equal(buffer.context.length, 8);
    assert.equal(buffer.size, 32);
    assert.ok(buffer.data.every((byte) => byte === 0), "data zeroed");
    assert.ok(buffer.context.every((byte) => byte === 0), "context zeroed");
  }
  consistent(queue, 2);
});

Deno.test("a buffer's context may be empty", async () => {
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 1, bufferSize: 4 },
    handlers: new URL("./fixtures/minimal_handlers.ts", import.meta.url),
  });
  assert.equal(queue.fetch()!.context.length, 0);
});

Deno.test("size is settable from 0 to bufferSize; anything else is a RangeError that changes nothing", async () => {
  await using s = await scripted({ bufferCount: 1, bufferSize: 16 });
  const buffer = s.queue.fetch()!;
  buffer.size = 0;
  assert.equal(buffer.size, 0);
  buffer.size = 16;
  for (const bad of [-1, 17, 1.5, Number.NaN, Infinity]) {
    assert.throws(() => buffer.size = bad, RangeError);
    assert.equal(buffer.size, 16);
  }
  s.queue.enqueue(buffer);
  assert.throws(() => buffer.size = 3, code("BufferState"));
  assert.equal(buffer.size, 16);
});

Deno.test("enqueue is FIFO and enqueueAtHead is LIFO", async () => {
  await using s = await scripted({ bufferCount: 6, bufferSize: 16 });
  const { queue, probe } = s;
  queue.enqueue(item(queue, Cmd.COMPLETE, 1));
  queue.enqueue(item(queue, Cmd.COMPLETE, 2));
  queue.enqueueAtHead(item(queue, Cmd.COMPLETE, 3));
  queue.enqueue(item(queue, Cmd.COMPLETE, 4));
  queue.enqueueAtHead(item(queue, Cmd.COMPLETE, 5));
  const last = queue.enqueueAtHeadAndWait(item(queue, Cmd.COMPLETE, 6));
  assert.equal(queue.count(), 6);
  await queue.start();
  await within(last);
  await probe.until(P.WORK, (n) => n === 6);
  assert.deepEqual(probe.log(), [6, 5, 3, 1, 2, 4]);
});

Deno.test("acquire waits for a free buffer and rejects with signal.reason on abort", async () => {
  await using s = await scripted({ bufferCount: 1, bufferSize: 16 });
  const { queue } = s;
  const only = queue.fetch()!;
  const controller = new AbortController();
  const aborted = queue.acquire({ signal: controller.signal });
  const waiting = queue.acquire();
  assert.equal(await settled(waiting), false);
  controller.abort(new Error("gave up"));
  await assert.rejects(aborted, /gave up/);
  queue.reuse(only);
  const next = await within(waiting);
  assert.equal(next.index, only.index);
  await assert.rejects(
    queue.acquire({ signal: AbortSignal.abort("already") }),
    (r) => r === "already",
  );
  consistent(queue, 1);
});

Deno.test("reuse returns a fetched buffer to the pool without work", async () => {
  await using s = await scripted({ bufferCount: 1, bufferSize: 16 });
  const { queue, probe } = s;
  await queue.start();
  queue.reuse(queue.fetch()!);
  await probe.until(P.CLEANUP, (n) => n === 1);
  assert.ok(await within(queue.acquire()), "fetchable again once reuseCleanup ran");
  assert.equal(probe.get(P.WORK), 0);
  assert.equal(queue.stats().completed, 0);
});

Deno.test("flush cancels queued items, resolves their waiters and recycles; running and pended untouched", async () => {
  await using s = await scripted({ bufferCount: 6, bufferSize: 16 });
  const { queue, probe } = s;
  await queue.start();
  const pended = item(queue, Cmd.PEND_OWNER, 1);
  const pendedWait = queue.enqueueAndWait(pended);
  const running = queue.enqueueAndWait(item(queue, Cmd.BLOCK_ASYNC, 2));
  await probe.until(P.IN_GATE, (v) => v === 1);
  const queued = [3, 4, 5].map((id) => queue.enqueueAndWait(item(queue, Cmd.COMPLETE, id)));
  assert.equal(queue.flush(), 3);
  assert.deepEqual(await within(Promise.all(queued)), [
    Status.Cancelled,
    Status.Cancelled,
    Status.Cancelled,
  ]);
  assert.equal(queue.count(), 0);
  let stats = consistent(queue, 6);
  assert.equal(stats.running, 1);
  assert.equal(stats.pending, 1);
  assert.equal(stats.cancelled, 3);
  probe.openGate();
  assert.equal(await running, Status.Success);
  queue.workCompleted(pended, Status.IoTimeout);
  assert.equal(await pendedWait, Status.IoTimeout);
  await within(queue.onIdle());
  assert.equal(probe.get(P.CLEANUP), 5);
  stats = consistent(queue, 6);
  assert.deepEqual([stats.free, stats.completed, stats.failed, stats.cancelled], [6, 1, 1, 3]);
  assert.deepEqual(probe.log(), [1, 2], "flushed items never ran");
});

Deno.test("owner-side pool methods work while the handler blocks the worker thread", async () => {
  await using s = await scripted({ bufferCount: 4, bufferSize: 16 });
  const { queue, probe } = s;
  await queue.start();
  const pended = item(queue, Cmd.PEND_OWNER, 1);
  const pendedWait = queue.enqueueAndWait(pended);
  await probe.until(P.WORK, (n) => n === 1);
  const blocked = queue.enqueueAndWait(item(queue, Cmd.BLOCK_SYNC, 2));
  await probe.until(P.IN_GATE, (v) => v === 1);
  // The worker thread is stuck in Atomics.wait now; all of this is shared memory only.
  const extra = item(queue, Cmd.COMPLETE, 3);
  queue.enqueue(extra);
  assert.equal(queue.count(), 1);
  assert.equal(queue.flush(), 1);
  queue.workCompleted(pended, Status.Success);
  assert.equal(await within(pendedWait), Status.Success, "a pended item completes while blocked");
  const held = queue.fetch()!;
  queue.reuse(held);
  consistent(queue, 4);
  probe.openGate();
  assert.equal(await within(blocked), Status.Success);
});

Deno.test("look-aside grows the pool one buffer per fetch when none is free, up to maxBufferCount", async () => {
  await using s = await scripted({
    bufferCount: 1,
    bufferSize: 16,
    enableLookAside: true,
    maxBufferCount: 3,
  });
  const { queue } = s;
  assert.deepEqual(consistent(queue, 1).free, 1);
  const buffers = [queue.fetch()!, queue.fetch()!, queue.fetch()!];
  assert.deepEqual(buffers.map((b) => b.index).sort(), [0, 1, 2]);
  assert.equal(queue.fetch(), null, "no growth past maxBufferCount");
  assert.equal(consistent(queue, 3).held, 3);
  for (const buffer of buffers) queue.reuse(buffer);
  await queue.start();
  assert.equal(await queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 1)), Status.Success);
  assert.equal(consistent(queue, 3).free, 3);
});

Deno.test("misuse throws a typed error, changes nothing, and leaves the queue usable", async () => {
  await using s = await scripted({ bufferCount: 3, bufferSize: 16 });
  await using other = await scripted({ bufferCount: 1, bufferSize: 16 });
  const { queue, probe } = s;
  const queued = item(queue, Cmd.COMPLETE, 1);
  queue.enqueue(queued);
  const reused = queue.fetch()!;
  queue.reuse(reused);
  const foreign = other.queue.fetch()!;
  // The reused buffer's reuseCleanup runs in the Worker: let it finish, so nothing moves below.
  await returned(queue);
  const before = queue.stats();
  const cases: [string, () => unknown, string][] = [
    [
      "a foreign Uint8Array",
      () => queue.enqueue(new Uint8Array(16) as unknown as WorkBuffer),
      "ForeignBuffer",
    ],
    [
      "a plain object",
      () => queue.enqueue({ data: new Uint8Array(16) } as unknown as WorkBuffer),
      "ForeignBuffer",
    ],
    ["a buffer of another queue", () => queue.enqueue(foreign), "ForeignBuffer"],
    ["reuse of another queue's buffer", () => queue.reuse(foreign), "ForeignBuffer"],
    ["a double enqueue", () => queue.enqueue(queued), "BufferState"],
    ["a double enqueueAtHead", () => queue.enqueueAtHead(queued), "BufferState"],
    ["reuse of a queued buffer", () => queue.reuse(queued), "BufferState"],
    ["enqueue after reuse", () => queue.enqueue(reused), "StaleBuffer"],
    ["reuse after reuse", () => queue.reuse(reused), "StaleBuffer"],
    ["workCompleted on a queued item", () => queue.workCompleted(queued, 0), "BufferState"],
    ["workCompleted on a returned buffer", () => queue.workCompleted(reused, 0), "StaleBuffer"],
    [
      "workCompleted on a foreign value",
      () => queue.workCompleted(null as unknown as WorkBuffer, 0),
      "ForeignBuffer",
    ],
  ];
  for (const [what, call, expected] of cases) {
    assert.throws(call, code(expected), what);
    assert.deepEqual(queue.stats(), before, `${what} changed nothing`);
  }
  const held = queue.fetch()!;
  assert.throws(() => queue.workCompleted(held, 0), code("BufferState"), "held, not pending");
  await assert.rejects(queue.enqueueAndWait(queued), code("BufferState"));
  await assert.rejects(queue.enqueueAndWait(reused), code("StaleBuffer"));
  await assert.rejects(
    queue.enqueueAndWait(new Uint8Array(4) as unknown as WorkBuffer),
    code("ForeignBuffer"),
  );
  queue.reuse(held);
  await returned(queue);
  assert.deepEqual(queue.stats(), before);
  await queue.start();
  await probe.until(P.WORK, (n) => n === 1);
  assert.equal(await queue.enqueueAndWait(item(queue, Cmd.COMPLETE, 2)), Status.Success);
  assert.deepEqual(probe.log(), [1, 2]);
  consistent(queue, 3);
  other.queue.reuse(foreign);
});

Deno.test("a stale handle is caught after its buffer was fetched again", async () => {
  await using s = await scripted({ bufferCount: 1, bufferSize: 16 });
  const { queue } = s;
  await queue.start();
  const first = item(queue, Cmd.COMPLETE, 1);
  await queue.enqueueAndWait(first);
  const second = queue.fetch()!;
  assert.equal(second.index, first.index, "the same slot, a new round");
  assert.throws(() => queue.enqueue(first), code("StaleBuffer"));
  assert.throws(() => first.size = 1, code("StaleBuffer"));
  assert.equal(queue.stats().held, 1);
  queue.reuse(second);
});

Deno.test("share/attach gives a producer handle; handles reject each other's buffers", async () => {
  await using s = await scripted({ bufferCount: 2, bufferSize: 16 });
  const { queue, probe } = s;
  await queue.start();
  const share = structuredClone(queue.share());
  const producer = ThreadedBufferQueue.attach(share);
  const buffer = producer.fetch()!;
  assert.throws(() => queue.enqueue(buffer), code("ForeignBuffer"));
  buffer.size = 12;
  new DataView(buffer.data.buffer, buffer.data.byteOffset).setUint32(4, 9, true);
  assert.equal(await producer.enqueueAndWait(buffer), Status.Success);
  assert.deepEqual(probe.log(), [9]);
  assert.equal(producer.count(), 0);
  assert.deepEqual(producer.stats(), queue.stats());
  assert.throws(() => ThreadedBufferQueue.attach({} as never), code("ForeignBuffer"));
});

Deno.test("a size set on a handle reaches the work with the enqueue; reuse forgets it", async () => {
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 1, bufferSize: 64 },
    handlers: new URL("./fixtures/size_handlers.ts", import.meta.url),
  });
  await queue.start();
  const buffer = await queue.acquire();
  buffer.size = 5;
  buffer.size = 7; // the last one counts
  assert.equal(buffer.size, 7);
  assert.equal(await queue.enqueueAndWait(buffer, { keep: true }), 7);
  assert.equal(buffer.size, 7, "kept: the size the work saw");
  buffer.size = 9;
  queue.reuse(buffer);
  assert.throws(() => (buffer.size = 1), { name: "QueueError" }); // stale handle
  const again = await queue.acquire();
  assert.equal(again.size, 64, "a reused buffer starts at bufferSize");
  assert.throws(() => (again.size = 65), RangeError);
  queue.enqueue(again);
  await queue.onIdle();
});
