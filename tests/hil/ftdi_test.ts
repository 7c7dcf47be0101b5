/**
 * FTDI hardware-in-the-loop tests (QEMU's usb-serial 0403:6001, bulk OUT 0x02 → the host
 * chardev, which the rig keeps in `<runDir>/ftdi-out.bin`):
 *
 * 1. `examples/ftdi_logger/logger.ts` runs in the guest: three producers (main thread + two attached
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
import { capabilities } from "../capabilities.ts";
import {
  checkDemoRecords,
  checkLoggerLines,
  demoRecord,
  loggerLine,
} from "../fixtures/example_output.ts";
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

if (Deno.env.get("TBQ_HIL_GUEST") === "1") {
  await guestProbe();
} else {
  // The checkers themselves, on made-up chardev contents (no rig needed).
  const lines = (...ids: [number, number][]) => ids.map(([p, seq]) => loggerLine(p, seq)).join("");
  Deno.test("ftdi checker: accepts interleaved producers, counts switches", () => {
    assert.equal(checkLoggerLines(lines([0, 0], [1, 0], [1, 1], [0, 1]), 2, 2), 2);
  });
  const broken: [string, string, RegExp][] = [
    ["a lost line", lines([0, 0], [1, 0], [1, 1]), /lines per producer/],
    ["a duplicated line", lines([0, 0], [0, 0], [1, 0], [0, 1], [1, 1]), /#0 where #1 was due/],
    ["lines out of order", lines([0, 1], [0, 0], [1, 0], [1, 1]), /#1 where #0 was due/],
    [
      "a line split by another",
      loggerLine(0, 0).slice(0, 12) + lines([1, 0]) + loggerLine(0, 0).slice(12) +
      lines([0, 1], [1, 1]),
      /not a logger line/,
    ],
    [
      "a corrupted byte",
      lines([0, 0], [1, 0], [0, 1], [1, 1]).replace("P1 000000 test", "P1 000000 tesT"),
      /not a logger line/,
    ],
  ];
  for (const [what, text, complaint] of broken) {
    Deno.test(`ftdi checker: catches ${what}`, () => {
      assert.throws(() => checkLoggerLines(text, 2, 2), complaint);
    });
  }
  Deno.test("demo record walker: accepts interleaved records, catches loss and corruption", () => {
    const stream = (...ids: [number, number][]) =>
      new Uint8Array(ids.flatMap(([p, seq]) => [...demoRecord(p, seq, 20 + 4 * seq)]));
    const good = stream([0, 0], [1, 0], [0, 1]);
    assert.equal(checkDemoRecords(good, [2, 1]), 3);
    assert.throws(() => checkDemoRecords(good, [2, 2]), /records per producer/);
    const lost = stream([0, 0], [0, 1]);
    assert.throws(() => checkDemoRecords(lost, [2, 1]), /records per producer/);
    const twice = stream([0, 0], [0, 0], [1, 0], [0, 1]);
    assert.throws(() => checkDemoRecords(twice, [2, 1]), /starts no producer/);
    const reordered = stream([0, 1], [0, 0], [1, 0]);
    assert.throws(() => checkDemoRecords(reordered, [2, 1]), /starts no producer/);
    const corrupted = good.with(good.length - 5, good.at(-5)! ^ 1);
    assert.throws(() => checkDemoRecords(corrupted, [2, 1]), /starts no producer/);
  });

  hilTest(
    "ftdi logger: 3 producers, one queue, every line once and in order; least privilege",
    async () => {
      const deno = shellQuote(hostDeno());
      const { result: r, ftdi } = await runWithFtdi([
        `${deno} run --no-lock ${RUN_FLAGS} examples/ftdi_logger/logger.ts --lines=${LINES}`,
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
        `exec ${deno} run --no-lock ${RUN_FLAGS} examples/demo/demo.ts --duration=1000`,
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
      const sent = [...r.stdout.matchAll(/^ {2}P(\d) (?:main {2}|Worker) \S+ +([\d,]+) records /gm)]
        .map((m) => [Number(m[1]), Number(m[2].replaceAll(",", ""))]);
      assert.deepEqual(sent.map(([p]) => p), [0, 1, 2, 3], diag);

      const records = checkDemoRecords(ftdi, sent.map(([, n]) => n));
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
