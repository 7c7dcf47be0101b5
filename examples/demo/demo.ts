/**
 * tbq demo: several producers (the main thread and three Workers) stream numbered records through
 * ONE ThreadedBufferQueue to a device handler; afterwards the main thread reads back what the
 * (simulated) device received and checks that every record arrived exactly once, intact, in
 * per-producer order, and that the queue's stats account for every buffer. Exit code 0 only if
 * all of that holds.
 *
 * The device is a real USB device when one matching the options is attached (default an FTDI
 * 0403:6001, bulk OUT 0x02, written with the ready-made `ffi/handlers/bulk_writer.ts` in a Worker
 * granted only the libusb library), else a SIMULATED one (in-process, no hardware); the first line
 * says which, and why when simulated. {@linkcode chooseDevice} is the one place that decides. A
 * real device cannot be read back, so then the check is: every status Success, counts and stats
 * exact, and each enqueueAndWait producer saw its records complete one by one in order.
 *
 * ```sh
 * deno task demo                       # ~2.5 s of streaming
 * deno task demo --duration=1000       # producing phase in milliseconds
 * deno task demo --fault=drop          # the device loses one record: must exit 1 (simulated only)
 * deno task demo --vendor=0x0403 --product=0x6001 --endpoint=0x02   # which USB device to use
 * deno task demo --device=simulated    # never look for USB (--device=usb: USB or fail)
 * ```
 *
 * @module
 */

import {
  libusbPath,
  type QueueStats,
  Status,
  statusName,
  ThreadedBufferQueue,
  type UsbDeviceInfo,
  usbWorkerPermissions,
  type WorkerPermissions,
} from "../../mod.ts";
import { describeUsbDevice, findUsbDevice, usbIds, writerOptions } from "../usb_lookup.ts";
import {
  GO,
  type ProducerJob,
  type ProducerMode,
  type ProducerReport,
  RecordProducer,
  STOP,
} from "./producer.ts";
import { startProducer } from "../producer_worker.ts";
import {
  checksum,
  CONTEXT_SIZE,
  DEV,
  DeviceMemory,
  type Fault,
  FAULTS,
  fillPayload,
  LOG_WORDS,
  payloadLength,
} from "./records.ts";
import type { SimulatedDeviceOptions } from "./simulated_device_handlers.ts";

const BUFFER_COUNT = 16;
const BUFFER_SIZE = 1024;
const PROGRESS_MS = 250;
/** Producer 0 is the main thread; the others are Workers. */
const PRODUCERS: readonly ProducerMode[] = ["wait", "wait", "stream", "stream"];

/** Which device backends `--device` allows. */
const DEVICE_CHOICES = ["auto", "usb", "simulated"] as const;

/** Command-line options. */
interface DemoArgs {
  durationMs: number;
  fault: Fault;
  /** `auto`: USB when attached, else simulated. */
  device: typeof DEVICE_CHOICES[number];
  /** The USB device to look for, and its bulk OUT endpoint. */
  vendorId: number;
  productId: number;
  endpoint: number;
}

function parseArgs(args: readonly string[]): DemoArgs {
  const parsed: DemoArgs = {
    durationMs: 2500,
    fault: "none",
    device: "auto",
    vendorId: 0x0403,
    productId: 0x6001,
    endpoint: 0x02,
  };
  for (const arg of args) {
    const [key, value] = arg.split("=", 2);
    const id = /^(0x[0-9a-f]{1,4}|\d{1,5})$/i.test(value ?? "") ? Number(value) : NaN;
    if (key === "--duration" && /^\d+$/.test(value ?? "") && +value >= 100 && +value <= 60_000) {
      parsed.durationMs = +value;
    } else if (key === "--fault" && (FAULTS as readonly string[]).includes(value)) {
      parsed.fault = value as Fault;
    } else if (key === "--device" && (DEVICE_CHOICES as readonly string[]).includes(value)) {
      parsed.device = value as DemoArgs["device"];
    } else if (key === "--vendor" && id <= 0xffff) {
      parsed.vendorId = id;
    } else if (key === "--product" && id <= 0xffff) {
      parsed.productId = id;
    } else if (key === "--endpoint" && id <= 0x0f) {
      parsed.endpoint = id;
    } else {
      throw new UsageError(`unknown or invalid argument ${JSON.stringify(arg)}`);
    }
  }
  if (parsed.device === "usb" && parsed.fault !== "none") {
    throw new UsageError("--fault needs the simulated device, not --device=usb");
  }
  return parsed;
}

