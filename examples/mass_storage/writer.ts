/**
 * Block writer example: producers (the main thread and `--workers` Workers) write random data
 * through ONE ThreadedBufferQueue whose ready-made handler (`massStorageHandlers`) turns each item
 * into a SCSI WRITE (10) on a USB mass storage device, in the queue's Worker, which is granted only
 * the libusb library and tbq's files. After `close()` the main thread opens the device itself,
 * reads every region back with READ (10), verifies it and prints MiB/s for both directions. Exit
 * code 0 only if every item succeeded and every byte matches. `--json` adds one `RESULT {…}` line
 * (regions with their SHA-256, statuses, stats, the handler's report, timings).
 *
 * `--workers` defaults to 1 on a machine with more than two CPUs, else 0: the queue's Worker
 * keeps one CPU busy with the device, and a producer thread more than the CPUs left costs
 * throughput (README, "Speed").
 *
 * It OVERWRITES the regions it writes: point it at a scratch device (the QEMU rig's usb-storage,
 * `46f4:0001`, is the default). Run, as root or with a udev rule for the device:
 *
 * ```sh
 * deno run --allow-read --allow-ffi --unstable-worker-options examples/mass_storage/writer.ts
 * deno run --allow-read --allow-ffi --unstable-worker-options examples/mass_storage/writer.ts \
 *   --mib=8 --regions=4 --workers=1 --vendor=0x46f4 --product=0x0001
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { libusbPath, ThreadedBufferQueue, usbWorkerPermissions } from "../../mod.ts";
import {
  createReport,
  massStorageHandlers,
  openStorage,
  readReport,
  type RegionWrite,
  writeRegions,
  type WriteRegionsResult,
} from "../../storage/mod.ts";
import { startProducer } from "../producer_worker.ts";
import type { ProducerOptions } from "./producer.ts";

const CHUNK_BLOCKS = 128; // 64 KiB per item and per command
const TIMEOUT_MS = 120_000;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mib: { type: "string", default: "8" },
    regions: { type: "string", default: "4" },
    workers: { type: "string", default: navigator.hardwareConcurrency > 2 ? "1" : "0" },
    vendor: { type: "string", default: "0x46f4" },
    product: { type: "string", default: "0x0001" },
    json: { type: "boolean", default: false },
  },
});
const device = {
  vendorId: Number(values.vendor),
  productId: Number(values.product),
  libusbPath: libusbPath(),
};
const mib = (bytes: number, ms: number) => Math.round(bytes / 1048576 / (ms / 1000) * 10) / 10;

// Regions: the first at 1 MiB, the last ending at the medium's end, the others in between.
let blockCount: number;
{
  using disk = openStorage(device);
  blockCount = disk.capacity.blockCount;
}
const count = Number(values.regions);
const blocks = Math.floor(Number(values.mib) * 2048 / count);
const step = Math.floor((blockCount - blocks - 2048) / Math.max(1, count - 1));
const regions: (RegionWrite & { data: Uint8Array<ArrayBuffer> })[] = Array.from(
  { length: count },
  (_, i) => {
    const data = new Uint8Array(blocks * 512);
    for (let at = 0; at < data.length; at += 65536) {
      crypto.getRandomValues(data.subarray(at, at + 65536));
    }
    return { lba: i === count - 1 ? blockCount - blocks : 2048 + i * step, data };
  },
);
console.log(`writing ${values.mib} MiB at LBAs ${regions.map((r) => r.lba)} of ${blockCount}`);

// Write through the queue: regions dealt round-robin to the main thread and the Workers.
const report = createReport();
const queue = await ThreadedBufferQueue.create({
  bufferQueue: { bufferCount: 8, bufferSize: CHUNK_BLOCKS * 512, contextSize: 4 },
  handlers: massStorageHandlers,
  handlerOptions: { ...device, report },
  permissions: usbWorkerPermissions({ read: [new URL("../../storage/", import.meta.url)] }),
});
await queue.start();
const shares: RegionWrite[][] = Array.from({ length: Number(values.workers) + 1 }, () => []);
regions.forEach((region, i) => shares[i % shares.length].push(region));
const go = new SharedArrayBuffer(4);
const workers = await Promise.all(
  shares.slice(1).map((mine) => {
    const options: ProducerOptions = {
      regions: mine,
      chunkBlocks: CHUNK_BLOCKS,
      go,
      timeoutMs: TIMEOUT_MS,
    };
    return startProducer<ProducerOptions, WriteRegionsResult>(
      queue,
      new URL("./producer.ts", import.meta.url),
      options,
    );
  }),
);
const t0 = performance.now(); // every producer is loaded: the clock measures only the writing
Atomics.store(new Int32Array(go), 0, 1);
Atomics.notify(new Int32Array(go), 0);
const signal = AbortSignal.timeout(TIMEOUT_MS);
const producers = await Promise.all([
  writeRegions(queue, shares[0], { chunkBlocks: CHUNK_BLOCKS, signal }),
  ...workers.map((worker) => worker.report),
]);
const writeMs = performance.now() - t0;
const stats = await queue.close();
for (const worker of workers) worker.worker.terminate();
const written = producers.reduce((sum, p) => sum + p.bytes, 0);
const handler = readReport(report);
const failures = producers.flatMap((p) => p.failures);
console.log(
  `queue: ${mib(written, writeMs)} MiB/s write (${written} bytes in ${writeMs.toFixed(0)} ms); ` +
    `statuses ${JSON.stringify(producers.map((p) => p.statuses))}; stats ${JSON.stringify(stats)}`,
);

// Read back on this thread and compare.
const mismatches: string[] = [];
let readMs = 0; // the READ (10) commands only, not the comparison
{
  using disk = openStorage(device);
  for (const region of regions) {
    const t1 = performance.now();
    const back = disk.bot.readBlocks(region.lba, region.data.length / 512, CHUNK_BLOCKS);
    readMs += performance.now() - t1;
    const at = back.findIndex((byte, i) => byte !== region.data[i]);
    if (at >= 0) mismatches.push(`region at LBA ${region.lba}: first difference at byte ${at}`);
  }
}
console.log(`read back: ${mib(written, readMs)} MiB/s`);
for (const line of mismatches) console.error(`MISMATCH ${line}`);
const ok = failures.length === 0 && mismatches.length === 0 && handler.post === 1;
console.log(ok ? "verified: every byte matches" : "FAILED");

if (values.json) {
  const sha256 = async (data: Uint8Array<ArrayBuffer>) =>
    Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", data)))
      .map((b) => b.toString(16).padStart(2, "0")).join("");
  const result = {
    blockCount,
    regions: await Promise.all(
      regions.map(async (r) => ({
        lba: r.lba,
        blocks: r.data.length / 512,
        sha256: await sha256(r.data),
      })),
    ),
    queue: {
      bytes: written,
      ms: writeMs,
      statuses: producers.map((p) => p.statuses),
      failures,
      stats,
      handler,
    },
    readBack: { bytes: written, ms: readMs, mismatches },
  };
  console.log(`RESULT ${JSON.stringify(result)}`);
}
Deno.exit(ok ? 0 : 1);
