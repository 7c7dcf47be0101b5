/**
 * The producer side of the mass storage writer example: cuts regions of block data into queue
 * items (one WRITE (10) each) and waits for every status. Runs on any thread holding a queue or
 * an attached producer handle; `mass_storage_producer_worker.ts` runs it in a Worker.
 *
 * @module
 */

import { isSuccess, type QueueProducer, type StatusCode, statusName } from "../mod.ts";
import { setItemLba } from "./mass_storage_handlers.ts";

/** A region to write: `data` (a whole number of blocks) at `lba`. */
export interface RegionJob {
  /** First block. */
  readonly lba: number;
  /** The bytes, `blocks × blockSize` long. */
  readonly data: Uint8Array;
}

/** What one producer saw. */
export interface ProduceResult {
  /** Items enqueued. */
  items: number;
  /** Bytes in them. */
  bytes: number;
  /** Item count by status name. */
  statuses: Record<string, number>;
  /** The failed items: their LBA and status. */
  failures: { lba: number; status: StatusCode }[];
}

/**
 * Writes each job through the queue in items of at most `chunkBlocks` blocks and resolves once
 * every item completed. `signal` bounds the waits (acquire and completion).
 *
 * @example
 * ```ts ignore
 * const result = await produceRegions(queue, [{ lba: 2048, data }], 128, 512, AbortSignal.timeout(60_000));
 * ```
 */
export async function produceRegions(
  producer: QueueProducer,
  jobs: readonly RegionJob[],
  chunkBlocks: number,
  blockSize: number,
  signal?: AbortSignal,
): Promise<ProduceResult> {
  const result: ProduceResult = { items: 0, bytes: 0, statuses: {}, failures: [] };
  const waits: Promise<void>[] = [];
  const chunkBytes = chunkBlocks * blockSize;
  for (const job of jobs) {
    for (let offset = 0; offset < job.data.length; offset += chunkBytes) {
      const bytes = job.data.subarray(offset, offset + chunkBytes);
      const lba = job.lba + offset / blockSize;
      const buffer = await producer.acquire({ signal });
      buffer.data.set(bytes);
      buffer.size = bytes.length;
      setItemLba(buffer.context, lba);
      result.items++;
      result.bytes += bytes.length;
      waits.push(
        producer.enqueueAndWait(buffer, { signal }).then((status) => {
          const name = statusName(status);
          result.statuses[name] = (result.statuses[name] ?? 0) + 1;
          if (!isSuccess(status)) result.failures.push({ lba, status });
        }),
      );
    }
  }
  await Promise.all(waits);
  return result;
}
