/**
 * The pool: every operation on the shared queue state, each one a short critical section under
 * one lock in the SharedArrayBuffer. Any thread can hold a `Pool` over the same buffer. Misuse is
 * detected under the lock before anything changes, and reported after it is released.
 *
 * No call leaves the lock held or waits for it forever (see `lock.ts`): any exception inside a
 * critical section repairs the state and releases the lock on its way out, and a lock taken over
 * from a holder that died mid-call is followed by the same repair: the lists and counts are
 * rebuilt from the slots' STATE words, which are the truth.
 *
 * @module
 */

import { QueueError } from "./errors.ts";
import {
  Completion,
  COUNT_WORD,
  Flag,
  H,
  HEADER_WORDS,
  type LayoutSizes,
  MAGIC,
  NIL,
  type Regions,
  regions,
  S,
  SLOT_WORDS,
  type SlotState,
  State,
  STATE_COUNT,
} from "./layout.ts";
import { SharedLock } from "./lock.ts";
import { isSuccess, Status, type StatusCode } from "./status.ts";

const stateNames = Object.fromEntries(
  Object.entries(State).map(([name, value]) => [value, name.toLowerCase()]),
) as Record<SlotState, string>;

/** Why a call was refused (decided under the lock; the error is made after it). */
const Problem = { NONE: 0, FOREIGN: 1, STALE: 2, STATE: 3, CLOSED: 4, TWICE: 5, FINAL: 6 } as const;
type Problem = typeof Problem[keyof typeof Problem];

/** What `completeRunning` tells the loop. */
export const Completed = {
  /** The loop's status stands (not an earlier `workCompleted`'s). */
  FIRST: 1,
  /** The loop runs `reuseCleanup` now, then calls `settleCleaned`. */
  CLEAN: 2,
} as const;

/**
 * A snapshot of where the buffers are: `free + queued + running + pending + held + returning` is
 * the pool.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type QueueStats, ThreadedBufferQueue } from "../mod.ts";
 * const poolSize = (s: QueueStats) =>
 *   s.free + s.queued + s.running + s.pending + s.held + s.returning;
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 4, bufferSize: 64 },
 *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
 * });
 * queue.enqueue(queue.fetch()!);
 * const held = queue.fetch()!;
 * assert.equal(poolSize(queue.stats()), 4); // always the whole pool
 * queue.reuse(held);
 * ```
 */
export interface QueueStats {
  /** Buffers that `fetch()` can hand out now. */
  readonly free: number;
  /** Items enqueued and not yet taken by the loop. */
  readonly queued: number;
  /** Items whose `work` is running. */
  readonly running: number;
  /** Items whose `work` returned `WorkPending` and that are not completed yet. */
  readonly pending: number;
  /** Buffers fetched by producers (or kept for them) and not yet enqueued or reused. */
  readonly held: number;
  /**
   * Buffers whose round ended but that are not fetchable yet: their `reuseCleanup` is due or
   * running, or their `enqueueAndWait` caller has not collected the status.
   */
  readonly returning: number;
  /** Items that ended with a success status. */
  readonly completed: number;
  /** Items that ended with `Status.Cancelled` (flushed, aborted, closed, or so completed). */
  readonly cancelled: number;
  /** Items that ended with any other failure status. */
  readonly failed: number;
}

/** Bytes of unshared zeroes each `Pool` keeps for clearing fetched buffers (or less). */
const ZERO_BLOCK = 64 * 1024;

