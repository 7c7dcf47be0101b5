/**
 * Block writer example: producers (the main thread and a Worker) write pseudo-random data through
 * ONE ThreadedBufferQueue whose handler turns each item into a SCSI WRITE (10) on a USB mass
 * storage device (Bulk-Only Transport through libusb, in the queue's Worker, which is granted only
 * the libusb library and the handler's files). After `close()` the main thread opens the device
 * itself, reads every region back with READ (10), verifies it, and prints MiB/s for both
 * directions. Exit code 0 only if every item succeeded and every byte matches.
 *
 * It OVERWRITES the regions it writes: point it at a scratch device (the QEMU rig's usb-storage,
 * `46f4:0001`, is the default). Run, as root or with a udev rule for the device:
 *
 * ```sh
 * deno run --allow-read --allow-ffi --unstable-worker-options examples/mass_storage_writer.ts
 * deno run --allow-read --allow-ffi --unstable-worker-options examples/mass_storage_writer.ts \
 *   --mib=8 --regions=4 --seed=1 --vendor=0x46f4 --product=0x0001
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  Libusb,
  libusbPath,
  type QueueStats,
  ThreadedBufferQueue,
  usbWorkerPermissions,
} from "../mod.ts";
import {
  createReport,
  type MassStorageOptions,
  type MassStorageReport,
  readReport,
} from "./mass_storage_handlers.ts";
import { produceRegions, type ProduceResult, type RegionJob } from "./mass_storage_producer.ts";
import type { ProducerWorkerJob } from "./mass_storage_producer_worker.ts";
import { BotDevice } from "./usb_storage/bot.ts";
import { firstDifference, type Region, regionPattern } from "./usb_storage/pattern.ts";

/** Blocks per queue item / per command: 128 × 512 = 64 KiB. */
export const CHUNK_BLOCKS = 128;

/** The device to use. */
export interface DeviceChoice {
  /** idVendor. */
  readonly vendorId: number;
  /** idProduct. */
  readonly productId: number;
}

/** An open, claimed device with its BOT layer, for direct (queue-less) access. */
export interface DirectDevice extends Disposable {
  /** SCSI over BOT on the claimed interface. */
  readonly bot: BotDevice;
  /** Releases and closes everything. */
  close(): void;
}

/**
 * Opens the device on this thread, claims interface 0 and waits until it is ready.
 *
 * @example
 * ```ts ignore
 * using direct = openDirect({ vendorId: 0x46f4, productId: 0x0001 });
 * console.log(direct.bot.readCapacity());
 * ```
 */
export function openDirect(device: DeviceChoice): DirectDevice {
  const usb = Libusb.open({ path: libusbPath() });
  try {
    const dev = usb.openDevice(device);
    dev.claimInterface(0);
    const bot = new BotDevice(dev);
    bot.waitReady();
    bot.readCapacity();
    return { bot, close: () => usb.close(), [Symbol.dispose]: () => usb.close() };
  } catch (error) {
    usb.close();
    throw error;
  }
}

/**
 * `count` regions of `blocks` blocks spread over a medium of `blockCount` blocks: the first at
 * 1 MiB, the last ending at the medium's end, the others in between at odd LBAs.
 *
 * @example
 * ```ts
 * import { spreadRegions } from "./mass_storage_writer.ts";
 * console.log(spreadRegions(131072, 4, 8192)[3]); // { lba: 122880, blocks: 8192 }
 * ```
 */
export function spreadRegions(blockCount: number, count: number, blocks: number): Region[] {
  const first = 2048;
  const last = blockCount - blocks;
  if (count < 1 || last < first + (count - 1) * blocks) {
    throw new RangeError(`${count} regions of ${blocks} blocks do not fit in ${blockCount} blocks`);
  }
  if (count === 1) return [{ lba: first, blocks }];
  const step = Math.floor((last - first) / (count - 1));
  return Array.from({ length: count }, (_, i) => {
    const lba = i === 0 ? first : i === count - 1 ? last : first + i * step + 7;
    return { lba, blocks };
  });
}

/** What {@linkcode writeThroughQueue} did. */
export interface QueueWriteResult {
  /** Bytes written. */
  bytes: number;
  /** Milliseconds from the first item to the last completion. */
  ms: number;
  /** Per producer (main first). */
  producers: ProduceResult[];
  /** The queue's stats after `close()`. */
  stats: QueueStats;
  /** What the handler reported. */
  report: MassStorageReport;
}

