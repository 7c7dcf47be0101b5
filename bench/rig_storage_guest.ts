/**
 * The guest side of bench/rig_storage_bench.ts (run inside the QEMU rig guest by the host side;
 * the same file is also the optional producer Worker). Not meant to be run by hand: it OVERWRITES
 * blocks of the usb-storage device 46f4:0001.
 *
 * Arms, each writing `--mib` MiB as 64 KiB WRITE (10) commands to its own region of the disk:
 * - `direct`: `openStorage()` on the main thread, then `bot.writeBlocks()` of a plain Uint8Array
 *   (the device is opened before and closed after the timed part);
 * - `queue`: one ThreadedBufferQueue (8 × 64 KiB buffers, `massStorageHandlers`), created once,
 *   `start()`ed before and `stop()`ped after the timed part (its `pre` opens the device in the
 *   queue's Worker, `post` closes it, so one owner at a time); the main thread produces with
 *   `writeRegions()`, timed from the first acquire until every item completed;
 * - `queue2` (`--producers=2`): the same queue, the main thread producing the first half and a
 *   producer Worker (this file, attached through `queue.share()`) the second half, started
 *   together through a SharedArrayBuffer word.
 *
 * `--warmup` rounds (default 2) are not counted; then `--rounds` rounds, each running the arms in that order. Before each
 * measurement the arm's data gets a stamp in the first 16 bytes of every 64 KiB chunk (magic, arm,
 * round, chunk index); after it (untimed) the first block of every chunk is read back and its
 * stamp checked, so a round whose writes did not land fails the run. At the end every region is
 * read back whole and compared byte for byte with the last round's data.
 *
 * Per-round figures go to stderr; the last stdout line is `REPORT {json}` ({@linkcode Report}).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  libusbPath,
  type QueueProducer,
  type QueueShare,
  ThreadedBufferQueue,
  usbWorkerPermissions,
} from "../mod.ts";
import {
  createReport,
  massStorageHandlers,
  openStorage,
  readReport,
  type StorageSession,
  writeRegions,
  type WriteRegionsResult,
} from "../storage/mod.ts";

const CHUNK_BLOCKS = 128;
const BLOCK = 512;
const CHUNK = CHUNK_BLOCKS * BLOCK;
const BUFFERS = 8;
const MAGIC = 0x54425153; // "SQBT"
const TIMEOUT_MS = 120_000;
const ARMS = ["direct", "queue", "queue2"] as const;
/** An arm's name. */
export type Arm = typeof ARMS[number];

/** One measurement. */
export interface Measurement {
  /** Milliseconds of the timed part. */
  ms: number;
  /** MiB/s. */
  mibs: number;
  /** WRITE (10) commands. */
  items: number;
  /** Queue arms: µs the handler spent inside WRITE (10) (its report's `writeMicros`), summed. */
  commandUs?: number;
  /**
   * `queue` with `--profile`: the main thread's `acquire()` calls, how many found no free buffer,
   * the ms spent awaiting them, and the items queued (not yet running) summed over the calls.
   */
  acquire?: { calls: number; blocked: number; ms: number; queuedSum: number };
  /** The CPU the main thread, and in queue arms the queue's Worker, last ran on. */
  cpu: { main: number; device?: number };
}

/** What the guest reports. */
export interface Report {
  env: {
    cpus: number;
    clocksource: string;
    /** The CPU that takes the xHCI interrupts. */
    irqCpu: number;
    /** How threads were placed: `pinned` (see the host's header) or `free`. */
    placement: string;
    deno: string;
    kernel: string;
    loadavg: number[];
  };
  mib: number;
  rounds: number;
  /** The first `warmup` measurements of each arm are the warm-up. */
  warmup: number;
  profile: boolean;
  arms: Arm[];
  blockCount: number;
  /** The first `warmup` entries are the warm-up rounds. */
  results: Record<Arm, Measurement[]>;
  verify: { stampChecks: number; bytesCompared: number; mismatches: string[] };
  /** Wall time of the whole guest program up to the report, ms. */
  totalMs: number;
}

