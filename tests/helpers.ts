/** Shared set-up for the queue tests. */
import assert from "node:assert/strict";
import {
  type BufferQueueConfig,
  type QueueShare,
  type QueueStats,
  ThreadedBufferQueue,
  type WorkBuffer,
} from "../mod.ts";
import { Probe, script } from "./fixtures/probe.ts";
import type {
  Death,
  JobName,
  JobOptions,
  JobReport,
  ProducerReply,
  ProducerStart,
} from "./fixtures/producer_jobs.ts";
import type { WatchdogMessage, WatchdogQueues } from "./fixtures/hang_watchdog_worker.ts";

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
  await until(() => !queue.stats().returning, 5000, "buffers returning to the pool");
}

/** Stats with the given fields and every other field 0 (what a test expects to see). */
export function statsOf(fields: Partial<QueueStats>): QueueStats {
  return {
    free: 0,
    queued: 0,
    running: 0,
    pending: 0,
    held: 0,
    returning: 0,
    completed: 0,
    cancelled: 0,
    failed: 0,
    ...fields,
  };
}

/** Asserts that the final stats of a closed queue show every buffer free (counters aside). */
export function allFree(stats: QueueStats, pool: number): void {
  assert.deepEqual(
    { ...stats, completed: 0, cancelled: 0, failed: 0 },
    statsOf({ free: pool }),
    `every buffer is free: ${JSON.stringify(stats)}`,
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

/** Resolves after `ms` ms (a timer). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Resolves once `predicate()` holds, checking after each `pause()` (by default a 1 ms timer);
 * rejects after `ms`. For conditions that nothing can be awaited on (a counter in shared memory, a
 * sleeping thread). `what` may be a function, read only when the time is up (to say what was seen).
 */
export async function until(
  predicate: () => boolean,
  ms = 5000,
  what: string | (() => string) = "a condition",
  pause: () => Promise<unknown> = () => sleep(1),
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > deadline) {
      throw new Error(
        `timed out after ${ms} ms waiting for ${typeof what === "function" ? what() : what}`,
      );
    }
    await pause();
  }
}

/** True once the promise has settled (checked after a macrotask turn). */
export async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

/** A module Worker whose messages arrive through `next()`; errors reject the pending `next()`. */
export class TestWorker<Message = unknown> {
  readonly worker: Worker;
  readonly #inbox: Message[] = [];
  #waiting: { resolve(message: Message): void; reject(error: unknown): void } | undefined;
  #failure: unknown;
  readonly #failed = Promise.withResolvers<never>();

  /** `route` may take a message instead (return true): it then never reaches `next()`. */
  constructor(url: URL, route?: (message: Message) => boolean) {
    this.worker = new Worker(url, { type: "module" });
    this.worker.onmessage = (event: MessageEvent<Message>) => {
      if (route?.(event.data)) return;
      if (this.#waiting) {
        this.#waiting.resolve(event.data);
        this.#waiting = undefined;
      } else this.#inbox.push(event.data);
    };
    this.worker.onerror = (event) => {
      event.preventDefault();
      this.#failure = new Error(`worker failed: ${event.message}`);
      this.#failed.reject(this.#failure);
      this.#waiting?.reject(this.#failure);
      this.#waiting = undefined;
    };
    this.#failed.promise.catch(() => {});
  }

  /** Rejects once the Worker has failed (an uncaught error). */
  get failed(): Promise<never> {
    return this.#failed.promise;
  }

  post(message: unknown): void {
    this.worker.postMessage(message);
  }

