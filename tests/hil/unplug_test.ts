/**
 * HIL: hot-unplug of the usb-storage device (QMP `device_del`) while a producer streams WRITE (10)
 * items to it through a ThreadedBufferQueue whose handler runs with `absent: "fail-items"`. What
 * must hold: the running and queued waiters settle (no hang: every wait is bounded), every status
 * is a real outcome (Success before the unplug; DeviceNotConnected, Cancelled or a transport
 * failure after it), `stats()` accounts for every buffer, the handler's `post` runs (it reports
 * through a shared buffer), and `close()` completes promptly. The guest reports what really
 * happened (statuses and timings); the host prints it.
 *
 * The same file is the guest-side program (TBQ_HIL_GUEST=1).
 *
 * Run: deno test -A tests/hil/unplug_test.ts   (as root; prepares the rig first)
 */
import assert from "node:assert/strict";
import {
  isSuccess,
  LibusbError,
  libusbPath,
  type QueueStats,
  Status,
  type StatusCode,
  statusName,
  ThreadedBufferQueue,
  UsbStatus,
  usbWorkerPermissions,
} from "../../mod.ts";
import { libusbError } from "../../ffi/errors.ts";
import {
  createReport,
  massStorageHandlers,
  type MassStorageOptions,
  type MassStorageReport,
  readReport,
  ReportWord,
  setItemLba,
  StorageStatus,
} from "../../storage/mod.ts";
import { fillPattern } from "../fixtures/pattern.ts";
import { hilTest } from "./gate.ts";
import { bootGuest, hostDeno, withTimeout } from "./rig.ts";

const THIS_FILE = new URL(import.meta.url).pathname;
const BUFFER_COUNT = 8;
const CHUNK = 65536;
const BLOCKS = CHUNK / 512;
/** Successful items before the guest says "streaming". */
const WARM_UP = 24;

/** One streamed item. */
interface ItemRecord {
  /** Enqueue order. */
  n: number;
  /** Guest ms (since "streaming") when it was enqueued and when its waiter settled. */
  enqueuedAt: number;
  settledAt: number | null;
  status: StatusCode | null;
  /** True for the items enqueued after the first failure, right before `close()`. */
  atClose: boolean;
}

/** What the guest reports on its last stdout line. */
interface GuestReport {
  pastEnd: StatusCode;
  items: ItemRecord[];
  firstFailureMs: number | null;
  statsAtFirstFailure: QueueStats | null;
  closeMs: number;
  finalStats: QueueStats;
  handler: MassStorageReport;
  unsettled: number;
}

// ---------------------------------------------------------------- guest half

