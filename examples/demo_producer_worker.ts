/**
 * A demo producer Worker: receives `{ share, job }`, attaches to the queue and posts `{ ready }`;
 * once the GO control word is set it sends records until the STOP word is set, then posts its
 * `ProducerReport` (or `{ error }`) and exits.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { type QueueShare, ThreadedBufferQueue } from "../mod.ts";
import { type ProducerJob, RecordProducer } from "./demo_producer.ts";

self.onmessage = async (event: MessageEvent<{ share: QueueShare; job: ProducerJob }>) => {
  const { share, job } = event.data;
  try {
    const producer = new RecordProducer(ThreadedBufferQueue.attach(share), job.producer, job.mode);
    const control = new Int32Array(job.control);
    self.postMessage({ ready: true });
    const go = Atomics.waitAsync(control, 1, 0);
    if (go.async) await go.value;
    await producer.run(() => Atomics.load(control, 0) !== 0);
    const report = producer.report();
    self.postMessage({ report }, [report.latenciesUs.buffer]);
  } catch (error) {
    self.postMessage({ error: String((error as Error)?.stack ?? error) });
  }
  self.close();
};
