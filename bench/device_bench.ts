/**
 * Queue → device (issue 10, "Speed"): a `ThreadedBufferQueue` of 8 × 64 KiB buffers in front of a
 * simulated device, against a direct loop doing the same work on one thread, measured
 * alternately in one run.
 *
 *   flock /tmp/tbq-bench.lock \
 *     deno run -A --unstable-worker-options bench/device_bench.ts --cpus=both [--quick]
 *
 * The device (bench/device_sim.ts): per item three blocking FFI calls (CBW, data, CSW) that
 * together take the device time, plus a read of one byte per 4 KiB of the item.
 * - direct loop: for each item, copy the precomputed 64 KiB into one buffer (a plain, unshared
 *   Uint8Array, as code without a queue would have), then the device calls.
 * - queue, 1 producer: the main thread acquires, copies the same data into `buffer.data`, sets
 *   `size`, enqueues; the handler (bench/device_handlers.ts, in the queue's Worker) does the device
 *   calls. Producers stop after a fixed time; timed until `onIdle()` after the last item.
 * - queue, 2 producers: the same, with a producer Worker (bench/device_producer.ts, attached
 *   through `queue.share()`) producing alongside the main thread; the two claim item numbers
 *   from a shared counter.
 * Device times 3 µs, 80 µs and 1 ms. Each round measures the direct loop and both queue cases
 * (order reversed every other round) after a warm-up; the table shows medians, the ratio
 * (median of each round's queue rate over that round's direct rate), the rounds' min–max ratio,
 * and the issue's target. The handler's checksum of the bytes it read must equal what the
 * producers wrote, and every item must have run, or the bench fails. Below the table: the device
 * time really spent per item in each arm, how much of it asleep, how long the queue's Worker sat
 * between two items, and for how many items a producer found no free buffer.
 *
 * Options:
 * - `--cpus=current` (default): run with the CPUs this process may use; `--cpus=1`: run again
 *   under `taskset -c 0`; `--cpus=both`: both, one after the other (two child processes).
 * - `--quick`: a ~10 s smoke run per CPU setting (3 rounds of 0.15 s measurements).
 * - `--rounds=N` (5), `--seconds=S` (1: how long producers produce, or the direct loop runs, in
 *   one measurement), `--times=3,80,1000` (device µs per item), `--producers=1,2`.
 * - `--device=hybrid` (default: each call sleeps until a margin before its deadline, then spins;
 *   the margin is measured for each device time, see `marginFor` and bench/device_sim.ts),
 *   `sleep` (sleeps only: every call is late by the wake-up latency) or `spin`
 *   (busy-waits only: the device thread never leaves the CPU).
 */
import { ThreadedBufferQueue } from "../mod.ts";
import type { DeviceHandlerOptions } from "./device_handlers.ts";
import type { ProducerAnswer, ProducerSetup } from "./device_producer.ts";
import { produce } from "./device_produce.ts";
import {
  buildDevice,
  C,
  deviceItem,
  ITEM_SIZE,
  makeSources,
  openDevice,
  S,
  SOURCES,
} from "./device_sim.ts";

const BUFFERS = 8;

function option(name: string, fallback: string): string {
  const prefix = `--${name}=`;
  const arg = Deno.args.find((a) => a.startsWith(prefix));
  return arg === undefined ? fallback : arg.slice(prefix.length);
}
const QUICK = Deno.args.includes("--quick");
const CPUS = option("cpus", "current");
const ROUNDS = Number(option("rounds", QUICK ? "3" : "5"));
const SECONDS = Number(option("seconds", QUICK ? "0.15" : "1"));
const WARMUP = Math.min(SECONDS, 0.2);
const TIMES_US = option("times", "3,80,1000").split(",").map(Number);
const PRODUCERS = option("producers", "1,2").split(",").map(Number);
const MODE = option("device", "hybrid");
if (!["current", "1", "both"].includes(CPUS)) throw new Error("--cpus is current, 1 or both");
if (!["hybrid", "sleep", "spin"].includes(MODE)) throw new Error("--device is hybrid|sleep|spin");
if (![ROUNDS, SECONDS, ...TIMES_US].every((n) => Number.isFinite(n) && n > 0)) {
  throw new Error("--rounds, --seconds and --times need positive numbers");
}
if (!PRODUCERS.every((n) => n === 1 || n === 2)) throw new Error("--producers is 1, 2 or 1,2");

