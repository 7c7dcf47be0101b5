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
import { waitForChange } from "./wait.ts";

/**
 * What `share()` returns and `attach()` takes: structured-cloneable (post it to a Worker).
 *
 * @example
 * ```ts ignore
 * worker.postMessage(queue.share());
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
 * import type { WaitOptions } from "../mod.ts";
 * const options: WaitOptions = { signal: AbortSignal.timeout(1000) };
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
 * import type { EnqueueWaitOptions } from "../mod.ts";
 * // The handler's reply comes back in the same buffer:
 * const options: EnqueueWaitOptions = { keep: true, signal: AbortSignal.timeout(1000) };
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

/**
 * A buffer fetched from the queue: fill `data` (and `context`), set `size`, then enqueue it. The
 * handle is good for one round (fetch → enqueue → work → back in the pool); passing it to a queue
 * method after that throws `QueueError` with code `StaleBuffer`.
 *
 * @example
 * ```ts ignore
 * const buffer = queue.fetch();
 * if (buffer) {
 *   const n = new TextEncoder().encodeInto("hello", buffer.data).written;
 *   buffer.size = n;
 *   queue.enqueue(buffer);
 * }
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
   */
  get size(): number {
    return this.#pool.size(this.#slot);
  }

  set size(size: number) {
    this.#pool.setSize(this.#slot, this.#generation, size);
  }

  /** The buffer's slot number in the pool. */
  get index(): number {
    return this.#slot;
  }

  static {
    bufferParts = (value, pool) =>
      value instanceof WorkBuffer && value.#pool === pool
        ? { slot: value.#slot, generation: value.#generation }
        : undefined;
  }

  /** @internal Makes the handle for a slot just fetched. */
  static fromSlot(pool: Pool, slot: number, data: Uint8Array, context: Uint8Array): WorkBuffer {
    return new WorkBuffer(pool, slot, data, context);
  }
}

/**
 * A producer's handle on a queue: everything but start/stop/close. The owning
 * `ThreadedBufferQueue` is one; `ThreadedBufferQueue.attach(share)` makes one in another Worker.
 *
 * @example
 * ```ts ignore
 * // In a Worker that received queue.share():
 * import { ThreadedBufferQueue } from "./mod.ts";
 * self.onmessage = async (event) => {
 *   const producer = ThreadedBufferQueue.attach(event.data);
 *   const buffer = await producer.acquire();
 *   buffer.data.set([1, 2, 3]);
 *   buffer.size = 3;
 *   const status = await producer.enqueueAndWait(buffer);
 * };
 * ```
 */
export class QueueProducer {
  readonly #pool: Pool;
  readonly #data: Uint8Array[] = [];
  readonly #context: Uint8Array[] = [];

  /** @internal Use `ThreadedBufferQueue.attach` (or the queue itself). */
  constructor(pool: Pool) {
    this.#pool = pool;
  }

  /** Bytes of data per buffer. */
  get bufferSize(): number {
    return this.#pool.sizes.bufferSize;
  }

  /** Bytes of context per buffer. */
  get contextSize(): number {
    return this.#pool.sizes.contextSize;
  }