class UsageError extends Error {}

/** `--device=usb` and no usable USB device. */
class NoUsbDeviceError extends Error {}

// ── the device backend: chosen here, and only here ───────────────────────────────────────

/** What the verifier reads back from a device after the run. */
interface DeviceReadBack {
  /** Received records, LOG_WORDS int32 each: producer, seq, size, checksum of bytes received. */
  readonly log: Int32Array;
  readonly writes: number;
  readonly opens: number;
  readonly closes: number;
  readonly rejects: number;
  /** Transfer number at which a requested fault was injected (0: none). */
  readonly faultAt: number;
  readonly busyMs: number;
}

/** A device the demo can stream to: its handler module, options, and a way to read it back. */
interface DeviceBackend {
  /** Short name, e.g. "SIMULATED device". */
  readonly name: string;
  /** One line that says what the device is (printed first). */
  readonly label: string;
  /** Why this backend was chosen, when it is the fallback (printed second). */
  readonly why?: string;
  readonly handlers: URL;
  readonly handlerOptions: unknown;
  /** The work loop Worker's permissions (least privilege). */
  readonly permissions: WorkerPermissions;
  /** Records the device has received (or, without read-back, accepted) so far (for progress). */
  writes(stats: QueueStats): number;
  /** Everything the device received (call after the queue is closed); null: no read-back. */
  readBack(): DeviceReadBack | null;
}

/**
 * Picks the device backend: a real USB device when one matching `--vendor`/`--product` (default
 * FTDI 0403:6001) is attached, written with the ready-made bulk writer in a Worker granted only
 * the libusb library; else the simulated device, saying why (no such device, no libusb, no ffi
 * permission, `--device=simulated`, or `--fault`, which only the simulated device can inject).
 */
function chooseDevice(args: DemoArgs): DeviceBackend {
  let why: string;
  if (args.device === "simulated") why = "--device=simulated";
  else if (args.fault !== "none") why = `--fault=${args.fault} needs the simulated device`;
  else {
    const found = lookForUsbDevice(args);
    if ("info" in found) return usbDevice(args, found.info, found.path);
    if (args.device === "usb") throw new NoUsbDeviceError(`--device=usb: ${found.reason}`);
    why = found.reason;
  }
  return simulatedDevice(args, why);
}

/** Looks for the USB device the options name; says why not when it cannot use one. */
function lookForUsbDevice(
  args: DemoArgs,
): { info: UsbDeviceInfo; path: string } | { reason: string } {
  try {
    const path = libusbPath();
    return { info: findUsbDevice(path, args.vendorId, args.productId), path };
  } catch (error) {
    return { reason: String((error as Error)?.message ?? error).replace(/\s*\n\s*/g, " ") };
  }
}

/** The real USB device: each record is one bulk-OUT transfer through the ready-made writer. */
function usbDevice(args: DemoArgs, info: UsbDeviceInfo, path: string): DeviceBackend {
  const ids = usbIds(info.vendorId, info.productId);
  const about = describeUsbDevice(info);
  const options = writerOptions(info, args.endpoint, path);
  return {
    name: `USB device ${ids}`,
    label: `USB ${ids} (${about}): blocking bulk-OUT writes to endpoint 0x` +
      `${args.endpoint.toString(16).padStart(2, "0")} through ${path}, worker granted only it`,
    handlers: new URL("../../ffi/handlers/bulk_writer.ts", import.meta.url),
    handlerOptions: options,
    permissions: usbWorkerPermissions({ libusbPath: path }),
    writes: (stats) => stats.completed + stats.failed,
    readBack: () => null,
  };
}

