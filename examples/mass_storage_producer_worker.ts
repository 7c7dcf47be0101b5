/**
 * Worker entry of the mass storage writer example: attaches to the queue it is given and answers
 * `{ ready: true }`; on the next message (`"go"`) writes its regions through the queue with
 * `produceRegions`, posts the result back and closes itself. The two steps let the owner start
 * its clock once every producer is loaded.
 *
 * Messages in: a {@linkcode ProducerWorkerJob}, then `"go"`. Out: `{ ready: true }`, then a
 * `ProduceResult`, or `{ error }` (a string) at any point.
 *
 * @module
 */

import { type QueueProducer, type QueueShare, ThreadedBufferQueue } from "../mod.ts";
import { produceRegions, type RegionJob } from "./mass_storage_producer.ts";

/** What the owner posts to this Worker. */
export interface ProducerWorkerJob {
  /** `queue.share()`. */
  readonly share: QueueShare;
  /** The regions this producer writes. */
  readonly jobs: readonly RegionJob[];
  /** Blocks per item. */
  readonly chunkBlocks: number;
  /** Bytes per block. */
  readonly blockSize: number;
  /** Bound on the whole job. */
  readonly timeoutMs: number;
}

const scope = globalThis as unknown as {
  onmessage: ((event: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
};

let attached: { job: ProducerWorkerJob; producer: QueueProducer } | undefined;

scope.onmessage = async (event) => {
  if (attached === undefined) {
    try {
      const job = event.data as ProducerWorkerJob;
      attached = { job, producer: ThreadedBufferQueue.attach(job.share) };
      scope.postMessage({ ready: true });
    } catch (error) {
      scope.postMessage({ error: String((error as Error)?.stack ?? error) });
      scope.close();
    }
    return;
  }
  const { job, producer } = attached;
  try {
    const result = await produceRegions(
      producer,
      job.jobs,
      job.chunkBlocks,
      job.blockSize,
      AbortSignal.timeout(job.timeoutMs),
    );
    scope.postMessage(result);
  } catch (error) {
    scope.postMessage({ error: String((error as Error)?.stack ?? error) });
  }
  scope.close();
};
