/**
 * Soak: minutes of mixed load on one queue from the main thread and two producer Workers, with
 * memory sampled every second; fails unless memory stays flat after a warm-up.
 *
 *   deno task soak                                     # 300 s
 *   deno run -A --v8-flags=--expose-gc,--max-semi-space-size=2 bench/soak.ts --seconds 60
 *
 * Options: `--seconds N` (default 300), `--pool N` (32), `--quiet-every S` (a quiet phase every S
 * seconds, default 5), `--warmup F` (the first F of the run is warm-up, default 0.2), `--verbose`
 * (a progress line every 5 s instead of 30 s). Started without `gc()`, the script runs itself
 * again with the V8 flags above (see `V8_FLAGS`) when it may run subprocesses; `--no-respawn`
 * stops that.
 *
 * Load: each producer (tests/fixtures/mixed_producer.ts; the Workers run its `mixed` job,
 * tests/fixtures/producer_jobs.ts) fetches or acquires, enqueues at tail
 * and head, `enqueueAndWait`s with and without `keep` (checking the handler's reply comes back in
 * the buffer), aborts waits, reuses, and completes with `workCompleted` the items the handler
 * pended for it; the Workers call `onIdle` with short timeouts; the main thread flushes now and
 * then. Every few seconds all producers go quiet: `onIdle()` must resolve and every buffer must
 * be free. Every second: the stats must add up to the pool; RSS and the main heap are sampled
 * (after `gc()` when run with `--v8-flags=--expose-gc`), and so are the heaps of the loop Worker
 * and the producer Workers.
 *
 * Flat means, over the samples after the warm-up: the least-squares slope is below a bound per
 * minute, and the median of the last quarter of the run is within a bound of the median of all
 * post-warm-up samples (bounds below; looser without `gc()`). Prints one `SUMMARY` line; exits 1
 * if memory grew, an invariant broke, a promise did not settle or anything unexpected happened.
 */
import { type QueueStats, ThreadedBufferQueue } from "../mod.ts";
import {
  Control,
  controlWords,
  describe,
  How,
  Mailbox,
  type MixedCounters,
  newCounters,
  runMixedProducer,
} from "../tests/fixtures/mixed_producer.ts";
import {
  numberOption as option,
  ProducerWorker,
  sleep,
  total,
  watchMainThread,
  within,
} from "../tests/helpers.ts";

const SECONDS = option("seconds", 300);
const POOL = option("pool", 32);
const QUIET_EVERY_S = option("quiet-every", 5);
const WARMUP = option("warmup", 0.2);
const WORKERS = 2;
const PRODUCERS = WORKERS + 1;

/**
 * The V8 flags the soak wants: `gc()` for samples of live memory, and a capped young generation:
 * V8 otherwise grows each isolate's semi-spaces for minutes under this allocation rate, which
 * raises RSS by ~100 MiB over the first two minutes (four isolates) before it levels off.
 */
const V8_FLAGS = "--v8-flags=--expose-gc,--max-semi-space-size=2";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc && !Deno.args.includes("--no-respawn")) {
  // Run again with the flags (as `deno task soak` does), unless we may not.
  const allowed = await Deno.permissions.query({ name: "run", command: Deno.execPath() });
  if (allowed.state === "granted") {
    console.log(`soak: running again with ${V8_FLAGS}`);
    const { code } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        V8_FLAGS,
        import.meta.filename!,
        ...Deno.args,
        "--no-respawn",
      ],
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    Deno.exit(code);
  }
  console.log(`soak: no gc(); heap bounds are looser (run with ${V8_FLAGS})`);
}
const MiB = 1024 * 1024;
/** Bounds for "flat" (bytes per minute for slopes, bytes for the medians). */
const BOUNDS = gc
  ? { heapSlope: 1 * MiB, heapMedian: 2 * MiB, rssSlope: 16 * MiB, rssMedian: 24 * MiB }
  : { heapSlope: 8 * MiB, heapMedian: 12 * MiB, rssSlope: 16 * MiB, rssMedian: 24 * MiB };

const handlers = new URL("./soak_handlers.ts", import.meta.url);

const failures: string[] = [];
let failureCount = 0;
const fail = (message: string) => {
  if (failureCount++ < 40) failures.push(message);
};

