/**
 * FTDI logger: three producers (the main thread and two Workers attached with `queue.share()` /
 * `ThreadedBufferQueue.attach`) write numbered text lines, `P<producer> <seq> <words>\n`, through
 * ONE queue whose work loop runs the ready-made `ffi/handlers/bulk_writer.ts`: each line is one
 * item and one bulk-OUT transfer to a USB-serial adapter (default an FTDI 0403:6001, endpoint
 * 0x02), so lines of different producers interleave but a line is never split or mixed. The work
 * loop's Worker runs with least privilege, `usbWorkerPermissions()`: ffi for the libusb library
 * only, no env, net, write, run or sys. Prints a summary and exits 1 if any line's status was not
 * Success (2 on a bad argument).
 *
 * ```sh
 * deno run --allow-read --allow-env --allow-ffi --unstable-worker-options examples/ftdi_logger/logger.ts \
 *   [--vendor=0x0403] [--product=0x6001] [--endpoint=0x02] [--lines=100]
 * ```
 *
 * `--allow-read` lets `libusbPath()` find the library and covers the modules the Workers load;
 * `--allow-env` lets it honour `LIBUSB_PATH` (`--allow-env=LIBUSB_PATH` is enough); `--allow-ffi`
 * is what the main thread lists devices with and what the work loop's Worker gets a part of (the
 * library's path: `--allow-ffi=<that path>` is enough); `--unstable-worker-options` lets that
 * Worker have its own permissions (`deno.json` here also enables it). `--lines` is per producer.
 *
 * @module
 */

import {
  libusbPath,
  type QueueStats,
  Status,
  statusName,
  ThreadedBufferQueue,
  usbWorkerPermissions,
  type WorkerPermissions,
} from "../../mod.ts";
import { describeUsbDevice, findUsbDevice, usbIds, writerOptions } from "../usb_lookup.ts";
import {
  type LineJob,
  type LineReport,
  MAX_LINE_BYTES,
  produceLines,
  type WorkerLineJob,
} from "./lines.ts";
import { type StartedProducer, startProducer } from "../producer_worker.ts";

/** Buffers in the pool. */
const BUFFER_COUNT = 8;
/** Bytes per buffer: any line fits, so a line is always one item and one transfer. */
const BUFFER_SIZE = 256;
/** The bulk writer stores the bytes written in the first 4 context bytes. */
const CONTEXT_SIZE = 4;
/** Producers: P0 the main thread, the rest Workers. */
const PRODUCERS = 3;
/** `enqueueAndWait` calls each producer keeps in flight. */
const WINDOW = 4;
/** Bound of each producer's waits, and of the whole run (plus a margin). */
const TIMEOUT_MS = 60_000;

/** The logger's command-line options. */
export interface LoggerArgs {
  /** idVendor of the adapter (`--vendor`, default 0x0403). */
  readonly vendorId: number;
  /** idProduct of the adapter (`--product`, default 0x6001). */
  readonly productId: number;
  /** Bulk OUT endpoint (`--endpoint`, default 0x02). */
  readonly endpoint: number;
  /** Lines per producer (`--lines`, default 100). */
  readonly lines: number;
}

/** A bad command-line argument. */
export class UsageError extends Error {}

/**
 * Parses `--vendor=`, `--product=`, `--endpoint=` (hex with `0x`, or decimal) and `--lines=`;
 * throws {@linkcode UsageError} for anything else.
 *
 * @example
 * ```ts
 * import { parseLoggerArgs } from "./logger.ts";
 * console.log(parseLoggerArgs(["--lines=5"]).lines); // 5
 * ```
 */
export function parseLoggerArgs(args: readonly string[]): LoggerArgs {
  const parsed = { vendorId: 0x0403, productId: 0x6001, endpoint: 0x02, lines: 100 };
  for (const arg of args) {
    const [key, value = ""] = arg.split("=", 2);
    const number = /^(0x[0-9a-f]+|\d+)$/i.test(value) ? Number(value) : NaN;
    const inRange = (max: number) => Number.isInteger(number) && number >= 0 && number <= max;
    if (key === "--vendor" && inRange(0xffff)) parsed.vendorId = number;
    else if (key === "--product" && inRange(0xffff)) parsed.productId = number;
    else if (key === "--endpoint" && inRange(0x0f)) parsed.endpoint = number;
    else if (key === "--lines" && inRange(1_000_000) && number > 0) parsed.lines = number;
    else throw new UsageError(`unknown or invalid argument ${JSON.stringify(arg)}`);
  }
  return parsed;
}

/** `ffi=[…] read=[] net=false …`, exactly what the work loop's Worker was given. */
function describePermissions(permissions: WorkerPermissions): string {
  return Object.entries(permissions).map(([key, value]) => `${key}=${JSON.stringify(value)}`)
    .join(" ");
}

function show(stats: QueueStats): string {
  return Object.entries(stats).map(([key, value]) => `${key}=${value}`).join(" ");
}

