/**
 * The producer side: fetch a buffer, fill it, enqueue it, optionally wait for its status. Works on
 * any thread that holds the queue's shared state (the owner, or a Worker through `attach`).
 *
 * @module
 */

import { QueueError } from "./errors.ts";
import { Flag, H } from "./layout.ts";
import type { Pool, QueueStats } from "./pool.ts";
import { Status, type StatusCode } from "./status.ts";
import { pollBudget, pollThenWait, waitForChange } from "./wait.ts";

/**
 * What `share()` returns and `attach()` takes: structured-cloneable (post it to a Worker).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type QueueShare, ThreadedBufferQueue } from "../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
 *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
 * });
 * const share: QueueShare = structuredClone(queue.share()); // what a Worker receives
 * assert.equal(share.buffer, share.buffer as SharedArrayBuffer);
 * assert.equal(ThreadedBufferQueue.attach(share).bufferSize, 64);
 * ```
 */
export interface QueueShare {
  /** Marks the value as a tbq share. */
  readonly kind: "tbq";
  /** The queue's whole state. */
  readonly buffer: SharedArrayBuffer;
}

/**
 * Options for the calls that wait.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ThreadedBufferQueue, type WaitOptions } from "../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 1, bufferSize: 64 },
 *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
 * });
 * const held = await queue.acquire(); // the only buffer
 * const options: WaitOptions = { signal: AbortSignal.abort(new Error("gave up")) };
 * await assert.rejects(queue.acquire(options), { message: "gave up" });
 * queue.reuse(held);
 * ```
 */
export interface WaitOptions {
  /** Gives up waiting when it aborts: the call rejects with `signal.reason`. */
  readonly signal?: AbortSignal;
}

/**
 * Options for `enqueueAndWait` and `enqueueAtHeadAndWait`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type EnqueueWaitOptions, ThreadedBufferQueue } from "../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 1, bufferSize: 64 },
 *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url), // upper-cases
 * });
 * await queue.start();
 * const buffer = await queue.acquire();
 * buffer.size = new TextEncoder().encodeInto("ok", buffer.data).written;
 * const options: EnqueueWaitOptions = { keep: true }; // the reply comes back in the buffer
 * await queue.enqueueAndWait(buffer, options);
 * assert.equal(new TextDecoder().decode(buffer.data.subarray(0, buffer.size)), "OK");
 * queue.reuse(buffer); // held again: give it back (or enqueue it again)
 * ```
 */
export interface EnqueueWaitOptions extends WaitOptions {
  /**
   * When the work completes, the buffer comes back to the caller (held, `reuseCleanup` not run)
   * with the `size` and bytes the handler left, instead of returning to the pool. A flushed,
   * aborted or closed item's buffer returns to the pool as usual.
   */
  readonly keep?: boolean;
}

let bufferParts: (value: unknown, pool: Pool) => { slot: number; generation: number } | undefined;
/** The size set on a handle since its last enqueue (-1: none), which the enqueue writes. */
let pendingSize: (buffer: WorkBuffer, clear: boolean) => number;
/** Makes the handle for a slot just fetched (module-private, like `bufferParts`). */
let newBuffer: (pool: Pool, slot: number, data: Uint8Array, context: Uint8Array) => WorkBuffer;

/**
 * A buffer fetched from the queue: fill `data` (and `context`), set `size`, then enqueue it. The
 * handle is good for one round (fetch → enqueue → work → back in the pool); passing it to a queue
 * method after that throws `QueueError` with code `StaleBuffer`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ThreadedBufferQueue } from "../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 2, bufferSize: 64, contextSize: 4 },
 *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
 * });
 * const buffer = queue.fetch()!;
 * assert.equal(buffer.data.length, 64);
 * assert.equal(buffer.context.length, 4);
 * buffer.size = new TextEncoder().encodeInto("hello", buffer.data).written;
 * queue.enqueue(buffer);
 * await queue.start();
 * await queue.onIdle();
 * assert.throws(() => queue.enqueue(buffer), { code: "StaleBuffer" }); // its round is over
 * ```
 */
export class WorkBuffer {
  readonly #pool: Pool;
  readonly #slot: number;
  readonly #generation: number;
  /** The whole buffer (`bufferSize` bytes, zeroed at fetch): shared memory, not a copy. */
  readonly data: Uint8Array;
  /** The buffer's context (`contextSize` bytes, zeroed at fetch; may be empty). */
  readonly context: Uint8Array;
  #size = -1;

  /** @ignore Handles are made by `fetch` and `acquire`. */
  private constructor(pool: Pool, slot: number, data: Uint8Array, context: Uint8Array) {
    this.#pool = pool;
    this.#slot = slot;
    this.#generation = pool.generation(slot);
    this.data = data;
    this.context = context;
  }