/** Options of {@linkcode writeThroughQueue}. */
export interface QueueWriteOptions extends DeviceChoice {
  /** Regions and their data. */
  readonly jobs: readonly RegionJob[];
  /** Producer Workers besides the main thread (default 1); jobs are dealt round-robin. */
  readonly workers?: number;
  /** Queue buffers (default 8). */
  readonly bufferCount?: number;
  /** Bound on the whole run in milliseconds (default 120 000). */
  readonly timeoutMs?: number;
  /** Extra handler options (e.g. `absent`). */
  readonly handler?: Partial<MassStorageOptions>;
}

/**
 * Writes the jobs through a mass storage queue from the main thread and `workers` Workers, then
 * closes the queue.
 *
 * @example
 * ```ts ignore
 * const result = await writeThroughQueue({ vendorId: 0x46f4, productId: 1, jobs });
 * console.log(result.bytes / 1048576 / (result.ms / 1000), "MiB/s");
 * ```
 */
export async function writeThroughQueue(options: QueueWriteOptions): Promise<QueueWriteResult> {
  const blockSize = 512;
  const workers = options.workers ?? 1;
  const timeoutMs = options.timeoutMs ?? 120_000;
  const report = createReport();
  const handlerOptions: MassStorageOptions = {
    vendorId: options.vendorId,
    productId: options.productId,
    libusbPath: libusbPath(),
    timeout: 5000,
    report,
    ...options.handler,
  };
  const queue = await ThreadedBufferQueue.create({
    bufferQueue: {
      bufferCount: options.bufferCount ?? 8,
      bufferSize: CHUNK_BLOCKS * blockSize,
      contextSize: 4,
    },
    handlers: new URL("./mass_storage_handlers.ts", import.meta.url),
    handlerOptions,
    permissions: usbWorkerPermissions({ read: [new URL("./usb_storage/", import.meta.url)] }),
  });
  const threads: Worker[] = [];
  try {
    await queue.start();
    const shares: RegionJob[][] = Array.from({ length: workers + 1 }, () => []);
    options.jobs.forEach((job, i) => shares[i % shares.length].push(job));
    const signal = AbortSignal.timeout(timeoutMs);
    // Start and load the producer Workers first, so that the clock measures only the writing.
    const remote = await Promise.all(
      shares.slice(1).map((jobs) => {
        const worker = new Worker(new URL("./mass_storage_producer_worker.ts", import.meta.url), {
          type: "module",
        });
        threads.push(worker);
        const ready = Promise.withResolvers<void>();
        const done = Promise.withResolvers<ProduceResult>();
        done.promise.catch(() => {}); // observed below; avoid an unhandled rejection meanwhile
        const fail = (error: Error) => {
          ready.reject(error);
          done.reject(error);
        };
        worker.onmessage = (event) => {
          if (event.data?.error) fail(new Error(`producer Worker: ${event.data.error}`));
          else if (event.data?.ready) ready.resolve();
          else done.resolve(event.data as ProduceResult);
        };
        worker.onerror = (event) => {
          event.preventDefault();
          fail(new Error(`producer Worker: ${event.message}`));
        };
        const job: ProducerWorkerJob = {
          share: queue.share(),
          jobs,
          chunkBlocks: CHUNK_BLOCKS,
          blockSize,
          timeoutMs,
        };
        worker.postMessage(job);
        return bounded(ready.promise, signal).then(() => ({ worker, done: done.promise }));
      }),
    );
    const t0 = performance.now();
    for (const { worker } of remote) worker.postMessage("go");
    const local = produceRegions(queue, shares[0], CHUNK_BLOCKS, blockSize, signal);
    const producers = await Promise.all([
      local,
      ...remote.map(({ done }) => bounded(done, signal)),
    ]);
    const ms = performance.now() - t0;
    const stats = await queue.close();
    const bytes = producers.reduce((sum, p) => sum + p.bytes, 0);
    return { bytes, ms, producers, stats, report: readReport(report) };
  } finally {
    for (const worker of threads) worker.terminate();
    await queue.close();
  }
}

/** `promise`, or a rejection with `signal.reason` once `signal` aborts. */
function bounded<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  const { promise: aborted, reject } = Promise.withResolvers<never>();
  const onAbort = () => reject(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  return Promise.race([promise, aborted]).finally(() =>
    signal.removeEventListener("abort", onAbort)
  );
}

/**
 * Writes the jobs with WRITE (10) directly (no queue), in commands of {@linkcode CHUNK_BLOCKS}
 * blocks; returns the milliseconds it took.
 *
 * @example
 * ```ts ignore
 * const ms = writeDirect(direct.bot, jobs);
 * ```
 */
export function writeDirect(bot: BotDevice, jobs: readonly RegionJob[]): number {
  const t0 = performance.now();
  const chunkBytes = CHUNK_BLOCKS * bot.blockSize;
  for (const job of jobs) {
    for (let offset = 0; offset < job.data.length; offset += chunkBytes) {
      const bytes = job.data.subarray(offset, offset + chunkBytes);
      bot.write10(job.lba + offset / bot.blockSize, bytes.length / bot.blockSize, bytes);
    }
  }
  return performance.now() - t0;
}