  /** The next message (bounded by `ms`). */
  next(ms = 20_000, what = "a message from the worker"): Promise<Message> {
    if (this.#inbox.length > 0) return Promise.resolve(this.#inbox.shift()!);
    if (this.#failure) return Promise.reject(this.#failure);
    const { promise, resolve, reject } = Promise.withResolvers<Message>();
    this.#waiting = { resolve, reject };
    return within(promise, ms, what);
  }

  terminate(): void {
    this.worker.terminate();
  }
}

const producerWorker = new URL("./fixtures/producer_worker.ts", import.meta.url);

/**
 * Owner side of one producer Worker (tests/fixtures/producer_worker.ts, protocol and jobs in
 * tests/fixtures/producer_jobs.ts).
 */
export class ProducerWorker<J extends JobName> {
  readonly #worker: TestWorker<ProducerReply<JobReport<J>>>;
  readonly #started = Promise.withResolvers<void>();
  readonly #reportsFailure: boolean;

  /**
   * Starts a Worker running `job`. `started` goes to `started()`; `error` replies and a failure
   * of the Worker to `onError` (without it, to `next()` and `started()`, which reject on a
   * failure); `progress` to `onProgress`; the rest to `next()`.
   */
  constructor(
    share: QueueShare,
    job: J,
    options: JobOptions<J>,
    hooks: {
      death?: Death;
      onError?(message: string): void;
      onProgress?(report: JobReport<J>): void;
    } = {},
  ) {
    this.#worker = new TestWorker(producerWorker, (reply) => {
      if (reply.phase === "started") this.#started.resolve();
      else if (reply.phase === "error" && hooks.onError) hooks.onError(reply.message!);
      else if (reply.phase === "progress") hooks.onProgress?.(reply.report!);
      else return false;
      return true;
    });
    this.#reportsFailure = hooks.onError !== undefined;
    if (hooks.onError) {
      const onError = hooks.onError;
      this.#worker.failed.catch((error) => {
        onError(error.message);
        this.#started.resolve();
      });
    }
    this.#worker.post({ share, job, options, death: hooks.death } satisfies ProducerStart<J>);
  }

  /** Resolves once the Worker has attached and is about to run the job (bounded by `ms`). */
  started(ms = 20_000): Promise<void> {
    return within(
      this.#reportsFailure
        ? this.#started.promise
        : Promise.race([this.#started.promise, this.#worker.failed]),
      ms,
      "a producer Worker's start",
    );
  }

  /** The next reply (bounded by `ms`). */
  next(ms = 20_000): Promise<ProducerReply<JobReport<J>>> {
    return this.#worker.next(ms, "a reply from a producer Worker");
  }

  /** The next reply, which must be `phase`. */
  async expect(phase: string, ms = 20_000): Promise<ProducerReply<JobReport<J>>> {
    const reply = await this.next(ms);
    if (reply.phase !== phase) {
      throw new Error(`a producer Worker said ${JSON.stringify(reply)}, not ${phase}`);
    }
    return reply;
  }

  /** The `done` reply's report. */
  async report(ms = 20_000): Promise<JobReport<J>> {
    return (await this.expect("done", ms)).report!;
  }

  /** Sends `{ command }` (see `JobContext.command`). */
  command(name: string): void {
    this.#worker.post({ command: name });
  }

  terminate(): void {
    this.#worker.terminate();
  }
}

/** `--name N` from `Deno.args` (a non-negative number), or `fallback`. For the stress scripts. */
export function numberOption(name: string, fallback: number): number {
  const at = Deno.args.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = Number(Deno.args[at + 1]);
  if (!Number.isFinite(value) || value < 0) throw new Error(`--${name} needs a number`);
  return value;
}

/**
 * Starts tests/fixtures/hang_watchdog_worker.ts on this thread: a timer bumps a heartbeat every
 * 100 ms; if it goes stale for 5 s the watchdog prints the header words of the queues it was told
 * about (`watch`), and after 30 s it kills the process. `stop()` ends both.
 */
export function watchMainThread(label: string): {
  watch(queues: WatchdogQueues): void;
  stop(): void;
} {
  const heartbeat = new Int32Array(new SharedArrayBuffer(4));
  const timer = setInterval(() => Atomics.add(heartbeat, 0, 1), 100);
  const watchdog = new Worker(new URL("./fixtures/hang_watchdog_worker.ts", import.meta.url), {
    type: "module",
  });
  watchdog.postMessage(
    {
      heartbeat: heartbeat.buffer as SharedArrayBuffer,
      staleMs: 5000,
      killAfterMs: 30_000,
      label,
    } satisfies WatchdogMessage,
  );
  return {
    watch: (queues) => watchdog.postMessage(queues),
    stop: () => {
      clearInterval(timer);
      watchdog.terminate();
    },
  };
}
