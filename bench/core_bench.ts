/**
 * The queue core against hand-rolled baselines, measured in one run (issue 10, "Speed"):
 *
 *   flock /tmp/tbq-bench.lock \
 *     deno run -A --unstable-worker-options --v8-flags=--expose-gc bench/core_bench.ts [--quick]
 *
 * (`flock` keeps two benchmark runs from overlapping; the tests of others may still share the
 * cores, so every figure comes with its spread over the rounds.) A full run takes about three
 * minutes, `--quick` about twenty seconds. Prints the environment, then one markdown table:
 * measure, baseline, tbq, ratio (tbq ÷ baseline), target, met?
 *
 * 1. **Hand-off**: the main thread does `fetch()` (or `await acquire()` when none is free), fills
 *    4 KiB, `enqueue()`s; the loop's handler (core_handlers.ts) completes at once. Items/s from
 *    the first fetch to `onIdle()`. Baseline: a hand-rolled single-producer/single-consumer ring
 *    over a SharedArrayBuffer with as many 4 KiB slots as the queue has buffers (core_worker.ts),
 *    the same fill, a consumer that does nothing and hands the slot back, timed from the first
 *    item to the consumer handing the last one back. Both sides sleep the way tbq's do (see
 *    core_common.ts): spin 2,000 loads, then the Worker `Atomics.wait`s (cheaper than tbq's
 *    `waitAsync` loop, which keeps its event loop alive: a floor) and the main thread
 *    `Atomics.waitAsync`s (as tbq's `acquire` does: a producer must not block its event loop).
 * 2. **Three producers**: the same total of items from the main thread and two Workers attached
 *    with `ThreadedBufferQueue.attach(queue.share())` (core_producer.ts), a third each, against
 *    the main thread alone.
 * 3. **Round trip**: `await enqueueAndWait(buffer)` of a buffer fetched beforehand (the fetch is
 *    not timed), back to back. Floor: a hand-rolled SharedArrayBuffer ping-pong (an async function
 *    writes a request word and notifies if the Worker sleeps; the Worker spins, then
 *    `Atomics.wait`s, answers; the main thread spins, then `Atomics.waitAsync`s). Both also
 *    "spaced out" (a 1 ms timer between round trips, so each side has gone to sleep), and a
 *    `postMessage` round trip to an echo Worker both ways, to say which figure a reader sees.
 * 4. **Heap**: main-thread heap after `gc()` at 11 points over N hand-offs (every 256th an
 *    `enqueueAndWait`), after a warm-up of N/10 (at least 500,000); the least-squares slope in
 *    bytes per million. Baseline: the ring, the same way (runs of 256 items, each awaited until
 *    handed back), which shows what V8 itself adds. N is 10 M (1 M with `--quick`).
 * 5. **Idle CPU**: the process's CPU time (every thread's `/proc/self/task/<tid>/schedstat`) over
 *    wall time while a started queue has nothing to do, in % of one core; baseline: the same
 *    process once the queue is closed.
 *
 * Rounds alternate baseline and tbq (warm-up rounds first, not counted); a cell shows the median
 * of the rounds and, in brackets, their range (for percentiles: the range of per-round values,
 * the cell being the percentile of all samples).
 */
import { ThreadedBufferQueue } from "../mod.ts";
import {
  type BaselineStart,
  ITEM_BYTES,
  newRing,
  P,
  payload,
  type ProducerCommand,
  type ProducerReply,
  R,
  type Ring,
  SPIN,
} from "./core_common.ts";

const QUICK = Deno.args.includes("--quick");
/** `--only=handoff,producers,trips,heap,idle` runs some sections (e.g. under a profiler). */
const ALL_SECTIONS = ["handoff", "producers", "trips", "heap", "idle"];
const SECTIONS = new Set(
  Deno.args.find((a) => a.startsWith("--only="))?.slice(7).split(",") ?? ALL_SECTIONS,
);
/** `--side=baseline` or `--side=tbq` skips the other side's hand-off rounds (for strace -c). */
const SIDE = Deno.args.find((a) => a.startsWith("--side="))?.slice(7);
const C = QUICK
  ? {
    buffers: 64,
    handOffItems: 300_000,
    handOffRounds: 3,
    producerItems: 240_000,
    producerRounds: 3,
    tripSamples: 10_000,
    tripRounds: 3,
    spacedSamples: 300,
    spacedRounds: 2,
    heapOps: 1_000_000,
    idleSeconds: 2,
  }
  : {
    buffers: 64,
    handOffItems: 2_000_000,
    handOffRounds: 5,
    producerItems: 1_500_000,
    producerRounds: 5,
    tripSamples: 25_000,
    tripRounds: 5,
    spacedSamples: 1_000,
    spacedRounds: 3,
    heapOps: 10_000_000,
    idleSeconds: 5,
  };

