/**
 * HIL: riding out an unplug. While a producer streams numbered lines through a bulk writer queue
 * (`absent: "wait"`, the Worker under `usbWorkerPermissions()`) to the FTDI (0403:6001, bulk OUT
 * 0x02 → the host chardev), the host removes the FTDI with QMP `device_del` and, once the guest's
 * `watchDevices` has seen it go, adds it back with `device_add`. What must hold: every line
 * reaches the host exactly once and in order (nothing lost in the gap, nothing sent twice after
 * it), no item fails, each item's context counts all its bytes, and the guest's watch sees the
 * FTDI detach and then attach at a new address. Once with the bulk writer, once with the
 * pipelined one (whose in-flight transfers the unplug cuts).
 *
 * The same file is the guest-side program (TBQ_HIL_GUEST=1; argument: the writer).
 *
 * Run: flock /tmp/tbq-qemu.lock env CI=true deno test --allow-all tests/hil/replug_test.ts
 */
import assert from "node:assert/strict";
import {
  bulkWriterHandlers,
  Libusb,
  libusbPath,
  pipelinedBulkWriterHandlers,
  type QueueStats,
  Status,
  type StatusCode,
  statusName,
  ThreadedBufferQueue,
  usbWorkerPermissions,
} from "../../mod.ts";
import { watchDevices } from "../../ffi/watch.ts";
import { hilTest } from "./gate.ts";
import { bootGuest, type GuestResult, hostDeno, withTimeout } from "./rig.ts";

const THIS_FILE = new URL(import.meta.url).pathname;
const FTDI = { vendorId: 0x0403, productId: 0x6001 };
type Writer = "bulk" | "pipelined";
const BUFFERS = 8;
/** Successful lines before the guest says "streaming" (the host then unplugs). */
const WARM_UP = 40;
/** Successful lines after the FTDI is back before the guest stops. */
const AFTER = 100;
/** A line that took longer than this (ms) was held while the FTDI was away. */
const HELD_MS = 500;
/** A moment after the watch's detach event (ms) at which the FTDI is surely still away. */
const AWAY_PROBE_MS = 500;
/** Milliseconds between two lines (paced, so the run stays short under TCG). */
const PACE_MS = { bulk: 4, pipelined: 0 } as const; // 0: several transfers in flight to cut

/** One line as the guest sends it: fixed width, so the host can walk the chardev. */
function replugLine(writer: Writer, n: number): string {
  return `REPLUG ${writer.padEnd(9)} ${String(n).padStart(6, "0")}\n`;
}

/**
 * Checks that `text` is exactly lines 0..count-1 of `writer`, each once, in order; throws a
 * message naming the first line that is not the one due, and what came around it.
 */
function checkReplugLines(text: string, writer: Writer, count: number): void {
  const width = replugLine(writer, 0).length;
  for (let n = 0; n < count; n++) {
    const got = text.slice(n * width, (n + 1) * width);
    if (got !== replugLine(writer, n)) {
      const around = [];
      for (let i = Math.max(0, n - 3); i < Math.min(count + 2, n + 12); i++) {
        const l = text.slice(i * width, (i + 1) * width);
        around.push(l.startsWith(`REPLUG ${writer}`) ? Number(l.slice(-7, -1)) : JSON.stringify(l));
      }
      const found = text.indexOf(replugLine(writer, n));
      throw new Error(
        `line ${n} is ${JSON.stringify(got)} (due: ${JSON.stringify(replugLine(writer, n))}); ` +
          `from line ${Math.max(0, n - 3)} on: ${around.join(" ")}; line ${n} is ` +
          (found < 0 ? "missing" : `at byte ${found} (line ${found / width})`),
      );
    }
  }
  if (text.length !== count * width) {
    throw new Error(
      `${text.length - count * width} bytes after the ${count} lines: ` +
        JSON.stringify(text.slice(count * width, count * width + 80)),
    );
  }
}