/** Messages to the producer Worker. */
type ToWorker =
  | { share: QueueShare; data: Uint8Array<ArrayBuffer>; lba: number; go: SharedArrayBuffer }
  | { round: number; firstChunk: number };
/** Messages from the producer Worker. */
type FromWorker =
  | { armed: number }
  | { done: number; result: WriteRegionsResult }
  | { error: string };

/** Writes the stamp into the first 16 bytes of each 64 KiB chunk of `data`. */
function stamp(data: Uint8Array, arm: number, round: number, firstChunk = 0): void {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  for (let k = 0, at = 0; at < data.byteLength; k++, at += CHUNK) {
    view.setUint32(at, MAGIC, true);
    view.setUint32(at + 4, arm, true);
    view.setUint32(at + 8, round, true);
    view.setUint32(at + 12, firstChunk + k, true);
  }
}

/** The CPU a thread last ran on (field 39 of its stat), or -1. */
function lastCpu(tid: number | "thread-self"): number {
  try {
    const path = tid === "thread-self" ? "/proc/thread-self/stat" : `/proc/self/task/${tid}/stat`;
    const stat = Deno.readTextFileSync(path);
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[36]);
  } catch {
    return -1;
  }
}

/** Ids of this process's Worker JS threads (Deno names them `worker-N`). */
function workerThreads(): Set<number> {
  const ids = new Set<number>();
  for (const task of Deno.readDirSync("/proc/self/task")) {
    try {
      const comm = Deno.readTextFileSync(`/proc/self/task/${task.name}/comm`);
      if (comm.startsWith("worker-")) ids.add(Number(task.name));
    } catch { /* gone */ }
  }
  return ids;
}