/** The SIMULATED device: in-process, with a log of what it received that can be read back. */
function simulatedDevice(args: DemoArgs, why: string): DeviceBackend {
  const setupUs = 80;
  const nsPerByte = 20;
  const capacity = Math.ceil((args.durationMs * 1000) / setupUs) + 4096;
  const memory = DeviceMemory.allocate(capacity);
  const options: SimulatedDeviceOptions = {
    memory: memory.buffer,
    setupUs,
    nsPerByte,
    fault: args.fault,
    faultAt: 100,
  };
  return {
    name: "SIMULATED device",
    label: `SIMULATED device (in-process, no USB hardware): blocking bulk-OUT writes of ` +
      `${setupUs} µs + ${nsPerByte} ns/byte`,
    why,
    handlers: new URL("./simulated_device_handlers.ts", import.meta.url),
    handlerOptions: options,
    permissions: { read: [new URL("./", import.meta.url)] },
    writes: () => memory.writes,
    readBack: () => {
      const writes = memory.writes;
      return {
        log: memory.log.slice(0, writes * LOG_WORDS),
        writes,
        opens: memory.header[DEV.OPENS],
        closes: memory.header[DEV.CLOSES],
        rejects: memory.header[DEV.REJECTS],
        faultAt: memory.header[DEV.FAULT_AT],
        busyMs: memory.busyNs / 1e6,
      };
    },
  };
}

// ── the run ──────────────────────────────────────────────────────────────────────────────