/** One line's life, in guest ms since the queue started. */
interface LineRecord {
  enqueuedAt: number;
  settledAt: number;
  status: StatusCode;
  /** The byte count the writer left in the context. */
  written: number;
}

/** An event of the FTDI seen by the guest's watch. */
interface SeenEvent {
  type: "attach" | "detach";
  address: number;
  serialNumber?: string;
  at: number;
}

/** What the guest reports on its last stdout line. */
interface GuestReport {
  writer: Writer;
  lines: LineRecord[];
  events: SeenEvent[];
  handlerErrors: string[];
  finalStats: QueueStats;
  closeMs: number;
}

// ---------------------------------------------------------------- guest half

async function guestMain(writer: Writer): Promise<void> {
  const t0 = performance.now();
  const now = () => Math.round((performance.now() - t0) * 10) / 10;
  using usb = Libusb.open({ path: libusbPath() });

  const events: SeenEvent[] = [];
  const stopWatching = new AbortController();
  const watching = (async () => {
    try {
      for await (const e of watchDevices(usb, { signal: stopWatching.signal, interval: 100 })) {
        if (e.device.vendorId !== FTDI.vendorId || e.device.productId !== FTDI.productId) continue;
        events.push({
          type: e.type,
          address: e.device.deviceAddress,
          ...(e.device.serialNumber !== undefined ? { serialNumber: e.device.serialNumber } : {}),
          at: now(),
        });
        console.log(e.type === "detach" ? "detached" : "attached");
      }
    } catch (error) {
      if (!stopWatching.signal.aborted) throw error;
    }
  })();

  const handlerErrors: string[] = [];
  const queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: BUFFERS, bufferSize: 64, contextSize: 4 },
    handlers: writer === "pipelined" ? pipelinedBulkWriterHandlers : bulkWriterHandlers,
    handlerOptions: {
      ...FTDI,
      endpoint: 0x02,
      timeout: 2000,
      absent: "wait",
      libusbPath: libusbPath(),
    },
    permissions: usbWorkerPermissions(),
    onError: (error, phase) => handlerErrors.push(`${phase}: ${error.message}`),
  });
  await queue.start();

  const lines: LineRecord[] = [];
  const waits: Promise<void>[] = [];
  let successes = 0;
  let back = false;
  let successesAfterBack = 0;
  const deadline = AbortSignal.timeout(40_000);
  for (let n = 0; !deadline.aborted; n++) {
    if (successesAfterBack >= AFTER) break;
    let buffer;
    try {
      buffer = await queue.acquire({ signal: deadline });
    } catch {
      break; // out of time: the host's checks say what is missing
    }
    const text = replugLine(writer, n);
    buffer.size = new TextEncoder().encodeInto(text, buffer.data).written;
    const record: LineRecord = { enqueuedAt: now(), settledAt: -1, status: -1, written: -1 };
    lines.push(record);
    // No signal: an item must be allowed to wait through the whole gap.
    waits.push(
      queue.enqueueAndWait(buffer, { keep: true }).then((status) => {
        record.settledAt = now();
        record.status = status;
        record.written = new DataView(buffer.context.buffer, buffer.context.byteOffset, 4)
          .getUint32(0, true);
        queue.reuse(buffer);
        if (status === Status.Success) {
          if (++successes === WARM_UP) console.log("streaming");
          // Back: the watch saw the attach, or (should it miss it) a held line went out.
          back ||= successes > WARM_UP && (events.some((e) => e.type === "attach") ||
            record.settledAt - record.enqueuedAt > HELD_MS);
          if (back) successesAfterBack++;
        }
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, PACE_MS[writer]));
  }
  await withTimeout(Promise.all(waits), 20_000, "the line waiters");
  const closeStart = performance.now();
  const finalStats = await withTimeout(queue.close(), 10_000, "queue.close()");
  const closeMs = Math.round(performance.now() - closeStart);
  stopWatching.abort();
  await watching;
  const report: GuestReport = { writer, lines, events, handlerErrors, finalStats, closeMs };
  console.log(`REPORT ${JSON.stringify(report)}`);
}