  /**
   * A free buffer, zero-filled, with `size` = `bufferSize`; `null` when none is free. With
   * look-aside, the pool grows by one buffer (up to `maxBufferCount`) when none is free.
   */
  fetch(): WorkBuffer | null {
    this.assertOpen();
    const slot = this.#pool.fetch();
    if (slot < 0) return null;
    const data = this.#data[slot] ??= this.#pool.dataView(slot);
    const context = this.#context[slot] ??= this.#pool.contextView(slot);
    return WorkBuffer.fromSlot(this.#pool, slot, data, context);
  }

  /** Like `fetch`, but waits for a free buffer. Rejects with `signal.reason` on abort. */
  async acquire(options?: WaitOptions): Promise<WorkBuffer> {
    const signal = options?.signal;
    for (;;) {
      signal?.throwIfAborted();
      const seen = Atomics.load(this.#pool.words, H.FREE_WAKE);
      const buffer = this.fetch();
      if (buffer) return buffer;
      await this.#sleepUntilFreed(seen, signal);
    }
  }

  /**
   * Resolves once nothing is queued, running, pending or returning: every item enqueued so far
   * has finished and its buffer is fetchable again (buffers held by producers do not count).
   * Cancels nothing. Rejects with `signal.reason` on abort, and with `QueueError` `Closed` if the
   * queue closes first.
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
    Atomics.add(words, H.FREE_SLEEPERS, 1);
    try {
      const sleeping = waitForChange(words, H.FREE_WAKE, seen, signal);
      if (sleeping) await sleeping;
    } finally {
      Atomics.sub(words, H.FREE_SLEEPERS, 1);
    }
  }

  /** Adds a fetched buffer at the tail of the queue (FIFO) and wakes the loop. */
  enqueue(buffer: WorkBuffer): void {
    const { slot, generation } = this.#own(buffer, "enqueue");
    this.#pool.enqueue(slot, generation, false, false);
  }

  /** Adds a fetched buffer at the head of the queue (it runs next) and wakes the loop. */
  enqueueAtHead(buffer: WorkBuffer): void {
    const { slot, generation } = this.#own(buffer, "enqueue");
    this.#pool.enqueue(slot, generation, true, false);
  }

  /**
   * Enqueues at the tail and resolves with the status the work produced (`Status.Cancelled` if
   * flushed or closed first). On abort, rejects with `signal.reason`; an item not yet started is
   * removed and never runs, a running or pended one's `item.signal` aborts. With `keep`, the
   * buffer comes back held, holding the handler's reply. Misuse rejects with a `QueueError`.
   */
  enqueueAndWait(buffer: WorkBuffer, options?: EnqueueWaitOptions): Promise<StatusCode> {
    return this.#enqueueAndWait(buffer, false, options);
  }

  /** Like `enqueueAndWait`, at the head of the queue. */
  enqueueAtHeadAndWait(buffer: WorkBuffer, options?: EnqueueWaitOptions): Promise<StatusCode> {
    return this.#enqueueAndWait(buffer, true, options);
  }

  /** Returns a fetched buffer to the pool without work. */
  reuse(buffer: WorkBuffer): void {
    const { slot, generation } = this.#own(buffer, "reuse");
    this.#pool.reuse(slot, generation);
  }

  /**
   * Cancels every queued item: each completes with `Status.Cancelled` (its waiter resolves with
   * it) and returns to the pool. Running and pended items are untouched. Returns how many.
   */
  flush(): number {
    this.assertOpen();
    return this.#pool.flush();
  }

  /** Number of items queued (not yet taken by the loop). */
  count(): number {
    this.assertOpen();
    return this.#pool.count();
  }

  /**
   * Completes an item whose work returned `WorkPending`; its waiter resolves with `status`. If
   * its `work` is still running, the item completes as soon as `work` returns.
   */
  workCompleted(buffer: WorkBuffer, status: StatusCode = Status.Success): void {
    const { slot, generation } = this.#own(buffer, "complete");
    this.#pool.workCompleted(slot, generation, status);
  }

  /** Where the buffers are now, and how many items have ended each way. */
  stats(): QueueStats {
    this.assertOpen();
    return this.#pool.stats();
  }

  /** @internal Throws `QueueError("Closed")` once the queue is closing. */
  protected assertOpen(): void {
    if (this.#pool.hasFlag(Flag.CLOSING)) throw this.closedError();
  }

  /** @internal The error calls get once the queue is closing. */
  protected closedError(): QueueError {
    return new QueueError("Closed", "the queue is closed");
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
    const { slot, generation } = this.#own(buffer, "enqueue");
    const pool = this.#pool;
    const signal = options?.signal;
    if (signal?.aborted) {
      pool.reuse(slot, generation, true);
      throw signal.reason;
    }
    pool.enqueue(slot, generation, atHead, true, options?.keep === true);
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
