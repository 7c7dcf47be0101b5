/**
 * What the core benchmark (core_bench.ts) and its Workers share: the hand-rolled baselines' shared
 * layouts, their sleeping rule, and the messages.
 *
 * The baselines are the floor tbq is held to, so they are written the way a careful hand-rolled
 * version would be, with the same sleeping rule as tbq (`src/wait.ts`): spin `SPIN` `Atomics.load`s,
 * then sleep; a "sleeping" word tells the other side whether it must `Atomics.notify` (so neither
 * side notifies while the other is awake), and the two sides' hot words sit on separate cache lines.
 * The Worker sleeps in `Atomics.wait` (a dedicated consumer has nothing else to do, and a blocking
 * futex wait is the cheapest wake there is); the main thread sleeps in `Atomics.waitAsync`, as
 * tbq's producers do, because a producer on the main thread must not block its event loop.
 *
 * @module
 */

/** Spin iterations before sleeping: tbq's `SPIN_ITERATIONS` on a multi-core machine. */
export const SPIN = (globalThis.navigator?.hardwareConcurrency ?? 1) > 1 ? 2000 : 0;

/** Bytes per item, filled by the producer in every hand-off. */
export const ITEM_BYTES = 4096;

/** Ring words (Int32 indexes), each on a cache line of its own. */
export const R = {
  /** Items the consumer has handed back (only the consumer writes it). */
  HEAD: 0,
  /** Items the producer has published (only the producer writes it). */
  TAIL: 16,
  /** 1 while the consumer sleeps (or is about to) on TAIL. */
  CONSUMER_SLEEPING: 32,
  /** 1 while the producer sleeps (or is about to) on HEAD. */
  PRODUCER_SLEEPING: 48,
  /** 1: the consumer returns. */
  STOP: 64,
  WORDS: 80,
} as const;

/** Ping-pong words (Int32 indexes), each on a cache line of its own. */
export const P = {
  /** The main thread's request number; -1 ends the Worker's loop. */
  REQUEST: 0,
  /** The Worker's answer: the request number it saw. */
  ANSWER: 16,
  WORKER_SLEEPING: 32,
  MAIN_SLEEPING: 48,
  WORDS: 64,
} as const;

/** The ring's shared memory: control words, one size word per slot, the slots' bytes. */
export interface Ring {
  words: Int32Array;
  sizes: Int32Array;
  bytes: Uint8Array;
  capacity: number;
}

/** Makes a ring of `capacity` (a power of two) slots of `ITEM_BYTES` bytes each. */
export function newRing(capacity: number): Ring {
  if (capacity & (capacity - 1)) throw new RangeError("ring capacity must be a power of two");
  return ringOf(
    new SharedArrayBuffer(R.WORDS * 4),
    new SharedArrayBuffer(capacity * 4),
    new SharedArrayBuffer(capacity * ITEM_BYTES),
  );
}

/** The ring over buffers received from the other thread. */
export function ringOf(
  words: SharedArrayBuffer,
  sizes: SharedArrayBuffer,
  bytes: SharedArrayBuffer,
): Ring {
  const ring = {
    words: new Int32Array(words),
    sizes: new Int32Array(sizes),
    bytes: new Uint8Array(bytes),
    capacity: sizes.byteLength / 4,
  };
  return ring;
}

/** Messages to the baseline Worker (core_worker.ts). */
export type BaselineStart =
  | { kind: "ring"; words: SharedArrayBuffer; sizes: SharedArrayBuffer; bytes: SharedArrayBuffer }
  | { kind: "pingpong"; words: SharedArrayBuffer }
  | { kind: "echo" };

/** Messages to the tbq producer Worker (core_producer.ts). */
export type ProducerCommand =
  | { kind: "attach"; share: unknown }
  | { kind: "run"; items: number }
  | { kind: "close" };

/** The producer Worker's answers. */
export type ProducerReply = { kind: "attached" } | { kind: "done"; items: number } | {
  kind: "error";
  message: string;
};

/** A 4 KiB record with every byte set (so a fill is a real 4 KiB copy). */
export function payload(): Uint8Array {
  const bytes = new Uint8Array(ITEM_BYTES);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 0xff;
  return bytes;
}
