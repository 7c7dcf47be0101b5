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
 */
export function waitForChange(
  words: Int32Array,
  index: number,
  seen: number,
  signal?: AbortSignal,
  spin: number = SPIN_ITERATIONS,
): Promise<void> | undefined {
  for (let i = 0; i < spin; i++) {
    if (Atomics.load(words, index) !== seen) return undefined;
  }
  const result = Atomics.waitAsync(words, index, seen);
  if (!result.async) return undefined;
  if (!signal) return result.value.then(ignore);
  signal.throwIfAborted();
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  const onAbort = () => {
    reject(signal.reason);
    Atomics.notify(words, index);
  };
  signal.addEventListener("abort", onAbort, { once: true });
  result.value.then(() => {
    signal.removeEventListener("abort", onAbort);
    resolve();
  });
  return promise;
}

function ignore(): void {}
