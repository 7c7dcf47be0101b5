/**
 * The producer module of the mass storage writer, run by the examples' shared producer Worker
 * (`../producer_worker.ts`): it waits until the owner says go (a SharedArrayBuffer word), then
 * writes its regions through the queue with `writeRegions`.
 *
 * @module
 */

import type { QueueProducer } from "../../mod.ts";
import { type RegionWrite, writeRegions, type WriteRegionsResult } from "../../storage/mod.ts";

/** What the owner passes to {@linkcode produce}. */
export interface ProducerOptions {
  /** The regions this producer writes. */
  readonly regions: readonly RegionWrite[];
  /** Blocks per item. */
  readonly chunkBlocks: number;
  /** Int32 word 0 turns non-zero when every producer may start. */
  readonly go: SharedArrayBuffer;
  /** Bound on the whole job, in milliseconds. */
  readonly timeoutMs: number;
}

/** Waits for the go word, then writes the regions. */
export async function produce(
  queue: QueueProducer,
  options: ProducerOptions,
): Promise<WriteRegionsResult> {
  const go = new Int32Array(options.go);
  const { value } = Atomics.waitAsync(go, 0, 0, options.timeoutMs);
  await value;
  const signal = AbortSignal.timeout(options.timeoutMs);
  return await writeRegions(queue, options.regions, { chunkBlocks: options.chunkBlocks, signal });
}