/**
 * "Flat": the heap's least-squares slope stays within this many bytes per million operations,
 * i.e. under one 16-byte object per 1,000 operations over 10 M. V8 itself adds 10–40 KiB in steps
 * early on whatever N is (the ring shows it too), so `--quick`'s 1 M only catches a coarser leak.
 */
const HEAP_FLAT_BYTES_PER_M = (QUICK ? 64 : 16) * 1024;

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error("run with --v8-flags=--expose-gc (see the comment at the top)");
  Deno.exit(2);
}

const record = payload();
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const started = performance.now();
const progress = (what: string) =>
  console.error(`[${((performance.now() - started) / 1000).toFixed(1)} s] ${what}`);

// ── environment ─────────────────────────────────────────────────────────────────────────────

function readText(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}
const cpuModel = readText("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
const allowed = readText("/proc/self/status").match(/Cpus_allowed_list:\s*(.*)/)?.[1] ?? "?";
const loadAverage = () => readText("/proc/loadavg").split(" ").slice(0, 3).join(" ");
const loadBefore = loadAverage();
console.log(
  `deno ${Deno.version.deno} (v8 ${Deno.version.v8}), ${Deno.build.target}; ` +
    `${navigator.hardwareConcurrency} CPUs (${cpuModel}); taskset ${allowed}; ` +
    `load average ${loadBefore}; ${QUICK ? "--quick" : "full run"}; ` +
    `${C.buffers} buffers/slots of ${ITEM_BYTES} B; spin ${SPIN}`,
);

// ── helpers ─────────────────────────────────────────────────────────────────────────────────

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Nearest-rank percentile of sorted samples. */
function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

function startWorker(file: string): Worker {
  return new Worker(new URL(file, import.meta.url), { type: "module" });
}

function nextMessage<T>(worker: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    worker.onmessage = (event) => resolve(event.data);
    worker.onerror = (event) => {
      event.preventDefault();
      reject(new Error(`worker failed: ${event.message}`));
    };
  });
}

async function startBaseline(start: BaselineStart): Promise<Worker> {
  const worker = startWorker("./core_worker.ts");
  const ready = nextMessage<string>(worker);
  worker.postMessage(start);
  await ready;
  return worker;
}

// ── the queue ───────────────────────────────────────────────────────────────────────────────

const queue = await ThreadedBufferQueue.create({
  bufferQueue: { bufferCount: C.buffers, bufferSize: ITEM_BYTES },
  handlers: new URL("./core_handlers.ts", import.meta.url),
});
await queue.start();

async function tbqHandOffs(items: number): Promise<void> {
  for (let i = 0; i < items; i++) {
    const buffer = queue.fetch() ?? await queue.acquire();
    buffer.data.set(record);
    queue.enqueue(buffer);
  }
}

/** Items per second through the queue from the main thread alone. */
async function tbqHandOffRound(items: number): Promise<number> {
  const t0 = performance.now();
  await tbqHandOffs(items);
  await queue.onIdle();
  return items / ((performance.now() - t0) / 1000);
}

// ── 1. hand-off: ring against tbq ───────────────────────────────────────────────────────────

/** Resolves (or returns undefined at once) when HEAD is no longer `seen`: spin, then waitAsync. */
function headMoved(words: Int32Array, seen: number): Promise<void> | undefined {
  for (let i = 0; i < SPIN; i++) if (Atomics.load(words, R.HEAD) !== seen) return undefined;
  Atomics.store(words, R.PRODUCER_SLEEPING, 1);
  const result = Atomics.waitAsync(words, R.HEAD, seen);
  if (!result.async) {
    Atomics.store(words, R.PRODUCER_SLEEPING, 0);
    return undefined;
  }
  return result.value.then(() => {
    Atomics.store(words, R.PRODUCER_SLEEPING, 0);
  });
}

