/**
 * Reproducible pseudo-random block data: the writer, the guest and the host that checks the disk
 * image all derive the same bytes from a shared seed, so nothing large crosses between them.
 *
 * @module
 */

/**
 * Fills `target` (any length) with xorshift32 output for `seed` (an integer; 0 is fine).
 *
 * @example
 * ```ts
 * import { fillPattern } from "./pattern.ts";
 * const a = fillPattern(42, new Uint8Array(8));
 * const b = fillPattern(42, new Uint8Array(8));
 * console.log(a.every((x, i) => x === b[i])); // true
 * ```
 */
export function fillPattern(seed: number, target: Uint8Array): Uint8Array {
  // Mix the seed so that neighbouring seeds give unrelated streams; xorshift32 must not start at 0.
  let x = Math.imul((seed | 0) ^ 0x5bd1e995, 0x9e3779b1) ^ 0x2545f491;
  if (x === 0) x = 1;
  const words = target.byteLength >>> 2;
  const aligned = target.byteOffset % 4 === 0;
  const view = aligned ? new Uint32Array(target.buffer, target.byteOffset, words) : null;
  for (let i = 0; i < words; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    if (view) view[i] = x >>> 0;
    else {
      for (let b = 0; b < 4; b++) target[i * 4 + b] = (x >>> (8 * b)) & 0xff;
    }
  }
  for (let i = words * 4; i < target.byteLength; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    target[i] = x & 0xff;
  }
  return target;
}

/**
 * The bytes of region `index` (`length` bytes) for a run seeded with `seed`.
 *
 * @example
 * ```ts
 * import { regionPattern } from "./pattern.ts";
 * console.log(regionPattern(7, 0, 512).length); // 512
 * ```
 */
export function regionPattern(seed: number, index: number, length: number): Uint8Array {
  return fillPattern((seed ^ Math.imul(index + 1, 0x27d4eb2d)) | 0, new Uint8Array(length));
}

/** One region of the disk a writer fills: `blocks` blocks from `lba`. */
export interface Region {
  /** First block. */
  readonly lba: number;
  /** Number of blocks. */
  readonly blocks: number;
}

/**
 * The index of the first differing byte of two arrays, or -1 when they are equal.
 *
 * @example
 * ```ts
 * import { firstDifference } from "./pattern.ts";
 * console.log(firstDifference(new Uint8Array([1, 2]), new Uint8Array([1, 3]))); // 1
 * ```
 */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}
