/** Shared set-up for the queue tests. */
import assert from "node:assert/strict";
import {
  type BufferQueueConfig,
  type QueueStats,
  ThreadedBufferQueue,
  type WorkBuffer,
} from "../mod.ts";
import { Probe, script } from "./fixtures/probe.ts";

export const scriptedHandlers = new URL("./fixtures/scripted_handlers.ts", import.meta.url);

/** A queue over the scripted handler, with its probe and the errors it reported. */
export interface Scripted {
  queue: ThreadedBufferQueue;
  probe: Probe;
  errors: { error: Error; phase: string }[];
  /** Resolves once `count` errors have been reported (reports travel by message, not SAB). */
  reported(count: number): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export async function scripted(
  bufferQueue: BufferQueueConfig = { bufferCount: 4, bufferSize: 64, contextSize: 8 },
): Promise<Scripted> {
  const probe = new Probe();
  const errors: Scripted["errors"] = [];
  const waiting: { count: number; resolve(): void }[] = [];
  const reported = (count: number) => {
    if (errors.length >= count) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    waiting.push({ count, resolve });
    return within(promise, 5000, `${count} error reports`);
  };
  const queue = await ThreadedBufferQueue.create({
    bufferQueue,
    handlers: scriptedHandlers,
    handlerOptions: { probe: probe.buffer },
    onError: (error, phase) => {
      errors.push({ error, phase });
      for (const w of waiting) if (errors.length >= w.count) w.resolve();
    },
  });
  return {
    queue,
    probe,
    errors,
    reported,
    [Symbol.asyncDispose]: async () => void await queue.close(),
  };
}

/** Fetches a buffer and scripts it. */
export function item(
  queue: ThreadedBufferQueue,
  command: number,
  id: number,
  status = 0,
): WorkBuffer {
  const buffer = queue.fetch();
  assert.ok(buffer, "a free buffer");
  buffer.size = script(buffer.data, command, id, status);
  return buffer;
}

/** Buffers the stats account for. */
export function total(stats: QueueStats): number {
  return stats.free + stats.queued + stats.running + stats.pending + stats.held + stats.returning;
}

/** Waits until no buffer is returning (every `reuseCleanup` due has run), even while stopped. */
export async function returned(queue: ThreadedBufferQueue): Promise<void> {
  await within(
    (async () => {
      while (queue.stats().returning) await new Promise((resolve) => setTimeout(resolve, 1));
    })(),
    5000,
    "buffers returning to the pool",
  );
}

/** Asserts the stats add up to the pool and returns them. */
export function consistent(queue: ThreadedBufferQueue, poolSize: number): QueueStats {
  const stats = queue.stats();
  assert.equal(total(stats), poolSize, `stats account for every buffer: ${JSON.stringify(stats)}`);
  return stats;
}

/** Rejects if `promise` has not settled within `ms` (a hang becomes a failure). */
export function within<T>(promise: Promise<T>, ms = 5000, what = "operation"): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Resolves once `predicate()` holds, checking after each macrotask turn; rejects after `ms`. For
 * conditions that nothing can be awaited on (a counter in shared memory, a sleeping thread).
 */
export async function until(
  predicate: () => boolean,
  ms = 5000,
  what = "a condition",
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** True once the promise has settled (checked after a macrotask turn). */
export async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}