/** Items per second through the hand-rolled ring; ends when the consumer handed the last back. */
async function ringRound(ring: Ring, items: number): Promise<number> {
  const { words, sizes, bytes, capacity } = ring;
  const mask = capacity - 1;
  const t0 = performance.now();
  let tail = Atomics.load(words, R.TAIL);
  for (let i = 0; i < items; i++) {
    let head: number;
    while (((tail - (head = Atomics.load(words, R.HEAD))) | 0) >= capacity) {
      const sleeping = headMoved(words, head);
      if (sleeping) await sleeping;
    }
    const slot = tail & mask;
    bytes.set(record, slot * ITEM_BYTES);
    sizes[slot] = ITEM_BYTES;
    tail = (tail + 1) | 0;
    Atomics.store(words, R.TAIL, tail);
    if (Atomics.load(words, R.CONSUMER_SLEEPING)) Atomics.notify(words, R.TAIL);
  }
  for (let head; (head = Atomics.load(words, R.HEAD)) !== tail;) {
    const sleeping = headMoved(words, head);
    if (sleeping) await sleeping;
  }
  return items / ((performance.now() - t0) / 1000);
}

async function stopRing(ring: Ring, worker: Worker): Promise<void> {
  const stopped = nextMessage<string>(worker);
  Atomics.store(ring.words, R.STOP, 1);
  Atomics.notify(ring.words, R.TAIL);
  await stopped;
  worker.terminate();
}

interface Pair<T = number[]> {
  baseline: T;
  tbq: T;
}

async function startRing(): Promise<[Ring, Worker]> {
  const ring = newRing(C.buffers);
  const worker = await startBaseline({
    kind: "ring",
    words: ring.words.buffer as SharedArrayBuffer,
    sizes: ring.sizes.buffer as SharedArrayBuffer,
    bytes: ring.bytes.buffer as SharedArrayBuffer,
  });
  return [ring, worker];
}

async function handOff(): Promise<Pair> {
  const [ring, worker] = await startRing();
  const warm = Math.ceil(C.handOffItems / 5);
  const ringSide = (items: number) => SIDE === "tbq" ? NaN : ringRound(ring, items);
  const tbqSide = (items: number) => SIDE === "baseline" ? NaN : tbqHandOffRound(items);
  await ringSide(warm);
  await tbqSide(warm);
  const pair: Pair = { baseline: [], tbq: [] };
  for (let round = 0; round < C.handOffRounds; round++) {
    pair.baseline.push(await ringSide(C.handOffItems));
    pair.tbq.push(await tbqSide(C.handOffItems));
    progress(
      `hand-off round ${round + 1}: ring ${mega(pair.baseline.at(-1)!)}, tbq ${
        mega(pair.tbq.at(-1)!)
      } items/s`,
    );
  }
  await stopRing(ring, worker);
  return pair;
}

// ── 2. three producers against one ──────────────────────────────────────────────────────────

class Producer {
  readonly worker = startWorker("./core_producer.ts");

  async send(command: ProducerCommand, expect: ProducerReply["kind"]): Promise<ProducerReply> {
    const reply = nextMessage<ProducerReply>(this.worker);
    this.worker.postMessage(command);
    const answer = await reply;
    if (answer.kind !== expect) throw new Error(`producer Worker: ${JSON.stringify(answer)}`);
    return answer;
  }
}

async function threeProducerRound(workers: Producer[], items: number): Promise<number> {
  const share = Math.floor(items / (workers.length + 1));
  const t0 = performance.now();
  const done = workers.map((w) => w.send({ kind: "run", items: share }, "done"));
  await tbqHandOffs(items - share * workers.length);
  await Promise.all(done);
  await queue.onIdle();
  return items / ((performance.now() - t0) / 1000);
}

async function threeProducers(): Promise<Pair> {
  const workers = [new Producer(), new Producer()];
  await Promise.all(
    workers.map((w) => w.send({ kind: "attach", share: queue.share() }, "attached")),
  );
  const warm = Math.ceil(C.producerItems / 5);
  await tbqHandOffRound(warm);
  await threeProducerRound(workers, warm);
  const pair: Pair = { baseline: [], tbq: [] };
  for (let round = 0; round < C.producerRounds; round++) {
    pair.baseline.push(await tbqHandOffRound(C.producerItems));
    pair.tbq.push(await threeProducerRound(workers, C.producerItems));
    progress(
      `producers round ${round + 1}: one ${mega(pair.baseline.at(-1)!)}, three ${
        mega(pair.tbq.at(-1)!)
      } items/s`,
    );
  }
  for (const w of workers) w.worker.terminate();
  return pair;
}

// ── 3. round trips ──────────────────────────────────────────────────────────────────────────

let request = 0;

