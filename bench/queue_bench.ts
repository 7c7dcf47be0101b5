/**
 * tbq against the obvious alternative, a Worker fed by postMessage, measured side by side in one
 * run (`deno task bench`): deno bench prints each tbq case as a ratio to its baseline.
 */
import { ThreadedBufferQueue } from "../mod.ts";

const RECORD = 512;
const BATCH = 1000;
const payload = new Uint8Array(RECORD).fill(7);

const queue = await ThreadedBufferQueue.create({
  bufferQueue: { bufferCount: 64, bufferSize: RECORD },
  handlers: new URL("../tests/fixtures/echo_handlers.ts", import.meta.url),
});
await queue.start();

const worker = new Worker(new URL("./echo_worker.ts", import.meta.url), { type: "module" });
let answered: (() => void) | undefined;
let outstanding = 0;
worker.onmessage = () => {
  if (--outstanding === 0) answered?.();
};
function postAndWait(count: number): Promise<void> {
  const { promise, resolve } = Promise.withResolvers<void>();
  answered = resolve;
  outstanding = count;
  for (let i = 0; i < count; i++) worker.postMessage(payload.slice());
  return promise;
}

Deno.bench({
  name: "postMessage: send a record, await its answer",
  group: "one record, round trip",
  baseline: true,
  async fn() {
    await postAndWait(1); // awaited: deno bench times a promise only when fn is async
  },
});

Deno.bench({
  name: "tbq: fetch, fill, enqueueAndWait",
  group: "one record, round trip",
  async fn() {
    const buffer = queue.fetch()!;
    buffer.data.set(payload);
    await queue.enqueueAndWait(buffer);
  },
});

Deno.bench({
  name: `postMessage: ${BATCH} records, await all answers`,
  group: `${BATCH} records, pipelined`,
  baseline: true,
  async fn() {
    await postAndWait(BATCH);
  },
});

Deno.bench({
  name: `tbq: ${BATCH} × (acquire, fill, enqueue), await the last`,
  group: `${BATCH} records, pipelined`,
  async fn() {
    for (let i = 1; i < BATCH; i++) {
      const buffer = queue.fetch() ?? await queue.acquire();
      buffer.data.set(payload);
      queue.enqueue(buffer);
    }
    const last = queue.fetch() ?? await queue.acquire();
    last.data.set(payload);
    await queue.enqueueAndWait(last);
  },
});

globalThis.addEventListener("unload", () => {
  worker.terminate();
});
