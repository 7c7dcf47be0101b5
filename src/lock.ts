/**
 * The pool's lock: a futex-style mutex in one word of the SharedArrayBuffer that no thread can
 * leave held or wait on forever.
 *
 * - The word holds the holder's thread id (one per {@linkcode SharedLock}), with
 *   `LOCK_WAITERS` set while others sleep on it; `H.LOCK_SEQ` counts acquisitions.
 * - The stack is probed before the lock is taken, so that a call made near the stack limit
 *   throws RangeError before it takes the lock, and one that takes it has the room to release it.
 *   (No JS probe can promise that the whole critical section fits: V8 sizes and inlines frames as
 *   it optimizes. An exception inside one is the caller's to repair, see `Pool`.)
 * - A holder that keeps the lock, unchanged, for {@linkcode LOCK_STALE_MS} (a thread terminated
 *   mid-call: critical sections take microseconds) is presumed dead: the lock is taken over and
 *   the owner of the state repairs it (`onTakeover`). A holder that finds its lock taken over
 *   when it unlocks repairs once more, in case its writes crossed that repair.
 * - No thread waits longer than {@linkcode LOCK_TIMEOUT_MS}: it throws `QueueError`
 *   `LockTimeout`.
 *
 * @module
 */

import { QueueError } from "./errors.ts";
import { H, LOCK_ID_MASK, LOCK_WAITERS } from "./layout.ts";

/** How many times to retry a contended lock before sleeping on it. */
const LOCK_SPINS = 200;
/** A sleeper on the lock looks again at least this often. */
const LOCK_SLICE_MS = 20;
/** A lock held this long by the same holder, with no other acquisition, is taken over. */
export const LOCK_STALE_MS = 250;
/** No call waits longer than this for the lock. */
export const LOCK_TIMEOUT_MS = 5000;
/** Calls (with frames as large as the lock's) made before the lock is taken: ~50 ns. */
const STACK_PROBE_DEPTH = 8;

/**
 * Recurses `depth` calls whose frames are as large as a critical section's: throws RangeError
 * (before any lock is taken) when the stack is short.
 */
function probeStack(depth: number): number {
  if (depth <= 0) return 0;
  let a = depth, b = a + 1, c = b + 1, d = c + 1, e = d + 1, f = e + 1, g = f + 1, h = g + 1;
  const below = probeStack(depth - 1);
  a += below, b += a, c += b, d += c, e += d, f += e, g += f, h += g;
  return (h & 1) + below;
}

/** One thread's handle on the lock word of a queue's SharedArrayBuffer. */
export class SharedLock {
  readonly #words: Int32Array;
  readonly #id: number;
  readonly #onTakeover: () => void;

  /** `onTakeover` runs under the lock after it was taken from a holder presumed dead. */
  constructor(words: Int32Array, onTakeover: () => void) {
    this.#words = words;
    this.#id = ((Atomics.add(words, H.NEXT_ID, 1) + 1) & LOCK_ID_MASK) || 1;
    this.#onTakeover = onTakeover;
  }

  /** Takes the lock, after making sure the stack has room for the critical section. */
  enter(): void {
    probeStack(STACK_PROBE_DEPTH);
    const w = this.#words;
    if (Atomics.compareExchange(w, H.LOCK, 0, this.#id) === 0) {
      w[H.LOCK_SEQ]++; // ours alone now: a plain add (waiters only compare it)
      return;
    }
    this.#enterSlowly();
  }

  /** Releases the lock. */
  exit(): void {
    const w = this.#words;
    const id = this.#id;
    if (Atomics.compareExchange(w, H.LOCK, id, 0) === id) return;
    const marked = id | LOCK_WAITERS;
    if (Atomics.compareExchange(w, H.LOCK, marked, 0) === marked) {
      Atomics.notify(w, H.LOCK, 1);
      return;
    }
    // Another thread took the lock over, presuming this one dead: what this critical section
    // wrote may have crossed its repair, so repair once more under the lock.
    this.enter();
    this.#onTakeover();
    const held = Atomics.load(w, H.LOCK);
    if ((held & LOCK_ID_MASK) === id && Atomics.compareExchange(w, H.LOCK, held, 0) === held) {
      if (held & LOCK_WAITERS) Atomics.notify(w, H.LOCK, 1);
    }
  }

  /** Spin, then sleep in slices; take over a stale lock; give up after LOCK_TIMEOUT_MS. */
  #enterSlowly(): void {
    const w = this.#words;
    const id = this.#id;
    for (let spin = 0; spin < LOCK_SPINS; spin++) {
      if (Atomics.load(w, H.LOCK) === 0 && Atomics.compareExchange(w, H.LOCK, 0, id) === 0) {
        Atomics.add(w, H.LOCK_SEQ, 1);
        return;
      }
    }
    const start = performance.now();
    let holder = Atomics.load(w, H.LOCK) & LOCK_ID_MASK;
    let sequence = Atomics.load(w, H.LOCK_SEQ);
    let since = start;
    for (;;) {
      let value = Atomics.load(w, H.LOCK);
      if (value === 0) {
        if (Atomics.compareExchange(w, H.LOCK, 0, id | LOCK_WAITERS) === 0) {
          Atomics.add(w, H.LOCK_SEQ, 1);
          return;
        }
        continue;
      }
      if (!(value & LOCK_WAITERS)) {
        if (Atomics.compareExchange(w, H.LOCK, value, value | LOCK_WAITERS) !== value) continue;
        value |= LOCK_WAITERS;
      }
      Atomics.wait(w, H.LOCK, value, LOCK_SLICE_MS);
      const now = performance.now();
      const current = Atomics.load(w, H.LOCK);
      const currentSequence = Atomics.load(w, H.LOCK_SEQ);
      if (
        current === 0 || (current & LOCK_ID_MASK) !== holder || currentSequence !== sequence
      ) {
        holder = current & LOCK_ID_MASK;
        sequence = currentSequence;
        since = now;
      } else if (
        now - since >= LOCK_STALE_MS &&
        Atomics.compareExchange(w, H.LOCK, current, id | LOCK_WAITERS) === current
      ) {
        // The holder has not moved for far longer than any critical section: it is dead.
        Atomics.add(w, H.LOCK_SEQ, 1);
        this.#onTakeover();
        return;
      }
      if (now - start >= LOCK_TIMEOUT_MS) {
        throw new QueueError(
          "LockTimeout",
          `the queue's lock stayed busy for ${LOCK_TIMEOUT_MS} ms; the queue is overloaded or broken`,
        );
      }
    }
  }
}
