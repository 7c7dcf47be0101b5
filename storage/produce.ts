/**
 * The producer side of a mass storage queue: cut regions of block data into items (one WRITE (10)
 * each, the LBA in the context) and collect every item's status. Runs on any thread that holds the
 * queue or an attached producer handle.
 *
 * @module
 */

import type { QueueProducer } from "../src/producer.ts";
import { isSuccess, type StatusCode, statusName } from "../src/status.ts";
import { DEFAULT_BLOCK_SIZE, DEFAULT_CHUNK_BLOCKS } from "./bot.ts";
import { setItemLba } from "./options.ts";

/**
 * A region to write: `data` (a whole number of blocks) at `lba`.
 *
 * @example
 * ```ts
 * import type { RegionWrite } from "./produce.ts";
 * const region: RegionWrite = { lba: 2048, data: new Uint8Array(4096) };
 * ```
 */
export interface RegionWrite {
  /** First block. */
  readonly lba: number;
  /** The bytes, `blocks × blockSize` long. */
  readonly data: Uint8Array;
}

/**
 * Options of {@linkcode writeRegions}.
 *
 * @example
 * ```ts
 * import type { WriteRegionsOptions } from "./produce.ts";
 * const options: WriteRegionsOptions = { chunkBlocks: 64, signal: AbortSignal.timeout(60_000) };
 * ```
 */
export interface WriteRegionsOptions {
  /** Blocks per item (at most the queue's `bufferSize / blockSize`). Default 128. */
  readonly chunkBlocks?: number;
  /** Bytes per block (the device's). Default 512. */
  readonly blockSize?: number;
  /** Bounds every wait (for a free buffer, for each completion). */
  readonly signal?: AbortSignal;
}

/**
 * What {@linkcode writeRegions} did.
 *
 * @example
 * ```ts ignore
 * const { failures } = await writeRegions(queue, regions);
 * if (failures.length > 0) console.error(failures);
 * ```
 */
export interface WriteRegionsResult {
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
 * Writes each region through a mass storage queue in items of at most `chunkBlocks` blocks and
 * resolves once every item completed (it never rejects for a failed item: see `failures`).
 *
 * @example
 * ```ts ignore
 * import { writeRegions } from "./produce.ts";
 * const result = await writeRegions(queue, [{ lba: 2048, data }], { signal: AbortSignal.timeout(60_000) });
 * console.log(result.statuses); // { Success: 16 }
 * ```
 */
export async function writeRegions(
  producer: QueueProducer,
  regions: readonly RegionWrite[],
  options: WriteRegionsOptions = {},
): Promise<WriteRegionsResult> {
  const { signal } = options;
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  const chunkBytes = (options.chunkBlocks ?? DEFAULT_CHUNK_BLOCKS) * blockSize;
  const result: WriteRegionsResult = { items: 0, bytes: 0, statuses: {}, failures: [] };
  const waits: Promise<void>[] = [];
  for (const region of regions) {
    for (let offset = 0; offset < region.data.length; offset += chunkBytes) {
      const bytes = region.data.subarray(offset, offset + chunkBytes);
      const lba = region.lba + offset / blockSize;
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