// ----------------------------------------------------------------- host half

function diagnostics(r: GuestResult): string {
  return `code ${r.code} (timed out: ${r.timedOut})\nstdout (tail):\n${r.stdout.slice(-3000)}` +
    `\nstderr:\n${r.stderr}\nrelay:\n${r.relayLog.slice(-1500)}\nconsole (tail):\n` +
    r.console.slice(-2000);
}

async function replug(writer: Writer): Promise<void> {
  const t0 = performance.now();
  let r: GuestResult;
  let ftdi: Uint8Array;
  const host: Record<string, number | string> = {};
  {
    await using guest = await bootGuest({
      command: [
        hostDeno(),
        "run",
        "-A",
        "--no-lock",
        "--unstable-worker-options",
        THIS_FILE,
        writer,
      ],
      disk: false,
      hotplug: true, // the uevent relay: libusb's device list (and so the watch) follows the bus
      timeoutMs: 100_000,
    });
    await guest.waitForStdout("streaming", 60_000);
    // Back on the same port: QEMU derives the FTDI's serial number from its port, and the
    // writer insists on the serial number it first saw (a real FTDI keeps its own).
    const usb = String(
      await guest.qmp.execute("human-monitor-command", { "command-line": "info usb" }),
    );
    const port = usb.match(/Port (\S+),.*ID: ftdi\b/)?.[1];
    assert.ok(port, `no port for the FTDI in: ${usb}`);
    host.port = port;
    const unplugAt = performance.now();
    await guest.qmp.execute("device_del", { id: "ftdi" });
    await guest.qmp.waitForEvent("DEVICE_DELETED", 10_000, (e) => e.data?.device === "ftdi");
    host.deletedMs = Math.round(performance.now() - unplugAt);
    try {
      await guest.waitForStdout("detached", 10_000);
      host.detachSeenMs = Math.round(performance.now() - unplugAt);
    } catch (error) {
      host.detachSeen = `no: ${(error as Error).message}`; // checked below, from the report
    }
    // Stay away a while: the writer must hold its items, not fail them.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await guest.qmp.execute("device_add", {
      driver: "usb-serial",
      id: "ftdi",
      chardev: "ftdi",
      bus: "xhci.0",
      port,
      "always-plugged": true,
    });
    host.replugAfterMs = Math.round(performance.now() - unplugAt);
    r = await guest.wait();
    ftdi = await Deno.readFile(guest.serial!.filePath);
  }
  const diag = diagnostics(r);
  assert.equal(r.code, 0, diag);
  const line = r.stdout.split("\n").find((l) => l.startsWith("REPORT "));
  assert.ok(line, `no REPORT line\n${diag}`);
  const rep = JSON.parse(line.slice("REPORT ".length)) as GuestReport;

  // No item failed; each counted all its bytes.
  const bad = rep.lines.map((l, n) => ({ n, ...l })).filter((l) => l.status !== Status.Success);
  assert.deepEqual(bad.map((l) => `${l.n}: ${statusName(l.status)}`), [], "every line Success");
  rep.lines.forEach((l, n) => {
    assert.equal(l.written, replugLine(writer, n).length, `line ${n}'s context count`);
  });
  assert.deepEqual(rep.handlerErrors, []);
  const f = rep.finalStats;
  assert.deepEqual(
    [f.free, f.completed, f.failed, f.cancelled],
    [BUFFERS, rep.lines.length, 0, 0],
    JSON.stringify(f),
  );

  // The host got every line once, in order.
  const text = new TextDecoder("utf-8", { fatal: true }).decode(ftdi);
  try {
    checkReplugLines(text, writer, rep.lines.length);
  } catch (error) {
    const slow = rep.lines.map((l, n) => ({ n, ...l })).filter((l) =>
      l.settledAt - l.enqueuedAt > 50
    );
    throw new Error(`${(error as Error).message}\nslow lines: ${JSON.stringify(slow)}`);
  }

  // The watch saw the FTDI go, then come back at a new address.
  assert.deepEqual(
    rep.events.map((e) => e.type),
    ["detach", "attach"],
    `${JSON.stringify(rep.events)}\nrelay:\n${r.relayLog.slice(-1500)}`,
  );
  const [detach, attach] = rep.events;
  assert.notEqual(attach.address, detach.address, "a replugged device gets a new address");

  // Some lines really waited through the gap.
  assert.ok(rep.lines.some((l) => l.settledAt - l.enqueuedAt > HELD_MS), "a line was held");
  // Lines in flight at a moment the FTDI was surely away: the host adds it back no sooner than
  // 1 s after it saw the watch's "detached", so detach.at + AWAY_PROBE_MS is inside the gap. (The
  // attach event is no such bound: the writer may reopen, and flush every held line, before the
  // watch's next poll sees the attach.)
  const away = detach.at + AWAY_PROBE_MS;
  const waited = rep.lines.filter((l) => l.enqueuedAt < away && l.settledAt > away);
  assert.ok(waited.length >= 1, "at least one line was held while the FTDI was away");

  const resumed = rep.lines.find((l) => l.enqueuedAt < attach.at && l.settledAt > attach.at);
  const longest = Math.max(...rep.lines.map((l) => l.settledAt - l.enqueuedAt));
  console.log(
    `HIL replug (${writer} writer): ${rep.lines.length} lines (${ftdi.length} B) each once, in ` +
      `order, all Success; host: DEVICE_DELETED ${host.deletedMs} ms after device_del, detach ` +
      `seen ${host.detachSeenMs ?? host.detachSeen} ms, device_add at ${host.replugAfterMs} ms; ` +
      `guest watch: detach addr ${detach.address} → attach addr ${attach.address} (port ` +
      `${host.port}, serial ${attach.serialNumber}) ` +
      `${(attach.at - detach.at).toFixed(0)} ms later; ${waited.length} lines held through the ` +
      `gap; first held line done ${
        resumed ? (resumed.settledAt - attach.at).toFixed(0) : "?"
      } ms after the attach event; longest line ${longest.toFixed(0)} ms; close() ${rep.closeMs} ` +
      `ms; test ${(performance.now() - t0).toFixed(0)} ms`,
  );
}

