/**
 * Held-back wakes (see `Pool.holdWakes`): the loop may send a sleeping waiter's wake later than
 * its item's end, to wake several together, but only behind about a millisecond of queued work.
 * Behind a slow device, each waiter hears as its own item ends, not when the queue has drained
 * (or, as before, at the loop's next yield to its event loop, every 20 ms: hence items of 8 ms).
 */
import assert from "node:assert/strict";
import { ThreadedBufferQueue } from "../mod.ts";

const ITEM_MS = 8;

Deno.test("behind a slow device each waiter hears as its item ends, not in a burst later", async () => {
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 8, bufferSize: 16 },
    handlers: new URL("./fixtures/sleep_handlers.ts", import.meta.url),
    handlerOptions: { ms: ITEM_MS },
  });
  await queue.start();
  // Warm up: the loop learns its step time from items that run back to back.
  for (let i = 0; i < 3; i++) queue.enqueue(queue.fetch()!);
  await queue.onIdle();
  const heard: number[] = [];
  const waits = Array.from(
    { length: 6 },
    () => queue.enqueueAndWait(queue.fetch()!).then(() => heard.push(performance.now())),
  );
  await Promise.all(waits);
  const gaps = heard.slice(1).map((t, i) => Math.round(t - heard[i]));
  // Held behind the queue, the first waiters would hear together (gaps near 0).
  for (const gap of gaps) assert.ok(gap >= ITEM_MS / 2, `gaps between waiters (ms): ${gaps}`);
});
