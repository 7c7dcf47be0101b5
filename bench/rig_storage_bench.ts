/**
 * Storage through the queue against a direct loop, on the QEMU rig (issue 10, "Speed": "storage
 * through the queue >= 0.5 of the direct loop", measured with both CPUs visible, a stable clock,
 * queue and direct loop alternated over several rounds, medians).
 *
 *   flock /tmp/tbq-bench.lock flock /tmp/tbq-qemu.lock \
 *     deno run -A --unstable-worker-options bench/rig_storage_bench.ts
 *
 * About a minute on a quiet machine (boot ~7 s included); more when others load the host.
 *
 * The host boots the rig guest (tests/hil/rig.ts) with `cpus: 2` (the rig then keeps ACPI, so the
 * guest sees both CPUs; its clock is the TSC, `tsc_early_khz` from the host) and a scratch disk
 * image of its own, and runs bench/rig_storage_guest.ts there. The guest, on QEMU's usb-storage
 * (46f4:0001, super speed, 512-byte blocks), writes `--mib` MiB per measurement as 64 KiB
 * WRITE (10) commands, each arm to its own region:
 * - direct: a `BotDevice` loop on the main thread (`openStorage()`, then `bot.writeBlocks()` of a
 *   plain Uint8Array);
 * - queue: a ThreadedBufferQueue (8 × 64 KiB buffers) with the ready-made `massStorageHandlers`,
 *   the main thread producing with `writeRegions()` (acquire, copy 64 KiB in, set the LBA,
 *   `enqueueAndWait`), timed from the first acquire until every item completed;
 * - with `--producers=2` (the default) also the main thread plus one producer Worker (attached
 *   through `queue.share()`), half each, started together through a shared word.
 * One owner of the device at a time: the queue, created once, is `start()`ed (its `pre` opens the
 * device in the queue's Worker) and `stop()`ped (`post` closes it) around each queue measurement,
 * and the direct loop opens and closes the device around its own; none of that is timed.
 * `--warmup` rounds (2) are not counted, then `--rounds` rounds (7), each direct, queue(, queue2),
 * timed with `performance.now()` in the guest. The table shows each arm's median MiB/s with the
 * rounds' range in brackets, and the ratio as the median of the per-round ratios (queue ÷ that
 * round's direct).
 *
 * Thread placement (`--placement=pinned`, the default): the guest's xHCI interrupts all land on
 * one CPU (CPU 0), and a thread waiting for a completion on the other CPU is markedly slower (the
 * direct loop measured 23–36 MiB/s pinned there against 42–92 on CPU 0, same boot), so where the
 * scheduler happens to put a thread otherwise decides a round. Pinned (sched_setaffinity through
 * libc in the guest): the thread that issues the commands (the direct loop's main thread, the
 * queue's Worker) sits on the interrupt CPU, producers (main thread in the queue arms, the producer
 * Worker) on the other. `--placement=free` leaves it to the scheduler; stderr shows the CPUs.
 * `--placement=one` puts every thread on the interrupt CPU (the other CPU idles): a diagnosis of
 * how much the emulation suffers when both guest CPUs are busy on a 2-core host.
 *
 * Data: random, with a per-round stamp in every 64 KiB chunk; after each measurement (queue arms:
 * in the next session the main thread opens) the guest reads back each chunk's first block and
 * checks the stamp, and at the end it reads every region back whole and compares it byte for
 * byte, so a write that did not land fails the run.
 *
 * Below the table: per item, what the direct loop takes, what the queue takes, how much of that
 * the handler spent inside WRITE (10) (its report's `writeMicros`) and the rest (the Worker loop,
 * hand-offs and waiting for the producer, outside the commands); with `--profile`, how often the
 * producer's `acquire()` found no free buffer. The host's CPU use while the guest ran (QEMU's,
 * everyone else's) says whether other work competed with the emulation. Per-round figures go to
 * stderr as they come.
 *
 * Options: `--mib=16`, `--rounds=7`, `--warmup=2`, `--producers=2|1`, `--placement=pinned|one|free`,
 * `--profile`, `--cpus=2` (guest CPUs; anything but 2 does not measure what the target asks).
 *
 * Exit code 2 when the rig is not set up on this machine (run `bash tests/hil/prepare.sh` as
 * root, or tools/setup.sh) or an option is wrong; 1 when the guest run fails.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { bootGuest, hostDeno, loadManifest } from "../tests/hil/rig.ts";
import { type Arm, BENCH_OPTIONS, type Measurement, type Report } from "./rig_storage_guest.ts";

const GUEST = new URL("./rig_storage_guest.ts", import.meta.url).pathname;
const TARGET = 0.5;

const { values } = parseArgs({
  args: Deno.args,
  options: { ...BENCH_OPTIONS, cpus: { type: "string", default: "2" } },
});
if (!["pinned", "one", "free"].includes(values.placement)) {
  console.error("--placement is pinned, one or free");
  Deno.exit(2);
}
const CPUS = Number(values.cpus);
if (!Number.isInteger(CPUS) || CPUS < 1) {
  console.error("--cpus needs a positive integer");
  Deno.exit(2);
}
const MIB = Number(values.mib);
const ROUNDS = Number(values.rounds);
const PRODUCERS = Number(values.producers);
const WARMUP = Number(values.warmup);
if (!Number.isInteger(WARMUP) || WARMUP < 0) {
  console.error("--warmup needs an integer >= 0");
  Deno.exit(2);
}
if (!Number.isInteger(MIB) || MIB < 1 || !Number.isInteger(ROUNDS) || ROUNDS < 1) {
  console.error("--mib and --rounds need positive integers");
  Deno.exit(2);
}
if (PRODUCERS !== 1 && PRODUCERS !== 2) {
  console.error("--producers is 1 or 2");
  Deno.exit(2);
}

/** Why the rig cannot run here (as tests/hil/gate.ts decides, without installing anything). */
async function rigUnavailable(): Promise<string | undefined> {
  const forced = Deno.env.get("TBQ_HIL_UNAVAILABLE");
  if (forced) return `TBQ_HIL_UNAVAILABLE says: ${forced}`;
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    return `the rig needs x86-64 Linux, not ${Deno.build.os}/${Deno.build.arch}`;
  }
  try {
    await loadManifest();
  } catch (error) {
    return (error as Error).message;
  }
  try {
    const out = await new Deno.Command("qemu-system-x86_64", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    if (!out.success) return "qemu-system-x86_64 --version failed";
  } catch {
    return "qemu-system-x86_64 is not installed";
  }
  return undefined;
}

