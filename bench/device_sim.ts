/**
 * The simulated device of bench/device_bench.ts, shared by the queue's handler
 * (bench/device_handlers.ts) and the direct loop, so both do exactly the same per item.
 *
 * One item is a Bulk-Only-like command: three blocking FFI calls (CBW, data, CSW), each taking a
 * third of the device time, and a read of one byte per 4 KiB of the item between the first and
 * the second (so the producer's copy is really used).
 *
 * Each call is `device_phase(ns, margin, stats)` in a small C library compiled on first use
 * (`cc`): it sleeps with `clock_nanosleep(TIMER_ABSTIME)` until `margin` ns before its deadline,
 * then spins on `clock_gettime` up to the deadline. Plain sleeps are far too coarse here for
 * tens of µs (a 27 µs `nanosleep` takes ~100 µs in this VM, and wakes 15–50 µs late even with a
 * 1 ns timer slack), so the margin (measured by the bench for each device time: `marginFor` in
 * device_bench.ts) keeps each call near its nominal time while still blocking in the kernel for
 * most of a long call.
 * Margin 0 is a pure sleep (late by the wake-up latency); a margin ≥ ns is a pure busy-wait
 * (what a call shorter than a wake-up gets: it could not sleep and be on time). Every call adds to
 * `stats` (see {@linkcode S}) so the bench can say how long the device really took and how much
 * of it was asleep.
 *
 * Without a C compiler the device falls back to libc `clock_nanosleep` (relative, pure sleep)
 * timed from JS; the bench says so.
 *
 * @module
 */

/** Indexes into a device's `stats` Float64Array (non-atomic; read once the work is done). */
export const S = {
  /** device_phase calls. */
  CALLS: 0,
  /** ns spent inside device_phase. */
  ELAPSED: 1,
  /** of which ns inside clock_nanosleep. */
  SLEPT: 2,
  /** of which ns spinning. */
  SPUN: 3,
  /** sum of the bytes read by `touch` (checked against what the producers wrote). */
  CHECKSUM: 4,
  /** items. */
  ITEMS: 5,
  /** queue only: ns the handler's thread spent between the end of one item and the next. */
  GAP: 6,
  LENGTH: 7,
} as const;

const SOURCE = String.raw`
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <time.h>
#include <sys/prctl.h>

static inline int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Once per thread: 1 ns timer slack (the default 50 µs would make every sleep late by it). */
int device_init(void) { return prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL); }

/* Blocks ns: sleeps until margin before the deadline, spins the rest; adds to stats. */
double device_phase(double ns, double margin, double *stats) {
  int64_t start = now_ns(), deadline = start + (int64_t)ns, wake = deadline - (int64_t)margin;
  int64_t t = start;
  if (wake > start) {
    struct timespec w = { (time_t)(wake / 1000000000LL), (long)(wake % 1000000000LL) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &w, 0) == EINTR) {}
    t = now_ns();
    stats[2] += (double)(t - start);
  }
  int64_t spin = t;
  while (t < deadline) {
    __builtin_ia32_pause();
    t = now_ns();
  }
  stats[3] += (double)(t - spin);
  stats[1] += (double)(t - start);
  stats[0] += 1;
  return (double)(t - start);
}

/* n absolute sleeps of ns each; out[i] = how late each woke, in ns. */
void device_calibrate(double ns, int n, double *out) {
  for (int i = 0; i < n; i++) {
    int64_t wake = now_ns() + (int64_t)ns;
    struct timespec w = { (time_t)(wake / 1000000000LL), (long)(wake % 1000000000LL) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &w, 0) == EINTR) {}
    out[i] = (double)(now_ns() - wake);
  }
}
`;

const SYMBOLS = {
  device_init: { parameters: [], result: "i32" },
  device_phase: { parameters: ["f64", "f64", "buffer"], result: "f64" },
  device_calibrate: { parameters: ["f64", "i32", "buffer"], result: "void" },
} as const;

const LIBC_SYMBOLS = {
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  clock_nanosleep: { parameters: ["i32", "i32", "buffer", "pointer"], result: "i32" },
} as const;

/** What a thread needs to be the device. */
export interface Device {
  /** Sets this thread's timer slack to 1 ns; call once on each thread that runs items. */
  init(): void;
  /** One blocking call of `ns` (see the module doc for `margin`); adds to `stats`. */
  phase(ns: number, margin: number, stats: Float64Array): void;
  /** `n` sleeps of `ns`: how late each woke, ns. */
  calibrate(ns: number, n: number): Float64Array;
  close(): void;
}