interface Sample {
  t: number;
  rss: number;
  heap: number;
  loopHeap: number;
  workerHeaps: number[];
  items: number;
}

/** Least-squares slope of `ys` over `xs` (per unit of x). */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

interface Trend {
  start: number;
  end: number;
  /** Bytes per minute after the warm-up. */
  slope: number;
  postWarmupMedian: number;
  lastQuarterMedian: number;
}

function trend(samples: Sample[], pick: (s: Sample) => number, warmupS: number): Trend {
  const after = samples.filter((s) => s.t >= warmupS);
  const lastQuarter = samples.filter((s) => s.t >= SECONDS * 0.75);
  return {
    start: after.length ? pick(after[0]) : 0,
    end: samples.length ? pick(samples[samples.length - 1]) : 0,
    slope: slope(after.map((s) => s.t / 60), after.map(pick)),
    postWarmupMedian: median(after.map(pick)),
    lastQuarterMedian: median(lastQuarter.map(pick)),
  };
}

const mib = (bytes: number) => (bytes / MiB).toFixed(2);

// ── set-up ─────────────────────────────────────────────────────────────────────────────────

const control = new Int32Array(new SharedArrayBuffer(controlWords(PRODUCERS) * 4));
const reported: string[] = [];
const queue = await ThreadedBufferQueue.create({
  bufferQueue: { bufferCount: POOL, bufferSize: 256, contextSize: 16 },
  handlers,
  handlerOptions: { control: control.buffer },
  onError: (error, phase) => {
    if (reported.length < 20) reported.push(`${phase}: ${describe(error)}`);
  },
});
await queue.start();
const share = queue.share();

// The watchdog reports a main thread that stopped running timers.
const watchdog = watchMainThread("soak");
watchdog.watch([{ name: "soak queue", buffer: share.buffer }]);

const ALL_HOWS = [How.Now, How.TimerPend, How.OwnerPend, How.Async, How.Reply];
const workerCounters: MixedCounters[] = [];
const workers: ProducerWorker<"mixed">[] = [];
for (let i = 0; i < WORKERS; i++) {
  const producer = i + 1;
  workerCounters[i] = newCounters();
  const worker = new ProducerWorker(share, "mixed", {
    producer,
    hows: ALL_HOWS,
    seed: 1000 + producer,
    control: control.buffer as SharedArrayBuffer,
    maxOutstanding: 4,
    yieldEvery: 4,
    onIdleEvery: 500,
    reportEveryMs: 1000,
  }, {
    onError: (message) => fail(`worker ${producer}: ${message}`),
    onProgress: (report) => workerCounters[i] = report.counters,
  });
  workers.push(worker);
  await worker.started(20_000);
}

// ── load ───────────────────────────────────────────────────────────────────────────────────

const began = performance.now();
const elapsedS = () => (performance.now() - began) / 1000;
const mainCounters = newCounters();
const main = runMixedProducer(queue, {
  producer: 0,
  hows: ALL_HOWS,
  seed: 1000,
  maxOutstanding: 4,
  yieldEvery: 4,
  mailbox: new Mailbox(control, Control.MAILBOX),
  counters: mainCounters,
  running: () => Atomics.load(control, Control.STOP) === 0,
  paused: () => Atomics.load(control, Control.PAUSED) === 1,
  quiet: () =>
    Atomics.store(control, Control.QUIET + 0, Atomics.load(control, Control.PAUSE_EPOCH)),
  onError: (message) => fail(`main ${message}`),
});

const statsChecked = () => {
  const stats = queue.stats();
  if (total(stats) !== POOL) fail(`stats do not add up to ${POOL}: ${JSON.stringify(stats)}`);
  return stats;
};

// Flushes now and then.
let flushes = 0;
let flushed = 0;
const flushTimer = setInterval(() => {
  if (Atomics.load(control, Control.PAUSED) === 1) return;
  flushes++;
  flushed += queue.flush();
}, 700);

