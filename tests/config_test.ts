import assert from "node:assert/strict";
import { QueueError, Status, ThreadedBufferQueue } from "../mod.ts";
import { Cmd, P } from "./fixtures/probe.ts";
import { item, scripted } from "./helpers.ts";

const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url);

async function rejectsWith(code: string, promise: Promise<unknown>, message?: RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof QueueError, `a QueueError, got ${error}`);
    assert.equal(error.code, code);
    if (message) assert.match(error.message, message);
    return true;
  });
}

Deno.test("create rejects sizes that are not non-negative integers", async () => {
  const bad = [
    { bufferCount: -1, bufferSize: 8 },
    { bufferCount: 1.5, bufferSize: 8 },
    { bufferCount: 2, bufferSize: -8 },
    { bufferCount: 2, bufferSize: Number.NaN },
    { bufferCount: 2, bufferSize: 8, contextSize: -1 },
    { bufferCount: "2" as unknown as number, bufferSize: 8 },
    { bufferCount: 2, bufferSize: 8, enableLookAside: true, maxBufferCount: 1 },
  ];
  for (const bufferQueue of bad) {
    await rejectsWith(
      "InvalidConfig",
      ThreadedBufferQueue.create({ bufferQueue, handlers: fixture("minimal_handlers.ts") }),
    );
  }
});

Deno.test("create rejects bufferCount 0 without look-aside, and accepts it with", async () => {
  await rejectsWith(
    "InvalidConfig",
    ThreadedBufferQueue.create({
      bufferQueue: { bufferCount: 0, bufferSize: 8 },
      handlers: fixture("minimal_handlers.ts"),
    }),
    /enableLookAside/,
  );
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 0, bufferSize: 8, enableLookAside: true, maxBufferCount: 2 },
    handlers: fixture("minimal_handlers.ts"),
  });
  assert.equal(queue.stats().free, 0);
});

Deno.test("create rejects a handler module that fails to load, or has no work", async () => {
  await rejectsWith(
    "HandlerLoad",
    ThreadedBufferQueue.create({
      bufferQueue: { bufferCount: 1, bufferSize: 8 },
      handlers: fixture("does_not_exist.ts"),
    }),
    /does_not_exist\.ts/,
  );
  await rejectsWith(
    "HandlerLoad",
    ThreadedBufferQueue.create({
      bufferQueue: { bufferCount: 1, bufferSize: 8 },
      handlers: fixture("broken_handlers.ts"),
    }),
    /broken on purpose/,
  );
  await rejectsWith(
    "HandlerLoad",
    ThreadedBufferQueue.create({
      bufferQueue: { bufferCount: 1, bufferSize: 8 },
      handlers: fixture("no_work_handlers.ts"),
    }),
    /no work handler/,
  );
});

Deno.test("create takes a specifier string, relative to the current directory, with a query", async () => {
  const relative = new URL(".", import.meta.url).pathname.replace(Deno.cwd() + "/", "./");
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 1, bufferSize: 8 },
    handlers: `${relative}fixtures/echo_handlers.ts?variant=relative`,
  });
  await queue.start();
  const buffer = queue.fetch()!;
  buffer.data[0] = 42;
  assert.equal(await queue.enqueueAndWait(buffer), 42);
  await using absolute = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 1, bufferSize: 8 },
    handlers: fixture("echo_handlers.ts?variant=absolute").href,
  });
  assert.equal(absolute.running, false);
});

Deno.test("create does not start the loop: items wait for start()", async () => {
  await using s = await scripted();
  const { queue, probe } = s;
  queue.enqueue(item(queue, Cmd.COMPLETE, 1));
  assert.equal(queue.count(), 1);
  assert.equal(probe.get(P.PRE), 0);
  await queue.start();
  await probe.until(P.WORK, (n) => n === 1);
  assert.equal(probe.get(P.PRE), 1);
});

Deno.test("handlerOptions reach ctx.options by structured clone", async () => {
  // The scripted handler reads its probe SharedArrayBuffer from ctx.options: a status proves it.
  await using s = await scripted();
  await s.queue.start();
  assert.equal(
    await s.queue.enqueueAndWait(item(s.queue, Cmd.COMPLETE, 1, Status.IoTimeout)),
    Status.IoTimeout,
  );
  await rejectsWith(
    "InvalidConfig",
    ThreadedBufferQueue.create({
      bufferQueue: { bufferCount: 1, bufferSize: 8 },
      handlers: fixture("minimal_handlers.ts"),
      handlerOptions: { notCloneable: () => {} },
    }),
  );
});