/** One ping-pong: the floor of a promise-returning round trip through shared memory. */
async function pingPong(words: Int32Array): Promise<void> {
  const sent = request = (request + 1) & 0x3fffffff;
  Atomics.store(words, P.REQUEST, sent);
  if (Atomics.load(words, P.WORKER_SLEEPING)) Atomics.notify(words, P.REQUEST);
  for (let i = 0; i < SPIN; i++) if (Atomics.load(words, P.ANSWER) === sent) return;
  Atomics.store(words, P.MAIN_SLEEPING, 1);
  for (let seen; (seen = Atomics.load(words, P.ANSWER)) !== sent;) {
    const result = Atomics.waitAsync(words, P.ANSWER, seen);
    if (result.async) await result.value;
  }
  Atomics.store(words, P.MAIN_SLEEPING, 0);
}

let echoed: (() => void) | undefined;
function postMessageTrip(echo: Worker): Promise<void> {
  const { promise, resolve } = Promise.withResolvers<void>();
  echoed = resolve;
  echo.postMessage(1);
  return promise;
}

type Kind = "floor" | "tbq" | "postMessage";

/** Microseconds per round trip, `samples` of them, optionally a 1 ms timer before each. */
async function trips(
  kind: Kind,
  samples: number,
  spaced: boolean,
  words: Int32Array,
  echo: Worker,
): Promise<Float64Array> {
  const times = new Float64Array(samples);
  for (let i = 0; i < samples; i++) {
    if (spaced) await sleep(1);
    if (kind === "tbq") {
      const buffer = queue.fetch() ?? await queue.acquire();
      const t0 = performance.now();
      await queue.enqueueAndWait(buffer);
      times[i] = (performance.now() - t0) * 1000;
    } else if (kind === "floor") {
      const t0 = performance.now();
      await pingPong(words);
      times[i] = (performance.now() - t0) * 1000;
    } else {
      const t0 = performance.now();
      await postMessageTrip(echo);
      times[i] = (performance.now() - t0) * 1000;
    }
  }
  return times;
}

interface Latency {
  p50: number;
  p99: number;
  max: number;
  roundP50: number[];
  roundP99: number[];
  samples: number;
}

function latency(rounds: Float64Array[]): Latency {
  const all = new Float64Array(rounds.reduce((n, r) => n + r.length, 0));
  let at = 0;
  for (const r of rounds) all.set(r, (at += r.length) - r.length);
  all.sort();
  const sorted = rounds.map((r) => r.slice().sort());
  return {
    p50: percentile(all, 0.5),
    p99: percentile(all, 0.99),
    max: all[all.length - 1],
    roundP50: sorted.map((r) => percentile(r, 0.5)),
    roundP99: sorted.map((r) => percentile(r, 0.99)),
    samples: all.length,
  };
}

async function roundTrips(): Promise<Record<"tight" | "spaced", Record<Kind, Latency>>> {
  const words = new Int32Array(new SharedArrayBuffer(P.WORDS * 4));
  const pinger = await startBaseline({
    kind: "pingpong",
    words: words.buffer as SharedArrayBuffer,
  });
  const echo = await startBaseline({ kind: "echo" });
  echo.onmessage = () => echoed?.();
  const kinds: Kind[] = ["floor", "tbq", "postMessage"];
  const result = {} as Record<"tight" | "spaced", Record<Kind, Latency>>;
  for (const spaced of [false, true]) {
    const [samples, roundCount] = spaced
      ? [C.spacedSamples, C.spacedRounds]
      : [C.tripSamples, C.tripRounds];
    for (const kind of kinds) await trips(kind, Math.ceil(samples / 5), spaced, words, echo);
    const rounds: Record<Kind, Float64Array[]> = { floor: [], tbq: [], postMessage: [] };
    for (let round = 0; round < roundCount; round++) {
      for (const kind of kinds) rounds[kind].push(await trips(kind, samples, spaced, words, echo));
      progress(`round trips (${spaced ? "spaced" : "back to back"}) round ${round + 1}`);
    }
    result[spaced ? "spaced" : "tight"] = {
      floor: latency(rounds.floor),
      tbq: latency(rounds.tbq),
      postMessage: latency(rounds.postMessage),
    };
  }
  const stopped = nextMessage<string>(pinger);
  Atomics.store(words, P.REQUEST, -1);
  Atomics.notify(words, P.REQUEST);
  await stopped;
  pinger.terminate();
  echo.terminate();
  return result;
}

