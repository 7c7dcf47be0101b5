/**
 * The request/response handler against QEMU's FTDI (0403:6001, bulk OUT 0x02, bulk IN 0x81,
 * 64-byte packets, each IN packet behind 2 modem-status bytes; with nothing queued, IN NAKs).
 *
 * In the guest, a queue whose Worker is granted only libusb (`usbWorkerPermissions()`) runs
 * `ffi/handlers/request_response.ts` with `answerEnd: { terminator: 0x0a }, packetHeader: 2`; one
 * producer sends numbered request lines, one `enqueueAndWait(buffer, { keep: true })` each, and
 * checks that each answer landed in the kept buffer's `data`/`size`. On the host, the FTDI's
 * chardev receives each request; the host answers it with the request upper-cased plus its own
 * count (`REQ 3 ABC… #3\n`), sometimes in two pieces 30 ms apart, so answers span several
 * packets and several transfers. Then an abort: the host holds back the answer to `req-abort`
 * until the guest's waiter has given up, and sends it late; the next exchange must drop it
 * (counted in the context) and get its own answer.
 *
 * Before that, in the same guest, `examples/list_devices.ts` shows the FTDI's descriptor tree:
 * where a user finds the endpoints and packet size that the handler's options name.
 *
 * The same file is the guest-side program when TBQ_HIL_GUEST=1.
 *
 * Run: flock /tmp/tbq-qemu.lock env CI=true deno test --allow-all tests/hil/request_response_test.ts
 */
import assert from "node:assert/strict";
import { libusbPath, statusName, ThreadedBufferQueue, usbWorkerPermissions } from "../../mod.ts";
import { requestResponseHandlers } from "../../ffi/ready_made.ts";
import type { RequestResponseOptions } from "../../ffi/handlers/request_response.ts";
import { hilTest } from "./gate.ts";
import { bootGuest, type Guest, type GuestResult, hostDeno, shellQuote } from "./rig.ts";

const THIS_FILE = new URL(import.meta.url).pathname;
const ROOT = new URL("../../", import.meta.url).pathname;
/** Round trips in the timed run. */
const REQUESTS = 40;
const ABORT_REQUEST = "req-abort\n";
const LATE_FILE = "late-sent";

/** Request line `i`: 0..149 filler characters, so answers take 1 to 3 FTDI packets. */
function requestLine(i: number): string {
  const filler = "abcdefghijklmnopqrstuvwxyz".repeat(6).slice(0, (i * 37) % 150);
  return `req ${i} ${filler}\n`;
}

/** The host's answer to a request line: upper-cased, plus how many requests came before it. */
function answerTo(request: string, seq: number): string {
  return `${request.trimEnd().toUpperCase()} #${seq}\n`;
}

/** What `examples/list_devices.ts` prints for QEMU's FTDI (README: full speed, bulk 0x81/0x02). */
const FTDI_TREE = new RegExp(
  [
    "^0403:6001  .*, bus \\d+ address \\d+",
    "  port \\d+-\\d+, full speed, USB 2\\.00, device class 00/00/00, release [\\d.]+",
    '  configuration 1 (?:".*" )?\\(active\\)',
    "    interface 0, alternate 0 selected",
    "      alternate 0: class ff/ff/ff",
    "        endpoint 0x81 in bulk, 64 B packets",
    "        endpoint 0x02 out bulk, 64 B packets$",
  ].join("\n"),
  "m",
);

/** What the guest half reports as its last stdout line. */
interface Report {
  statuses: string[];
  mismatches: { i: number; answer: string }[];
  written: number[];
  ms: number;
  aborted: string;
  after: { status: string; answer: string; dropped: number };
  stats: Record<string, number>;
}

// ---------------------------------------------------------------- guest half

