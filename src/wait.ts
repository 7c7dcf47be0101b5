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
