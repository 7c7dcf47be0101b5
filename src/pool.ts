/**
 * The pool: every operation on the shared queue state, each one a short critical section under
 * one lock in the SharedArrayBuffer. Any thread can hold a `Pool` over the same buffer. No method
 * allocates; misuse is detected under the lock before anything changes.
 *
 * @module
 */

import { QueueError } from "./errors.ts";
import {
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
} from "./layout.ts";
import { isSuccess, Status, type StatusCode } from "./status.ts";

const stateNames = Object.fromEntries(
  Object.entries(State).map(([name, value]) => [value, name.toLowerCase()]),
) as Record<SlotState, string>;

/** How many times to retry a contended lock before sleeping on it. */
const LOCK_SPINS = 200;

/** A snapshot of where the buffers are; `free + queued + running + pending + held` is the pool. */
export interface QueueStats {
  /** Buffers back in the pool (including a few whose `reuseCleanup` or waiter is still due). */
  readonly free: number;
  /** Items enqueued and not yet taken by the loop. */
  readonly queued: number;
  /** Items whose `work` is running. */
  readonly running: number;
  /** Items whose `work` returned `WorkPending` and that are not completed yet. */
  readonly pending: number;
  /** Buffers fetched by producers and not yet enqueued or reused. */
  readonly held: number;
  /** Items that ended with a success status. */
  readonly completed: number;
  /** Items that ended with `Status.Cancelled` (flushed, aborted, closed, or so completed). */
  readonly cancelled: number;
  /** Items that ended with any other failure status. */
  readonly failed: number;
}

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
  /** Scratch list of slots whose waiters must be woken after unlock (never reallocated). */
  readonly #wakeList: Int32Array;
  #wakeCount = 0;

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#words = new Int32Array(buffer);
    this.#bytes = new Uint8Array(buffer);
    const w = this.#words;
    if (buffer.byteLength < HEADER_WORDS * 4 || w[H.MAGIC] !== MAGIC) {
      throw new QueueError("ForeignBuffer", "not a tbq queue: the shared buffer has no tbq header");
    }
    this.sizes = {
      bufferCount: w[H.BUFFER_COUNT],
      maxBuffers: w[H.MAX_BUFFERS],
      bufferSize: w[H.BUFFER_SIZE],
      contextSize: w[H.CONTEXT_SIZE],
    };
    this.regions = regions(this.sizes);
    this.#wakeList = new Int32Array(Math.max(1, this.sizes.maxBuffers));
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
    for (const head of [H.FREE_HEAD, H.FREE_TAIL, H.QUEUE_HEAD, H.QUEUE_TAIL]) w[head] = NIL;
    w[H.RECYCLE_HEAD] = w[H.RECYCLE_TAIL] = NIL;
    for (let slot = 0; slot < sizes.maxBuffers; slot++) {
      const base = HEADER_WORDS + slot * SLOT_WORDS;
      w[base + S.NEXT] = w[base + S.PREV] = NIL;
      w[base + S.DONE] = -1;
    }
    const pool = new Pool(buffer);
    for (let slot = 0; slot < sizes.bufferCount; slot++) pool.#allocate(slot, State.FREE);
    return pool;
  }

  /** A pool over a buffer made by {@linkcode Pool.create}, possibly on another thread. */
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
    return Atomics.load(this.#words, this.#at(slot, S.GENERATION));
  }

  /** The slot's state. */
  state(slot: number): SlotState {
    return Atomics.load(this.#words, this.#at(slot, S.STATE)) as SlotState;
  }

  /** Bytes the work will see. */
  size(slot: number): number {
    return Atomics.load(this.#words, this.#at(slot, S.SIZE));
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
    return Atomics.load(this.#words, H.COUNT_BASE + State.QUEUED);
  }

  /** A consistent snapshot of the counts. */
  stats(): QueueStats {
    this.#lock();
    const w = this.#words;
    const c = (state: SlotState) => w[H.COUNT_BASE + state];
    const stats: QueueStats = {
      free: c(State.FREE) + c(State.RECYCLING) + c(State.PARKED),
      queued: c(State.QUEUED),
      running: c(State.RUNNING),
      pending: c(State.PENDING),
      held: c(State.HELD),
      completed: w[H.COMPLETED],
      cancelled: w[H.CANCELLED],
      failed: w[H.FAILED],
    };
    this.#unlock();
    return stats;
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
    this.#lock();
    if (w[H.FLAGS] & Flag.CLOSING) {
      this.#unlock();
      throw this.#closedError();
    }
    let slot = w[H.FREE_HEAD];
    if (slot !== NIL) {
      this.#unlink(slot, H.FREE_HEAD, H.FREE_TAIL);
      this.#setState(slot, State.HELD);
    } else if ((w[H.FLAGS] & Flag.LOOK_ASIDE) && w[H.ALLOCATED] < w[H.MAX_BUFFERS]) {
      slot = w[H.ALLOCATED];
      this.#allocate(slot, State.HELD);
    } else {
      this.#unlock();
      return -1;
    }
    w[this.#at(slot, S.SIZE)] = this.sizes.bufferSize;
    w[this.#at(slot, S.WAITER)] = 0;
    this.#unlock();
    // The slot is ours alone now: clear it outside the lock.
    const dataStart = this.regions.dataOffset + slot * this.regions.stride;
    this.#bytes.fill(0, dataStart, dataStart + this.sizes.bufferSize);
    const contextStart = this.regions.contextOffset + slot * this.regions.contextStride;
    this.#bytes.fill(0, contextStart, contextStart + this.sizes.contextSize);
    return slot;
  }

  /** Sets the size of a held buffer. */
  setSize(slot: number, generation: number, size: number): void {
    if (!Number.isInteger(size) || size < 0 || size > this.sizes.bufferSize) {
      throw new RangeError(
        `size must be an integer from 0 to ${this.sizes.bufferSize}, not ${size}`,
      );
    }
    this.#lock();
    const problem = this.#check(slot, generation, State.HELD, "set the size of");
    if (!problem) this.#words[this.#at(slot, S.SIZE)] = size;
    this.#unlock();
    if (problem) throw problem;
  }

  /** Puts a held buffer on the queue (tail, or head) and wakes the loop. */
  enqueue(slot: number, generation: number, atHead: boolean, waiter: boolean): void {
    this.#lock();
    const problem = this.#closing() ?? this.#check(slot, generation, State.HELD, "enqueue");
    if (!problem) {
      const w = this.#words;
      w[this.#at(slot, S.WAITER)] = waiter ? 1 : 0;
      if (atHead) this.#pushHead(slot, H.QUEUE_HEAD, H.QUEUE_TAIL);
      else this.#pushTail(slot, H.QUEUE_HEAD, H.QUEUE_TAIL);
      this.#setState(slot, State.QUEUED);
    }
    this.#unlock();
    if (problem) throw problem;
    this.wakeLoop();
  }

  /** Returns a held buffer to the pool without work. */
  reuse(slot: number, generation: number): void {
    this.#lock();
    const problem = this.#closing() ?? this.#check(slot, generation, State.HELD, "reuse");
    if (!problem) this.#endRound(slot, false);
    this.#unlock();
    if (problem) throw problem;
    this.#afterUnlock();
  }

  /** Ends a held buffer's round as a cancelled item (an `enqueueAndWait` whose signal was aborted). */
  cancelHeld(slot: number, generation: number): void {
    this.#lock();
    const problem = this.#closing() ?? this.#check(slot, generation, State.HELD, "enqueue");
    if (!problem) {
      this.#tally(Status.Cancelled);
      this.#endRound(slot, false);
    }
    this.#unlock();
    if (problem) throw problem;
    this.#afterUnlock();
  }

  /**
   * Completes a pended item with `status` (DMF's WorkCompleted). An item whose `work` is still
   * running is marked instead, and completes once `work` returns: its buffer never returns to the
   * pool under a running handler.
   */
  workCompleted(slot: number, generation: number, status: StatusCode): void {
    this.#lock();
    const w = this.#words;
    let problem = this.#check(slot, generation, -1, "complete");
    const state = w[this.#at(slot, S.STATE)];
    const early = this.#at(slot, S.EARLY);
    if (!problem && state === State.PENDING) {
      this.#finish(slot, status | 0, false);
    } else if (!problem && state === State.RUNNING && !w[early]) {
      w[this.#at(slot, S.STATUS)] = status | 0;
      w[early] = 1;
    } else {
      problem ??= new QueueError(
        "BufferState",
        state === State.RUNNING
          ? "cannot complete an item twice"
          : `cannot complete an item that is ${stateNames[state as SlotState]}: ` +
            "workCompleted is for items whose work returned WorkPending",
      );
    }
    this.#unlock();
    if (problem) throw problem;
    this.#afterUnlock();
  }

  /**
   * The loop's own completion: `work` returned WorkComplete (with `cleaned`, its `reuseCleanup`
   * already ran inline). Returns false if `workCompleted` had completed it already (then the
   * first status stands).
   */
  finishRunning(slot: number, generation: number, status: StatusCode, cleaned: boolean): boolean {
    this.#lock();
    const w = this.#words;
    let first = true;
    if (this.#isRound(slot, generation, State.RUNNING)) {
      first = !w[this.#at(slot, S.EARLY)];
      this.#finish(slot, first ? status | 0 : w[this.#at(slot, S.STATUS)], cleaned);
    }
    this.#unlock();
    this.#afterUnlock();
    return first;
  }

  /** Cancels every queued item: waiters get `Status.Cancelled`; buffers return to the pool. */
  flush(): number {
    this.#lock();
    const flushed = this.#cancelQueued();
    this.#unlock();
    this.#afterUnlock();
    return flushed;
  }

  /** True once the status of the slot's round `generation` is final. */
  isDone(slot: number, generation: number): boolean {
    return Atomics.load(this.#words, this.#at(slot, S.DONE)) === generation;
  }

  /** What a waiter sleeps on: the DONE word index and its value now. */
  doneWord(slot: number): number {
    return this.#at(slot, S.DONE);
  }

  /** The int32 view, for waiting with `Atomics.waitAsync`. */
  get words(): Int32Array {
    return this.#words;
  }

  /**
   * The waiter of round `generation` takes its status; the buffer, if parked for it, goes free.
   * Call only once `isDone` is true.
   */
  collect(slot: number, generation: number): StatusCode {
    this.#lock();
    const w = this.#words;
    const status = w[this.#at(slot, S.STATUS)];
    if (w[this.#at(slot, S.GENERATION)] === generation && w[this.#at(slot, S.WAITER)]) {
      w[this.#at(slot, S.WAITER)] = 0;
      if (w[this.#at(slot, S.STATE)] === State.PARKED) this.#toFree(slot);
    }
    this.#unlock();
    this.#afterUnlock();
    return status;
  }

  /**
   * The waiter of round `generation` gives up (its signal aborted). A queued item is removed and
   * cancelled; a running or pended one goes on without a waiter. Returns true if it was removed.
   */
  abandon(slot: number, generation: number): boolean {
    this.#lock();
    const w = this.#words;
    let removed = false;
    if (w[this.#at(slot, S.GENERATION)] === generation && w[this.#at(slot, S.WAITER)]) {
      w[this.#at(slot, S.WAITER)] = 0;
      const state = w[this.#at(slot, S.STATE)];
      if (state === State.QUEUED) {
        this.#unlink(slot, H.QUEUE_HEAD, H.QUEUE_TAIL);
        w[this.#at(slot, S.STATUS)] = Status.Cancelled;
        this.#tally(Status.Cancelled);
        this.#endRound(slot, false);
        removed = true;
      } else if (state === State.PARKED) {
        this.#toFree(slot);
      }
    }
    this.#unlock();
    this.#afterUnlock();
    return removed;
  }

  // ── loop side ────────────────────────────────────────────────────────────────────────────

  /** Takes the item at the head of the queue for the loop, or -1. */
  takeNext(): number {
    const w = this.#words;
    if (Atomics.load(w, H.QUEUE_HEAD) === NIL) return -1;
    this.#lock();
    const slot = w[H.QUEUE_HEAD];
    if (slot !== NIL) {
      this.#unlink(slot, H.QUEUE_HEAD, H.QUEUE_TAIL);
      this.#setState(slot, State.RUNNING);
    }
    this.#unlock();
    return slot;
  }

  /** Its work returned WorkPending: the item waits for `workCompleted` (or had it already). */
  pend(slot: number, generation: number): void {
    this.#lock();
    const w = this.#words;
    if (this.#isRound(slot, generation, State.RUNNING)) {
      if (w[this.#at(slot, S.EARLY)]) this.#finish(slot, w[this.#at(slot, S.STATUS)], false);
      else this.#setState(slot, State.PENDING);
    }
    this.#unlock();
    this.#afterUnlock();
  }

  /** Takes a buffer waiting for `reuseCleanup`, or -1. The slot stays RECYCLING until settled. */
  takeRecycled(): number {
    const w = this.#words;
    if (Atomics.load(w, H.RECYCLE_HEAD) === NIL) return -1;
    this.#lock();
    const slot = w[H.RECYCLE_HEAD];
    if (slot !== NIL) this.#unlink(slot, H.RECYCLE_HEAD, H.RECYCLE_TAIL);
    this.#unlock();
    return slot;
  }

  /** After `reuseCleanup` ran: the buffer goes free, or parks until its waiter collects. */
  settleRecycled(slot: number): void {
    this.#lock();
    this.#settle(slot);
    this.#unlock();
    this.#afterUnlock();
  }

  /**
   * At close, with the loop stopped: cancels queued and pended items and takes back held
   * buffers. Their buffers go to the recycle list (with a cleanup) or free. Returns how many.
   */
  reclaimAll(): number {
    this.#lock();
    const w = this.#words;
    let reclaimed = this.#cancelQueued();
    const allocated = w[H.ALLOCATED];
    for (let slot = 0; slot < allocated; slot++) {
      const state = w[this.#at(slot, S.STATE)];
      if (state === State.PENDING || state === State.RUNNING) {
        this.#finish(slot, Status.Cancelled, false);
        reclaimed++;
      } else if (state === State.HELD) {
        this.#endRound(slot, false);
        reclaimed++;
      }
    }
    this.#unlock();
    this.#afterUnlock();
    return reclaimed;
  }

  // ── waking ───────────────────────────────────────────────────────────────────────────────

  /** Tells the loop to look again (new item, recycled buffer, stop or close). */
  wakeLoop(): void {
    const w = this.#words;
    Atomics.add(w, H.LOOP_WAKE, 1);
    if (Atomics.load(w, H.LOOP_SLEEPING) !== 0) Atomics.notify(w, H.LOOP_WAKE);
  }

  /** Wakes everything that sleeps on the pool (used at close). */
  wakeAll(): void {
    const w = this.#words;
    this.wakeLoop();
    Atomics.add(w, H.FREE_WAKE, 1);
    Atomics.notify(w, H.FREE_WAKE);
    for (let slot = 0; slot < w[H.MAX_BUFFERS]; slot++) Atomics.notify(w, this.#at(slot, S.DONE));
  }

  // ── internals (all under the lock) ───────────────────────────────────────────────────────

  #at(slot: number, field: number): number {
    return HEADER_WORDS + slot * SLOT_WORDS + field;
  }

  #closing(): QueueError | undefined {
    return (this.#words[H.FLAGS] & Flag.CLOSING) ? this.#closedError() : undefined;
  }

  #closedError(): QueueError {
    return new QueueError("Closed", "the queue is closed");
  }

  #isRound(slot: number, generation: number, state: number): boolean {
    const w = this.#words;
    return w[this.#at(slot, S.GENERATION)] === generation && w[this.#at(slot, S.STATE)] === state;
  }

  /** Why `slot`/`generation` is not a buffer in `expected` state (-1: any live state), or nothing. */
  #check(slot: number, generation: number, expected: number, verb: string): QueueError | undefined {
    const w = this.#words;
    if (!(slot >= 0 && slot < w[H.ALLOCATED])) {
      return new QueueError("ForeignBuffer", `cannot ${verb} a buffer that is not from this queue`);
    }
    const state = w[this.#at(slot, S.STATE)] as SlotState;
    // A round is over once its buffer heads back to the pool, even before the generation moves.
    if (
      w[this.#at(slot, S.GENERATION)] !== generation || state === State.RECYCLING ||
      state === State.PARKED
    ) {
      return new QueueError(
        "StaleBuffer",
        `cannot ${verb} a stale buffer: its round ended (completed, flushed or reused); fetch a new one`,
      );
    }
    if (expected >= 0 && state !== expected) {
      return new QueueError(
        "BufferState",
        `cannot ${verb} a buffer that is ${stateNames[state]}; it must be ${
          stateNames[expected as SlotState]
        }`,
      );
    }
    return undefined;
  }

  /** Empties the queue: every item ends Cancelled. Returns how many. */
  #cancelQueued(): number {
    const w = this.#words;
    let cancelled = 0;
    for (let slot = w[H.QUEUE_HEAD]; slot !== NIL; slot = w[H.QUEUE_HEAD], cancelled++) {
      this.#unlink(slot, H.QUEUE_HEAD, H.QUEUE_TAIL);
      this.#finish(slot, Status.Cancelled, false);
    }
    return cancelled;
  }

  #allocate(slot: number, state: SlotState): void {
    const w = this.#words;
    Atomics.store(w, H.ALLOCATED, slot + 1);
    Atomics.store(w, this.#at(slot, S.STATE), state);
    Atomics.add(w, H.COUNT_BASE + state, 1);
    if (state === State.FREE) this.#pushTail(slot, H.FREE_HEAD, H.FREE_TAIL);
  }

  #setState(slot: number, state: SlotState): void {
    const w = this.#words;
    const at = this.#at(slot, S.STATE);
    Atomics.sub(w, H.COUNT_BASE + w[at], 1);
    Atomics.add(w, H.COUNT_BASE + state, 1);
    Atomics.store(w, at, state);
  }

  #tally(status: number): void {
    const w = this.#words;
    if (status === Status.Cancelled) w[H.CANCELLED]++;
    else if (isSuccess(status)) w[H.COMPLETED]++;
    else w[H.FAILED]++;
  }

  /** The round's status is final: publish it to the waiter, then clean up or settle. */
  #finish(slot: number, status: number, cleaned: boolean): void {
    const w = this.#words;
    w[this.#at(slot, S.STATUS)] = status;
    w[this.#at(slot, S.EARLY)] = 0;
    this.#tally(status);
    if (w[this.#at(slot, S.WAITER)]) {
      Atomics.store(w, this.#at(slot, S.DONE), w[this.#at(slot, S.GENERATION)]);
      this.#wakeList[this.#wakeCount++] = slot;
    }
    this.#endRound(slot, cleaned);
  }

  /** Sends a buffer whose round is over through `reuseCleanup` (if any) on its way back. */
  #endRound(slot: number, cleaned: boolean): void {
    if (!cleaned && (this.#words[H.FLAGS] & Flag.HAS_CLEANUP)) {
      this.#setState(slot, State.RECYCLING);
      this.#pushTail(slot, H.RECYCLE_HEAD, H.RECYCLE_TAIL);
      this.#loopDue = true;
    } else {
      this.#settle(slot);
    }
  }

  #settle(slot: number): void {
    if (this.#words[this.#at(slot, S.WAITER)]) this.#setState(slot, State.PARKED);
    else this.#toFree(slot);
  }

  #toFree(slot: number): void {
    const w = this.#words;
    const at = this.#at(slot, S.GENERATION);
    Atomics.store(w, at, (w[at] + 1) | 0);
    this.#setState(slot, State.FREE);
    this.#pushTail(slot, H.FREE_HEAD, H.FREE_TAIL);
    this.#freeDue = true;
  }

  #loopDue = false;
  #freeDue = false;

  /** Wakes whoever the last critical section made runnable. */
  #afterUnlock(): void {
    const w = this.#words;
    for (let i = 0; i < this.#wakeCount; i++) {
      Atomics.notify(w, this.#at(this.#wakeList[i], S.DONE));
    }
    this.#wakeCount = 0;
    if (this.#freeDue) {
      this.#freeDue = false;
      Atomics.add(w, H.FREE_WAKE, 1);
      if (Atomics.load(w, H.FREE_SLEEPERS) !== 0) Atomics.notify(w, H.FREE_WAKE);
    }
    if (this.#loopDue) {
      this.#loopDue = false;
      this.wakeLoop();
    }
  }

  #pushTail(slot: number, head: number, tail: number): void {
    const w = this.#words;
    const last = w[tail];
    w[this.#at(slot, S.NEXT)] = NIL;
    w[this.#at(slot, S.PREV)] = last;
    if (last === NIL) Atomics.store(w, head, slot);
    else w[this.#at(last, S.NEXT)] = slot;
    w[tail] = slot;
  }

  #pushHead(slot: number, head: number, tail: number): void {
    const w = this.#words;
    const first = w[head];
    w[this.#at(slot, S.PREV)] = NIL;
    w[this.#at(slot, S.NEXT)] = first;
    if (first === NIL) w[tail] = slot;
    else w[this.#at(first, S.PREV)] = slot;
    Atomics.store(w, head, slot);
  }

  #unlink(slot: number, head: number, tail: number): void {
    const w = this.#words;
    const next = w[this.#at(slot, S.NEXT)];
    const prev = w[this.#at(slot, S.PREV)];
    if (prev === NIL) Atomics.store(w, head, next);
    else w[this.#at(prev, S.NEXT)] = next;
    if (next === NIL) w[tail] = prev;
    else w[this.#at(next, S.PREV)] = prev;
    w[this.#at(slot, S.NEXT)] = w[this.#at(slot, S.PREV)] = NIL;
  }

  /** A futex-style mutex: 0 free, 1 locked, 2 locked with sleepers. */
  #lock(): void {
    const w = this.#words;
    if (Atomics.compareExchange(w, H.LOCK, 0, 1) === 0) return;
    for (let spin = 0; spin < LOCK_SPINS; spin++) {
      if (Atomics.load(w, H.LOCK) === 0 && Atomics.compareExchange(w, H.LOCK, 0, 1) === 0) return;
    }
    while (Atomics.exchange(w, H.LOCK, 2) !== 0) Atomics.wait(w, H.LOCK, 2);
  }

  #unlock(): void {
    const w = this.#words;
    if (Atomics.sub(w, H.LOCK, 1) !== 1) {
      Atomics.store(w, H.LOCK, 0);
      Atomics.notify(w, H.LOCK, 1);
    }
  }
}