// Samples every second.
const samples: Sample[] = [];
const itemsDone = (stats: QueueStats) => stats.completed + stats.failed + stats.cancelled;
const sample = () => {
  gc?.();
  const memory = Deno.memoryUsage();
  samples.push({
    t: elapsedS(),
    rss: memory.rss,
    heap: memory.heapUsed,
    loopHeap: Atomics.load(control, Control.LOOP_HEAP_KIB) * 1024,
    workerHeaps: Array.from(
      { length: WORKERS },
      (_, i) => Atomics.load(control, Control.HEAP_KIB + i + 1) * 1024,
    ),
    items: itemsDone(statsChecked()),
  });
};

// Quiet phases: every producer stops, onIdle must resolve, every buffer must be free.
let quietPhases = 0;
let maxIdleMs = 0;
async function quietPhase(): Promise<void> {
  const epoch = Atomics.add(control, Control.PAUSE_EPOCH, 1) + 1;
  Atomics.store(control, Control.PAUSED, 1);
  try {
    const deadline = performance.now() + 15_000;
    const allQuiet = () => {
      for (let p = 0; p < PRODUCERS; p++) {
        if (Atomics.load(control, Control.QUIET + p) !== epoch) return false;
      }
      return true;
    };
    while (!allQuiet()) {
      if (performance.now() > deadline) {
        fail(`quiet phase ${epoch}: producers did not go quiet within 15 s`);
        return;
      }
      await sleep(5);
    }
    const t = performance.now();
    await within(queue.onIdle({ signal: AbortSignal.timeout(10_000) }), 15_000, "onIdle");
    maxIdleMs = Math.max(maxIdleMs, performance.now() - t);
    const stats = statsChecked();
    if (stats.free !== POOL) fail(`quiet phase ${epoch}: idle but ${JSON.stringify(stats)}`);
    if (mainCounters.settled !== mainCounters.waits) {
      fail(
        `quiet phase ${epoch}: main waits ${mainCounters.waits}, ${mainCounters.settled} settled`,
      );
    }
    quietPhases++;
  } catch (error) {
    fail(`quiet phase ${epoch}: ${describe(error)}`);
  } finally {
    Atomics.store(control, Control.PAUSED, 0);
  }
}

let lastQuiet = 0;
let lastProgress = 0;
while (elapsedS() < SECONDS && failureCount === 0) {
  await sleep(1000 - ((performance.now() - began) % 1000));
  sample();
  const now = elapsedS();
  if (QUIET_EVERY_S > 0 && now - lastQuiet >= QUIET_EVERY_S && now < SECONDS - 1) {
    lastQuiet = now;
    await quietPhase();
  }
  if (now - lastProgress >= (Deno.args.includes("--verbose") ? 5 : 30)) {
    lastProgress = now;
    const s = samples[samples.length - 1];
    console.log(
      `  ${now.toFixed(0)} s: items ${s.items}, rss ${mib(s.rss)} MiB, heap ${mib(s.heap)} MiB, ` +
        `loop heap ${mib(s.loopHeap)} MiB, worker heaps ${s.workerHeaps.map(mib).join("/")} MiB`,
    );
  }
}

// ── wind-down ──────────────────────────────────────────────────────────────────────────────

clearInterval(flushTimer);
Atomics.store(control, Control.STOP, 1);
for (const worker of workers) worker.command("stop");
const runSeconds = elapsedS();
try {
  await within(main, 20_000, "the main producer's waiters");
  await within(
    Promise.all(
      workers.map(async (worker, i) => workerCounters[i] = (await worker.report()).counters),
    ),
    20_000,
    "the producer Workers' waiters",
  );
} catch (error) {
  fail(describe(error));
}
const everyone = [mainCounters, ...workerCounters];
const sum = (key: keyof MixedCounters) => everyone.reduce((n, c) => n + c[key], 0);
for (const [p, c] of everyone.entries()) {
  if (c.settled !== c.waits) fail(`producer ${p}: ${c.waits} waits, ${c.settled} settled`);
}
try {
  await within(queue.onIdle({ signal: AbortSignal.timeout(10_000) }), 15_000, "the final onIdle");
} catch (error) {
  fail(describe(error));
}
const beforeClose = statsChecked();
const log = {
  corrupt: Atomics.load(control, Control.CORRUPT),
  completeErrors: Atomics.load(control, Control.COMPLETE_ERRORS),
  cleanupStarted: Atomics.load(control, Control.CLEANUP_STARTED),
  cleanupFinished: Atomics.load(control, Control.CLEANUP_FINISHED),
};
if (log.corrupt || log.completeErrors || log.cleanupStarted !== log.cleanupFinished) {
  fail(`handler log: ${JSON.stringify(log)}`);
}
let final: QueueStats | undefined;
try {
  final = await within(queue.close(), 20_000, "close");
  const { free, queued, running, pending, held, returning } = final;
  if (free !== POOL || queued || running || pending || held || returning) {
    fail(`close() left ${JSON.stringify(final)}`);
  }
} catch (error) {
  fail(describe(error));
}
for (const worker of workers) worker.terminate();
watchdog.stop();
if (reported.length) fail(`handler errors reported: ${reported.join("; ")}`);

