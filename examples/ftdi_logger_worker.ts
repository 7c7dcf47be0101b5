/**
 * A producer Worker of the FTDI logger: receives `{ share, job, control }`, attaches to the
 * queue, posts `{ ready: true }`, waits until the GO word (Int32 0 of `control`) is set, sends its
 * lines with `produceLines`, then posts `{ report }` (or `{ error }`) and exits.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { type QueueShare, ThreadedBufferQueue } from "../mod.ts";
import { type LineJob, produceLines } from "./ftdi_lines.ts";

/** What the logger posts to this Worker. */
interface Start {
  readonly share: QueueShare;
  readonly job: LineJob;
  readonly control: SharedArrayBuffer;
}

self.onmessage = async (event: MessageEvent<Start>) => {
  const { share, job, control } = event.data;
  try {
    const producer = ThreadedBufferQueue.attach(share);
    const go = new Int32Array(control);
    self.postMessage({ ready: true });
    const wait = Atomics.waitAsync(go, 0, 0, job.timeoutMs);
    if (wait.async && await wait.value === "timed-out") throw new Error("GO never came");
    self.postMessage({ report: await produceLines(producer, job) });
  } catch (error) {
    self.postMessage({ error: String((error as Error)?.stack ?? error) });
  }
  self.close();
};