async function guestMain(): Promise<void> {
  const signal = AbortSignal.timeout(90_000);
  const syncDir = Deno.env.get("RR_SYNC_DIR");
  assert.ok(syncDir, "RR_SYNC_DIR is set");
  const options: RequestResponseOptions = {
    vendorId: 0x0403,
    productId: 0x6001,
    outEndpoint: 0x02,
    inEndpoint: 0x81,
    answerEnd: { terminator: 0x0a },
    packetHeader: 2,
    timeout: 5000,
    libusbPath: libusbPath(),
  };
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 2, bufferSize: 512, contextSize: 8 },
    handlers: requestResponseHandlers,
    handlerOptions: options,
    permissions: usbWorkerPermissions(),
  });
  await queue.start();
  const encoder = new TextEncoder();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  const counts = (context: Uint8Array) => new DataView(context.buffer, context.byteOffset, 8);

  let buffer = await queue.acquire({ signal });
  const statuses: string[] = [];
  const mismatches: Report["mismatches"] = [];
  const written: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < REQUESTS; i++) {
    const request = requestLine(i);
    buffer.size = encoder.encodeInto(request, buffer.data).written;
    statuses.push(statusName(await queue.enqueueAndWait(buffer, { keep: true, signal })));
    const answer = decode(buffer.data.subarray(0, buffer.size));
    if (answer !== answerTo(request, i)) mismatches.push({ i, answer });
    written.push(counts(buffer.context).getUint32(0, true));
  }
  const ms = performance.now() - t0;

  // The host answers this one only after we gave up on it.
  buffer.size = encoder.encodeInto(ABORT_REQUEST, buffer.data).written;
  let aborted = "resolved";
  try {
    await queue.enqueueAndWait(buffer, { keep: true, signal: AbortSignal.timeout(500) });
  } catch (error) {
    aborted = `rejected: ${(error as Error).name}`;
  }
  // The given-up item's read ends within a poll slice of the abort: only then may the answer
  // come, or that read takes it (and nothing is left for the next exchange to drop).
  await queue.onIdle({ signal });
  console.log("ABORTED");
  for (let waited = 0;; waited += 20) {
    try {
      await Deno.stat(`${syncDir}/${LATE_FILE}`);
      break;
    } catch {
      if (waited > 30_000) throw new Error("the host never said the late answer was sent");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 300)); // into the FTDI's receive buffer
  buffer = await queue.acquire({ signal }); // with keep, an aborted item's buffer went back
  const request = requestLine(REQUESTS + 1);
  buffer.size = encoder.encodeInto(request, buffer.data).written;
  const status = statusName(await queue.enqueueAndWait(buffer, { keep: true, signal }));
  const after = {
    status,
    answer: decode(buffer.data.subarray(0, buffer.size)),
    dropped: counts(buffer.context).getUint32(4, true),
  };
  queue.reuse(buffer);
  await queue.onIdle({ signal });
  const stats = { ...queue.stats() };
  const report: Report = { statuses, mismatches, written, ms, aborted, after, stats };
  console.log(`REPORT ${JSON.stringify(report)}`);
}

// ----------------------------------------------------------------- host half

