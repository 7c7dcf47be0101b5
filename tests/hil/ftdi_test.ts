/**
 * FTDI hardware-in-the-loop tests (QEMU's usb-serial 0403:6001, bulk OUT 0x02 → the host
 * chardev, which the rig keeps in `<runDir>/ftdi-out.bin`):
 *
 * 1. `examples/ftdi_logger.ts` runs in the guest: three producers (main thread + two attached
 *    Workers) send numbered lines through ONE queue and the ready-made bulk writer. On the host,
 *    the chardev must hold every line exactly once, intact (a line is one item and one transfer,
 *    never split or mixed), each producer's lines in order. Then, in the same guest, this file's
 *    guest half drives the FTDI from a queue Worker started with `usbWorkerPermissions()` and asks
 *    that very Worker what else it may do: only read its own module and use libusb.
 * 2. The demo (`deno task demo`'s flags) runs in the guest with the FTDI attached: its first line
 *    names the USB device, it exits 0, and the host finds every record in the chardev exactly once,
 *    intact, in per-producer order.
 *
 * The same file is the guest-side program when TBQ_HIL_GUEST=1.
 *
 * Run: deno test -A tests/hil/ftdi_test.ts   (as root; prepares the rig first)
 */
import assert from "node:assert/strict";
import {
  libusbPath,
  Status,
  statusName,
  ThreadedBufferQueue,
  usbWorkerPermissions,
  type WorkerPermissions,
} from "../../mod.ts";
import { fillPayload, payloadLength } from "../../examples/demo_records.ts";
import { ftdiLine, parseFtdiLine } from "../../examples/ftdi_lines.ts";
import { capabilities } from "../capabilities.ts";
import { PROBE_BYTE, PROBES } from "../fixtures/ftdi_probe_handlers.ts";
import { hilTest } from "./gate.ts";
import { bootGuest, type GuestResult, hostDeno, shellQuote } from "./rig.ts";

const THIS_FILE = new URL(import.meta.url).pathname;
const ROOT = new URL("../../", import.meta.url).pathname;
/** `deno task demo`'s permission flags, which the logger documents too. */
const RUN_FLAGS = "--allow-read --allow-env --allow-ffi --unstable-worker-options";
const FTDI = { vendorId: 0x0403, productId: 0x6001, endpoint: 0x02 };
/** Lines per producer in the logger run; three producers. */
const LINES = 40;
const PRODUCERS = 3;
const PROBE_BEFORE = "PROBE before\n";
const EXPECTED_ALLOWED = ["read own module", "libusb"];

/** What the guest half reports as its last stdout line. */
interface ProbeReport {
  libusbPath: string;
  permissions: unknown;
  lineStatuses: string[];
  allowed: string[];
}

// ---------------------------------------------------------------- guest half

/**
 * A queue with `usbWorkerPermissions()` and the bulk writer (plus probes, in the same module):
 * writes a line to the FTDI, probes each capability in the Worker that holds the device, writes a
 * second line naming what was allowed.
 */
/**
 * The probe queue's least privilege: `usbWorkerPermissions()` plus read access to
 * capability_handlers.ts, whose probes the probe handler shares.
 */
function probePermissions(): WorkerPermissions {
  return usbWorkerPermissions({
    read: [new URL("../fixtures/capability_handlers.ts", import.meta.url).pathname],
  });
}

async function guestProbe(): Promise<void> {
  const signal = AbortSignal.timeout(30_000);
  const permissions = probePermissions();
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 2, bufferSize: 64, contextSize: 8 },
    handlers: new URL("../fixtures/ftdi_probe_handlers.ts", import.meta.url),
    handlerOptions: { ...FTDI, timeout: 2000, libusbPath: libusbPath() },
    permissions,
  });
  await queue.start();
  const send = async (line: string) => {
    const buffer = await queue.acquire({ signal });
    buffer.size = new TextEncoder().encodeInto(line, buffer.data).written;
    return statusName(await queue.enqueueAndWait(buffer, { signal }));
  };
  const lineStatuses = [await send(PROBE_BEFORE)];
  const allowed: string[] = [];
  for (const [index, name] of PROBES.entries()) {
    const buffer = await queue.acquire({ signal });
    buffer.context[PROBE_BYTE] = index + 1;
    buffer.size = 0;
    if (await queue.enqueueAndWait(buffer, { signal }) === Status.Success) allowed.push(name);
  }
  lineStatuses.push(await send(`PROBE after ${allowed.join(",")}\n`));
  const report: ProbeReport = { libusbPath: libusbPath(), permissions, lineStatuses, allowed };
  console.log(`REPORT ${JSON.stringify(report)}`);
}

