/**
 * The SharedArrayBuffer layout: the one place that says where every piece of queue state lives.
 * Everything the queue knows is in this buffer, so any thread that holds it (the owner, the work
 * loop's Worker, producer Workers) sees and changes the same state with `Atomics`.
 *
 * ```
 *  byte 0                                                     Int32 words
 *  ┌──────────────────────────────────────────────────────────────────────────────┐
 *  │ HEADER  (HEADER_WORDS × int32): one 64-byte cache line per group of writers, │
 *  │ so that a word one thread spins on never shares a line with another's writes │
 *  │   line 0, read-mostly:                                                       │
 *  │   0 MAGIC            3 BUFFER_SIZE       6 FLAGS             9 REPAIR_DUE    │
 *  │   1 BUFFER_COUNT     4 CONTEXT_SIZE      7 ALLOCATED                         │
 *  │   2 MAX_BUFFERS      5 STRIDE            8 NEXT_ID                           │
 *  │   line 1, the lock and what every item's round changes under it:             │
 *  │  16 LOCK            19 FREE_TAIL        22 COMPLETED        25 QUEUED count  │
 *  │  17 LOCK_SEQ        20 QUEUE_HEAD       23 FREE count       26 RUNNING count │
 *  │  18 FREE_HEAD       21 QUEUE_TAIL       24 HELD count                        │
 *  │   line 2, the rest under the lock (pended items, cleanup, failures):         │
 *  │  32 RECYCLE_HEAD    34 CANCELLED        counts: 36 UNALLOCATED  37 PENDING   │
 *  │  33 RECYCLE_TAIL    35 FAILED           38 RECYCLING  39 CLEANING  40 PARKED │
 *  │   line 3, producers wake the loop:   48 LOOP_WAKE  49 LOOP_SLEEPING          │
 *  │                                      50 CONTROL_SEQ  51 LOOP_IDLE            │
 *  │   line 4, the loop wakes producers:  64 FREE_WAKE  65 FREE_SLEEPERS          │
 *  │                                      66 FREE_POLLERS  67 LOOP_STEP_NS        │
 *  │   line 5, waiters who gave up:       80 ABORT_WAKE                           │
 *  ├──────────────────────────────────────────────────────────────────────────────┤
 *  │ SLOTS   (MAX_BUFFERS × SLOT_WORDS × int32), slot i at word SLOT_BASE + 16i:  │
 *  │ 64 bytes each, so that the loop's slot and a producer's do not share a line  │
 *  │   +0 STATE  +1 GENERATION  +2 NEXT  +4 SIZE  +5 STATUS  (+3 unused)          │
 *  │   +6 DONE   +7 WAITER  +8 COMPLETION  +9 KEEP  +10 ABORTED  +11 RUN          │
 *  │   +12..15 unused                                                             │
 *  ├──────────────────────────────────────────────────────────────────────────────┤
 *  │ DATA    (MAX_BUFFERS × STRIDE bytes), slot i at dataOffset + i × STRIDE      │
 *  ├──────────────────────────────────────────────────────────────────────────────┤
 *  │ CONTEXT (MAX_BUFFERS × contextStride bytes)                                  │
 *  └──────────────────────────────────────────────────────────────────────────────┘
 * ```
 *
 * Lists (free, queue, recycle) are singly linked through NEXT, with head and tail words and
 * {@linkcode NIL} ends.
 * The words of lines 1 and 2 (but LOCK itself) and of the slots change only under the lock,
 * except DONE and ABORTED, which, like the wake words, are `Atomics` words that sleepers wait on
 * or the loop polls. Under the lock they are read and written plainly (the lock orders them);
 * read without it, a word is only a hint that is checked again under the lock. LOCK holds the
 * holder's thread id, so that a lock whose holder died (a Worker terminated mid-call) can be
 * recognised and taken over.
 *
 * The 64-byte spans are cache lines when the buffer starts on a line; malloc aligns it to 16
 * bytes only, so each span's words sit in its first 48 bytes (a slot's in words 0–11), which
 * then still fall within one line that no other span's words share.
 *
 * @module
 */

/** Identifies a tbq buffer (and this layout's version) when another thread attaches. */
export const MAGIC = 0x74627103;

/** The end of a list. */
export const NIL = -1;