/** The next `\n`-terminated line the guest wrote from `offset` on; undefined once it ended. */
async function nextLine(
  guest: Guest,
  offset: number,
  ended: () => boolean,
): Promise<{ text: string; end: number } | undefined> {
  for (;;) {
    const all = guest.serial!.received();
    const at = all.indexOf(0x0a, offset);
    if (at >= 0) {
      return { text: new TextDecoder().decode(all.subarray(offset, at + 1)), end: at + 1 };
    }
    if (ended()) return undefined;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** Answers each request line until the guest ends; returns the requests seen, in order. */
async function answerRequests(guest: Guest, syncDir: string, ended: () => boolean) {
  const seen: string[] = [];
  let offset = 0;
  for (;;) {
    const line = await nextLine(guest, offset, ended);
    if (!line) return seen;
    offset = line.end;
    const seq = seen.length;
    seen.push(line.text);
    const answer = answerTo(line.text, seq);
    if (line.text === ABORT_REQUEST) {
      await guest.waitForStdout("ABORTED", 30_000);
      await guest.serial!.write(answer); // late: the next exchange must not take it
      await Deno.writeTextFile(`${syncDir}/${LATE_FILE}`, "");
    } else if (seq % 4 === 3) {
      const cut = Math.floor(answer.length / 2);
      await guest.serial!.write(answer.slice(0, cut));
      await new Promise((resolve) => setTimeout(resolve, 30));
      await guest.serial!.write(answer.slice(cut));
    } else {
      await guest.serial!.write(answer);
    }
  }
}

function diagnostics(r: GuestResult): string {
  return `code ${r.code} (timed out: ${r.timedOut})\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}` +
    `\nconsole (tail):\n${r.console.slice(-2000)}`;
}

if (Deno.env.get("TBQ_HIL_GUEST") === "1") {
  await guestMain();
} else {
  Deno.test("request/response rig helpers: request sizes span 1 to 3 FTDI packets", () => {
    const sizes = Array.from({ length: REQUESTS }, (_, i) => answerTo(requestLine(i), i).length);
    assert.ok(Math.min(...sizes) < 62 && Math.max(...sizes) > 124, `${sizes}`);
    assert.ok(Math.max(...sizes) < 384, "each answer fits QEMU's FTDI receive buffer");
  });

  hilTest(
    "request/response with the FTDI: each answer in its kept buffer, in order; a late one dropped",
    async () => {
      const deno = shellQuote(hostDeno());
      const syncDir = await Deno.makeTempDir({ prefix: "tbq-rr-" });
      try {
        await using guest = await bootGuest({
          command: [
            `${deno} run --no-lock --allow-ffi --allow-read --allow-env examples/list_devices.ts`,
            `echo "LIST-EXIT $?"`,
            `exec ${deno} run --no-lock -A ${shellQuote(THIS_FILE)}`,
          ].join("\n"),
          workdir: ROOT,
          shares: [syncDir],
          env: { RR_SYNC_DIR: syncDir },
          disk: false,
          timeoutMs: 120_000,
        });
        let done = false;
        const finished = guest.wait().finally(() => done = true);
        const seen = await answerRequests(guest, syncDir, () => done);
        const r = await finished;
        const diag = diagnostics(r);
        assert.equal(r.code, 0, diag);
        assert.match(r.stdout, /^LIST-EXIT 0$/m, diag);
        assert.match(r.stdout, FTDI_TREE, `list_devices shows the FTDI's tree:\n${diag}`);
        const line = r.stdout.split("\n").find((l) => l.startsWith("REPORT "));
        assert.ok(line, `no REPORT:\n${diag}`);
        const report = JSON.parse(line.slice("REPORT ".length)) as Report;

        const expected = [
          ...Array.from({ length: REQUESTS }, (_, i) => requestLine(i)),
          ABORT_REQUEST,
          requestLine(REQUESTS + 1),
        ];
        assert.deepEqual(seen, expected, "the device got every request once, in order");
        assert.deepEqual(report.statuses, Array(REQUESTS).fill("Success"), diag);
        assert.deepEqual(report.mismatches, [], "each answer landed in its kept buffer");
        assert.deepEqual(
          report.written,
          expected.slice(0, REQUESTS).map((l) => l.length),
          "context bytes 0-3: the request bytes written",
        );
        assert.equal(report.aborted, "rejected: TimeoutError", diag);
        assert.deepEqual(report.after, {
          status: "Success",
          answer: answerTo(requestLine(REQUESTS + 1), REQUESTS + 1),
          dropped: answerTo(ABORT_REQUEST, REQUESTS).length,
        }, "the late answer was dropped (and counted), the next one is its own");
        assert.equal(report.stats.cancelled, 1, "the aborted item completed Cancelled");
        assert.equal(report.stats.free, 2, diag);
        const perTrip = report.ms / REQUESTS;
        console.log(
          `request/response FTDI: ${REQUESTS} round trips in ${report.ms.toFixed(0)} ms ` +
            `(${perTrip.toFixed(1)} ms each, answers ${
              Math.min(...expected.slice(0, REQUESTS).map((l, i) => answerTo(l, i).length))
            }-${
              Math.max(...expected.slice(0, REQUESTS).map((l, i) => answerTo(l, i).length))
            } B, every 4th in two pieces); late answer of ${report.after.dropped} B dropped; ` +
            `boot ${((r.bootMs ?? 0) / 1000).toFixed(1)} s, guest total ${
              (r.totalMs / 1000).toFixed(1)
            } s`,
        );
      } finally {
        await Deno.remove(syncDir, { recursive: true });
      }
    },
  );
}