async function guestMain(): Promise<void> {
  const report = createReport();
  const options: MassStorageOptions = {
    vendorId: 0x46f4,
    productId: 0x0001,
    libusbPath: libusbPath(),
    timeout: 2000,
    absent: "fail-items",
    report,
  };
  const queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: BUFFER_COUNT, bufferSize: CHUNK, contextSize: 4 },
    handlers: massStorageHandlers,
    handlerOptions: options,
    permissions: usbWorkerPermissions({
      read: [new URL("../../storage/", import.meta.url)],
    }),
  });
  await queue.start();
  const blockCount = readReport(report).blockCount;

  // A CHECK CONDITION through the queue first: a write that runs past the end of the medium.
  const past = await queue.acquire({ signal: AbortSignal.timeout(5000) });
  setItemLba(past.context, blockCount - BLOCKS / 2);
  const pastEnd = await queue.enqueueAndWait(past, { signal: AbortSignal.timeout(10_000) });
  // Let the handler's "first failure" words record the unplug's, not this one.
  Atomics.store(new Int32Array(report), ReportWord.FirstFailure, 0);
  Atomics.store(new Int32Array(report), ReportWord.FirstUsbCode, 0);

  const pattern = fillPattern(7, new Uint8Array(CHUNK));
  const items: ItemRecord[] = [];
  const waits: Promise<void>[] = [];
  let t0 = performance.now(); // reset when "streaming" is printed: times are relative to that
  let streaming = false;
  let successes = 0;
  let firstFailureMs: number | null = null;
  let statsAtFirstFailure: QueueStats | null = null;
  const now = () => Math.round((performance.now() - t0) * 10) / 10;
  const enqueue = (buffer: Awaited<ReturnType<typeof queue.acquire>>, atClose: boolean) => {
    const record: ItemRecord = {
      n: items.length,
      enqueuedAt: now(),
      settledAt: null,
      status: null,
      atClose,
    };
    items.push(record);
    buffer.data.set(pattern);
    setItemLba(buffer.context, 2048 + (record.n % 256) * BLOCKS);
    waits.push(
      queue.enqueueAndWait(buffer).then((status) => {
        record.settledAt = now();
        record.status = status;
        if (isSuccess(status)) {
          if (++successes === WARM_UP && !streaming) {
            streaming = true;
            const shift = now();
            t0 = performance.now();
            for (const r of items) {
              r.enqueuedAt = Math.round((r.enqueuedAt - shift) * 10) / 10;
              if (r.settledAt !== null) r.settledAt = Math.round((r.settledAt - shift) * 10) / 10;
            }
            console.log("streaming");
          }
        } else if (firstFailureMs === null) {
          firstFailureMs = now();
          statsAtFirstFailure = queue.stats();
        }
      }),
    );
  };

  // Stream until the unplug makes an item fail (bounded: 40 s).
  const deadline = AbortSignal.timeout(40_000);
  while (firstFailureMs === null && !deadline.aborted) {
    let buffer;
    try {
      buffer = await queue.acquire({
        signal: AbortSignal.any([deadline, AbortSignal.timeout(10_000)]),
      });
    } catch {
      break;
    }
    if (firstFailureMs !== null) {
      queue.reuse(buffer);
      break;
    }
    enqueue(buffer, false);
  }

  // Fill every free buffer and close at once: the queued ones are flushed (Cancelled) or run into
  // the missing device (DeviceNotConnected).
  for (let buffer = queue.fetch(); buffer; buffer = queue.fetch()) enqueue(buffer, true);
  const closeStart = performance.now();
  const finalStats = await withTimeout(queue.close(), 15_000, "queue.close()");
  const closeMs = Math.round(performance.now() - closeStart);

  let unsettled = 0;
  await withTimeout(Promise.all(waits), 15_000, "the waiters").catch(() => {
    unsettled = items.filter((r) => r.status === null).length;
  });
  const out: GuestReport = {
    pastEnd,
    items,
    firstFailureMs,
    statsAtFirstFailure,
    closeMs,
    finalStats,
    handler: readReport(report),
    unsettled,
  };
  console.log(`REPORT ${JSON.stringify(out)}`);
}

// ----------------------------------------------------------------- host half

function firstBadStatus(rep: GuestReport): StatusCode {
  return rep.items.find((i) => !isSuccess(i.status!))!.status!;
}