/** Shared queue state over one SharedArrayBuffer. */
export class Pool {
  /** The shared memory. */
  readonly buffer: SharedArrayBuffer;
  /** Sizes read from the header. */
  readonly sizes: LayoutSizes;
  /** Region offsets derived from the sizes. */
  readonly regions: Regions;
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;
  /**
   * Zeroes copied over a fetched buffer: V8 fills a shared Uint8Array byte by byte, and even
   * through 8-byte cells `fill` is ~3× slower than `set` from unshared zeroes (a 64 KiB buffer
   * just out of the cache: 2.4 µs against 0.9).
   */
  readonly #zeroes: Uint8Array;
  /** The lock every operation takes (one holder id per Pool object, so per thread). */
  readonly #lock: SharedLock;
  /** Scratch list of slots whose waiters must be woken after unlock (never reallocated). */
  readonly #wakeList: Int32Array;
  #wakeCount = 0;
  #loopDue = false;
  #freeDue = false;
  /** Wakes of sleepers are held back while more is queued ({@linkcode Pool.holdWakes}). */
  #holdFreeAbove = -1;
  #holdDoneAbove = -1;
  /** A freed buffer's wake that was held back: sent by {@linkcode Pool.flushWakes}. */
  #freeWakeOwed = false;
  /** Slots whose waiters' wakes were held back (each once: `#doneOwing`), sent by `flushWakes`. */
  readonly #doneOwed: Int32Array;
  readonly #doneOwing: Uint8Array;
  #doneOwedCount = 0;
  #abortDue = false;
  /** The state was repaired: wake every sleeper after unlock. */
  #repaired = false;
  /** What the last refused call ran into. */
  #problemState: number = State.UNALLOCATED;

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    const foreign = (why: string) =>
      new QueueError("ForeignBuffer", `not a tbq queue: the shared buffer ${why}`);
    if (buffer.byteLength < HEADER_WORDS * 4) throw foreign("is too short for a tbq header");
    this.#words = new Int32Array(buffer);
    this.#bytes = new Uint8Array(buffer);
    const w = this.#words;
    if (w[H.MAGIC] !== MAGIC) throw foreign("has no tbq header");
    this.sizes = {
      bufferCount: w[H.BUFFER_COUNT],
      maxBuffers: w[H.MAX_BUFFERS],
      bufferSize: w[H.BUFFER_SIZE],
      contextSize: w[H.CONTEXT_SIZE],
    };
    const { bufferCount, maxBuffers, bufferSize, contextSize } = this.sizes;
    if (bufferCount < 0 || maxBuffers < bufferCount || bufferSize < 0 || contextSize < 0) {
      throw foreign(`has impossible sizes in its header: ${JSON.stringify(this.sizes)}`);
    }
    this.regions = regions(this.sizes);
    this.#zeroes = new Uint8Array(Math.min(ZERO_BLOCK, Math.max(bufferSize, contextSize)));
    const allocated = w[H.ALLOCATED];
    if (
      this.regions.byteLength > buffer.byteLength || w[H.STRIDE] !== this.regions.stride ||
      allocated < 0 || allocated > maxBuffers
    ) {
      throw foreign(
        `does not match its header (${buffer.byteLength} bytes for ${JSON.stringify(this.sizes)})`,
      );
    }
    this.#wakeList = new Int32Array(Math.max(1, maxBuffers));
    this.#doneOwed = new Int32Array(Math.max(1, maxBuffers));
    this.#doneOwing = new Uint8Array(Math.max(1, maxBuffers));
    this.#lock = new SharedLock(w, () => this.#repair());
  }

  /** Allocates and initialises a pool with `bufferCount` free buffers. */
  static create(sizes: LayoutSizes, lookAside: boolean): Pool {
    const layout = regions(sizes);
    const buffer = new SharedArrayBuffer(layout.byteLength);
    const w = new Int32Array(buffer);
    w[H.MAGIC] = MAGIC;
    w[H.BUFFER_COUNT] = sizes.bufferCount;
    w[H.MAX_BUFFERS] = sizes.maxBuffers;
    w[H.BUFFER_SIZE] = sizes.bufferSize;
    w[H.CONTEXT_SIZE] = sizes.contextSize;
    w[H.STRIDE] = layout.stride;
    w[H.FLAGS] = lookAside ? Flag.LOOK_ASIDE : 0;
    for (const end of [H.FREE_HEAD, H.FREE_TAIL, H.QUEUE_HEAD, H.QUEUE_TAIL]) w[end] = NIL;
    w[H.RECYCLE_HEAD] = w[H.RECYCLE_TAIL] = NIL;
    for (let slot = 0; slot < sizes.maxBuffers; slot++) {
      const base = HEADER_WORDS + slot * SLOT_WORDS;
      w[base + S.NEXT] = NIL;
      w[base + S.DONE] = w[base + S.ABORTED] = -1;
    }
    const pool = new Pool(buffer);
    for (let slot = 0; slot < sizes.bufferCount; slot++) pool.#allocate(slot, State.FREE);
    return pool;
  }

  /**
   * A pool over a buffer made by {@linkcode Pool.create}, possibly on another thread. Checks the
   * header (magic word; sizes non-negative and fitting the buffer) and throws `QueueError`
   * `ForeignBuffer` otherwise.
   */
  static attach(buffer: SharedArrayBuffer): Pool {
    if (!(buffer instanceof SharedArrayBuffer)) {
      throw new QueueError("ForeignBuffer", "attach needs the value returned by share()");
    }
    return new Pool(buffer);
  }

  // ── views ────────────────────────────────────────────────────────────────────────────────

  /** A new view of a slot's whole data area (`bufferSize` bytes). */
  dataView(slot: number): Uint8Array {
    const start = this.regions.dataOffset + slot * this.regions.stride;
    return this.#bytes.subarray(start, start + this.sizes.bufferSize);
  }

  /** A new view of a slot's context area (`contextSize` bytes). */
  contextView(slot: number): Uint8Array {
    const start = this.regions.contextOffset + slot * this.regions.contextStride;
    return this.#bytes.subarray(start, start + this.sizes.contextSize);
  }

  /** The slot's current generation (its round number). */
  generation(slot: number): number {
    return this.#words[this.#at(slot, S.GENERATION)];
  }

  /** The slot's state. */
  state(slot: number): SlotState {
    return Atomics.load(this.#words, this.#at(slot, S.STATE)) as SlotState;
  }

  /** Bytes the work will see. */
  size(slot: number): number {
    return this.#words[this.#at(slot, S.SIZE)];
  }

  /** How many times the loop has taken the slot (tells a kept buffer's runs apart). */
  run(slot: number): number {
    return this.#words[this.#at(slot, S.RUN)];
  }

  /** True when the waiter of the slot's `run` gave up while the item ran or pended. */
  abandoned(slot: number, run: number): boolean {
    return Atomics.load(this.#words, this.#at(slot, S.ABORTED)) === run;
  }

  /** Tests a flag bit. */
  hasFlag(flag: number): boolean {
    return (Atomics.load(this.#words, H.FLAGS) & flag) !== 0;
  }

  /** Sets a flag bit. */
  setFlag(flag: number): void {
    Atomics.or(this.#words, H.FLAGS, flag);
  }

  /** Clears a flag bit. */
  clearFlag(flag: number): void {
    Atomics.and(this.#words, H.FLAGS, ~flag);
  }

  /** Number of items queued and not yet taken by the loop. */
  count(): number {
    return Atomics.load(this.#words, COUNT_WORD[State.QUEUED]);
  }

  /** A consistent snapshot of the counts. */
  stats(): QueueStats {
    return this.#locked(() => {
      const w = this.#words;
      const c = (state: SlotState) => w[COUNT_WORD[state]];
      return {
        free: c(State.FREE),
        queued: c(State.QUEUED),
        running: c(State.RUNNING),
        pending: c(State.PENDING),
        held: c(State.HELD),
        returning: c(State.RECYCLING) + c(State.CLEANING) + c(State.PARKED),
        completed: w[H.COMPLETED],
        cancelled: w[H.CANCELLED],
        failed: w[H.FAILED],
      };
    });
  }

  /** True when nothing is queued, running, pending or returning. */
  idle(): boolean {
    const s = this.stats();
    return s.queued + s.running + s.pending + s.returning === 0;
  }

  /** Buffers in the pool now (grows with look-aside). */
  allocated(): number {
    return Atomics.load(this.#words, H.ALLOCATED);
  }

  // ── producer side ────────────────────────────────────────────────────────────────────────

  /**
   * Takes a free buffer (growing the pool by one with look-aside when none is free), zeroes it
   * and returns its slot, or -1 when none is free.
   */
  fetch(): number {
    const w = this.#words;
    // Nothing free and no room to grow: answer without the lock, so that a producer polling an
    // empty pool does not contend with the loop.
    if (
      Atomics.load(w, H.FREE_HEAD) === NIL &&
      (!(Atomics.load(w, H.FLAGS) & Flag.LOOK_ASIDE) ||
        Atomics.load(w, H.ALLOCATED) >= w[H.MAX_BUFFERS]) &&
      !(Atomics.load(w, H.FLAGS) & Flag.CLOSING)
    ) {
      return -1;
    }
    const closed = -2;
    const slot = this.#locked(() => {
      if (w[H.FLAGS] & Flag.CLOSING) return closed;
      let slot = this.#head(H.FREE_HEAD, State.FREE);
      if (slot !== NIL) {
        this.#unlink(slot, H.FREE_HEAD, H.FREE_TAIL);
        this.#setState(slot, State.HELD);
      } else if ((w[H.FLAGS] & Flag.LOOK_ASIDE) && w[H.ALLOCATED] < w[H.MAX_BUFFERS]) {
        slot = w[H.ALLOCATED];
        this.#allocate(slot, State.HELD);
      } else {
        return NIL;
      }
      w[this.#at(slot, S.SIZE)] = this.sizes.bufferSize;
      w[this.#at(slot, S.WAITER)] = w[this.#at(slot, S.KEEP)] = 0;
      w[this.#at(slot, S.COMPLETION)] = Completion.NONE;
      return slot;
    });
    if (slot === closed) throw closedError();
    if (slot === NIL) return -1;
    // The slot is ours alone now: clear it outside the lock.
    this.#zero(this.regions.dataOffset + slot * this.regions.stride, this.sizes.bufferSize);
    this.#zero(
      this.regions.contextOffset + slot * this.regions.contextStride,
      this.sizes.contextSize,
    );
    return slot;
  }

  /**
   * True while the slot is HELD in this generation (read without the lock: a handle's hint that
   * only its owner can end, short of a close taking every buffer back).
   */
  isHeld(slot: number, generation: number): boolean {
    const w = this.#words;
    return Atomics.load(w, this.#at(slot, S.STATE)) === State.HELD &&
      Atomics.load(w, this.#at(slot, S.GENERATION)) === generation;
  }

  /**
   * Sets the size of a buffer: a held one (its producer), or, given the loop's `run`, a running
   * or pended one (its handler, e.g. to hand a reply back with `keep`).
   */
  setSize(slot: number, generation: number, size: number, run = -1): void {
    if (!Number.isInteger(size) || size < 0 || size > this.sizes.bufferSize) {
      throw new RangeError(
        `size must be an integer from 0 to ${this.sizes.bufferSize}, not ${size}`,
      );
    }
    const working = run >= 0;
    const problem = this.#locked((): Problem => {
      const problem = working
        ? this.#checkRun(slot, generation, run)
        : this.#check(slot, generation, State.HELD);
      if (!problem) this.#words[this.#at(slot, S.SIZE)] = size;
      return problem;
    });
    if (problem) throw this.#refusal(problem, "set the size of", working ? "running" : "held");
  }

  /** Puts a held buffer on the queue (tail, or head) and wakes the loop. */
  enqueue(
    slot: number,
    generation: number,
    atHead: boolean,
    waiter: boolean,
    keep = false,
    size = -1,
  ): void {
    const problem = this.#locked((): Problem => {
      const problem = this.#closing() || this.#check(slot, generation, State.HELD);
      if (!problem) {
        const w = this.#words;
        if (size >= 0) w[this.#at(slot, S.SIZE)] = size; // checked by the handle that kept it
        w[this.#at(slot, S.WAITER)] = waiter ? 1 : 0;
        w[this.#at(slot, S.KEEP)] = waiter && keep ? 1 : 0;
        w[this.#at(slot, S.COMPLETION)] = Completion.NONE;
        // A kept buffer goes round again with the same generation: its last DONE is history.
        Atomics.store(w, this.#at(slot, S.DONE), (generation - 1) | 0);
        if (atHead) this.#pushHead(slot, H.QUEUE_HEAD, H.QUEUE_TAIL);
        else this.#pushTail(slot, H.QUEUE_HEAD, H.QUEUE_TAIL);
        this.#setState(slot, State.QUEUED);
      }
      return problem;
    });
    if (problem) throw this.#refusal(problem, "enqueue", "held");
    this.wakeLoop();
  }

  /** Returns a held buffer to the pool without work (`cancelled`: as a cancelled item). */
  reuse(slot: number, generation: number, cancelled = false): void {
    const problem = this.#locked((): Problem => {
      const problem = this.#closing() || this.#check(slot, generation, State.HELD);
      if (!problem) {
        if (cancelled) this.#tally(Status.Cancelled);
        this.#words[this.#at(slot, S.WAITER)] = 0;
        this.#endRound(slot);
      }
      return problem;
    });
    if (problem) throw this.#refusal(problem, cancelled ? "enqueue" : "reuse", "held");
  }

  /**
   * Completes a pended item with `status` (DMF's WorkCompleted). An item whose `work` is still
   * running is marked instead, and completes once `work` returns: its buffer never returns to the
   * pool under a running handler. Once the round's status is final, it is refused.
   */
  workCompleted(slot: number, generation: number, status: StatusCode, run = -1): void {
    const problem = this.#locked((): Problem => {
      const w = this.#words;
      const completion = this.#at(slot, S.COMPLETION);
      const problem = run >= 0
        ? this.#checkRun(slot, generation, run)
        : this.#check(slot, generation, State.RUNNING, State.PENDING);
      // The round's status was final (it may have gone free since, but not round again).
      const current = w[this.#at(slot, S.GENERATION)];
      const sameRound = current === generation ||
        (current === ((generation + 1) | 0) && w[this.#at(slot, S.STATE)] === State.FREE);
      if (problem) {
        const final = problem !== Problem.FOREIGN && sameRound &&
          w[completion] === Completion.FINAL;
        return final ? Problem.FINAL : problem;
      }
      if (w[this.#at(slot, S.STATE)] === State.PENDING) {
        this.#finish(slot, status | 0, true, false);
      } else if (w[completion] === Completion.EARLY) {
        return Problem.TWICE;
      } else {
        w[this.#at(slot, S.STATUS)] = status | 0;
        w[completion] = Completion.EARLY;
      }
      return Problem.NONE;
    });
    if (problem) throw this.#refusal(problem, "complete", "running or pending");
  }

  /**
   * The loop's own completion: `work` returned WorkComplete. Returns {@linkcode Completed} bits:
   * FIRST unless `workCompleted` had completed it already (then the first status stands), CLEAN
   * when the loop must run `reuseCleanup` now and then call {@linkcode settleCleaned}.
   */
  completeRunning(slot: number, generation: number, status: StatusCode): number {
    return this.#locked(() => {
      const w = this.#words;
      if (!this.#isRound(slot, generation, State.RUNNING)) return Completed.FIRST;
      const early = w[this.#at(slot, S.COMPLETION)] === Completion.EARLY;
      return (early ? 0 : Completed.FIRST) |
        this.#finish(slot, early ? w[this.#at(slot, S.STATUS)] : status | 0, true, true);
    });
  }

  /** Cancels every queued item: waiters get `Status.Cancelled`; buffers return to the pool. */
  flush(): number {
    return this.#locked(() => this.#cancelQueued());
  }

  /** What a waiter sleeps on: the DONE word's index. */
  doneWord(slot: number): number {
    return this.#at(slot, S.DONE);
  }

  /** The int32 view, for waiting with `Atomics.waitAsync`. */
  get words(): Int32Array {
    return this.#words;
  }

  /**
   * The waiter of round `generation` takes its status; the buffer, if parked for it, goes free,
   * or (kept) back to the waiter, held. Call only once DONE equals `generation`.
   */
  collect(slot: number, generation: number): StatusCode {
    return this.#locked(() => {
      const w = this.#words;
      const status = w[this.#at(slot, S.STATUS)];
      if (w[this.#at(slot, S.GENERATION)] === generation && w[this.#at(slot, S.WAITER)]) {
        w[this.#at(slot, S.WAITER)] = 0;
        if (w[this.#at(slot, S.STATE)] === State.PARKED) {
          if (w[this.#at(slot, S.KEEP)] && !(w[H.FLAGS] & Flag.CLOSING)) {
            w[this.#at(slot, S.KEEP)] = 0;
            this.#setState(slot, State.HELD);
            this.#freeDue = true; // not fetchable, but no longer returning: `onIdle` looks again
          } else {
            this.#toFree(slot);
          }
        }
      }
      return status;
    });
  }

  /**
   * The waiter of round `generation` gives up (its signal aborted). A queued item is removed and
   * cancelled; a running or pended one goes on without a waiter, and the loop is told to abort
   * its `item.signal`. Returns true if it was removed.
   */
  abandon(slot: number, generation: number): boolean {
    return this.#locked(() => {
      const w = this.#words;
      if (w[this.#at(slot, S.GENERATION)] !== generation || !w[this.#at(slot, S.WAITER)]) {
        return false;
      }
      w[this.#at(slot, S.WAITER)] = w[this.#at(slot, S.KEEP)] = 0;
      const state = w[this.#at(slot, S.STATE)];
      if (state === State.QUEUED) {
        this.#unlink(slot, H.QUEUE_HEAD, H.QUEUE_TAIL);
        this.#finish(slot, Status.Cancelled, false, false);
        return true;
      }
      if (state === State.PARKED) {
        this.#toFree(slot);
      } else if (state === State.RUNNING || state === State.PENDING) {
        Atomics.store(w, this.#at(slot, S.ABORTED), w[this.#at(slot, S.RUN)]);
        this.#abortDue = true;
      }
      return false;
    });
  }

  // ── loop side ────────────────────────────────────────────────────────────────────────────

  /** Takes the item at the head of the queue for the loop, or -1. */
  takeNext(): number {
    const w = this.#words;
    if (Atomics.load(w, H.QUEUE_HEAD) === NIL) return -1;
    return this.#locked(() => {
      const slot = this.#head(H.QUEUE_HEAD, State.QUEUED);
      if (slot !== NIL) {
        this.#unlink(slot, H.QUEUE_HEAD, H.QUEUE_TAIL);
        this.#setState(slot, State.RUNNING);
        w[this.#at(slot, S.RUN)]++;
      }
      return slot;
    });
  }

  /** Its work returned WorkPending: the item waits for `workCompleted` (or had it already). */
  pend(slot: number, generation: number): void {
    this.#locked(() => {
      const w = this.#words;
      if (this.#isRound(slot, generation, State.RUNNING)) {
        if (w[this.#at(slot, S.COMPLETION)] === Completion.EARLY) {
          this.#finish(slot, w[this.#at(slot, S.STATUS)], true, false);
        } else {
          this.#setState(slot, State.PENDING);
        }
      }
    });
  }

  /** Takes a buffer waiting for `reuseCleanup` (it becomes CLEANING), or -1. */
  takeRecycled(): number {
    const w = this.#words;
    if (Atomics.load(w, H.RECYCLE_HEAD) === NIL) return -1;
    return this.#locked(() => {
      const slot = this.#head(H.RECYCLE_HEAD, State.RECYCLING);
      if (slot !== NIL) {
        this.#unlink(slot, H.RECYCLE_HEAD, H.RECYCLE_TAIL);
        this.#setState(slot, State.CLEANING);
      }
      return slot;
    });
  }

  /** After `reuseCleanup` ran: the buffer goes free, or parks until its waiter collects. */
  settleCleaned(slot: number): void {
    this.#locked(() => {
      if (this.#words[this.#at(slot, S.STATE)] === State.CLEANING) this.#settle(slot);
    });
  }

  /**
   * At a normal close, with the loop stopped, in the Worker: cancels queued and pended items and
   * takes back held buffers, sending them through `reuseCleanup`. Returns how many.
   */
  reclaimAll(): number {
    return this.#locked(() => {
      const w = this.#words;
      let reclaimed = this.#cancelQueued();
      const allocated = w[H.ALLOCATED];
      for (let slot = 0; slot < allocated; slot++) {
        const state = w[this.#at(slot, S.STATE)];
        if (state === State.PENDING || state === State.RUNNING) {
          this.#finish(slot, Status.Cancelled, false, false);
          reclaimed++;
        } else if (state === State.HELD) {
          w[this.#at(slot, S.WAITER)] = 0;
          this.#endRound(slot);
          reclaimed++;
        }
      }
      return reclaimed;
    });
  }

  /**
   * The last step of every close (normal, forced, or after the Worker died), on the owner: every
   * item not yet final completes `Status.Cancelled` (its waiter is woken), every buffer goes free
   * whatever it was doing (no `reuseCleanup`: the Worker is gone), and CLOSED is set.
   */
  closeOut(): void {
    this.#locked(() => {
      const w = this.#words;
      Atomics.or(w, H.FLAGS, Flag.CLOSING | Flag.STOP_REQUESTED);
      const allocated = w[H.ALLOCATED];
      for (let slot = 0; slot < allocated; slot++) {
        const state = w[this.#at(slot, S.STATE)];
        if (state === State.FREE) continue;
        const live = state === State.QUEUED || state === State.RUNNING ||
          state === State.PENDING;
        if (live && w[this.#at(slot, S.COMPLETION)] < Completion.FINAL) {
          w[this.#at(slot, S.STATUS)] = Status.Cancelled;
          w[this.#at(slot, S.COMPLETION)] = Completion.CANCELLED;
          this.#tally(Status.Cancelled);
        }
        const published = w[this.#at(slot, S.DONE)] === w[this.#at(slot, S.GENERATION)];
        if (w[this.#at(slot, S.WAITER)] && !published) this.#publish(slot);
        w[this.#at(slot, S.KEEP)] = 0;
        const at = this.#at(slot, S.GENERATION);
        Atomics.store(w, at, (w[at] + 1) | 0);
        Atomics.store(w, this.#at(slot, S.STATE), State.FREE);
      }
      this.#rebuild();
      Atomics.or(w, H.FLAGS, Flag.CLOSED);
      this.#repaired = true;
    });
  }

  // ── waking ───────────────────────────────────────────────────────────────────────────────

  /**
   * Tells the loop to look again (new item, recycled buffer, stop or close), if it is idle: a
   * busy loop looks again anyway before it goes idle ({@linkcode Pool.loopIdle}).
   */
  wakeLoop(): void {
    const w = this.#words;
    if (Atomics.load(w, H.LOOP_IDLE) === 0) return;
    Atomics.add(w, H.LOOP_WAKE, 1);
    if (Atomics.load(w, H.LOOP_SLEEPING) !== 0) Atomics.notify(w, H.LOOP_WAKE);
  }

  /**
   * The loop found nothing to do: from now on wakers bump LOOP_WAKE. Returns LOOP_WAKE as it is
   * now, to sleep on; the loop must then look for work once more before it sleeps (a waker that
   * still saw the loop busy skipped the bump, but its change is in place by now).
   */
  loopIdle(): number {
    Atomics.store(this.#words, H.LOOP_IDLE, 1);
    return Atomics.load(this.#words, H.LOOP_WAKE);
  }

  /** The loop looks again: wakers may skip the bump until it is idle once more. */
  loopBusy(): void {
    Atomics.store(this.#words, H.LOOP_IDLE, 0);
  }

  /** The loop publishes its time per item (ms) for producers that wait for a free buffer. */
  noteStep(stepMs: number): void {
    Atomics.store(this.#words, H.LOOP_STEP_NS, Math.min(Math.round(stepMs * 1e6), 0x7fffffff));
  }

  /** Whether the loop has a step to take: a returning buffer, or an item while `taking`. */
  loopHasWork(taking: boolean): boolean {
    const w = this.#words;
    return Atomics.load(w, H.RECYCLE_HEAD) !== NIL ||
      (taking && Atomics.load(w, H.QUEUE_HEAD) !== NIL);
  }

  /**
   * In the work loop's synchronous steps, this pool holds back the wake of a producer sleeping
   * for a free buffer while more than `freeAbove` items are queued, and the wake of an
   * `enqueueAndWait` caller whose item is done while more than `doneAbove` are (-1: no holding).
   * Waking a thread that sleeps in `Atomics.waitAsync` costs the waker 5–35 µs here (the
   * sleeper's CPU is idle: a cross-CPU interrupt in a VM), which per item is much of a fast
   * device's time. The sleepers then wake together, and the device has the queued items as work
   * meanwhile. A held-back waiter's status is final at once (a spinning waiter sees it); the loop
   * sets `doneAbove` so that its wake comes at most ~1 ms of queued work late.
   * The loop calls {@linkcode Pool.flushWakes} before every await (an async step, a yield, a
   * sleep), so a held-back wake never outlives the synchronous run of steps that owed it.
   */
  holdWakes(freeAbove: number, doneAbove: number): void {
    this.#holdFreeAbove = freeAbove;
    this.#holdDoneAbove = doneAbove;
  }

  /** Sends the wakes held back, if any are owed. */
  flushWakes(): void {
    if (this.#freeWakeOwed) this.#notifyFree();
    const w = this.#words;
    for (let i = 0; i < this.#doneOwedCount; i++) {
      const slot = this.#doneOwed[i];
      this.#doneOwing[slot] = 0;
      Atomics.notify(w, this.#at(slot, S.DONE));
    }
    this.#doneOwedCount = 0;
  }

  #queuedAbove(threshold: number): boolean {
    return threshold >= 0 && this.#words[COUNT_WORD[State.QUEUED]] > threshold;
  }

  #notifyFree(): void {
    this.#freeWakeOwed = false;
    Atomics.notify(this.#words, H.FREE_WAKE);
  }

  /** Zeroes `length` bytes from `start`, a block of {@linkcode ZERO_BLOCK} at a time. */
  #zero(start: number, length: number): void {
    for (let done = 0; done < length; done += ZERO_BLOCK) {
      const n = Math.min(ZERO_BLOCK, length - done);
      this.#bytes.set(
        n === this.#zeroes.length ? this.#zeroes : this.#zeroes.subarray(0, n),
        start + done,
      );
    }
  }

  /** A control message for the Worker is about to be posted: its busy loop should yield. */
  noteControl(): void {
    Atomics.add(this.#words, H.CONTROL_SEQ, 1); // a sleeping loop hears the message itself
  }

  /** Wakes everything that sleeps on the pool (used at close and after a repair). */
  wakeAll(): void {
    const w = this.#words;
    this.wakeLoop();
    Atomics.add(w, H.FREE_WAKE, 1);
    Atomics.notify(w, H.FREE_WAKE);
    Atomics.add(w, H.ABORT_WAKE, 1);
    Atomics.notify(w, H.ABORT_WAKE);
    for (let slot = 0; slot < w[H.MAX_BUFFERS]; slot++) Atomics.notify(w, this.#at(slot, S.DONE));
  }

  // ── internals (all under the lock) ───────────────────────────────────────────────────────
  // Plain reads and writes: the lock's compareExchange orders them for the next holder, and a
  // thread that reads a word without the lock (a list head, a count, a state) takes it as a hint
  // and looks again under the lock. An `Atomics` call costs ~12 ns here; a plain access ~1.

  #at(slot: number, field: number): number {
    return HEADER_WORDS + slot * SLOT_WORDS + field;
  }

  /**
   * The first slot of a list, checked: a head that points outside the pool or at a slot in
   * another state means the shared state was damaged (by a thread that died mid-call, or by a
   * foreign writer), so it is repaired first.
   */
  #head(head: number, state: SlotState): number {
    const w = this.#words;
    let slot = w[head];
    if (
      slot !== NIL && !(slot >= 0 && slot < w[H.ALLOCATED] && w[this.#at(slot, S.STATE)] === state)
    ) {
      this.#repair();
      slot = w[head];
    }
    return slot;
  }

  #closing(): Problem {
    return (this.#words[H.FLAGS] & Flag.CLOSING) ? Problem.CLOSED : Problem.NONE;
  }

  #isRound(slot: number, generation: number, state: number): boolean {
    const w = this.#words;
    return w[this.#at(slot, S.GENERATION)] === generation && w[this.#at(slot, S.STATE)] === state;
  }

  /** Why `slot`/`generation` is not a live buffer in state `a` (or `b`), or NONE. */
  #check(slot: number, generation: number, a: number, b = a): Problem {
    const w = this.#words;
    if (!(Number.isInteger(slot) && slot >= 0 && slot < w[H.ALLOCATED])) return Problem.FOREIGN;
    const state = w[this.#at(slot, S.STATE)];
    this.#problemState = state;
    // A round is over once its buffer heads back to the pool, even before the generation moves.
    if (
      w[this.#at(slot, S.GENERATION)] !== generation || state === State.RECYCLING ||
      state === State.CLEANING || state === State.PARKED || state === State.FREE
    ) {
      return Problem.STALE;
    }
    return state === a || state === b ? Problem.NONE : Problem.STATE;
  }

  /** Like `#check` for a running or pended item, for the loop's item of run `run`. */
  #checkRun(slot: number, generation: number, run: number): Problem {
    const problem = this.#check(slot, generation, State.RUNNING, State.PENDING);
    // The loop's item is over only once its status is final (completed, or cancelled at close),
    // whether its buffer went round again (kept: a later RUN) or back to the pool (stale).
    if (problem === Problem.STALE) return Problem.FINAL;
    if (!problem && this.#words[this.#at(slot, S.RUN)] !== run) return Problem.FINAL;
    return problem;
  }

  /** The error for a refused call, made outside the lock. */
  #refusal(problem: Problem, verb: string, expected: string): QueueError {
    switch (problem) {
      case Problem.FOREIGN:
        return new QueueError(
          "ForeignBuffer",
          `cannot ${verb} a buffer that is not from this queue`,
        );
      case Problem.STALE:
        return new QueueError(
          "StaleBuffer",
          `cannot ${verb} a stale buffer: its round ended (completed, flushed or reused); ` +
            "fetch a new one",
        );
      case Problem.CLOSED:
        return closedError();
      case Problem.TWICE:
        return new QueueError("BufferState", "cannot complete an item twice");
      case Problem.FINAL:
        return new QueueError(
          "BufferState",
          `cannot ${verb} an item whose status is final` +
            (verb === "complete"
              ? ": workCompleted is for items that are running or pending " +
                "(not from reuseCleanup, not after WorkComplete)"
              : ""),
        );
      default:
        return new QueueError(
          "BufferState",
          `cannot ${verb} a buffer that is ${
            stateNames[this.#problemState as SlotState] ?? "in an unknown state"
          }; it must be ${expected}`,
        );
    }
  }

  /** Empties the queue: every item ends Cancelled. Returns how many. */
  #cancelQueued(): number {
    const w = this.#words;
    let cancelled = 0;
    const limit = w[H.ALLOCATED];
    for (let slot = w[H.QUEUE_HEAD]; slot !== NIL && cancelled < limit; slot = w[H.QUEUE_HEAD]) {
      this.#unlink(slot, H.QUEUE_HEAD, H.QUEUE_TAIL);
      this.#finish(slot, Status.Cancelled, false, false);
      cancelled++;
    }
    return cancelled;
  }

  #allocate(slot: number, state: SlotState): void {
    const w = this.#words;
    w[H.ALLOCATED] = slot + 1;
    w[this.#at(slot, S.STATE)] = state;
    w[COUNT_WORD[state]]++;
    if (state === State.FREE) this.#pushTail(slot, H.FREE_HEAD, H.FREE_TAIL);
  }

  #setState(slot: number, state: SlotState): void {
    const w = this.#words;
    const at = this.#at(slot, S.STATE);
    w[COUNT_WORD[w[at]]]--;
    w[COUNT_WORD[state]]++;
    w[at] = state;
  }

  #tally(status: number): void {
    const w = this.#words;
    if (status === Status.Cancelled) w[H.CANCELLED]++;
    else if (isSuccess(status)) w[H.COMPLETED]++;
    else w[H.FAILED]++;
  }

  /** Tells the slot's waiter that STATUS is final (it is woken after unlock). */
  #publish(slot: number): void {
    const w = this.#words;
    Atomics.store(w, this.#at(slot, S.DONE), w[this.#at(slot, S.GENERATION)]);
    this.#wakeList[this.#wakeCount++] = slot;
  }

  /**
   * The round's status is final: publish it to the waiter, then keep the buffer for the waiter
   * (`keep`, completed by work), or send it back (through `reuseCleanup`, inline when `inline`).
   * Returns `Completed.CLEAN` when the caller must run `reuseCleanup` now.
   */
  #finish(slot: number, status: number, byWork: boolean, inline: boolean): number {
    const w = this.#words;
    w[this.#at(slot, S.STATUS)] = status;
    w[this.#at(slot, S.COMPLETION)] = byWork ? Completion.FINAL : Completion.CANCELLED;
    this.#tally(status);
    const waiter = w[this.#at(slot, S.WAITER)];
    if (waiter && byWork && w[this.#at(slot, S.KEEP)]) {
      this.#publish(slot);
      this.#setState(slot, State.PARKED);
      return 0;
    }
    w[this.#at(slot, S.KEEP)] = 0;
    if (inline && (w[H.FLAGS] & Flag.HAS_CLEANUP)) {
      // Cleaned by the loop right away: the waiter hears once the buffer is fetchable again.
      this.#setState(slot, State.CLEANING);
      return Completed.CLEAN;
    }
    if (waiter) this.#publish(slot);
    this.#endRound(slot);
    return 0;
  }

  /** Sends a buffer whose round is over through `reuseCleanup` (if any) on its way back. */
  #endRound(slot: number): void {
    if (this.#words[H.FLAGS] & Flag.HAS_CLEANUP) {
      this.#setState(slot, State.RECYCLING);
      this.#pushTail(slot, H.RECYCLE_HEAD, H.RECYCLE_TAIL);
      this.#loopDue = true;
    } else {
      this.#settle(slot);
    }
  }

  /** Cleaned (or nothing to clean): parks for the waiter, publishing its status if due. */
  #settle(slot: number): void {
    const w = this.#words;
    if (!w[this.#at(slot, S.WAITER)]) {
      this.#toFree(slot);
      return;
    }
    if (w[this.#at(slot, S.DONE)] !== w[this.#at(slot, S.GENERATION)]) this.#publish(slot);
    this.#setState(slot, State.PARKED);
  }

  #toFree(slot: number): void {
    const w = this.#words;
    w[this.#at(slot, S.GENERATION)]++; // wraps: Int32Array stores modulo 2³²
    this.#setState(slot, State.FREE);
    this.#pushTail(slot, H.FREE_HEAD, H.FREE_TAIL);
    this.#freeDue = true;
  }

  // Lists are singly linked (NEXT): pushing or taking the head writes only the list's ends and
  // the slot itself, never a neighbour's line (which the other thread may hold in its cache).

  #pushTail(slot: number, head: number, tail: number): void {
    const w = this.#words;
    const last = w[tail];
    w[this.#at(slot, S.NEXT)] = NIL;
    if (last === NIL) w[head] = slot;
    else w[this.#at(last, S.NEXT)] = slot;
    w[tail] = slot;
  }

  #pushHead(slot: number, head: number, tail: number): void {
    const w = this.#words;
    const first = w[head];
    w[this.#at(slot, S.NEXT)] = first;
    if (first === NIL) w[tail] = slot;
    w[head] = slot;
  }

  /**
   * Takes `slot` off a list: at once from the head (every hot path), else by a walk from the head
   * (a waiter giving up on a queued item). A slot the walk does not find is on no list.
   */
  #unlink(slot: number, head: number, tail: number): void {
    const w = this.#words;
    const next = w[this.#at(slot, S.NEXT)];
    w[this.#at(slot, S.NEXT)] = NIL;
    if (w[head] === slot) {
      w[head] = next;
      if (next === NIL) w[tail] = NIL;
      return;
    }
    const allocated = w[H.ALLOCATED];
    let prev = w[head];
    for (let steps = 0; prev >= 0 && prev < allocated && steps < allocated; steps++) {
      const after = w[this.#at(prev, S.NEXT)];
      if (after === slot) {
        w[this.#at(prev, S.NEXT)] = next;
        if (w[tail] === slot) w[tail] = prev;
        return;
      }
      prev = after;
    }
  }

  // ── repair ───────────────────────────────────────────────────────────────────────────────

  /** An exception escaped a critical section: it may have stopped half-way, so repair. */
  #repairAfter(): void {
    // A plain store first (no call, so it cannot overflow the stack): if the repair below
    // cannot run here either (out of stack), the next holder of the lock runs it.
    this.#words[H.REPAIR_DUE] = 1;
    try {
      this.#repair();
    } catch {
      // Left to the next holder.
    }
  }

  /**
   * Makes the shared state whole again after a holder stopped half-way (it died holding the
   * lock, or an exception left its critical section): finishes the step a slot's words show was
   * under way, then rebuilds lists and counts from the STATE words.
   */
  #repair(): void {
    const w = this.#words;
    const allocated = Math.min(Math.max(w[H.ALLOCATED], 0), w[H.MAX_BUFFERS]);
    w[H.ALLOCATED] = allocated;
    for (let slot = 0; slot < allocated; slot++) {
      const state = w[this.#at(slot, S.STATE)];
      const generation = this.#at(slot, S.GENERATION);
      const done = w[this.#at(slot, S.DONE)] === w[generation];
      let free = !(state > State.UNALLOCATED && state < STATE_COUNT) ||
        // Parked for nobody, or freed half-way (its generation moved on already).
        (state === State.PARKED && (!done || !w[this.#at(slot, S.WAITER)]));
      if ((state === State.QUEUED || state === State.PENDING) && done) {
        // Its status was published but the buffer never left: send it back.
        w[this.#at(slot, S.WAITER)] = 0;
        if (w[H.FLAGS] & Flag.HAS_CLEANUP) w[this.#at(slot, S.STATE)] = State.RECYCLING;
        else free = true;
      }
      if (free) {
        w[generation] = (w[generation] + 1) | 0;
        w[this.#at(slot, S.STATE)] = State.FREE;
      }
    }
    this.#rebuild();
    this.#words[H.REPAIR_DUE] = 0;
    this.#repaired = true;
  }

  /** Rebuilds the lists and counts from the STATE words, keeping the queue's order. */
  #rebuild(): void {
    const w = this.#words;
    const allocated = w[H.ALLOCATED];
    const relink = (head: number, tail: number, state: number, keepOrder: boolean) => {
      const order: number[] = [];
      const seen = new Uint8Array(allocated);
      if (keepOrder) {
        for (
          let slot = w[head];
          slot >= 0 && slot < allocated && !seen[slot] && w[this.#at(slot, S.STATE)] === state;
          slot = w[this.#at(slot, S.NEXT)]
        ) {
          seen[slot] = 1;
          order.push(slot);
        }
      }
      for (let slot = 0; slot < allocated; slot++) {
        if (!seen[slot] && w[this.#at(slot, S.STATE)] === state) order.push(slot);
      }
      w[head] = w[tail] = NIL;
      for (const slot of order) this.#pushTail(slot, head, tail);
    };
    relink(H.QUEUE_HEAD, H.QUEUE_TAIL, State.QUEUED, true);
    relink(H.RECYCLE_HEAD, H.RECYCLE_TAIL, State.RECYCLING, true);
    relink(H.FREE_HEAD, H.FREE_TAIL, State.FREE, false);
    for (let state = 0; state < STATE_COUNT; state++) w[COUNT_WORD[state]] = 0;
    for (let slot = 0; slot < allocated; slot++) w[COUNT_WORD[w[this.#at(slot, S.STATE)]]]++;
    for (let slot = allocated; slot < w[H.MAX_BUFFERS]; slot++) {
      w[this.#at(slot, S.NEXT)] = NIL;
    }
  }

  /**
   * Runs a critical section: takes the lock, runs `body`, releases the lock and wakes whoever
   * the section made runnable. A section that throws (even out of stack) may have stopped
   * half-way: the state is repaired before the lock is released.
   */
  #locked<T>(body: () => T): T {
    this.#enter();
    try {
      return body();
    } catch (error) {
      this.#repairAfter();
      throw error;
    } finally {
      this.#exit();
    }
  }

  /** Takes the lock (and finishes a repair that an earlier holder could not). */
  #enter(): void {
    this.#lock.enter();
    if (this.#words[H.REPAIR_DUE]) {
      try {
        this.#repair();
      } catch (error) {
        this.#exit();
        throw error;
      }
    }
  }

  /** Releases the lock, then wakes whoever the critical section made runnable. */
  #exit(): void {
    this.#lock.exit();
    this.#afterUnlock();
  }

  /** Wakes whoever the last critical section made runnable. */
  #afterUnlock(): void {
    const w = this.#words;
    if (this.#repaired) {
      this.#repaired = false;
      this.#wakeCount = 0;
      this.#freeDue = this.#loopDue = this.#abortDue = false;
      this.wakeAll();
      return;
    }
    if (this.#wakeCount > 0) {
      const holding = this.#queuedAbove(this.#holdDoneAbove);
      for (let i = 0; i < this.#wakeCount; i++) {
        const slot = this.#wakeList[i];
        if (!holding) {
          Atomics.notify(w, this.#at(slot, S.DONE));
        } else if (!this.#doneOwing[slot]) {
          this.#doneOwing[slot] = 1;
          this.#doneOwed[this.#doneOwedCount++] = slot;
        }
      }
      this.#wakeCount = 0;
    }
    if (this.#freeDue) {
      this.#freeDue = false;
      Atomics.add(w, H.FREE_WAKE, 1); // spinning waiters see this at once
      if (Atomics.load(w, H.FREE_SLEEPERS) !== 0) {
        if (this.#queuedAbove(this.#holdFreeAbove)) this.#freeWakeOwed = true;
        else this.#notifyFree();
      }
    }
    if (this.#loopDue) {
      this.#loopDue = false;
      this.wakeLoop();
    }
    if (this.#abortDue) {
      this.#abortDue = false;
      Atomics.add(w, H.ABORT_WAKE, 1);
      Atomics.notify(w, H.ABORT_WAKE);
    }
  }
}

function closedError(): QueueError {
  return new QueueError("Closed", "the queue is closed");
}