/** Header word indexes. */
export const H = {
  MAGIC: 0,
  BUFFER_COUNT: 1,
  MAX_BUFFERS: 2,
  BUFFER_SIZE: 3,
  CONTEXT_SIZE: 4,
  STRIDE: 5,
  FLAGS: 6,
  /** Slots taken into the pool so far (grows with look-aside up to MAX_BUFFERS). */
  ALLOCATED: 7,
  /** 0 when free, else the holder's thread id, with {@linkcode LOCK_WAITERS} set when contended. */
  LOCK: 16,
  /** Bumped at every acquisition: a waiter that sees neither LOCK nor this move knows the holder stalled. */
  LOCK_SEQ: 17,
  /** Hands out thread ids for LOCK (one per `Pool` object). */
  NEXT_ID: 8,
  /**
   * 1 when a critical section stopped half-way and could not repair: the next holder does.
   * Every holder reads it and almost none writes it, so it lives with the read-mostly words.
   */
  REPAIR_DUE: 9,
  FREE_HEAD: 18,
  FREE_TAIL: 19,
  QUEUE_HEAD: 20,
  QUEUE_TAIL: 21,
  /** Items that ended with a success status. */
  COMPLETED: 22,
  RECYCLE_HEAD: 32,
  RECYCLE_TAIL: 33,
  CANCELLED: 34,
  FAILED: 35,
  /** Bumped, while LOOP_IDLE is 1, whenever the work loop has something new to look at. */
  LOOP_WAKE: 48,
  /** 1 while the loop sleeps on LOOP_WAKE, so wakers know to notify. */
  LOOP_SLEEPING: 49,
  /**
   * 1 from the moment the loop found nothing to do until it looks again: only then do wakers
   * bump LOOP_WAKE (a busy loop finds new work by itself, and a bump per item would move this
   * line between the CPUs for nothing).
   */
  LOOP_IDLE: 51,
  /** Bumped whenever a buffer becomes fetchable, or the queue closes. */
  FREE_WAKE: 64,
  /** How many threads sleep on FREE_WAKE. */
  FREE_SLEEPERS: 65,
  /** How many threads poll FREE_WAKE (they need no wake; see `pollThenWait`). */
  FREE_POLLERS: 66,
  /** The loop's recent time per item in ns (0 until known): how long a producer may poll. */
  LOOP_STEP_NS: 67,
  /** Bumped when a waiter gives up on a running or pended item (the loop aborts `item.signal`). */
  ABORT_WAKE: 80,
  /**
   * Bumped by the owner before each message it posts to the Worker: a busy loop yields to its
   * event loop when this moved (otherwise only every `YIELD_EVERY_MS`).
   */
  CONTROL_SEQ: 50,
} as const;

/**
 * The header word that counts the slots in each state, indexed by {@linkcode State}. The states
 * an item passes through on its way round (free, held, queued, running) are counted on line 1,
 * with the lock, so that a round's critical sections touch one header line; the others on line 2.
 */
export const COUNT_WORD: readonly number[] = [36, 23, 25, 26, 37, 24, 38, 39, 40];

/** Header size in int32 words. */
export const HEADER_WORDS = 96;

/** The LOCK bit that says threads sleep on the lock. */
export const LOCK_WAITERS = 1 << 30;

/** The LOCK bits that hold the holder's thread id. */
export const LOCK_ID_MASK = LOCK_WAITERS - 1;

/** Bits of the FLAGS word. */
export const Flag = {
  /** The handler module has a `reuseCleanup`, so returning buffers pass through the worker. */
  HAS_CLEANUP: 1 << 0,
  /** The loop is running (between `start` and `stop`). */
  RUNNING: 1 << 1,
  /** `stop` (or `close`) asked the loop to take no further item. */
  STOP_REQUESTED: 1 << 2,
  /** `close` has begun: producers may no longer fetch or enqueue. */
  CLOSING: 1 << 3,
  /** `close` is done: every buffer is back and every waiter settled. */
  CLOSED: 1 << 4,
  /** Look-aside growth is enabled. */
  LOOK_ASIDE: 1 << 5,
} as const;

