/** The producer loop of bench/device_bench.ts, run by the main thread and the producer Worker. */
import type { QueueProducer } from "../mod.ts";
import { C, ITEM_SIZE, SOURCES } from "./device_sim.ts";

/**
 * Claims item numbers from the control word `NEXT` while they are below `COUNT` (which the bench
 * lowers to 0 to end a round, or `deadline` passes on this thread); for each, acquires
 * a buffer, copies the precomputed item into it, sets `size` and enqueues it. Returns the sum of
 * the `touch` sums of what it produced (the handler's checksum must add up to the producers'),
 * how many it produced, and for how many it had to wait for a free buffer.
 */
export async function produce(
  queue: QueueProducer,
  control: Int32Array,
  sources: Uint8Array[],
  sums: number[],
  deadline = Infinity,
): Promise<{ checksum: number; produced: number; waits: number }> {
  let checksum = 0;
  let produced = 0;
  let waits = 0; // items for which no buffer was free at once
  for (;;) {
    if (performance.now() >= deadline) Atomics.store(control, C.COUNT, 0); // ends everyone's round
    const n = Atomics.add(control, C.NEXT, 1);
    if (n >= Atomics.load(control, C.COUNT)) break;
    let buffer = queue.fetch();
    if (!buffer) {
      waits++;
      buffer = await queue.acquire();
    }
    buffer.data.set(sources[n % SOURCES]);
    buffer.size = ITEM_SIZE;
    queue.enqueue(buffer);
    checksum += sums[n % SOURCES];
    produced++;
  }
  return { checksum, produced, waits };
}