async function main(args: DemoArgs): Promise<number> {
  const device = chooseDevice(args);
  console.log(`tbq demo: device = ${device.label}`);
  if (device.why) console.log(`  simulated because: ${device.why}`);
  if (device.name.startsWith("USB")) {
    console.log(
      "  (a real device cannot be read back: the check is every status Success, counts and " +
        "stats exact, and each enqueueAndWait producer's records completing one by one in order)",
    );
  }
  if (args.fault !== "none") {
    console.log(`FAULT INJECTION: --fault=${args.fault} at device transfer #100 (must exit 1)`);
  }
  const watchdog = setTimeout(() => {
    console.error("FAIL: the demo did not finish in time (hung queue or producer?)");
    Deno.exit(1);
  }, args.durationMs + 20_000);

  const problems: string[] = [];
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: BUFFER_COUNT, bufferSize: BUFFER_SIZE, contextSize: CONTEXT_SIZE },
    handlers: device.handlers,
    handlerOptions: device.handlerOptions,
    permissions: device.permissions,
    name: "demo work loop",
    onError: (error, phase) => problems.push(`handler ${phase} failed: ${error.message}`),
  });
  await queue.start();

  const control = new Int32Array(new SharedArrayBuffer(8));
  const remotes = await Promise.all(
    PRODUCERS.slice(1).map((mode, i) => {
      const job: ProducerJob = {
        producer: i + 1,
        mode,
        control: control.buffer as SharedArrayBuffer,
      };
      const module = new URL("./producer.ts", import.meta.url);
      return startProducer<ProducerJob, ProducerReport>(queue, module, job, `P${i + 1} (Worker)`);
    }),
  );
  console.log(
    `producers: ${
      PRODUCERS.map((mode, id) =>
        `P${id} ${id === 0 ? "main thread" : "Worker"} ${
          mode === "wait" ? "enqueueAndWait" : "enqueue"
        }`
      ).join(", ")
    }; ${BUFFER_COUNT} buffers of ${BUFFER_SIZE} B; streaming for ${args.durationMs} ms`,
  );

  const local = new RecordProducer(queue, 0, PRODUCERS[0]);
  const started = performance.now();
  Atomics.store(control, GO, 1);
  Atomics.notify(control, GO);
  let last = { at: started, writes: 0 };
  const progress = setInterval(() => {
    const now = performance.now();
    const stats = queue.stats();
    const writes = device.writes(stats);
    const inPool = stats.free + stats.queued + stats.running + stats.pending + stats.held +
      stats.returning;
    if (inPool !== BUFFER_COUNT) {
      problems.push(`stats account for ${inPool} buffers, not ${BUFFER_COUNT}: ${show(stats)}`);
    }
    const rate = ((writes - last.writes) * 1000) / (now - last.at);
    console.log(
      `${((now - started) / 1000).toFixed(2).padStart(6)} s  device writes ${
        fmt(writes).padStart(7)
      }  ${fmt(rate).padStart(6)}/s  queue depth ${String(queue.count()).padStart(2)}  ` +
        `[free ${stats.free} queued ${stats.queued} running ${stats.running} ` +
        `pending ${stats.pending} held ${stats.held} returning ${stats.returning}]`,
    );
    last = { at: now, writes };
  }, PROGRESS_MS);
  const stopAfter = setTimeout(() => Atomics.store(control, STOP, 1), args.durationMs);

  let reports: ProducerReport[];
  try {
    await local.run(() => Atomics.load(control, STOP) !== 0);
    const remoteReports = await Promise.all(remotes.map((remote) => remote.report));
    // Drain: every other producer has enqueued its last record, so when this one (FIFO, waited
    // for) completes, everything before it has reached the device.
    await local.sendOne("wait");
    reports = [local.report(), ...remoteReports];
  } finally {
    clearTimeout(stopAfter);
    clearInterval(progress);
    for (const remote of remotes) remote.worker.terminate();
  }
  const elapsed = (performance.now() - started) / 1000;

  await queue.onIdle({ signal: AbortSignal.timeout(10_000) });
  const drained = queue.stats();
  await queue.stop();
  const closed = await queue.close();
  clearTimeout(watchdog);
  const received = device.readBack();

  problems.push(...verify(reports, received, drained, closed, args.fault));
  printSummary(device, reports, received, drained, closed, elapsed, problems.length === 0);
  if (problems.length === 0) {
    const total = reports.reduce((sum, r) => sum + r.sent, 0);
    if (received) {
      console.log(
        `VERIFIED: all ${fmt(total)} records reached the ${device.name} exactly once, intact, ` +
          `in per-producer order; stats account for all ${BUFFER_COUNT} buffers`,
      );
    } else {
      const bytes = reports.reduce((sum, r) => sum + r.bytes, 0);
      console.log(
        `VERIFIED (no read-back): all ${fmt(total)} records (${bytes} bytes) were written to ` +
          `the ${device.name} with status Success; stats account for all ${BUFFER_COUNT} ` +
          `buffers; each enqueueAndWait producer's records completed one by one in order. What ` +
          `the device did with the bytes is not read back.`,
      );
    }
    return 0;
  }
  console.log(`VERIFICATION FAILED: ${problems.length} problem(s)`);
  for (const problem of problems.slice(0, 20)) console.log(`  FAIL: ${problem}`);
  if (problems.length > 20) console.log(`  … and ${problems.length - 20} more`);
  return 1;
}

// ── verification ─────────────────────────────────────────────────────────────────────────

