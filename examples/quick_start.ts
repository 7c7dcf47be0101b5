/**
 * A queue, a handler and a producer, no USB needed: `deno run --allow-read examples/quick_start.ts`
 *
 * @module
 */

import assert from "node:assert/strict";
import { Status, statusName, ThreadedBufferQueue } from "../mod.ts";

await using queue = await ThreadedBufferQueue.create({
  bufferQueue: { bufferCount: 4, bufferSize: 64, contextSize: 0 },
  handlers: new URL("./quick_start_handlers.ts", import.meta.url), // runs in the queue's Worker
});
await queue.start();

for (const word of ["hello", "from", "tbq"]) {
  const buffer = await queue.acquire(); // a free buffer from the pool
  buffer.size = new TextEncoder().encodeInto(word, buffer.data).written;
  // The handler's status comes back; with `keep`, so does the buffer, with what the handler left.
  const status = await queue.enqueueAndWait(buffer, { keep: true });
  const reply = new TextDecoder().decode(buffer.data.slice(0, buffer.size));
  console.log(`${word} → ${reply} (${statusName(status)})`);
  assert.equal(status, Status.Success);
  assert.equal(reply, word.toUpperCase());
  queue.reuse(buffer); // back to the pool
}

const stats = await queue.close(); // stops the work loop and ends its Worker
console.log(`completed ${stats.completed}, free ${stats.free} of 4`);
assert.equal(stats.completed, 3);
assert.equal(stats.free, 4);