// ----------------------------------------------------------------- host half

/** Boots a guest with the FTDI (no storage), runs `script`, returns its result and the chardev. */
async function runWithFtdi(script: string): Promise<{ result: GuestResult; ftdi: Uint8Array }> {
  await using guest = await bootGuest({
    command: script,
    workdir: ROOT,
    disk: false,
    timeoutMs: 90_000,
  });
  const result = await guest.wait();
  const ftdi = await Deno.readFile(guest.serial!.filePath);
  assert.deepEqual(ftdi, result.serialOutput, "the chardev file and the rig's copy agree");
  return { result, ftdi };
}

function diagnostics(r: GuestResult): string {
  return `code ${r.code} (timed out: ${r.timedOut})\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}` +
    `\nconsole (tail):\n${r.console.slice(-2000)}`;
}

const ms = (n: number | null) => `${n === null ? "?" : (n / 1000).toFixed(1)} s`;

/**
 * Checks the logger's lines in what the FTDI received: each producer's lines 0..lines-1 exactly
 * once, in order, byte for byte. Returns how often consecutive lines came from different
 * producers.
 */
function checkLoggerLines(text: string, producers: number, lines: number): number {
  assert.ok(text.endsWith("\n"), `the output does not end with a newline: …${text.slice(-80)}`);
  const next = new Array<number>(producers).fill(0);
  let previous = -1;
  let switches = 0;
  for (const [index, row] of text.slice(0, -1).split("\n").entries()) {
    const where = `FTDI line ${index} ${JSON.stringify(row.slice(0, 80))}`;
    const id = parseFtdiLine(row);
    assert.ok(id && id.producer < producers, `${where}: not a logger line (split or mixed?)`);
    assert.equal(
      id.seq,
      next[id.producer],
      `${where}: P${id.producer} #${id.seq} where #${next[id.producer]} was due ` +
        "(lost, duplicated or out of order)",
    );
    assert.equal(`${row}\n`, ftdiLine(id.producer, id.seq), `${where}: corrupted`);
    next[id.producer]++;
    if (previous !== -1 && previous !== id.producer) switches++;
    previous = id.producer;
  }
  assert.deepEqual(next, new Array(producers).fill(lines), "lines per producer");
  return switches;
}

/**
 * Walks the demo's records in what the FTDI received: at each offset the next record of exactly
 * one producer must start (payloads are pseudo-random, so a wrong match is practically
 * impossible); at the end every producer's `sent[p]` records must have been found. Returns the
 * number of records.
 */
function checkDemoRecords(ftdi: Uint8Array, sent: readonly number[], size: number): number {
  const expected = (producer: number, seq: number) => {
    const bytes = new Uint8Array(payloadLength(producer, seq, size));
    fillPayload(bytes, producer, seq);
    return bytes;
  };
  const next = sent.map(() => 0);
  const due = next.map((seq, p) => seq < sent[p] ? expected(p, seq) : null);
  let offset = 0;
  let records = 0;
  while (offset < ftdi.length) {
    const producer = due.findIndex((record) =>
      record !== null && offset + record.length <= ftdi.length &&
      record.every((byte, i) => ftdi[offset + i] === byte)
    );
    assert.ok(
      producer >= 0,
      `chardev offset ${offset} (after ${records} records) starts no producer's next record ` +
        `(due: ${next.map((seq, p) => `P${p} #${seq}`).join(", ")}): lost, duplicated, ` +
        "corrupted or out of order",
    );
    offset += due[producer]!.length;
    records++;
    next[producer]++;
    due[producer] = next[producer] < sent[producer] ? expected(producer, next[producer]) : null;
  }
  assert.deepEqual(next, [...sent], "records per producer in the chardev");
  return records;
}