/** Every way the run can have gone wrong, as readable lines (empty: all good). */
function verify(
  reports: readonly ProducerReport[],
  received: DeviceReadBack | null,
  drained: QueueStats,
  closed: QueueStats,
  fault: Fault,
): string[] {
  const problems = received ? verifyReadBack(reports, received, fault) : [];
  if (!received) {
    // No read-back: a waiting producer sends a record only after the previous one completed, so
    // one status per record means its records completed one by one, in order.
    for (const r of reports.filter((r) => r.mode === "wait")) {
      const statuses = Object.values(r.statuses).reduce((sum, n) => sum + n, 0);
      if (statuses !== r.sent) {
        problems.push(`P${r.producer}: ${statuses} enqueueAndWait statuses for ${r.sent} records`);
      }
    }
  }
  const sent = reports.reduce((sum, r) => sum + r.sent, 0);
  for (const r of reports) {
    for (const [status, n] of Object.entries(r.statuses)) {
      if (status !== statusName(Status.Success)) {
        problems.push(`P${r.producer}: enqueueAndWait resolved with ${status} ${n}×`);
      }
    }
  }
  const wantDrained = {
    free: BUFFER_COUNT,
    queued: 0,
    running: 0,
    pending: 0,
    held: 0,
    returning: 0,
  };
  for (const [label, stats] of [["after drain", drained], ["after close", closed]] as const) {
    for (const [key, want] of Object.entries(wantDrained)) {
      const got = stats[key as keyof QueueStats];
      if (got !== want) problems.push(`stats ${label}: ${key} is ${got}, want ${want}`);
    }
  }
  if (closed.completed !== sent || closed.cancelled !== 0 || closed.failed !== 0) {
    problems.push(
      `stats: completed ${closed.completed} cancelled ${closed.cancelled} failed ` +
        `${closed.failed}; want ${sent} completed, 0 cancelled, 0 failed`,
    );
  }
  return problems;
}

/** What the device's read-back shows that is wrong: lost, duplicated, corrupted, reordered. */
function verifyReadBack(
  reports: readonly ProducerReport[],
  received: DeviceReadBack,
  fault: Fault,
): string[] {
  const problems: string[] = [];
  const scratch = new Uint8Array(BUFFER_SIZE);
  const seen = reports.map((r) => new Uint8Array(r.sent));
  const lastSeq = reports.map(() => -1);
  const log = received.log;
  for (let i = 0; i < received.writes; i++) {
    const [producer, seq, size, sum] = log.subarray(i * LOG_WORDS, (i + 1) * LOG_WORDS);
    const name = `P${producer} record #${seq}`;
    if (!(producer >= 0 && producer < reports.length)) {
      problems.push(`device write ${i}: unknown producer ${producer}`);
      continue;
    }
    if (!(seq >= 0 && seq < reports[producer].sent)) {
      problems.push(`${name}: the producer never sent it (it sent ${reports[producer].sent})`);
      continue;
    }
    if (seen[producer][seq]) {
      problems.push(`${name}: reached the device more than once (duplicate)`);
    }
    seen[producer][seq] = 1;
    if (seq < lastSeq[producer]) {
      problems.push(`${name}: out of order, arrived after #${lastSeq[producer]}`);
    }
    lastSeq[producer] = Math.max(lastSeq[producer], seq);
    const expected = scratch.subarray(0, payloadLength(producer, seq, BUFFER_SIZE));
    fillPayload(expected, producer, seq);
    if (size !== expected.length || (sum >>> 0) !== checksum(expected)) {
      problems.push(
        `${name}: corrupted (device has ${size} B, checksum 0x${hex(sum)}; ` +
          `expected ${expected.length} B, checksum 0x${hex(checksum(expected))})`,
      );
    }
  }
  for (const [producer, flags] of seen.entries()) {
    const missing = flags.reduce((n, flag) => n + (flag ? 0 : 1), 0);
    if (missing === 0) continue;
    const first = flags.indexOf(0);
    problems.push(
      `P${producer}: ${missing} record(s) never reached the device (missing), first #${first}`,
    );
  }
  const sent = reports.reduce((sum, r) => sum + r.sent, 0);
  if (received.writes !== sent) {
    problems.push(`the device stored ${received.writes} records; producers sent ${sent}`);
  }
  if (received.rejects !== 0) problems.push(`the device rejected ${received.rejects} transfer(s)`);
  if (fault !== "none" && received.faultAt === 0) {
    problems.push(`--fault=${fault} was requested but never injected (too few transfers)`);
  }
  if (received.opens !== 1 || received.closes !== 1) {
    problems.push(`device opened ${received.opens}×, closed ${received.closes}× (want 1 and 1)`);
  }
  return problems;
}

// ── output ───────────────────────────────────────────────────────────────────────────────