/** Runs the logger; resolves with the exit code. */
async function main(args: LoggerArgs): Promise<number> {
  const started = performance.now();
  const path = libusbPath();
  const adapter = findUsbDevice(path, args.vendorId, args.productId);
  const label = `USB ${usbIds(args.vendorId, args.productId)} (${describeUsbDevice(adapter)})`;
  console.log(
    `ftdi_logger: device = ${label}; bulk OUT 0x${args.endpoint.toString(16).padStart(2, "0")} ` +
      `through ${path}`,
  );
  const permissions = usbWorkerPermissions({ libusbPath: path });
  console.log(`work loop permissions (usbWorkerPermissions): ${describePermissions(permissions)}`);

  const handlerOptions = writerOptions(adapter, args.endpoint, path);
  const errors: string[] = [];
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: BUFFER_COUNT, bufferSize: BUFFER_SIZE, contextSize: CONTEXT_SIZE },
    handlers: new URL("../../ffi/handlers/bulk_writer.ts", import.meta.url),
    handlerOptions,
    permissions,
    name: "ftdi logger work loop",
    onError: (error, phase) => errors.push(`handler ${phase}: ${error.message}`),
  });
  await queue.start();

  const job = (producer: number): LineJob => ({
    producer,
    lines: args.lines,
    window: WINDOW,
    timeoutMs: TIMEOUT_MS,
  });
  const go = new SharedArrayBuffer(4);
  const remotes: StartedProducer<LineReport>[] = [];
  try {
    for (let producer = 1; producer < PRODUCERS; producer++) {
      remotes.push(
        await startProducer<WorkerLineJob, LineReport>(
          queue,
          new URL("./lines.ts", import.meta.url),
          { ...job(producer), go },
          `producer P${producer} (Worker)`,
        ),
      );
    }
    console.log(
      `producers: P0 main thread, ${remotes.map((_, i) => `P${i + 1} Worker`).join(", ")}; ` +
        `${args.lines} lines each (up to ${MAX_LINE_BYTES} B), ${WINDOW} in flight per producer; ` +
        `${BUFFER_COUNT} buffers of ${BUFFER_SIZE} B`,
    );
    Atomics.store(new Int32Array(go), 0, 1);
    Atomics.notify(new Int32Array(go), 0);
    const reports = await Promise.all([
      produceLines(queue, job(0)),
      ...remotes.map((remote) => remote.report),
    ]);
    await queue.onIdle();
    const drained = queue.stats();
    await queue.stop();
    const closed = await queue.close();
    return summarize(reports, drained, closed, errors, label, (performance.now() - started) / 1000);
  } finally {
    for (const remote of remotes) remote.worker.terminate();
  }
}

/** Prints the summary; returns the exit code (0 only if every line completed with Success). */
function summarize(
  reports: readonly LineReport[],
  drained: QueueStats,
  closed: QueueStats,
  errors: readonly string[],
  label: string,
  seconds: number,
): number {
  const lines = reports.reduce((sum, r) => sum + r.sent, 0);
  const bytes = reports.reduce((sum, r) => sum + r.bytes, 0);
  const statuses: Record<string, number> = {};
  for (const r of reports) {
    for (const [name, n] of Object.entries(r.statuses)) statuses[name] = (statuses[name] ?? 0) + n;
  }
  const success = statuses[statusName(Status.Success)] ?? 0;
  const problems = [...errors];
  for (const r of reports) {
    const settled = Object.values(r.statuses).reduce((sum, n) => sum + n, 0);
    if (settled !== r.sent) {
      problems.push(`P${r.producer}: ${settled} statuses for ${r.sent} lines`);
    }
    if (r.firstFailure) problems.push(`first failed line: ${r.firstFailure}`);
  }
  if (success !== lines) problems.push(`${lines - success} of ${lines} lines did not succeed`);
  for (const [when, stats] of [["after drain", drained], ["from close()", closed]] as const) {
    if (
      stats.free !== BUFFER_COUNT ||
      stats.queued + stats.running + stats.pending + stats.held + stats.returning
    ) {
      problems.push(`stats ${when} do not show all ${BUFFER_COUNT} buffers free: ${show(stats)}`);
    }
  }
  if (closed.completed !== lines || closed.failed !== 0 || closed.cancelled !== 0) {
    problems.push(
      `stats count ${closed.completed} completed, ${closed.failed} failed, ` +
        `${closed.cancelled} cancelled; want ${lines}, 0, 0`,
    );
  }

  console.log("── summary ──");
  for (const r of reports) {
    console.log(
      `  P${r.producer} ${r.producer === 0 ? "main thread" : "Worker     "} ${r.sent} lines ` +
        `${r.bytes} B  ${Object.entries(r.statuses).map(([s, n]) => `${s}=${n}`).join(" ")}`,
    );
  }
  console.log(
    `statuses (statusName): ${Object.entries(statuses).map(([s, n]) => `${s}=${n}`).join(" ")}`,
  );
  console.log(`stats() after drain: ${show(drained)}`);
  console.log(`stats() from close(): ${show(closed)}`);
  const passed = problems.length === 0;
  console.log(
    `SUMMARY lines=${lines} bytes=${bytes} success=${success} failed=${lines - success} ` +
      `seconds=${seconds.toFixed(3)} result=${passed ? "PASS" : "FAIL"}`,
  );
  if (passed) {
    console.log(`OK: all ${lines} lines (${bytes} B) went to ${label} with status Success`);
    return 0;
  }
  for (const problem of problems) console.log(`  FAIL: ${problem}`);
  return 1;
}

if (import.meta.main) {
  let code: number;
  const watchdog = setTimeout(() => {
    console.error("FAIL: the logger did not finish in time (hung device or queue?)");
    Deno.exit(1);
  }, TIMEOUT_MS + 10_000);
  try {
    code = await main(parseLoggerArgs(Deno.args));
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(
        `${error.message}\nusage: logger.ts [--vendor=0x0403] [--product=0x6001] ` +
          `[--endpoint=0x02] [--lines=100]`,
      );
      code = 2;
    } else {
      console.error(`FAIL: ${(error as Error)?.message ?? error}`);
      code = 1;
    }
  }
  clearTimeout(watchdog);
  Deno.exit(code);
}