/** The Worker thread that appeared since `before` (polled for up to 2 s). */
async function newWorkerThread(before: Set<number>): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const fresh = [...workerThreads()].filter((id) => !before.has(id));
    if (fresh.length === 1) return fresh[0];
    if (fresh.length > 1) throw new Error(`several new Worker threads: ${fresh}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("no new Worker thread appeared");
}

/** The CPU that takes the xHCI interrupts (most counts in /proc/interrupts), 0 if unknown. */
function xhciIrqCpu(): number {
  try {
    const lines = Deno.readTextFileSync("/proc/interrupts").split("\n");
    const cpus = lines[0].trim().split(/\s+/).length;
    const counts = new Array(cpus).fill(0);
    for (const line of lines.filter((l) => l.includes("xhci"))) {
      line.trim().split(/\s+/).slice(1, 1 + cpus).forEach((n, i) => counts[i] += Number(n));
    }
    return counts.indexOf(Math.max(...counts));
  } catch {
    return 0;
  }
}

/** sched_setaffinity(2) through libc: pins a thread (0 = the calling one) to one CPU. */
function pinner(): (tid: number, cpu: number) => void {
  const libc = Deno.dlopen("libc.so.6", {
    sched_setaffinity: { parameters: ["i32", "usize", "buffer"], result: "i32" },
  });
  return (tid, cpu) => {
    const mask = new Uint8Array(128);
    mask[cpu >> 3] |= 1 << (cpu & 7);
    if (libc.symbols.sched_setaffinity(tid, BigInt(mask.length), mask) !== 0) {
      throw new Error(`sched_setaffinity(${tid}, cpu ${cpu}) failed`);
    }
  };
}

const g = globalThis as unknown as { WorkerGlobalScope?: new () => unknown };
const inWorker = typeof g.WorkerGlobalScope === "function" &&
  globalThis instanceof g.WorkerGlobalScope;

// ------------------------------------------------------------------ producer Worker

if (inWorker) {
  const scope = globalThis as unknown as {
    onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
    postMessage(message: FromWorker): void;
  };
  let queue: ReturnType<typeof ThreadedBufferQueue.attach> | undefined;
  let data = new Uint8Array(0);
  let lba = 0;
  let go: Int32Array = new Int32Array(new SharedArrayBuffer(4));
  scope.onmessage = async ({ data: message }) => {
    try {
      if ("share" in message) {
        queue = ThreadedBufferQueue.attach(message.share);
        data = message.data;
        lba = message.lba;
        go = new Int32Array(message.go);
        return;
      }
      const { round, firstChunk } = message;
      stamp(data, ARMS.indexOf("queue2"), round, firstChunk);
      scope.postMessage({ armed: round });
      // Generation round + 1 (round 0 is the warm-up); block: nothing else to do here.
      while (Atomics.load(go, 0) !== round + 1) Atomics.wait(go, 0, Atomics.load(go, 0), 1000);
      const result = await writeRegions(queue!, [{ lba, data }], {
        chunkBlocks: CHUNK_BLOCKS,
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      scope.postMessage({ done: round, result });
    } catch (error) {
      scope.postMessage({ error: String((error as Error)?.stack ?? error) });
    }
  };
}

/** The options both halves take (the host passes them on to the guest). */
export const BENCH_OPTIONS = {
  mib: { type: "string", default: "16" },
  rounds: { type: "string", default: "7" },
  warmup: { type: "string", default: "2" },
  producers: { type: "string", default: "2" },
  profile: { type: "boolean", default: false },
  placement: { type: "string", default: "pinned" },
} as const;

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const start = performance.now();
  const { values } = parseArgs({ args: Deno.args, options: BENCH_OPTIONS });
  const profile = values.profile;
  const placement = values.placement;
  if (!["pinned", "one", "free"].includes(placement)) {
    throw new Error("--placement is pinned, one or free");
  }
  const mib = Number(values.mib);
  const rounds = Number(values.rounds);
  const warmup = Number(values.warmup);
  if (!Number.isInteger(warmup) || warmup < 0) throw new Error("--warmup needs an integer >= 0");
  const producers = Number(values.producers);
  if (!Number.isInteger(mib) || mib < 1) throw new Error("--mib needs a positive integer");
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error("--rounds needs a positive integer");
  if (producers !== 1 && producers !== 2) throw new Error("--producers is 1 or 2");
  const arms: Arm[] = producers === 2 ? ["direct", "queue", "queue2"] : ["direct", "queue"];
  const device = { vendorId: 0x46f4, productId: 0x0001, libusbPath: libusbPath() };
  const log = (s: string) => console.error(`guest: ${s}`);

  let clocksource = "?";
  try {
    clocksource = Deno.readTextFileSync(
      "/sys/devices/system/clocksource/clocksource0/current_clocksource",
    ).trim();
  } catch { /* leave "?" */ }
  let blockCount: number;
  {
    using disk = openStorage(device);
    blockCount = disk.capacity.blockCount;
    if (disk.capacity.blockSize !== BLOCK) {
      throw new Error(`expected ${BLOCK}-byte blocks, got ${disk.capacity.blockSize}`);
    }
    disk.bot.readBlocks(0, 2048); // some interrupts, so /proc/interrupts says where they go
  }
  const env = {
    cpus: navigator.hardwareConcurrency,
    clocksource,
    irqCpu: xhciIrqCpu(),
    placement,
    deno: Deno.version.deno,
    kernel: Deno.osRelease(),
    loadavg: Deno.loadavg(),
  };
  log(
    `${env.cpus} CPUs, clocksource ${clocksource}, xHCI interrupts on CPU ${env.irqCpu}, ` +
      `placement ${placement}, ${mib} MiB per arm, ${rounds} rounds`,
  );
  // Pinned: the thread that runs the device commands (the direct loop's main thread, the queue's
  // Worker) on the CPU that takes the interrupts; producers on the other one.
  // `one`: every thread of ours on the interrupt CPU (the other one idles), for diagnosis.
  const pin = placement === "free" ? undefined : pinner();
  const deviceCpu = env.irqCpu;
  const otherCpu = env.cpus > 1 && placement === "pinned" ? (deviceCpu === 0 ? 1 : 0) : deviceCpu;
  const blocks = mib * 2048;
  const lbaOf = (arm: Arm) => 2048 + ARMS.indexOf(arm) * blocks;
  if (lbaOf(arms.at(-1)!) + blocks > blockCount) {
    throw new Error(`the disk (${blockCount} blocks) is too small for ${arms.length} × ${mib} MiB`);
  }
  const data = {} as Record<Arm, Uint8Array<ArrayBuffer>>;
  for (const arm of arms) {
    const bytes = new Uint8Array(blocks * BLOCK);
    for (let at = 0; at < bytes.length; at += 65536) {
      crypto.getRandomValues(bytes.subarray(at, at + 65536));
    }
    data[arm] = bytes;
  }
  const items = blocks / CHUNK_BLOCKS;
  const half = (blocks / 2) * BLOCK;

  const report = createReport();
  const threadsBefore = workerThreads();
  const queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: BUFFERS, bufferSize: CHUNK, contextSize: 4 },
    handlers: massStorageHandlers,
    handlerOptions: { ...device, report },
    permissions: usbWorkerPermissions({ read: [new URL("../storage/", import.meta.url)] }),
  });
  const queueThread = await newWorkerThread(threadsBefore);
  pin?.(queueThread, deviceCpu);

  // The producer Worker (queue2): attached once; it holds its own copy of the second half.
  const go = new Int32Array(new SharedArrayBuffer(4));
  let worker: Worker | undefined;
  const answers = new Map<string, PromiseWithResolvers<FromWorker>>();
  const answer = (key: string) => {
    const entry = Promise.withResolvers<FromWorker>();
    answers.set(key, entry);
    return entry.promise;
  };
  if (arms.includes("queue2")) {
    const before = workerThreads();
    worker = new Worker(import.meta.url, { type: "module", name: "producer" });
    pin?.(await newWorkerThread(before), otherCpu);
    const fail = (message: string) => {
      for (const entry of answers.values()) entry.reject(new Error(`producer Worker: ${message}`));
      answers.clear();
    };
    worker.onmessage = ({ data }: MessageEvent<FromWorker>) => {
      if ("error" in data) return fail(data.error);
      const key = "armed" in data ? `armed ${data.armed}` : `done ${data.done}`;
      answers.get(key)?.resolve(data);
      answers.delete(key);
    };
    worker.onerror = (event) => {
      event.preventDefault();
      fail(event.message);
    };
    const setup: ToWorker = {
      share: queue.share(),
      data: data.queue2.slice(half),
      lba: lbaOf("queue2") + blocks / 2,
      go: go.buffer as SharedArrayBuffer,
    };
    worker.postMessage(setup);
  }

  /**
   * Reads the first block of each chunk of `arm`'s region and checks its stamp. The queue arms'
   * checks wait for the next session the main thread opens anyway (the next direct measurement,
   * or the final read-back), since an open costs more than the reads.
   */
  let stampChecks = 0;
  let untimedMs = 0;
  const pendingChecks: { arm: Arm; round: number }[] = [];
  const runChecks = (disk: StorageSession) => {
    const t = performance.now();
    for (const { arm, round } of pendingChecks.splice(0)) checkStamps(disk, arm, round);
    untimedMs += performance.now() - t;
  };
  const checkStamps = (disk: StorageSession, arm: Arm, round: number) => {
    const lba = lbaOf(arm);
    for (let k = 0; k < items; k++) {
      const head = disk.bot.read10(lba + k * CHUNK_BLOCKS, 1);
      const view = new DataView(head.buffer, head.byteOffset, 16);
      const got = [0, 4, 8, 12].map((at) => view.getUint32(at, true));
      const want = [MAGIC, ARMS.indexOf(arm), round, k];
      if (got.some((v, i) => v !== want[i])) {
        throw new Error(
          `${arm} round ${round}: chunk ${k} at LBA ${lba + k * CHUNK_BLOCKS} holds stamp ` +
            `${got.join(",")}, expected ${want.join(",")}: the write did not land`,
        );
      }
      stampChecks++;
    }
  };

  const rate = (ms: number) => mib / (ms / 1000);
  /** A queue arm's figures, taken right after its timed part (before `stop()`). */
  const queueMeasurement = (ms: number, writeMicrosBefore: number): Measurement => ({
    ms,
    mibs: rate(ms),
    items,
    commandUs: readReport(report).writeMicros - writeMicrosBefore,
    cpu: { main: lastCpu("thread-self"), device: lastCpu(queueThread) },
  });
  const timed = async (step: () => Promise<void>) => {
    const t = performance.now();
    await step();
    untimedMs += performance.now() - t;
  };
  const checkQueueResult = (arm: Arm, round: number, results: WriteRegionsResult[]) => {
    const failures = results.flatMap((r) => r.failures);
    const done = results.reduce((n, r) => n + (r.statuses.Success ?? 0), 0);
    if (failures.length > 0 || done !== items) {
      throw new Error(
        `${arm} round ${round}: ${done} of ${items} items succeeded; statuses ` +
          `${JSON.stringify(results.map((r) => r.statuses))}, report ${
            JSON.stringify(readReport(report))
          }`,
      );
    }
  };

  const measure: Record<Arm, (round: number) => Promise<Measurement>> = {
    direct: (round) => {
      stamp(data.direct, ARMS.indexOf("direct"), round);
      pin?.(0, deviceCpu);
      const open = performance.now();
      using disk = openStorage(device);
      untimedMs += performance.now() - open;
      runChecks(disk);
      const t0 = performance.now();
      disk.bot.writeBlocks(lbaOf("direct"), data.direct, CHUNK_BLOCKS);
      const ms = performance.now() - t0;
      const cpu = { main: lastCpu("thread-self") };
      pendingChecks.push({ arm: "direct", round });
      runChecks(disk);
      return Promise.resolve({ ms, mibs: rate(ms), items, cpu });
    },
    queue: async (round) => {
      stamp(data.queue, ARMS.indexOf("queue"), round);
      pin?.(0, otherCpu);
      await timed(() => queue.start()); // pre: the Worker opens the device
      const acquire = { calls: 0, blocked: 0, ms: 0, queuedSum: 0 };
      // --profile: writeRegions calls only acquire and enqueueAndWait on its producer.
      const producer = !profile ? queue : {
        acquire: async (options?: { signal?: AbortSignal }) => {
          acquire.calls++;
          acquire.queuedSum += queue.count();
          const t = performance.now();
          const free = queue.fetch();
          if (free) return free;
          acquire.blocked++;
          const buffer = await queue.acquire(options);
          acquire.ms += performance.now() - t;
          return buffer;
        },
        enqueueAndWait: queue.enqueueAndWait.bind(queue),
      } as unknown as QueueProducer;
      const before = readReport(report);
      const t0 = performance.now();
      const result = await writeRegions(producer, [{ lba: lbaOf("queue"), data: data.queue }], {
        chunkBlocks: CHUNK_BLOCKS,
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      const ms = performance.now() - t0;
      const measured = queueMeasurement(ms, before.writeMicros);
      await timed(() => queue.stop()); // post: the Worker closes the device
      checkQueueResult("queue", round, [result]);
      return { ...measured, ...(profile ? { acquire } : {}) };
    },
    queue2: async (round) => {
      stamp(data.queue2, ARMS.indexOf("queue2"), round);
      const mine = data.queue2.subarray(0, half);
      pin?.(0, otherCpu);
      await timed(() => queue.start());
      const armed = answer(`armed ${round}`);
      const theirs = answer(`done ${round}`);
      theirs.catch(() => {}); // awaited below
      worker!.postMessage({ round, firstChunk: items / 2 } satisfies ToWorker);
      await armed;
      const before = readReport(report);
      const t0 = performance.now();
      Atomics.store(go, 0, round + 1);
      Atomics.notify(go, 0);
      const [result, other] = await Promise.all([
        writeRegions(queue, [{ lba: lbaOf("queue2"), data: mine }], {
          chunkBlocks: CHUNK_BLOCKS,
          signal: AbortSignal.timeout(TIMEOUT_MS),
        }),
        theirs,
      ]);
      const ms = performance.now() - t0;
      const measured = queueMeasurement(ms, before.writeMicros);
      await timed(() => queue.stop());
      if (!("result" in other)) {
        throw new Error(`producer Worker answered ${JSON.stringify(other)}`);
      }
      checkQueueResult("queue2", round, [result, other.result]);
      return measured;
    },
  };

  const results = Object.fromEntries(arms.map((arm) => [arm, [] as Measurement[]])) as Record<
    Arm,
    Measurement[]
  >;
  for (let round = 0; round < warmup + rounds; round++) {
    const line: string[] = [];
    for (const arm of arms) {
      const m = await measure[arm](round);
      if (arm !== "direct") pendingChecks.push({ arm, round });
      results[arm].push(m);
      const cmd = (m.commandUs === undefined
        ? ""
        : `, ${(m.commandUs / m.items).toFixed(0)} µs/item in WRITE (10)`) +
        (m.acquire
          ? `, acquire found none free ${m.acquire.blocked}/${m.acquire.calls} ` +
            `(${m.acquire.ms.toFixed(0)} ms awaited), ${
              (m.acquire.queuedSum / m.acquire.calls).toFixed(1)
            } queued on average`
          : "");
      const where = `cpu ${m.cpu.main}${m.cpu.device === undefined ? "" : `/${m.cpu.device}`}`;
      line.push(
        `${arm} ${m.mibs.toFixed(1)} MiB/s (${(m.ms * 1000 / m.items).toFixed(0)} µs/item${cmd}, ` +
          `${where})`,
      );
    }
    const ratios = arms.slice(1).map((arm) =>
      `${arm}/direct ${(results[arm][round].mibs / results.direct[round].mibs).toFixed(2)}`
    );
    const name = round < warmup ? `warm-up ${round + 1}` : `round ${round - warmup + 1}`;
    log(
      `${name}: ${[...line, ...ratios].join("; ")}; opens, starts, stops and stamp checks ${
        untimedMs.toFixed(0)
      } ms`,
    );
    untimedMs = 0;
  }

  worker?.terminate();
  const stats = await queue.close();
  const handler = readReport(report);
  if (handler.failures !== 0 || stats.failed !== 0 || stats.cancelled !== 0) {
    throw new Error(`queue failures: ${JSON.stringify({ stats, handler })}`);
  }

  // Every region, whole, against the last round's data.
  const mismatches: string[] = [];
  let bytesCompared = 0;
  {
    using disk = openStorage(device);
    runChecks(disk);
    for (const arm of arms) {
      const back = disk.bot.readBlocks(lbaOf(arm), blocks, CHUNK_BLOCKS);
      const want = data[arm];
      const at = back.findIndex((byte, i) => byte !== want[i]);
      if (at >= 0) mismatches.push(`${arm}: first difference at byte ${at}`);
      bytesCompared += back.length;
    }
  }
  log(
    `verified ${stampChecks} chunk stamps and ${bytesCompared / 1048576} MiB read back: ` +
      (mismatches.length === 0 ? "every byte matches" : mismatches.join("; ")),
  );

  const out: Report = {
    env,
    mib,
    rounds,
    warmup,
    profile,
    arms,
    blockCount,
    results,
    verify: { stampChecks, bytesCompared, mismatches },
    totalMs: performance.now() - start,
  };
  console.log(`REPORT ${JSON.stringify(out)}`);
  if (mismatches.length > 0) Deno.exit(1);
}

if (import.meta.main && !inWorker) await main();