function printSummary(
  device: DeviceBackend,
  reports: readonly ProducerReport[],
  received: DeviceReadBack | null,
  drained: QueueStats,
  closed: QueueStats,
  elapsed: number,
  passed: boolean,
): void {
  const items = reports.reduce((sum, r) => sum + r.sent, 0);
  const bytes = reports.reduce((sum, r) => sum + r.bytes, 0);
  const latencies = Float64Array.from(reports.flatMap((r) => [...r.latenciesUs])).sort();
  const p50 = percentile(latencies, 0.5);
  const p99 = percentile(latencies, 0.99);
  const statuses: Record<string, number> = {};
  for (const r of reports) {
    for (const [status, n] of Object.entries(r.statuses)) {
      statuses[status] = (statuses[status] ?? 0) + n;
    }
  }
  console.log("── summary ──");
  console.log(`device: ${device.label}`);
  for (const r of reports) {
    const lat = r.latenciesUs.slice().sort();
    console.log(
      `  P${r.producer} ${r.producer === 0 ? "main  " : "Worker"} ${
        r.mode === "wait" ? "enqueueAndWait" : "enqueue       "
      } ${fmt(r.sent).padStart(7)} records ${mib(r.bytes)} MiB` +
        (r.mode === "wait"
          ? `  wait p50 ${fmt(percentile(lat, 0.5))} µs p99 ${fmt(percentile(lat, 0.99))} µs`
          : ""),
    );
  }
  console.log(
    `throughput: ${fmt(items / elapsed)} items/s, ${
      (bytes / 2 ** 20 / elapsed).toFixed(2)
    } MiB/s ` +
      `over ${elapsed.toFixed(2)} s` +
      (received ? `; device busy ${(received.busyMs / 10 / elapsed).toFixed(0)}%` : "") +
      (received?.faultAt ? `; fault injected at transfer #${received.faultAt}` : ""),
  );
  console.log(
    `enqueueAndWait latency (${fmt(latencies.length)} waits): p50 ${fmt(p50)} µs, ` +
      `p99 ${fmt(p99)} µs, max ${fmt(latencies.at(-1) ?? NaN)} µs`,
  );
  console.log(
    `statuses (enqueueAndWait, by statusName): ${
      Object.entries(statuses).map(([name, n]) => `${name}=${n}`).join(" ") || "none"
    }; queue totals: completed=${closed.completed} cancelled=${closed.cancelled} ` +
      `failed=${closed.failed}`,
  );
  console.log(`stats() after drain: ${show(drained)}`);
  console.log(`stats() from close(): ${show(closed)}`);
  console.log(
    `SUMMARY items=${items} device_writes=${received?.writes ?? closed.completed} seconds=${
      elapsed.toFixed(3)
    } ` +
      `items_per_s=${Math.round(items / elapsed)} mib_per_s=${
        (bytes / 2 ** 20 / elapsed).toFixed(3)
      } wait_p50_us=${Math.round(p50)} wait_p99_us=${Math.round(p99)} ` +
      `result=${passed ? "PASS" : "FAIL"}`,
  );
}

/** Nearest-rank percentile of sorted values (NaN when empty). */
function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function fmt(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "n/a";
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(2).padStart(6);
}

function hex(n: number): string {
  return (n >>> 0).toString(16).padStart(8, "0");
}

function show(stats: QueueStats): string {
  return Object.entries(stats).map(([key, value]) => `${key}=${value}`).join(" ");
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(parseArgs(Deno.args));
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(
        `${error.message}\nusage: demo.ts [--duration=100..60000] [--fault=${FAULTS.join("|")}] ` +
          `[--device=${DEVICE_CHOICES.join("|")}] [--vendor=0x0403] [--product=0x6001] ` +
          `[--endpoint=0x02]`,
      );
      code = 2;
    } else if (error instanceof NoUsbDeviceError) {
      console.error(`FAIL: ${error.message}`);
      code = 1;
    } else {
      console.error("FAIL: the demo crashed:", error);
      code = 1;
    }
  }
  Deno.exit(code);
}
