/**
 * Sleeping until a shared word changes: a short spin (a cross-thread hand-off often lands within
 * microseconds), then `Atomics.waitAsync`, which never blocks the event loop.
 *
 * @module
 */

/**
 * Spin iterations before sleeping; each is one `Atomics.load` (a few microseconds in all). On a
 * single core the other thread cannot make progress while this one spins, so there it is 0.
 */
export const SPIN_ITERATIONS: number = (globalThis.navigator?.hardwareConcurrency ?? 1) > 1
  ? 2000
  : 0;

/**
 * Resolves once `words[index]` is no longer `seen` (or a notify arrives). Rejects with
 * `signal.reason` when `signal` aborts first; the abort also notifies the word, so that the
 * abandoned `Atomics.waitAsync` ends now instead of lingering until the next wake (other
 * sleepers on the word wake once, look, and sleep again).
 *
 * `sleepers`, if given, is the index of a word that counts the threads asleep on this one: it
 * is raised only once the spin has failed, just before the sleep, and lowered when the sleep
 * ends. A waker that changes the word and then finds the count at zero may skip its
 * `Atomics.notify` (~45 ns, and a wake for nobody): `waitAsync` looks at the word after the count
 * went up, so a change it missed was made before, and the waker then saw the count.
 */
export function waitForChange(
  words: Int32Array,
  index: number,
  seen: number,
  signal?: AbortSignal,
  spin: number = SPIN_ITERATIONS,
  sleepers = -1,
): Promise<void> | undefined {
  for (let i = 0; i < spin; i++) {
    if (Atomics.load(words, index) !== seen) return undefined;
  }
  signal?.throwIfAborted();
  let asleep = sleepers >= 0;
  if (asleep) Atomics.add(words, sleepers, 1);
  const awake = () => {
    if (asleep) Atomics.sub(words, sleepers, 1);
    asleep = false;
  };
  const result = Atomics.waitAsync(words, index, seen);
  if (!result.async) {
    awake();
    return undefined;
  }
  if (!signal) return result.value.then(awake);
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  const onAbort = () => {
    awake();
    reject(signal.reason);
    Atomics.notify(words, index);
  };
  signal.addEventListener("abort", onAbort, { once: true });
  result.value.then(() => {
    signal.removeEventListener("abort", onAbort);
    awake();
    resolve();
  });
  return promise;
}

/**
 * Polling ends after this long (ms) at most, and a waiter polls only for a work loop whose
 * items take at most this long. Waking a sleeper costs the waker 5–35 µs in a VM (an interrupt
 * to the sleeper's idle CPU): the work loop pays it between two items, once per few buffers,
 * which is much of a fast device's time. A poller needs no wake. For slower items a wake is
 * cheap next to the item, and polling would burn a core for nothing.
 */
export const POLL_MAX_MS = 1;

/** Spins (each an `Atomics.load` and an `Atomics.pause`, ~45 ns) between two clock reads. */
const POLL_SPINS = 200;

/**
 * The first this many ms of a poll spin without a break: most waits for a fast loop end within
 * one item. Past it, the poller lets its event loop run a turn between spins.
 */
const POLL_SYNC_MS = 0.1;

/**
 * How long to poll for a buffer that the work loop frees when its item ends, given its step
 * time (ms, 0 while unknown): two steps, or 0 (sleep at once) when steps are slow or unknown.
 */
export function pollBudget(stepMs: number): number {
  return stepMs > 0 && stepMs <= POLL_MAX_MS ? Math.min(POLL_MAX_MS, 2 * stepMs) : 0;
}

/**
 * Waits like {@linkcode waitForChange}, but first polls for up to `pollMs` without counting
 * itself as a sleeper, so that the thread that changes the word need not wake it: it spins for
 * up to {@linkcode POLL_SYNC_MS}, then lets the event loop run a turn (timers, I/O, messages;
 * ~5 µs through a MessageChannel of its own, closed before it returns) between spins. The spin
 * pauses (`Atomics.pause`) so that a CPU sharing its core with the work loop's keeps its speed.
 * At most `hardwareConcurrency - 1` threads poll one queue at a time (counted in
 * `words[pollers]`): the work loop keeps a core; the others sleep. Resolves once the word moved;
 * rejects with `signal.reason` on abort.
 */
export async function pollThenWait(
  words: Int32Array,
  index: number,
  seen: number,
  signal: AbortSignal | undefined,
  sleepers: number,
  pollers: number,
  pollMs: number,
): Promise<void> {
  const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
  if (pollMs > 0 && cores > 1 && claim(words, pollers, cores - 1)) {
    let turns: EventLoopTurns | undefined;
    try {
      const start = performance.now();
      for (let now = start; now - start < pollMs; now = performance.now()) {
        for (let i = 0; i < POLL_SPINS; i++) {
          if (Atomics.load(words, index) !== seen) return;
          Atomics.pause();
        }
        if (now - start >= POLL_SYNC_MS) {
          await (turns ??= new EventLoopTurns()).next();
          signal?.throwIfAborted();
        }
      }
    } finally {
      turns?.close();
      Atomics.sub(words, pollers, 1);
    }
  }
  const sleeping = waitForChange(words, index, seen, signal, 0, sleepers);
  if (sleeping) await sleeping;
}

/** Adds one to `words[index]` if it is below `limit`. */
function claim(words: Int32Array, index: number, limit: number): boolean {
  for (;;) {
    const count = Atomics.load(words, index);
    if (count >= limit) return false;
    if (Atomics.compareExchange(words, index, count, count + 1) === count) return true;
  }
}

/** Turns of this thread's event loop: each `next()` resolves once the tasks queued before it ran. */
class EventLoopTurns {
  readonly #channel = new MessageChannel();
  #resolve: (() => void) | undefined;

  constructor() {
    this.#channel.port1.onmessage = () => this.#resolve?.();
  }

  next(): Promise<void> {
    return new Promise((resolve) => {
      this.#resolve = resolve;
      this.#channel.port2.postMessage(0);
    });
  }

  close(): void {
    this.#channel.port1.close();
    this.#channel.port2.close();
  }
}