/**
 * Compiles the C device into a fresh temporary directory; its path, or `undefined` (and why) if
 * there is no working `cc`. The caller removes the directory.
 */
export async function buildDevice(): Promise<{ path?: string; dir?: string; why?: string }> {
  const dir = await Deno.makeTempDir({ prefix: "tbq-device-bench-" });
  const source = `${dir}/device.c`;
  const path = `${dir}/libdevice.so`;
  await Deno.writeTextFile(source, SOURCE);
  try {
    const { success, stderr } = await new Deno.Command("cc", {
      args: ["-O2", "-shared", "-fPIC", "-o", path, source],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (success) return { path, dir };
    return { dir, why: `cc failed: ${new TextDecoder().decode(stderr).trim()}` };
  } catch (error) {
    return { dir, why: `no C compiler (${(error as Error).message})` };
  }
}

/** Opens the compiled device at `path`, or the libc fallback when `path` is empty. */
export function openDevice(path: string): Device {
  if (path === "") return openLibcDevice();
  const lib = Deno.dlopen(path, SYMBOLS);
  const { device_init, device_phase, device_calibrate } = lib.symbols;
  return {
    init: () => void device_init(),
    phase: (ns, margin, stats) => void device_phase(ns, margin, stats),
    calibrate(ns, n) {
      const out = new Float64Array(n);
      device_calibrate(ns, n, out);
      return out;
    },
    close: () => lib.close(),
  };
}

/** Relative `clock_nanosleep` of the whole `ns` (no spin), timed from JS. */
function openLibcDevice(): Device {
  const lib = Deno.dlopen("libc.so.6", LIBC_SYMBOLS);
  const { prctl, clock_nanosleep } = lib.symbols;
  const spec = new BigInt64Array(2);
  const sleep = (ns: number) => {
    spec[0] = BigInt(Math.floor(ns / 1e9));
    spec[1] = BigInt(Math.round(ns % 1e9));
    clock_nanosleep(1, 0, spec, null);
  };
  return {
    init: () => void prctl(29, 1n, 0n, 0n, 0n), // PR_SET_TIMERSLACK
    phase(ns, _margin, stats) {
      const start = performance.now();
      sleep(ns);
      const took = (performance.now() - start) * 1e6;
      stats[S.CALLS]++;
      stats[S.ELAPSED] += took;
      stats[S.SLEPT] += took;
    },
    calibrate(ns, n) {
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const start = performance.now();
        sleep(ns);
        out[i] = (performance.now() - start) * 1e6 - ns;
      }
      return out;
    },
    close: () => lib.close(),
  };
}

/** Reads one byte per 4 KiB of `data`: their sum. */
export function touch(data: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < data.length; i += 4096) sum += data[i];
  return sum;
}

/** One item through the device: CBW, data (reading the item), CSW. */
export function deviceItem(
  device: Device,
  data: Uint8Array,
  phaseNs: number,
  margin: number,
  stats: Float64Array,
): void {
  device.phase(phaseNs, margin, stats); // CBW
  stats[S.CHECKSUM] += touch(data);
  device.phase(phaseNs, margin, stats); // data
  device.phase(phaseNs, margin, stats); // CSW
  stats[S.ITEMS]++;
}

/** Bytes per item and buffer. */
export const ITEM_SIZE = 64 * 1024;
/** Distinct precomputed items the producers cycle through. */
export const SOURCES = 8;

/** The precomputed items (the same on every thread) and each one's `touch` sum. */
export function makeSources(): { sources: Uint8Array[]; sums: number[] } {
  const sources: Uint8Array[] = [];
  let x = 0x9e3779b9;
  for (let k = 0; k < SOURCES; k++) {
    const bytes = new Uint8Array(ITEM_SIZE);
    for (let i = 0; i < ITEM_SIZE; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      bytes[i] = x & 0xff;
    }
    sources.push(bytes);
  }
  return { sources, sums: sources.map(touch) };
}

/** Words of the control SharedArrayBuffer (Int32Array) shared by the bench and its threads. */
export const C = {
  /** ns per device call (a third of the device time). */
  PHASE_NS: 0,
  /** the sleep margin, ns. */
  MARGIN_NS: 1,
  /** the producers' go word: a round starts when it becomes the round's number. */
  GO: 2,
  /** the next item to produce (producers claim items with Atomics.add). */
  NEXT: 3,
  /** producers claim items while NEXT is below this (the round's end sets it to 0). */
  COUNT: 4,
  LENGTH: 8,
} as const;