// ── 4. heap ─────────────────────────────────────────────────────────────────────────────────

/** tbq: `ops` hand-offs from the main thread, every 256th an `enqueueAndWait`. */
async function tbqHeapOps(ops: number): Promise<void> {
  for (let i = 0; i < ops; i++) {
    const buffer = queue.fetch() ?? await queue.acquire();
    buffer.data.set(record);
    if ((i & 255) === 255) await queue.enqueueAndWait(buffer);
    else queue.enqueue(buffer);
  }
  await queue.onIdle();
}

/** The ring: `ops` hand-offs in runs of 256, each run awaited until handed back. */
async function ringHeapOps(ring: Ring, ops: number): Promise<void> {
  for (let done = 0; done < ops; done += 256) await ringRound(ring, Math.min(256, ops - done));
}

function heapAfterGc(): number {
  gc!();
  gc!();
  return Deno.memoryUsage().heapUsed;
}

interface Heap {
  /** Least-squares slope, bytes per million operations. */
  slope: number;
  /** Heap used after gc() at the 11 sample points, bytes. */
  samples: number[];
}

/**
 * Main-thread heap after gc() every tenth of `C.heapOps` operations, after a warm-up of at least
 * 500,000 (V8's tiering up allocates code and feedback for a while: ~40 KiB over the first 500,000).
 */
async function heapSlope(run: (ops: number) => Promise<void>): Promise<Heap> {
  const segment = Math.ceil(C.heapOps / 10);
  await run(Math.max(segment, 500_000)); // warm-up
  const samples = [heapAfterGc()];
  for (let k = 1; k <= 10; k++) {
    await run(segment);
    samples.push(heapAfterGc());
  }
  // Least squares of heap (bytes) over operations (millions).
  const xs = samples.map((_, k) => (k * segment) / 1e6);
  const mx = xs.reduce((a, b) => a + b) / xs.length;
  const my = samples.reduce((a, b) => a + b) / samples.length;
  let sxy = 0;
  let sxx = 0;
  for (let k = 0; k < xs.length; k++) {
    sxy += (xs[k] - mx) * (samples[k] - my);
    sxx += (xs[k] - mx) ** 2;
  }
  return { slope: sxy / sxx, samples };
}

async function heap(): Promise<Pair<Heap>> {
  const [ring, worker] = await startRing();
  const baseline = await heapSlope((ops) => ringHeapOps(ring, ops));
  await stopRing(ring, worker);
  return { baseline, tbq: await heapSlope(tbqHeapOps) };
}

// ── 5. idle CPU ─────────────────────────────────────────────────────────────────────────────

/** CPU nanoseconds used so far by each of this process's threads. */
function threadCpu(): Map<string, number> {
  const cpu = new Map<string, number>();
  for (const task of Deno.readDirSync("/proc/self/task")) {
    const text = readText(`/proc/self/task/${task.name}/schedstat`);
    if (text) cpu.set(task.name, Number(text.split(" ")[0]));
  }
  return cpu;
}

/** % of one core the whole process uses over `seconds` of doing nothing. */
async function idleCpu(seconds: number): Promise<number> {
  await sleep(300);
  const before = threadCpu();
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const after = threadCpu();
  const wall = (performance.now() - t0) * 1e6;
  let used = 0;
  for (const [tid, ns] of after) used += ns - (before.get(tid) ?? ns);
  return (used / wall) * 100;
}

// ── the run ─────────────────────────────────────────────────────────────────────────────────

function mega(perSecond: number): string {
  return `${(perSecond / 1e6).toFixed(2)} M/s`;
}

const us = (v: number) => v >= 100 ? `${v.toFixed(0)} µs` : `${v.toFixed(1)} µs`;
const range = (values: number[], format: (v: number) => string) =>
  `[${format(Math.min(...values))}–${format(Math.max(...values))}]`;
const bare = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
type Row = [string, string, string, string, string, string];

const rows: Row[] = [];
const met = (ok: boolean) => (ok ? "yes" : "NO");