/** What {@linkcode readBack} found. */
export interface ReadBackResult {
  /** Bytes read. */
  bytes: number;
  /** Milliseconds the READ (10) commands took (the comparison not included). */
  ms: number;
  /** One line per region that differs (empty when all match). */
  mismatches: string[];
}

/**
 * Reads every job's region back with READ (10) in commands of {@linkcode CHUNK_BLOCKS} blocks and
 * compares it with the job's data.
 *
 * @example
 * ```ts ignore
 * const { mismatches } = readBack(direct.bot, jobs);
 * ```
 */
export function readBack(bot: BotDevice, jobs: readonly RegionJob[]): ReadBackResult {
  let ms = 0;
  const mismatches: string[] = [];
  let bytes = 0;
  const chunkBytes = CHUNK_BLOCKS * bot.blockSize;
  for (const job of jobs) {
    const back = new Uint8Array(job.data.length);
    const t0 = performance.now();
    for (let offset = 0; offset < job.data.length; offset += chunkBytes) {
      const blocks = Math.min(chunkBytes, job.data.length - offset) / bot.blockSize;
      back.set(bot.read10(job.lba + offset / bot.blockSize, blocks), offset);
    }
    ms += performance.now() - t0;
    bytes += back.length;
    const at = firstDifference(back, job.data);
    if (at >= 0) {
      mismatches.push(`region at LBA ${job.lba}: first difference at byte ${at}`);
    }
  }
  return { bytes, ms, mismatches };
}

/**
 * MiB/s of `bytes` in `ms`, with one decimal.
 *
 * @example
 * ```ts
 * import { mibPerSecond } from "./mass_storage_writer.ts";
 * console.log(mibPerSecond(1048576, 1000)); // 1
 * ```
 */
export function mibPerSecond(bytes: number, ms: number): number {
  return Math.round((bytes / 1048576) / (ms / 1000) * 10) / 10;
}

/**
 * The region jobs for a run: `count` regions of `mib / count` MiB each over the medium, their data
 * derived from `seed`.
 *
 * @example
 * ```ts
 * import { makeJobs } from "./mass_storage_writer.ts";
 * console.log(makeJobs(1, 4, 131072, 16).length); // 4
 * ```
 */
export function makeJobs(
  seed: number,
  count: number,
  blockCount: number,
  mib: number,
): RegionJob[] {
  const blocks = Math.floor(mib * 2048 / count);
  return spreadRegions(blockCount, count, blocks).map((region, i) => ({
    lba: region.lba,
    data: regionPattern(seed, i, region.blocks * 512),
  }));
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      mib: { type: "string", default: "8" },
      regions: { type: "string", default: "4" },
      seed: { type: "string", default: String(Date.now() & 0x7fffffff) },
      vendor: { type: "string", default: "0x46f4" },
      product: { type: "string", default: "0x0001" },
    },
  });
  const device = { vendorId: Number(values.vendor), productId: Number(values.product) };
  const seed = Number(values.seed);

  let blockCount: number;
  {
    using direct = openDirect(device);
    blockCount = direct.bot.readCapacity().blockCount;
    if (direct.bot.blockSize !== 512) throw new Error(`block size ${direct.bot.blockSize}`);
  }
  const jobs = makeJobs(seed, Number(values.regions), blockCount, Number(values.mib));
  console.log(
    `writing ${values.mib} MiB (seed ${seed}) at LBAs ${jobs.map((j) => j.lba).join(", ")} ` +
      `of ${blockCount} blocks`,
  );

  const written = await writeThroughQueue({ ...device, jobs, workers: 1 });
  const failures = written.producers.flatMap((p) => p.failures);
  console.log(
    `queue: ${mibPerSecond(written.bytes, written.ms)} MiB/s write ` +
      `(${written.bytes} bytes in ${written.ms.toFixed(0)} ms); statuses ${
        JSON.stringify(written.producers.map((p) => p.statuses))
      }; stats ${JSON.stringify(written.stats)}; handler ${JSON.stringify(written.report)}`,
  );

  using direct = openDirect(device);
  const read = readBack(direct.bot, jobs);
  console.log(`read back: ${mibPerSecond(read.bytes, read.ms)} MiB/s (${read.bytes} bytes)`);
  for (const line of read.mismatches) console.error(`MISMATCH ${line}`);
  const ok = failures.length === 0 && read.mismatches.length === 0 && written.report.post === 1;
  console.log(ok ? "verified: every byte matches" : "FAILED");
  return ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