if (Deno.env.get("TBQ_HIL_GUEST") === "1") {
  await guestProbe();
} else {
  // The checkers themselves, on made-up chardev contents (no rig needed).
  const lines = (...ids: [number, number][]) => ids.map(([p, seq]) => ftdiLine(p, seq)).join("");
  Deno.test("ftdi checker: accepts interleaved producers, counts switches", () => {
    assert.equal(checkLoggerLines(lines([0, 0], [1, 0], [1, 1], [0, 1]), 2, 2), 2);
  });
  const broken: [string, string, RegExp][] = [
    ["a lost line", lines([0, 0], [1, 0], [1, 1]), /lines per producer/],
    ["a duplicated line", lines([0, 0], [0, 0], [1, 0], [0, 1], [1, 1]), /#0 where #1 was due/],
    ["lines out of order", lines([0, 1], [0, 0], [1, 0], [1, 1]), /#1 where #0 was due/],
    [
      "a line split by another",
      ftdiLine(0, 0).slice(0, 12) + lines([1, 0]) + ftdiLine(0, 0).slice(12) +
      lines([0, 1], [1, 1]),
      /corrupted|not a logger line/,
    ],
    [
      "a corrupted byte",
      lines([0, 0], [1, 0], [0, 1], [1, 1]).replace("P1 000000 b", "P1 000000 B"),
      /corrupted/,
    ],
  ];
  for (const [what, text, complaint] of broken) {
    Deno.test(`ftdi checker: catches ${what}`, () => {
      assert.throws(() => checkLoggerLines(text, 2, 2), complaint);
    });
  }
  Deno.test("demo record walker: accepts interleaved records, catches loss and corruption", () => {
    const record = (p: number, seq: number) => {
      const bytes = new Uint8Array(payloadLength(p, seq, 64));
      fillPayload(bytes, p, seq);
      return [...bytes];
    };
    const good = [...record(0, 0), ...record(1, 0), ...record(0, 1)];
    assert.equal(checkDemoRecords(new Uint8Array(good), [2, 1], 64), 3);
    assert.throws(() => checkDemoRecords(new Uint8Array(good), [2, 2], 64), /records per producer/);
    const lost = [...record(0, 0), ...record(0, 1)];
    assert.throws(() => checkDemoRecords(new Uint8Array(lost), [2, 1], 64), /records per producer/);
    const twice = [...record(0, 0), ...record(0, 0), ...record(1, 0), ...record(0, 1)];
    assert.throws(() => checkDemoRecords(new Uint8Array(twice), [2, 1], 64), /starts no producer/);
    const corrupted = good.with(good.length - 1, good.at(-1)! ^ 1);
    assert.throws(() => checkDemoRecords(new Uint8Array(corrupted), [2, 1], 64), /starts no/);
  });

  hilTest(
    "ftdi logger: 3 producers, one queue, every line once and in order; least privilege",
    async () => {
      const deno = shellQuote(hostDeno());
      const { result: r, ftdi } = await runWithFtdi([
        `${deno} run --no-lock ${RUN_FLAGS} examples/ftdi_logger.ts --lines=${LINES}`,
        `echo "LOGGER-EXIT $?"`,
        `exec ${deno} run --no-lock -A ${shellQuote(THIS_FILE)}`,
      ].join("\n"));
      const diag = diagnostics(r);
      assert.equal(r.code, 0, diag);
      const marker = r.stdout.match(/^LOGGER-EXIT (\d+)$/m);
      assert.ok(marker?.index !== undefined, diag);
      assert.equal(marker[1], "0", `the logger failed:\n${diag}`);
      const logger = r.stdout.slice(0, marker.index);
      const probe = r.stdout.slice(marker.index + marker[0].length);

      // The logger's own account.
      const out = logger.split("\n");
      assert.match(out[0], /^ftdi_logger: device = USB 0403:6001 \(/, diag);
      const permissions = usbWorkerPermissions();
      assert.equal(
        out[1],
        `work loop permissions (usbWorkerPermissions): ${
          Object.entries(permissions).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ")
        }`,
        "the logger's queue Worker got usbWorkerPermissions(): ffi = the libusb path only",
      );
      const summary = logger.match(
        /^SUMMARY lines=(\d+) bytes=(\d+) success=(\d+) failed=0 seconds=([\d.]+) result=PASS$/m,
      );
      assert.ok(summary, `no passing SUMMARY line:\n${diag}`);
      const total = LINES * PRODUCERS;
      assert.equal(Number(summary[1]), total);
      assert.equal(Number(summary[3]), total);
      assert.ok(
        logger.includes(
          "stats() from close(): free=8 queued=0 running=0 pending=0 held=0 returning=0 " +
            `completed=${total} cancelled=0 failed=0\n`,
        ),
        diag,
      );

      // What the FTDI received: the logger's lines, then the probe's two lines.
      const text = new TextDecoder("utf-8", { fatal: true }).decode(ftdi);
      const bytes = Number(summary[2]);
      const switches = checkLoggerLines(text.slice(0, bytes), PRODUCERS, LINES);
      const line = probe.split("\n").find((l) => l.startsWith("REPORT "));
      assert.ok(line, `no REPORT from the guest half:\n${diag}`);
      const report = JSON.parse(line.slice("REPORT ".length)) as ProbeReport;
      assert.deepEqual([...PROBES], capabilities, "the probes are the shared capability set");
      assert.equal(report.libusbPath, libusbPath(), "the guest uses the host's libusb");
      assert.deepEqual(report.permissions, probePermissions());
      assert.deepEqual(report.allowed, EXPECTED_ALLOWED, "the queue Worker may only do this");
      assert.deepEqual(report.lineStatuses, ["Success", "Success"]);
      assert.equal(
        text.slice(bytes),
        `${PROBE_BEFORE}PROBE after ${EXPECTED_ALLOWED.join(",")}\n`,
        "the least-privileged Worker drove the FTDI before and after its probes",
      );
      console.log(
        `FTDI logger: boot ${ms(r.bootMs)}, guest total ${ms(r.totalMs)}, logger ${
          summary[4]
        } s; ` +
          `chardev ${ftdi.length} B = ${total} logger lines (${bytes} B, ${switches} producer ` +
          `switches) + 2 probe lines; worker allowed: ${report.allowed.join(", ")}`,
      );
    },
  );

  hilTest(
    "demo with an FTDI attached: says USB, writes every record once and in order, exit 0",
    async () => {
      const deno = shellQuote(hostDeno());
      const { result: r, ftdi } = await runWithFtdi(
        `exec ${deno} run --no-lock ${RUN_FLAGS} examples/demo.ts --duration=1000`,
      );
      const diag = diagnostics(r);
      assert.equal(r.code, 0, diag);
      const out = r.stdout.split("\n");
      assert.match(out[0], /^tbq demo: device = USB 0403:6001 \(/, diag);
      assert.match(
        r.stdout,
        /^VERIFIED \(no read-back\): all [\d,]+ records \(\d+ bytes\) were written to the USB device 0403:6001 with status Success/m,
        diag,
      );
      const size = Number(r.stdout.match(/; \d+ buffers of (\d+) B;/)?.[1]);
      assert.ok(size > 0, diag);
      const sent = [...r.stdout.matchAll(/^ {2}P(\d) (?:main {2}|Worker) \S+ +([\d,]+) records /gm)]
        .map((m) => [Number(m[1]), Number(m[2].replaceAll(",", ""))]);
      assert.deepEqual(sent.map(([p]) => p), [0, 1, 2, 3], diag);

      const records = checkDemoRecords(ftdi, sent.map(([, n]) => n), size);
      console.log(
        `FTDI demo: boot ${ms(r.bootMs)}, guest total ${
          ms(r.totalMs)
        }; chardev ${ftdi.length} B = ` +
          `${records} records (${sent.map(([p, n]) => `P${p} ${n}`).join(", ")}), each once, ` +
          `intact, in per-producer order`,
      );
    },
  );
}