/** Host CPU ticks: busy and steal from /proc/stat, and a process's utime + stime. */
interface CpuSample {
  busy: number;
  steal: number;
  qemu: number;
  at: number;
}

function sampleCpu(qemuPid: number | undefined): CpuSample {
  const fields = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1)
    .map(Number);
  // user nice system idle iowait irq softirq steal …
  const busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6];
  let qemu = 0;
  if (qemuPid !== undefined) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${qemuPid}/stat`);
      const after = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      qemu = Number(after[11]) + Number(after[12]); // utime, stime
    } catch { /* gone */ }
  }
  return { busy, steal: fields[7] ?? 0, qemu, at: performance.now() };
}

/** The QEMU process whose command line names `runDir`. */
function findQemu(runDir: string): number | undefined {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmd = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`);
      if (cmd.split("\0")[0].includes("qemu-system") && cmd.includes(runDir)) {
        return Number(entry.name);
      }
    } catch { /* gone */ }
  }
  return undefined;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function main(): Promise<void> {
  const why = await rigUnavailable();
  if (why) {
    console.error(
      `rig_storage_bench: the QEMU rig is not set up here: ${why}\n` +
        "  set it up with 'bash tests/hil/prepare.sh' as root (or tools/setup.sh), then rerun.",
    );
    Deno.exit(2);
  }

  const t0 = performance.now();
  const dir = await Deno.makeTempDir({ prefix: "tbq-rig-bench-" });
  const arms = PRODUCERS === 2 ? 3 : 2;
  const diskMiB = 2 + arms * MIB + 1;
  let result;
  let hostCpu = "host CPU: not measured";
  let othersPct = 0;
  try {
    await using guest = await bootGuest({
      command: [
        hostDeno(),
        "run",
        "-A",
        "--no-lock",
        "--unstable-worker-options",
        GUEST,
        `--mib=${MIB}`,
        `--rounds=${ROUNDS}`,
        `--warmup=${WARMUP}`,
        `--producers=${PRODUCERS}`,
        `--placement=${values.placement}`,
        ...(values.profile ? ["--profile"] : []),
      ],
      cpus: CPUS,
      disk: { path: `${dir}/disk.img`, sizeMiB: diskMiB },
      serial: false,
      timeoutMs: 90_000 + (ROUNDS + WARMUP) * arms * MIB * 1500,
    });
    // Pass the guest's stderr (per-round figures) on as it is written.
    const stderrPath = `${guest.runDir}/stderr`;
    let shown = 0;
    const pump = async () => {
      try {
        const text = await Deno.readTextFile(stderrPath);
        if (text.length > shown) {
          await Deno.stderr.write(new TextEncoder().encode(text.slice(shown)));
          shown = text.length;
        }
      } catch { /* not there yet */ }
    };
    const timer = setInterval(pump, 500);
    try {
      // Host CPU from the command's start to its REPORT: QEMU's share and everyone else's.
      const qemuPid = findQemu(guest.runDir);
      await guest.commandStarted;
      const first = sampleCpu(qemuPid);
      const limit = 60_000 + (ROUNDS + WARMUP) * arms * MIB * 1500;
      const last = await guest.waitForStdout("REPORT ", limit).then(
        () => sampleCpu(qemuPid),
        () => undefined,
      );
      if (last) {
        const ticks = (last.at - first.at) / 10; // USER_HZ 100
        const pct = (n: number) => `${(100 * n / ticks).toFixed(0)}%`;
        const others = Math.max(0, last.busy - first.busy - (last.qemu - first.qemu));
        othersPct = 100 * others / ticks;
        hostCpu =
          `host CPU while the guest ran (of one core): QEMU ${pct(last.qemu - first.qemu)}, ` +
          `everything else ${pct(others)}, ` +
          `steal ${pct(last.steal - first.steal)}; host has ${navigator.hardwareConcurrency} CPUs`;
      }
      result = await guest.wait();
    } finally {
      clearInterval(timer);
    }
    const rest = result.stderr.slice(shown);
    if (rest) await Deno.stderr.write(new TextEncoder().encode(rest));
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const totalMs = performance.now() - t0;

  const line = result.stdout.split("\n").find((l) => l.startsWith("REPORT "));
  if (result.code !== 0 || !line) {
    console.error(
      `rig_storage_bench: the guest run failed (code ${result.code}, timed out ` +
        `${result.timedOut})\nstdout:\n${result.stdout}\nconsole tail:\n${
          result.console.slice(-2000)
        }`,
    );
    Deno.exit(1);
  }
  const report = JSON.parse(line.slice("REPORT ".length)) as Report;
  const counted = (arm: Arm): Measurement[] => report.results[arm].slice(report.warmup);
  const mibs = (arm: Arm) => counted(arm).map((m) => m.mibs);
  const fmt = (xs: number[]) =>
    `${median(xs).toFixed(1)} [${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)}]`;
  const ratios = (arm: Arm) => counted(arm).map((m, i) => m.mibs / counted("direct")[i].mibs);

  const { env } = report;
  console.log(
    `== rig storage bench: guest ${env.cpus} CPU${env.cpus === 1 ? "" : "s"} seen, ` +
      `clocksource ${env.clocksource}, xHCI interrupts on CPU ${env.irqCpu}, threads ` +
      (env.placement === "pinned"
        ? `pinned (device commands on CPU ${env.irqCpu}, producers on the other)`
        : env.placement === "one"
        ? `all pinned to CPU ${env.irqCpu} (--placement=one, a diagnosis)`
        : "placed by the guest's scheduler") +
      `; ${report.mib} MiB per measurement as 64 KiB WRITE (10), ` +
      `${report.rounds} rounds after ${report.warmup} warm-up, alternated`,
  );
  console.log(
    `guest deno ${env.deno}, kernel ${env.kernel}; host load average ${
      Deno.loadavg().map((l) => l.toFixed(2)).join(" ")
    }; boot ${((result.bootMs ?? 0) / 1000).toFixed(1)} s, whole bench ${
      (totalMs / 1000).toFixed(1)
    } s`,
  );
  console.log(hostCpu);
  if (othersPct > 20) {
    console.log(
      `WARNING: other processes used ${
        othersPct.toFixed(0)
      }% of a host core meanwhile; the queue ` +
        "arms keep both guest CPUs (two QEMU threads) busy and suffer more from that than the " +
        "direct loop, so the ratios read low: rerun on a quiet machine",
    );
  }
  if (env.cpus < 2 || env.clocksource !== "tsc") {
    console.log(
      `WARNING: the guest should see 2 CPUs and run on tsc (saw ${env.cpus}, ` +
        `${env.clocksource}): these figures do not measure what the target asks`,
    );
  }

  const header = [
    "arm",
    "MiB/s median [range]",
    "ratio to direct",
    "rounds min–max",
    "target",
    "met?",
  ];
  const rows: string[][] = [["direct BotDevice loop", fmt(mibs("direct")), "-", "-", "-", "-"]];
  const queueRow = (arm: Arm, label: string, target: boolean) => {
    const r = ratios(arm);
    const ratio = median(r);
    rows.push([
      label,
      fmt(mibs(arm)),
      ratio.toFixed(2),
      `${Math.min(...r).toFixed(2)}–${Math.max(...r).toFixed(2)}`,
      target ? `>= ${TARGET}` : "-",
      target ? (ratio >= TARGET ? "yes" : "NO") : "-",
    ]);
  };
  queueRow("queue", "queue, 1 producer (main thread)", true);
  if (report.arms.includes("queue2")) queueRow("queue2", "queue, main + 1 producer Worker", false);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmtLine = (cells: string[]) =>
    "| " + cells.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join(" | ") +
    " |";
  console.log();
  console.log(fmtLine(header));
  console.log(fmtLine(widths.map((w) => "-".repeat(w))));
  for (const r of rows) console.log(fmtLine(r));

  // Per item, over the counted rounds.
  const perItem = (arm: Arm) => {
    const ms = counted(arm).reduce((n, m) => n + m.ms, 0);
    const items = counted(arm).reduce((n, m) => n + m.items, 0);
    const cmd = counted(arm).reduce((n, m) => n + (m.commandUs ?? 0), 0);
    return { us: ms * 1000 / items, cmdUs: cmd / items };
  };
  const direct = perItem("direct");
  console.log();
  console.log(`per 64 KiB item (all counted rounds): direct loop ${direct.us.toFixed(0)} µs`);
  for (const arm of report.arms.slice(1)) {
    const q = perItem(arm);
    console.log(
      `  ${arm}: ${q.us.toFixed(0)} µs, of which ${q.cmdUs.toFixed(0)} µs inside WRITE (10) in ` +
        `the queue's Worker and ${(q.us - q.cmdUs).toFixed(0)} µs outside the commands ` +
        `(the command itself ${(q.cmdUs / direct.us).toFixed(2)}× the direct loop's item)`,
    );
  }
  const profiled = counted("queue").filter((m) => m.acquire).map((m) => m.acquire!);
  if (profiled.length > 0) {
    const sum = (f: (a: typeof profiled[number]) => number) =>
      profiled.reduce((n, a) => n + f(a), 0);
    const queueMs = counted("queue").reduce((n, m) => n + m.ms, 0);
    console.log(
      `  queue producer (--profile): acquire found no free buffer for ` +
        `${(100 * sum((a) => a.blocked) / sum((a) => a.calls)).toFixed(0)}% of items and ` +
        `awaited one ${(100 * sum((a) => a.ms) / queueMs).toFixed(0)}% of the time; ` +
        `${(sum((a) => a.queuedSum) / sum((a) => a.calls)).toFixed(1)} items queued on average ` +
        `at an acquire (of ${8} buffers)`,
    );
  }
  console.log(
    `verified: ${report.verify.stampChecks} chunk stamps (one per item and round), ` +
      `${report.verify.bytesCompared / 1048576} MiB read back and compared: ` +
      (report.verify.mismatches.length === 0 ? "every byte matches" : "MISMATCH"),
  );
}

if (import.meta.main) await main();