  /**
   * Bytes the work will see, from 0 to `bufferSize` (default). Other values throw RangeError.
   * After `enqueueAndWait(buffer, { keep: true })`, the size the handler left.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 1, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * const buffer = queue.fetch()!;
   * assert.equal(buffer.size, 64); // bufferSize by default
   * buffer.size = 3;
   * assert.throws(() => (buffer.size = 65), RangeError);
   * queue.reuse(buffer);
   * ```
   */
  get size(): number {
    return this.#size >= 0 ? this.#size : this.#pool.size(this.#slot);
  }

  set size(size: number) {
    // Kept on the handle and written by the enqueue, under the lock it takes anyway: a producer
    // that sets the size of each item pays for one critical section, not two.
    if (
      Number.isInteger(size) && size >= 0 && size <= this.#pool.sizes.bufferSize &&
      this.#pool.isHeld(this.#slot, this.#generation)
    ) {
      this.#size = size;
    } else {
      this.#pool.setSize(this.#slot, this.#generation, size); // throws the right error
      this.#size = -1;
    }
  }

  /**
   * The buffer's slot number in the pool, from 0 to the number of buffers minus 1.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * const [a, b] = [queue.fetch()!, queue.fetch()!];
   * assert.deepEqual([a.index, b.index].sort(), [0, 1]);
   * queue.reuse(a);
   * queue.reuse(b);
   * ```
   */
  get index(): number {
    return this.#slot;
  }

  static {
    bufferParts = (value, pool) =>
      value instanceof WorkBuffer && value.#pool === pool
        ? { slot: value.#slot, generation: value.#generation }
        : undefined;
    pendingSize = (buffer, clear) => {
      const size = buffer.#size;
      if (clear) buffer.#size = -1;
      return size;
    };
    newBuffer = (pool, slot, data, context) => new WorkBuffer(pool, slot, data, context);
  }
}

/**
 * A producer's handle on a queue: everything but start/stop/close. The owning
 * `ThreadedBufferQueue` is one; `ThreadedBufferQueue.attach(share)` makes one in another Worker.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type QueueProducer, Status, ThreadedBufferQueue } from "../mod.ts";
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
 *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
 * });
 * await queue.start();
 * // In a Worker that received queue.share() (here: the same thread):
 * const producer: QueueProducer = ThreadedBufferQueue.attach(queue.share());
 * const buffer = await producer.acquire();
 * buffer.data.set([0x61, 0x62]);
 * buffer.size = 2;
 * assert.equal(await producer.enqueueAndWait(buffer), Status.Success);
 * ```
 */
export class QueueProducer {
  readonly #pool: Pool;
  readonly #data: Uint8Array[] = [];
  readonly #context: Uint8Array[] = [];

  /** @ignore Use `ThreadedBufferQueue.attach` (or the queue itself). */
  constructor(pool: Pool) {
    this.#pool = pool;
  }

  /**
   * Bytes of data per buffer (`bufferQueue.bufferSize`).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 512 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * assert.equal(queue.bufferSize, 512);
   * ```
   */
  get bufferSize(): number {
    return this.#pool.sizes.bufferSize;
  }

  /**
   * Bytes of context per buffer (`bufferQueue.contextSize`, default 0).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 512, contextSize: 8 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * assert.equal(queue.contextSize, 8);
   * ```
   */
  get contextSize(): number {
    return this.#pool.sizes.contextSize;
  }