if (Deno.env.get("TBQ_HIL_GUEST") === "1") {
  await guestMain(Deno.args[0] === "pipelined" ? "pipelined" : "bulk");
} else {
  Deno.test("replug line checker: accepts the lines in order, catches loss, repeats, reorder", () => {
    const lines = (...ns: number[]) => ns.map((n) => replugLine("bulk", n)).join("");
    checkReplugLines(lines(0, 1, 2), "bulk", 3);
    assert.throws(() => checkReplugLines(lines(0, 2), "bulk", 3), /line 1 is/);
    assert.throws(() => checkReplugLines(lines(0, 1, 1, 2), "bulk", 3), /line 2 is/);
    assert.throws(() => checkReplugLines(lines(0, 1, 2, 2), "bulk", 3), /bytes after the 3 lines/);
    assert.throws(() => checkReplugLines(lines(1, 0, 2), "bulk", 3), /line 0 is/);
    const partial = lines(0) + replugLine("bulk", 1).slice(0, 5) + lines(1, 2);
    assert.throws(() => checkReplugLines(partial, "bulk", 3), /line 1 is/);
  });

  hilTest(
    "FTDI replug while streaming (bulk writer, absent wait): every line once, in order",
    () => replug("bulk"),
  );
  hilTest(
    "FTDI replug while streaming (pipelined writer, absent wait): every line once, in order",
    () => replug("pipelined"),
  );
}