// ── verdict ────────────────────────────────────────────────────────────────────────────────

const warmupS = SECONDS * WARMUP;
const rss = trend(samples, (s) => s.rss, warmupS);
const heap = trend(samples, (s) => s.heap, warmupS);
const loopHeap = trend(samples, (s) => s.loopHeap, warmupS);
const workerHeaps = Array.from(
  { length: WORKERS },
  (_, i) => trend(samples, (s) => s.workerHeaps[i], warmupS),
);
const windowMinutes = (SECONDS - SECONDS * WARMUP) / 60;
const flat = (name: string, t: Trend, slopeBound: number, medianBound: number) => {
  // A steeper slope fails only if it adds up to more than a quarter of the median bound over the
  // window (a few samples of noise in a short run can look steep).
  if (t.slope > slopeBound && t.slope * windowMinutes > medianBound / 4) {
    fail(`${name} grows ${mib(t.slope)} MiB/min after the warm-up (bound ${mib(slopeBound)})`);
  }
  if (t.lastQuarterMedian - t.postWarmupMedian > medianBound) {
    fail(
      `${name}: last-quarter median ${mib(t.lastQuarterMedian)} MiB exceeds the post-warm-up ` +
        `median ${mib(t.postWarmupMedian)} MiB by more than ${mib(medianBound)} MiB`,
    );
  }
};
if (samples.filter((s) => s.t >= warmupS).length < 5) fail("too few samples after the warm-up");
else {
  flat("heap", heap, BOUNDS.heapSlope, BOUNDS.heapMedian);
  flat("loop Worker heap", loopHeap, BOUNDS.heapSlope, BOUNDS.heapMedian);
  workerHeaps.forEach((t, i) =>
    flat(`producer Worker ${i + 1} heap`, t, BOUNDS.heapSlope, BOUNDS.heapMedian)
  );
  flat("rss", rss, BOUNDS.rssSlope, BOUNDS.rssMedian);
}

const items = final ? itemsDone(final) : itemsDone(beforeClose);
const fields = {
  seconds: runSeconds.toFixed(1),
  items,
  items_per_s: Math.round(items / runSeconds),
  rss_start_mib: mib(rss.start),
  rss_end_mib: mib(rss.end),
  rss_slope_mib_min: mib(rss.slope),
  heap_start_mib: mib(heap.start),
  heap_end_mib: mib(heap.end),
  heap_slope_mib_min: mib(heap.slope),
  loop_heap_start_mib: mib(loopHeap.start),
  loop_heap_end_mib: mib(loopHeap.end),
  loop_heap_slope_mib_min: mib(loopHeap.slope),
  worker_heap_slopes_mib_min: workerHeaps.map((t) => mib(t.slope)).join("/"),
  gc: gc ? "yes" : "no",
  samples: samples.length,
  quiet_phases: quietPhases,
  max_idle_ms: Math.round(maxIdleMs),
  waits: sum("waits"),
  kept: sum("kept"),
  abort_rejected: sum("abortRejected"),
  owner_completed: sum("ownerCompleted"),
  idles: sum("idles"),
  fetch_misses: sum("fetchMisses"),
  acquire_timeouts: sum("acquireTimeouts"),
  flushes,
  flushed,
  signal_aborts: Atomics.load(control, Control.SIGNAL_ABORTS),
  failures: failureCount,
  result: failureCount ? "FAIL" : "PASS",
};
console.log(`SUMMARY ${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(" ")}`);
for (const failure of failures) console.error(`FAIL ${failure}`);
Deno.exit(failureCount ? 1 : 0);
