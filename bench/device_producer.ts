/**
 * The producer Worker of bench/device_bench.ts. It is sent `{ share, control }` once and attaches
 * to the queue; then for each round `{ round }`: it answers `{ armed: round }`, blocks until the
 * control word `GO` becomes `round`, and produces like the main thread (claim the next item
 * number, acquire a buffer, copy the precomputed item into it, set `size`, enqueue) until the
 * round's items are all claimed; then it answers `{ done: round, checksum, produced, waits }`.
 */
import { type QueueShare, ThreadedBufferQueue } from "../mod.ts";
import { C, makeSources } from "./device_sim.ts";
import { produce } from "./device_produce.ts";

/** The first message. */
export interface ProducerSetup {
  readonly share: QueueShare;
  readonly control: SharedArrayBuffer;
}

/** What the Worker answers. */
export type ProducerAnswer =
  | { readonly armed: number }
  | {
    readonly done: number;
    readonly checksum: number;
    readonly produced: number;
    readonly waits: number;
  }
  | { readonly error: string };

if (import.meta.main) {
  const scope = globalThis as unknown as {
    onmessage: ((event: MessageEvent<ProducerSetup | { round: number }>) => void) | null;
    postMessage(message: ProducerAnswer): void;
  };
  const { sources, sums } = makeSources();
  let queue: ReturnType<typeof ThreadedBufferQueue.attach> | undefined;
  let control: Int32Array = new Int32Array(C.LENGTH);
  scope.onmessage = async ({ data }) => {
    try {
      if ("share" in data) {
        queue = ThreadedBufferQueue.attach(data.share);
        control = new Int32Array(data.control);
        return;
      }
      const round = data.round;
      scope.postMessage({ armed: round });
      while (Atomics.load(control, C.GO) !== round) Atomics.wait(control, C.GO, round - 1, 1000);
      const { checksum, produced, waits } = await produce(queue!, control, sources, sums);
      scope.postMessage({ done: round, checksum, produced, waits });
    } catch (error) {
      scope.postMessage({ error: String((error as Error)?.stack ?? error) });
    }
  };
}