if (SECTIONS.has("handoff")) {
  const handOffs = await handOff();
  const [b, t] = [median(handOffs.baseline), median(handOffs.tbq)];
  rows.push([
    "hand-off, 1 producer (items/s)",
    `ring ${mega(b)} ${range(handOffs.baseline, (v) => (v / 1e6).toFixed(2))}`,
    `${mega(t)} ${range(handOffs.tbq, (v) => (v / 1e6).toFixed(2))}`,
    (t / b).toFixed(2),
    "≥ 0.8 and ≥ 1.5 M/s",
    met(t / b >= 0.8 && t >= 1.5e6),
  ]);
}
if (SECTIONS.has("producers")) {
  const producers = await threeProducers();
  const [b, t] = [median(producers.baseline), median(producers.tbq)];
  rows.push([
    "hand-off, 3 producers (items/s)",
    `1 producer ${mega(b)} ${range(producers.baseline, (v) => (v / 1e6).toFixed(2))}`,
    `${mega(t)} ${range(producers.tbq, (v) => (v / 1e6).toFixed(2))}`,
    (t / b).toFixed(2),
    "≥ 0.9",
    met(t / b >= 0.9),
  ]);
}
if (SECTIONS.has("trips")) {
  const latencies = await roundTrips();
  for (const mode of ["tight", "spaced"] as const) {
    const { floor, tbq, postMessage } = latencies[mode];
    const label = mode === "tight" ? "back to back" : "spaced 1 ms";
    const tight = mode === "tight";
    rows.push([
      `round trip p50, ${label} (${tbq.samples / 1000}k)`,
      `SAB floor ${us(floor.p50)} ${range(floor.roundP50, bare)}`,
      `${us(tbq.p50)} ${range(tbq.roundP50, bare)}`,
      (tbq.p50 / floor.p50).toFixed(2),
      tight ? "≤ 2.5" : "—",
      tight ? met(tbq.p50 / floor.p50 <= 2.5) : "",
    ]);
    rows.push([
      `round trip p99, ${label}`,
      `SAB floor ${us(floor.p99)} ${range(floor.roundP99, bare)}`,
      `${us(tbq.p99)} ${range(tbq.roundP99, bare)}`,
      (tbq.p99 / floor.p99).toFixed(2),
      tight ? "≤ 20 µs" : "—",
      tight ? met(tbq.p99 <= 20) : "",
    ]);
    rows.push([
      `round trip max, ${label}`,
      `SAB floor ${us(floor.max)}`,
      us(tbq.max),
      (tbq.max / floor.max).toFixed(2),
      "—",
      "",
    ]);
    rows.push([
      `round trip p50 / p99, ${label}, vs postMessage`,
      `postMessage ${us(postMessage.p50)} ${range(postMessage.roundP50, bare)} / ${
        us(postMessage.p99)
      }`,
      `${us(tbq.p50)} / ${us(tbq.p99)}`,
      `${(tbq.p50 / postMessage.p50).toFixed(2)} / ${(tbq.p99 / postMessage.p99).toFixed(2)}`,
      "—",
      "",
    ]);
  }
}
if (SECTIONS.has("heap")) {
  const heaps = await heap();
  const kib = (h: Heap) => h.samples.map((b) => (b / 1024).toFixed(0)).join(" ");
  progress(`heap after gc (KiB): ring ${kib(heaps.baseline)}; tbq ${kib(heaps.tbq)}`);
  const cell = (h: Heap) =>
    `${h.slope.toFixed(0)} (${(h.samples[0] / 1024).toFixed(0)} → ${
      (h.samples[10] / 1024).toFixed(0)
    } KiB)`;
  rows.push([
    `heap slope, ${C.heapOps / 1e6} M ops (B per M ops)`,
    `ring ${cell(heaps.baseline)}`,
    cell(heaps.tbq),
    "",
    `|slope| ≤ ${HEAP_FLAT_BYTES_PER_M / 1024} KiB`,
    met(Math.abs(heaps.tbq.slope) <= HEAP_FLAT_BYTES_PER_M),
  ]);
}
if (SECTIONS.has("idle")) {
  const idleQueue = await idleCpu(C.idleSeconds);
  await queue.close();
  const idleNone = await idleCpu(C.idleSeconds);
  progress("idle done");
  rows.push([
    `idle CPU, ${C.idleSeconds} s (% of a core)`,
    `no queue ${idleNone.toFixed(2)} %`,
    `${idleQueue.toFixed(2)} %`,
    "",
    "< 1 %",
    met(idleQueue < 1),
  ]);
} else {
  await queue.close();
}

const header: Row = ["measure", "baseline", "tbq", "ratio", "target", "met?"];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
console.log(line(header));
console.log(line(widths.map((w) => "-".repeat(w))));
for (const row of rows) console.log(line(row));
console.log(
  `load average before ${loadBefore}, after ${loadAverage()}; ` +
    `${((performance.now() - started) / 1000).toFixed(0)} s in all`,
);