/** The CPUs this process may run on (`taskset` mask), as a list. */
function allowedCpus(): string {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    return status.match(/^Cpus_allowed_list:\s*(\S+)/m)?.[1] ?? "?";
  } catch {
    return "?";
  }
}

/** Runs this script again (as a child), under `taskset -c 0` when `oneCpu`. */
async function respawn(oneCpu: boolean): Promise<void> {
  const args = Deno.args.filter((a) => !a.startsWith("--cpus="));
  const deno = [Deno.execPath(), "run", "-A", "--unstable-worker-options", import.meta.filename!];
  const command = oneCpu ? ["taskset", "-c", "0", ...deno] : deno;
  const child = new Deno.Command(command[0], {
    args: [...command.slice(1), ...args, "--cpus=current"],
    stdin: "null",
  }).spawn();
  const { code } = await child.status;
  if (code !== 0) throw new Error(`${command.join(" ")} exited with ${code}`);
}

/** The whole bench (nothing runs when `deno bench` merely loads this module). */
async function main(): Promise<void> {
  if (CPUS === "1" && allowedCpus() !== "0") {
    await respawn(true);
    Deno.exit(0);
  }
  if (CPUS === "both") {
    await respawn(false);
    console.log();
    await respawn(true);
    Deno.exit(0);
  }

  // ---------------------------------------------------------------------------------------------

  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  };
  const quantile = (sorted: Float64Array, q: number) =>
    sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  const us = (ns: number) => (ns / 1000).toFixed(1);
  const cpusSeen = navigator.hardwareConcurrency;

  console.log(
    `== device bench: ${cpusSeen} CPU${cpusSeen === 1 ? "" : "s"} seen ` +
      `(Cpus_allowed_list ${allowedCpus()}${cpusSeen === 1 ? ", i.e. taskset -c 0" : ""}), ` +
      `device ${MODE}${QUICK ? ", --quick" : ""}`,
  );
  console.log(
    `deno ${Deno.version.deno}, v8 ${Deno.version.v8}, ${Deno.build.target}, ` +
      `kernel ${Deno.osRelease()}, load average ${
        Deno.loadavg().map((l) => l.toFixed(2)).join(" ")
      }`,
  );

  const built = await buildDevice();
  const libPath = built.path ?? "";
  if (!built.path) console.log(`device: ${built.why}; falling back to libc clock_nanosleep only`);
  const device = openDevice(libPath);
  device.init();

  /**
   * The margin for calls of `phaseNs` (see bench/device_sim.ts): how late this thread's sleeps
   * wake here (1 ns timer slack), measured at that length (lateness grows with the length here),
   * then again at the length the call will really sleep (the 75th percentile less); the margin is
   * the 90th percentile of that, at most half the call. Returns it with a line that says what was
   * measured.
   */
  function marginFor(phaseNs: number): { margin: number; note: string } {
    if (!built.path) return { margin: 0, note: "libc clock_nanosleep of each whole call" };
    if (MODE === "spin") return { margin: 1e9, note: "busy-wait only" };
    const n = QUICK ? 50 : 100;
    const full = device.calibrate(phaseNs, n).sort();
    const said =
      `a ${us(phaseNs)} µs clock_nanosleep wakes late by ${us(quantile(full, 0.5))} µs ` +
      `(median; min ${us(full[0])}, p75 ${us(quantile(full, 0.75))}, max ${us(full[n - 1])})`;
    if (MODE === "sleep") return { margin: 0, note: `${said}; sleep only` };
    const first = quantile(full, 0.75);
    if (first >= phaseNs) return { margin: phaseNs, note: `${said} → each call busy-waits` };
    const shorter = device.calibrate(phaseNs - first, n).sort();
    // At most half the call, so that a noisy calibration cannot turn a long call into a spin.
    const margin = Math.min(phaseNs / 2, Math.ceil(quantile(shorter, 0.9) / 1000) * 1000);
    return {
      margin,
      note: `${said} → each call sleeps until ${us(margin)} µs before its deadline, then spins`,
    };
  }

  const { sources, sums } = makeSources();
  const control = new Int32Array(new SharedArrayBuffer(C.LENGTH * 4));
  const queueStats = new Float64Array(new SharedArrayBuffer(S.LENGTH * 8));
  const directStats = new Float64Array(S.LENGTH);
  const handlerOptions: DeviceHandlerOptions = {
    libPath,
    control: control.buffer as SharedArrayBuffer,
    stats: queueStats.buffer as SharedArrayBuffer,
  };
  const queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: BUFFERS, bufferSize: ITEM_SIZE },
    handlers: new URL("./device_handlers.ts", import.meta.url),
    handlerOptions,
  });
  await queue.start();

  // The producer Worker and its answers.
  const worker = new Worker(new URL("./device_producer.ts", import.meta.url), { type: "module" });
  const waiting = new Map<string, PromiseWithResolvers<ProducerAnswer>>();
  const answer = (key: string) => {
    const entry = Promise.withResolvers<ProducerAnswer>();
    waiting.set(key, entry);
    return entry.promise;
  };
  let workerFailed: Error | undefined;
  worker.onmessage = ({ data }: MessageEvent<ProducerAnswer>) => {
    if ("error" in data) {
      workerFailed = new Error(`producer Worker: ${data.error}`);
      for (const entry of waiting.values()) entry.reject(workerFailed);
      return;
    }
    const key = "armed" in data ? `armed ${data.armed}` : `done ${data.done}`;
    waiting.get(key)?.resolve(data);
    waiting.delete(key);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    workerFailed = new Error(`producer Worker: ${event.message}`);
    for (const entry of waiting.values()) entry.reject(workerFailed);
  };
  const setup: ProducerSetup = {
    share: queue.share(),
    control: control.buffer as SharedArrayBuffer,
  };
  worker.postMessage(setup);

  interface Measure {
    rate: number;
    stats: Float64Array;
    /** Items for which a producer found no free buffer. */
    waits: number;
  }

  /** The direct loop for `seconds`: copy, then the device, item after item on this thread. */
  function direct(seconds: number): Measure {
    const buffer = new Uint8Array(ITEM_SIZE);
    const phase = control[C.PHASE_NS];
    const slack = control[C.MARGIN_NS];
    directStats.fill(0);
    let expected = 0;
    let n = 0;
    const start = performance.now();
    const deadline = start + seconds * 1000;
    for (; performance.now() < deadline; n++) {
      buffer.set(sources[n % SOURCES]);
      deviceItem(device, buffer, phase, slack, directStats);
      expected += sums[n % SOURCES];
    }
    const took = (performance.now() - start) / 1000;
    if (directStats[S.CHECKSUM] !== expected) throw new Error("direct loop: checksum differs");
    return { rate: n / took, stats: directStats.slice(), waits: 0 };
  }

  let round = 0;
  /** The queue for `seconds` (producers stop claiming items then), timed until `onIdle()`. */
  async function queued(seconds: number, producers: number): Promise<Measure> {
    if (workerFailed) throw workerFailed;
    queueStats.fill(0);
    Atomics.store(control, C.NEXT, 0);
    Atomics.store(control, C.COUNT, 2 ** 31 - 1);
    round++;
    let theirs: Promise<ProducerAnswer> | undefined;
    if (producers === 2) {
      const armed = answer(`armed ${round}`);
      theirs = answer(`done ${round}`);
      worker.postMessage({ round });
      await armed;
    }
    const start = performance.now();
    Atomics.store(control, C.GO, round);
    Atomics.notify(control, C.GO);
    const mine = await produce(queue, control, sources, sums, start + seconds * 1000);
    const other = theirs ? await theirs : undefined;
    await queue.onIdle({ signal: AbortSignal.timeout(120_000) });
    const took = (performance.now() - start) / 1000;
    const them = other && "checksum" in other ? other : { checksum: 0, produced: 0, waits: 0 };
    const count = mine.produced + them.produced;
    if (queueStats[S.ITEMS] !== count) {
      throw new Error(`queue: ${queueStats[S.ITEMS]} of ${count} items ran`);
    }
    if (queueStats[S.CHECKSUM] !== mine.checksum + them.checksum) {
      throw new Error("queue: checksum differs");
    }
    return { rate: count / took, stats: queueStats.slice(), waits: mine.waits + them.waits };
  }

  interface Row {
    timeUs: number;
    producers: number;
    direct: number[];
    queue: number[];
    ratios: number[];
  }

  function target(timeUs: number): number {
    if (timeUs <= 3) return 0.6;
    if (timeUs >= 1000) return 0.98;
    if (timeUs === 80) return cpusSeen >= 2 ? 0.95 : 0.9;
    return NaN;
  }

  const rows: Row[] = [];
  const deviceLines: string[] = [];
  const sumStats = (into: Float64Array, from: Float64Array) => from.forEach((v, i) => into[i] += v);
  const fmtRate = (r: number) => Math.round(r).toString();

  for (const timeUs of TIMES_US) {
    const phaseNs = Math.round(timeUs * 1000 / 3);
    Atomics.store(control, C.PHASE_NS, phaseNs);
    const { margin, note } = marginFor(phaseNs);
    Atomics.store(control, C.MARGIN_NS, Math.min(margin, 2 ** 31 - 1));
    console.log(`${timeUs} µs per item, 3 calls: ${note}`);
    // Warm-up: every path once.
    direct(WARMUP);
    for (const p of PRODUCERS) await queued(WARMUP, p);
    const byProducers = new Map<number, Row>(
      PRODUCERS.map((p) => [p, { timeUs, producers: p, direct: [], queue: [], ratios: [] }]),
    );
    const directAll = new Float64Array(S.LENGTH);
    const queueAll = new Float64Array(S.LENGTH);
    let waits = 0;
    const progress: string[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const steps: (number | "direct")[] = ["direct", ...PRODUCERS];
      const order = r % 2 === 0 ? steps : steps.reverse();
      let d = NaN;
      const q = new Map<number, number>();
      for (const step of order) {
        if (step === "direct") {
          const m = direct(SECONDS);
          d = m.rate;
          sumStats(directAll, m.stats);
        } else {
          const m = await queued(SECONDS, step);
          q.set(step, m.rate);
          sumStats(queueAll, m.stats);
          waits += m.waits;
        }
      }
      for (const [p, rate] of q) {
        const row = byProducers.get(p)!;
        row.direct.push(d);
        row.queue.push(rate);
        row.ratios.push(rate / d);
      }
      progress.push(
        `D ${fmtRate(d)}` + [...q].map(([p, rate]) => ` Q${p} ${fmtRate(rate)}`).join(""),
      );
    }
    console.log(`${timeUs} µs, items/s by round: ${progress.join(" | ")}`);
    rows.push(...byProducers.values());
    const describe = (label: string, s: Float64Array) =>
      `${label} ${us(s[S.ELAPSED] / s[S.ITEMS])} µs/item, ${
        (100 * s[S.SLEPT] / s[S.ELAPSED]).toFixed(0)
      }% asleep`;
    deviceLines.push(
      `  ${String(timeUs).padStart(5)} µs nominal: ` +
        `${describe("direct", directAll)}; ${describe("queue", queueAll)}, ` +
        `idle between items ${us(queueAll[S.GAP] / queueAll[S.ITEMS])} µs/item, ` +
        `no free buffer for ${(100 * waits / queueAll[S.ITEMS]).toFixed(0)}% of items`,
    );
  }

  const header = [
    "case",
    "direct items/s",
    "queue items/s",
    "ratio",
    "rounds min–max",
    "target",
    "met?",
  ];
  const table = rows.map((row) => {
    const ratio = median(row.ratios);
    const t = target(row.timeUs);
    return [
      `${row.timeUs} µs, ${row.producers} producer${row.producers === 1 ? "" : "s"}`,
      fmtRate(median(row.direct)),
      fmtRate(median(row.queue)),
      ratio.toFixed(2),
      `${Math.min(...row.ratios).toFixed(2)}–${Math.max(...row.ratios).toFixed(2)}`,
      Number.isNaN(t) ? "-" : `≥ ${t.toFixed(2)}`,
      Number.isNaN(t) ? "-" : ratio >= t ? "yes" : "NO",
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    "| " + cells.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join(" | ") +
    " |";
  console.log();
  console.log(`queue vs direct, ${cpusSeen} CPU${cpusSeen === 1 ? " (taskset -c 0)" : "s"}:`);
  console.log(line(header));
  console.log(line(widths.map((w) => "-".repeat(w))));
  for (const r of table) console.log(line(r));
  console.log("device time really spent (all rounds):");
  for (const l of deviceLines) console.log(l);
  console.log(`load average at the end: ${Deno.loadavg().map((l) => l.toFixed(2)).join(" ")}`);

  worker.terminate();
  await queue.close();
  device.close();
  if (built.dir) await Deno.remove(built.dir, { recursive: true });
}

if (import.meta.main) await main();