/** Per-slot word offsets. */
export const S = {
  STATE: 0,
  /** Bumped when a round ends (the buffer goes back to the free list): old handles go stale. */
  GENERATION: 1,
  /** The next slot on the slot's list (free, queue or recycle), or {@linkcode NIL}. */
  NEXT: 2,
  /** Bytes of the buffer the work sees. */
  SIZE: 4,
  /** The status the round's work produced, once DONE equals GENERATION. */
  STATUS: 5,
  /** Equals GENERATION once STATUS is final; waiters sleep on it. */
  DONE: 6,
  /** 1 while an `enqueueAndWait` caller has yet to collect the status. */
  WAITER: 7,
  /**
   * How far the round's completion got: {@linkcode Completion}. EARLY means `workCompleted`
   * arrived while `work` was still running (the buffer is never freed under a running handler).
   */
  COMPLETION: 8,
  /** 1 when the waiter asked for the buffer back (`keep`): a completed round ends HELD again. */
  KEEP: 9,
  /** The RUN whose waiter gave up while the item ran or pended (its `item.signal` aborts). */
  ABORTED: 10,
  /**
   * Bumped each time the loop takes the buffer. A kept buffer goes round again with the same
   * GENERATION (its producer's handle stays good), so the loop's items are told apart by RUN.
   */
  RUN: 11,
} as const;

/** Values of a slot's COMPLETION word. */
export const Completion = {
  /** No status yet. */
  NONE: 0,
  /** STATUS holds what `workCompleted` gave while `work` still ran; applied when `work` returns. */
  EARLY: 1,
  /** STATUS is final for this round, given by its work: a later `workCompleted` is refused. */
  FINAL: 2,
  /** STATUS is final for this round: `Cancelled` by flush, abort or close. */
  CANCELLED: 3,
} as const;

/** Int32 words per slot. */
export const SLOT_WORDS = 16;

/**
 * Where a slot is. Every allocated slot is in exactly one state; the counts in the header
 * (`COUNT_WORD[state]`) always add up to ALLOCATED. The STATE words are the truth: lists and
 * counts can be rebuilt from them (see `Pool`'s repair after a thread died holding the lock).
 */
export const State = {
  /** Not yet part of the pool (look-aside room). */
  UNALLOCATED: 0,
  /** On the free list: fetchable. */
  FREE: 1,
  /** On the queue, waiting for the loop. */
  QUEUED: 2,
  /** Taken by the loop; its `work` is running. */
  RUNNING: 3,
  /** `work` returned WorkPending; waiting for `workCompleted`. */
  PENDING: 4,
  /** Fetched by a producer (or kept for its waiter), not yet enqueued or reused. */
  HELD: 5,
  /** Its round is over; on the recycle list, waiting for `reuseCleanup` in the worker. */
  RECYCLING: 6,
  /** Its round is over; the worker is running its `reuseCleanup` now. */
  CLEANING: 7,
  /** Its round is over and cleaned; waiting for its waiter to collect the status. */
  PARKED: 8,
} as const;

/** How many states there are. */
export const STATE_COUNT = 9;

/** A slot state, one of {@linkcode State}. */
export type SlotState = typeof State[keyof typeof State];

/** The sizes a pool is made of. */
export interface LayoutSizes {
  /** Buffers allocated up front. */
  readonly bufferCount: number;
  /** Buffers at most (look-aside growth stops here). */
  readonly maxBuffers: number;
  /** Bytes of data per buffer. */
  readonly bufferSize: number;
  /** Bytes of context per buffer. */
  readonly contextSize: number;
}

/** Byte offsets of the regions, derived from the sizes. */
export interface Regions {
  /** First int32 word of slot 0. */
  readonly slotBase: number;
  /** Byte offset of slot 0's data. */
  readonly dataOffset: number;
  /** Bytes between consecutive slots' data (bufferSize rounded up to 8). */
  readonly stride: number;
  /** Byte offset of slot 0's context. */
  readonly contextOffset: number;
  /** Bytes between consecutive slots' contexts (contextSize rounded up to 8). */
  readonly contextStride: number;
  /** Total bytes of the SharedArrayBuffer. */
  readonly byteLength: number;
}

const align8 = (n: number): number => Math.ceil(n / 8) * 8;

/** Computes where each region starts for the given sizes. */
export function regions(sizes: LayoutSizes): Regions {
  const slotBase = HEADER_WORDS;
  const stride = align8(sizes.bufferSize);
  const contextStride = align8(sizes.contextSize);
  const dataOffset = align8((slotBase + sizes.maxBuffers * SLOT_WORDS) * 4);
  const contextOffset = dataOffset + sizes.maxBuffers * stride;
  const byteLength = contextOffset + sizes.maxBuffers * contextStride;
  return { slotBase, dataOffset, stride, contextOffset, contextStride, byteLength };
}

/** The int32 word index of a slot's field. */
export function slotWord(slot: number, field: number): number {
  return HEADER_WORDS + slot * SLOT_WORDS + field;
}