  /**
   * A free buffer, zero-filled, with `size` = `bufferSize`; `null` when none is free. With
   * look-aside, the pool grows by one buffer (up to `maxBufferCount`) when none is free.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 1, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * const buffer = queue.fetch();
   * assert.ok(buffer);
   * assert.equal(queue.fetch(), null); // none left
   * queue.reuse(buffer);
   * ```
   */
  fetch(): WorkBuffer | null {
    this.assertOpen();
    const slot = this.#pool.fetch();
    if (slot < 0) return null;
    const data = this.#data[slot] ??= this.#pool.dataView(slot);
    const context = this.#context[slot] ??= this.#pool.contextView(slot);
    return newBuffer(this.#pool, slot, data, context);
  }

  /**
   * Like `fetch`, but waits for a free buffer. Rejects with `signal.reason` on abort.
   *
   * While the loop's items take at most ~1 ms and a CPU is spare, the wait first polls for up
   * to two items' time (it spins, letting the event loop run between spins past the first
   * 0.1 ms), so that the loop hands the buffer over without paying for a wake; then it sleeps.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 1, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * const first = await queue.acquire();
   * const second = queue.acquire(); // waits: the only buffer is held
   * queue.reuse(first);
   * assert.equal((await second).index, first.index);
   * queue.reuse(await second);
   * ```
   */
  async acquire(options?: WaitOptions): Promise<WorkBuffer> {
    const signal = options?.signal;
    for (;;) {
      signal?.throwIfAborted();
      const seen = Atomics.load(this.#pool.words, H.FREE_WAKE);
      const buffer = this.fetch();
      if (buffer) return buffer;
      const words = this.#pool.words;
      const pollMs = pollBudget(Atomics.load(words, H.LOOP_STEP_NS) / 1e6);
      await pollThenWait(words, H.FREE_WAKE, seen, signal, H.FREE_SLEEPERS, H.FREE_POLLERS, pollMs);
    }
  }

  /**
   * Resolves once nothing is queued, running, pending or returning: every item enqueued so far
   * has finished and its buffer is fetchable again (buffers held by producers do not count).
   * Cancels nothing. Rejects with `signal.reason` on abort, and with `QueueError` `Closed` if the
   * queue closes first.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 4, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * await queue.start();
   * for (let i = 0; i < 4; i++) queue.enqueue(await queue.acquire());
   * await queue.onIdle();
   * assert.equal(queue.stats().completed, 4);
   * assert.equal(queue.stats().free, 4);
   * ```
   */
  async onIdle(options?: WaitOptions): Promise<void> {
    const signal = options?.signal;
    for (;;) {
      signal?.throwIfAborted();
      this.assertOpen();
      const seen = Atomics.load(this.#pool.words, H.FREE_WAKE);
      if (this.#pool.idle()) return;
      await this.#sleepUntilFreed(seen, signal);
    }
  }

  /** Sleeps until a buffer comes back (FREE_WAKE moves past `seen`), or the signal aborts. */
  async #sleepUntilFreed(seen: number, signal: AbortSignal | undefined): Promise<void> {
    const words = this.#pool.words;
    const sleeping = waitForChange(words, H.FREE_WAKE, seen, signal, undefined, H.FREE_SLEEPERS);
    if (sleeping) await sleeping;
  }

  /**
   * Adds a fetched buffer at the tail of the queue (FIFO) and wakes the loop.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * queue.enqueue(queue.fetch()!);
   * assert.equal(queue.count(), 1); // queued until the loop runs
   * await queue.start();
   * await queue.onIdle();
   * assert.equal(queue.count(), 0);
   * ```
   */
  enqueue(buffer: WorkBuffer): void {
    this.#enqueue(buffer, this.#own(buffer, "enqueue"), false, false, false);
  }

  /**
   * Adds a fetched buffer at the head of the queue (it runs next) and wakes the loop.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * const [later, urgent] = [queue.fetch()!, queue.fetch()!];
   * queue.enqueue(later);
   * queue.enqueueAtHead(urgent); // runs before `later`
   * assert.equal(queue.flush(), 2);
   * ```
   */
  enqueueAtHead(buffer: WorkBuffer): void {
    this.#enqueue(buffer, this.#own(buffer, "enqueue"), true, false, false);
  }

  /**
   * Enqueues at the tail and resolves with the status the work produced (`Status.Cancelled` if
   * flushed or closed first). On abort, rejects with `signal.reason`; an item not yet started is
   * removed and never runs, a running or pended one's `item.signal` aborts. With `keep`, the
   * buffer comes back held, holding the handler's reply. Misuse rejects with a `QueueError`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Status, ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * await queue.start();
   * const buffer = await queue.acquire();
   * const status = await queue.enqueueAndWait(buffer, { signal: AbortSignal.timeout(1000) });
   * assert.equal(status, Status.Success);
   * ```
   */
  enqueueAndWait(buffer: WorkBuffer, options?: EnqueueWaitOptions): Promise<StatusCode> {
    return this.#enqueueAndWait(buffer, false, options);
  }

  /**
   * Like `enqueueAndWait`, at the head of the queue.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Status, ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * queue.enqueue(queue.fetch()!);
   * const urgent = queue.enqueueAtHeadAndWait(queue.fetch()!); // runs first
   * queue.flush(); // before start: both are cancelled
   * assert.equal(await urgent, Status.Cancelled);
   * ```
   */
  enqueueAtHeadAndWait(buffer: WorkBuffer, options?: EnqueueWaitOptions): Promise<StatusCode> {
    return this.#enqueueAndWait(buffer, true, options);
  }

  /**
   * Returns a fetched buffer to the pool without work.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 1, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * const buffer = await queue.acquire();
   * queue.reuse(buffer); // nothing to send after all
   * await queue.onIdle(); // its reuseCleanup ran: fetchable again
   * assert.equal(queue.stats().free, 1);
   * ```
   */
  reuse(buffer: WorkBuffer): void {
    const { slot, generation } = this.#own(buffer, "reuse");
    this.#pool.reuse(slot, generation);
    pendingSize(buffer, true);
  }

  /**
   * Cancels every queued item: each completes with `Status.Cancelled` (its waiter resolves with
   * it) and returns to the pool. Running and pended items are untouched. Returns how many.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Status, ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * const waiting = queue.enqueueAndWait(queue.fetch()!); // not started: stays queued
   * queue.enqueue(queue.fetch()!);
   * assert.equal(queue.flush(), 2);
   * assert.equal(await waiting, Status.Cancelled);
   * ```
   */
  flush(): number {
    this.assertOpen();
    return this.#pool.flush();
  }

  /**
   * Number of items queued (not yet taken by the loop).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * assert.equal(queue.count(), 0);
   * queue.enqueue(queue.fetch()!);
   * assert.equal(queue.count(), 1);
   * ```
   */
  count(): number {
    this.assertOpen();
    return this.#pool.count();
  }

  /**
   * Completes an item whose work returned `WorkPending`; its waiter resolves with `status`. If
   * its `work` is still running, the item completes as soon as `work` returns.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Status, ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../tests/fixtures/pending_handlers.ts", import.meta.url), // WorkPending
   * });
   * await queue.start();
   * const buffer = await queue.acquire();
   * const done = queue.enqueueAndWait(buffer);
   * while (queue.stats().pending === 0) await new Promise((r) => setTimeout(r, 1));
   * queue.workCompleted(buffer, Status.IoTimeout);
   * assert.equal(await done, Status.IoTimeout);
   * ```
   */
  workCompleted(buffer: WorkBuffer, status: StatusCode = Status.Success): void {
    const { slot, generation } = this.#own(buffer, "complete");
    this.#pool.workCompleted(slot, generation, status);
  }

  /**
   * Where the buffers are now, and how many items have ended each way.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 4, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * const held = queue.fetch()!;
   * queue.enqueue(queue.fetch()!);
   * const { free, queued, held: inHand } = queue.stats();
   * assert.deepEqual([free, queued, inHand], [2, 1, 1]);
   * queue.reuse(held);
   * ```
   */
  stats(): QueueStats {
    this.assertOpen();
    return this.#pool.stats();
  }

  /** @ignore Throws `QueueError("Closed")` once the queue is closing. */
  protected assertOpen(): void {
    if (this.#pool.hasFlag(Flag.CLOSING)) throw this.closedError();
  }

  /** @ignore The error calls get once the queue is closing. */
  protected closedError(): QueueError {
    return new QueueError("Closed", "the queue is closed");
  }

  /** Queues a held buffer with the size set on its handle since the last enqueue, if any. */
  #enqueue(
    buffer: WorkBuffer,
    { slot, generation }: { slot: number; generation: number },
    atHead: boolean,
    waiter: boolean,
    keep: boolean,
  ): void {
    this.#pool.enqueue(slot, generation, atHead, waiter, keep, pendingSize(buffer, false));
    pendingSize(buffer, true); // written: the handle reads the pool's word again
  }

  #own(buffer: WorkBuffer, verb: string): { slot: number; generation: number } {
    this.assertOpen();
    const parts = bufferParts(buffer, this.#pool);
    if (!parts) {
      throw new QueueError(
        "ForeignBuffer",
        `cannot ${verb} ${describe(buffer)}: pass a WorkBuffer fetched from this queue handle`,
      );
    }
    return parts;
  }

  async #enqueueAndWait(
    buffer: WorkBuffer,
    atHead: boolean,
    options: EnqueueWaitOptions | undefined,
  ): Promise<StatusCode> {
    const parts = this.#own(buffer, "enqueue");
    const { slot, generation } = parts;
    const pool = this.#pool;
    const signal = options?.signal;
    if (signal?.aborted) {
      pool.reuse(slot, generation, true);
      throw signal.reason;
    }
    this.#enqueue(buffer, parts, atHead, true, options?.keep === true);
    const words = pool.words;
    const done = pool.doneWord(slot);
    for (;;) {
      const seen = Atomics.load(words, done);
      if (seen === generation) return pool.collect(slot, generation);
      try {
        const sleeping = waitForChange(words, done, seen, signal);
        if (sleeping) await sleeping;
      } catch (reason) {
        pool.abandon(slot, generation);
        throw reason;
      }
    }
  }
}

function describe(value: unknown): string {
  if (value instanceof WorkBuffer) return "a buffer of another queue (or of another handle)";
  if (value instanceof Uint8Array) return "a Uint8Array";
  return value === null ? "null" : `a ${typeof value}`;
}