if (Deno.env.get("TBQ_HIL_GUEST") === "1") {
  await guestMain();
} else {
  hilTest("storage hot-unplug while streaming through the queue: everything settles", async () => {
    const dir = await Deno.makeTempDir({ prefix: "tbq-unplug-" });
    try {
      const t0 = performance.now();
      let r, unplugMs, deletedMs;
      {
        await using guest = await bootGuest({
          command: [hostDeno(), "run", "-A", "--no-lock", "--unstable-worker-options", THIS_FILE],
          disk: { path: `${dir}/disk.img`, sizeMiB: 64 },
          serial: false,
          timeoutMs: 80_000,
        });
        await guest.waitForStdout("streaming", 60_000);
        const sent = performance.now();
        unplugMs = sent - t0;
        await guest.qmp.execute("device_del", { id: "storage" });
        await guest.qmp.waitForEvent("DEVICE_DELETED", 10_000, (e) => e.data?.device === "storage");
        deletedMs = performance.now() - sent;
        r = await guest.wait();
      }
      const diag =
        `code ${r.code}, timedOut ${r.timedOut}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}` +
        `\nconsole tail:\n${r.console.slice(-2000)}`;
      assert.equal(r.code, 0, diag);
      assert.equal(r.timedOut, false, diag);
      const line = r.stdout.split("\n").find((l) => l.startsWith("REPORT "));
      assert.ok(line, `no REPORT line\n${diag}`);
      const rep = JSON.parse(line.slice("REPORT ".length)) as GuestReport;
      const dump = JSON.stringify({ ...rep, items: undefined });

      assert.equal(rep.pastEnd, StorageStatus.NonexistentSector, "WRITE (10) past the end");
      assert.equal(rep.unsettled, 0, "every waiter settled");
      assert.ok(rep.items.every((i) => i.status !== null), "every item has a status");
      assert.ok(rep.firstFailureMs !== null, `the unplug failed no item: ${dump}`);
      // Statuses a vanished device may produce (what libusb reports for the transfer in flight).
      const afterUnplug = new Set<StatusCode>([
        Status.DeviceNotConnected,
        Status.Cancelled,
        Status.IoTimeout,
        UsbStatus.IoDeviceError,
        UsbStatus.PipeBroken,
      ]);
      const failed = rep.items.filter((i) => !isSuccess(i.status!));
      for (const item of failed) {
        assert.ok(afterUnplug.has(item.status!), `item ${item.n}: ${statusName(item.status!)}`);
      }
      assert.ok(
        failed.some((i) => i.status === Status.DeviceNotConnected),
        "DeviceNotConnected seen",
      );
      // Once an item failed, no later one succeeded (the device does not come back).
      const firstFailed = Math.min(...failed.map((i) => i.n));
      assert.ok(rep.items.every((i) => i.n < firstFailed || !isSuccess(i.status!)));
      for (const item of rep.items.filter((i) => i.atClose)) {
        assert.ok(
          item.status === Status.Cancelled || item.status === Status.DeviceNotConnected,
          `item ${item.n} enqueued at close: ${statusName(item.status!)}`,
        );
      }

      // Every buffer is accounted for, at the first failure and after close.
      const s = rep.statsAtFirstFailure!;
      assert.equal(s.free + s.queued + s.running + s.pending + s.held, BUFFER_COUNT, dump);
      const f = rep.finalStats;
      assert.deepEqual(
        {
          free: f.free,
          queued: f.queued,
          running: f.running,
          pending: f.pending,
          held: f.held,
          returning: f.returning,
        },
        { free: BUFFER_COUNT, queued: 0, running: 0, pending: 0, held: 0, returning: 0 },
      );
      const total = rep.items.length + 1; // + the past-the-end item
      assert.equal(f.completed + f.cancelled + f.failed, total, dump);
      assert.equal(f.cancelled, rep.items.filter((i) => i.status === Status.Cancelled).length);
      assert.equal(f.completed, rep.items.filter((i) => isSuccess(i.status!)).length);

      // What libusb reported for the item the unplug hit.
      assert.equal(rep.handler.firstFailure, firstBadStatus(rep));
      const hit = libusbError(rep.handler.firstUsbCode).name;
      assert.ok(
        ([LibusbError.NO_DEVICE, LibusbError.IO, LibusbError.PIPE, LibusbError.TIMEOUT] as number[])
          .includes(rep.handler.firstUsbCode),
        `first failure's libusb code ${rep.handler.firstUsbCode} (${hit})`,
      );
      assert.equal(rep.handler.pre, 1);
      assert.equal(rep.handler.post, 1, "post ran");
      assert.ok(rep.closeMs < 5000, `close() took ${rep.closeMs} ms`);

      const counts: Record<string, number> = {};
      for (const i of rep.items) {
        const key = `${i.atClose ? "at close " : ""}${statusName(i.status!)}`;
        counts[key] = (counts[key] ?? 0) + 1;
      }
      const firstBad = rep.items.find((i) => i.n === firstFailed)!;
      console.log(
        `HIL unplug: libusb said ${hit} for the transfer in flight; device_del sent ${
          unplugMs.toFixed(0)
        } ms after QEMU spawn, DEVICE_DELETED ` +
          `${deletedMs.toFixed(0)} ms later; guest: first failure ${
            statusName(firstBad.status!)
          } (item ${firstBad.n}, enqueued ${firstBad.enqueuedAt} ms, settled ${firstBad.settledAt} ms ` +
          `after "streaming"); statuses ${JSON.stringify(counts)}; stats at first failure ${
            JSON.stringify(rep.statsAtFirstFailure)
          }; close() ${rep.closeMs} ms; final ${JSON.stringify(rep.finalStats)}; handler ${
            JSON.stringify(rep.handler)
          }; test ${(performance.now() - t0).toFixed(0)} ms`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
