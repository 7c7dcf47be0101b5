/**
 * HIL: 16 MiB of random data go through a ThreadedBufferQueue (producers: the main thread and a
 * Worker) as SCSI WRITE (10) commands to QEMU's usb-storage at 4 regions of a 64 MiB disk: the
 * guest runs `examples/mass_storage/writer.ts --json` (which reads every region back with READ (10)
 * and verifies it), and the HOST then checks the disk image's bytes at those offsets against the
 * SHA-256 the writer reports. The same guest run measures storage MiB/s through the queue (main
 * thread alone, then main + Worker) against a direct `BotDevice` loop (same 64 KiB commands) and
 * prints them (no assertion on speed: one cold queue run in a fresh process against a warm direct
 * loop, on one guest CPU, is biased against the queue; the speed measure is
 * `bench/rig_storage_bench.ts`), and checks real CHECK CONDITION and Reset Recovery through
 * `storage/`.
 *
 * The same file is the guest-side program (TBQ_HIL_GUEST=1).
 *
 * Run: deno test -A tests/hil/storage_test.ts   (as root; prepares the rig first)
 */
import assert from "node:assert/strict";
import { libusbPath } from "../../mod.ts";
import { openStorage, type ScsiError, SenseKey, StorageStatus } from "../../storage/mod.ts";
import { hilTest } from "./gate.ts";
import { bootGuest, hostDeno } from "./rig.ts";

const THIS_FILE = new URL(import.meta.url).pathname;
/** Run in the guest by path (never imported: tests do not import examples/). */
const EXAMPLE = new URL("../../examples/mass_storage/writer.ts", import.meta.url).pathname;
/** The example's deno flags, as its documentation gives them (no -A). */
const EXAMPLE_FLAGS = [
  "run",
  "--no-lock",
  "--allow-read",
  "--allow-ffi",
  "--unstable-worker-options",
];
const DEVICE = { vendorId: 0x46f4, productId: 0x0001 };
const DISK_MIB = 64;
const DATA_MIB = 16;
const REGIONS = 4;
/** Blocks per queue item in the example (64 KiB). */
const CHUNK_BLOCKS = 128;

/** The example's `RESULT` line. */
interface ExampleResult {
  blockCount: number;
  regions: { lba: number; blocks: number; sha256: string }[];
  queue: {
    bytes: number;
    ms: number;
    statuses: Record<string, number>[];
    failures: unknown[];
    stats: Record<string, number>;
    handler: Record<string, number>;
  };
  readBack: { bytes: number; ms: number; mismatches: string[] };
}

/** What the guest reports on its last stdout line. */
interface GuestReport {
  blockCount: number;
  blockSize: number;
  regions: ExampleResult["regions"];
  queue: ExampleResult["queue"] & { mibs: number };
  readBack: ExampleResult["readBack"] & { mibs: number };
  direct: { bytes: number; ms: number; mibs: number; mismatches: string[] };
  /** The same writes through a fresh queue, produced by the main thread alone. */
  queueMainOnly: { ms: number; mibs: number; failures: number; deviceMs: number };
  beyondEnd: { name: string; senseKey: number; asc: number; ascq: number; status: number };
  resetRecovery: { badCbw: string; afterReset: string };
}

const mibPerSecond = (bytes: number, ms: number) =>
  Math.round((bytes / 1048576) / (ms / 1000) * 10) / 10;

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---------------------------------------------------------------- guest half

/** Runs the example in this guest with `--json` and returns its RESULT. */
async function runExample(workers: number): Promise<ExampleResult> {
  const args = [EXAMPLE, `--mib=${DATA_MIB}`, `--regions=${REGIONS}`, `--workers=${workers}`];
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...EXAMPLE_FLAGS, ...args, "--json"],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const line = text.split("\n").find((l) => l.startsWith("RESULT "));
  if (!out.success || !line) throw new Error(`the example failed (${out.code}):\n${text}`);
  return JSON.parse(line.slice("RESULT ".length));
}

async function guestMain(): Promise<void> {
  console.log(`guest: ${DATA_MIB} MiB through the queue, main thread alone, then with a Worker`);
  const again = await runExample(0);
  const queued = await runExample(1); // last: its data is what the host checks

  using disk = openStorage({ ...DEVICE, libusbPath: libusbPath() });
  const { blockCount, blockSize } = disk.capacity;
  // Direct: read each region back, check it against the example's hash, write the same bytes.
  const mismatches: string[] = [];
  const saved: Uint8Array[] = [];
  let directMs = 0;
  for (const region of queued.regions) {
    const data = disk.bot.readBlocks(region.lba, region.blocks, CHUNK_BLOCKS);
    if (await sha256(data) !== region.sha256) mismatches.push(`region at LBA ${region.lba}`);
    saved.push(data);
    const t0 = performance.now();
    disk.bot.writeBlocks(region.lba, data, CHUNK_BLOCKS);
    directMs += performance.now() - t0;
  }

  // A real CHECK CONDITION: READ (10) past the end of the medium.
  let beyondEnd: GuestReport["beyondEnd"] = {
    name: "none",
    senseKey: -1,
    asc: -1,
    ascq: -1,
    status: 0,
  };
  try {
    disk.bot.read10(blockCount - 1, 2);
  } catch (error) {
    const e = error as ScsiError;
    beyondEnd = { name: e.name, senseKey: e.senseKey, asc: e.asc, ascq: e.ascq, status: e.status };
  }

  // A 32-byte CBW stalls the device (rig README); Reset Recovery must bring it back.
  let badCbw = "accepted";
  try {
    const cbw = new Uint8Array(32);
    cbw.set([0x55, 0x53, 0x42, 0x43]);
    disk.bot.device.transferOut(0x02, cbw, { timeout: 2000 });
  } catch (error) {
    badCbw = (error as Error).name;
  }
  let afterReset = "ok";
  try {
    disk.bot.resetRecovery();
    disk.bot.testUnitReady();
    const first = disk.bot.read10(queued.regions[0].lba, 1);
    if (first.some((b, i) => b !== saved[0][i])) afterReset = "read back differs";
  } catch (error) {
    afterReset = String(error);
  }

  const bytes = queued.queue.bytes;
  const report: GuestReport = {
    blockCount,
    blockSize,
    regions: queued.regions,
    queue: {
      ...queued.queue,
      ms: Math.round(queued.queue.ms),
      mibs: mibPerSecond(bytes, queued.queue.ms),
    },
    readBack: { ...queued.readBack, mibs: mibPerSecond(queued.readBack.bytes, queued.readBack.ms) },
    direct: { bytes, ms: Math.round(directMs), mibs: mibPerSecond(bytes, directMs), mismatches },
    queueMainOnly: {
      ms: Math.round(again.queue.ms),
      mibs: mibPerSecond(again.queue.bytes, again.queue.ms),
      failures: again.queue.failures.length,
      deviceMs: Math.round(again.queue.handler.writeMicros / 1000),
    },
    beyondEnd,
    resetRecovery: { badCbw, afterReset },
  };
  console.log(`REPORT ${JSON.stringify(report)}`);
}

// ----------------------------------------------------------------- host half

if (Deno.env.get("TBQ_HIL_GUEST") === "1") {
  await guestMain();
} else {
  hilTest(
    "storage: 16 MiB through the queue as WRITE (10), verified in the guest and on the host",
    async () => {
      const dir = await Deno.makeTempDir({ prefix: "tbq-storage-" });
      try {
        const disk = `${dir}/disk.img`;
        const t0 = performance.now();
        let r;
        {
          await using guest = await bootGuest({
            command: [hostDeno(), "run", "-A", "--no-lock", "--unstable-worker-options", THIS_FILE],
            disk: { path: disk, sizeMiB: DISK_MIB },
            serial: false,
            timeoutMs: 80_000,
          });
          r = await guest.wait();
        }
        const diag =
          `code ${r.code}, timedOut ${r.timedOut}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}` +
          `\nconsole tail:\n${r.console.slice(-2000)}`;
        assert.equal(r.code, 0, diag);
        const line = r.stdout.split("\n").find((l) => l.startsWith("REPORT "));
        assert.ok(line, `no REPORT line\n${diag}`);
        const rep = JSON.parse(line.slice("REPORT ".length)) as GuestReport;

        assert.equal(rep.blockSize, 512);
        assert.equal(rep.blockCount, DISK_MIB * 2048);
        assert.equal(rep.queue.bytes, DATA_MIB * 1048576);
        assert.equal(rep.queue.failures.length, 0, JSON.stringify(rep.queue.statuses));
        const items = DATA_MIB * 2048 / CHUNK_BLOCKS;
        assert.equal(rep.queue.statuses.length, 2, "main thread + one producer Worker");
        assert.equal(
          rep.queue.statuses.reduce((n, s) => n + (s.Success ?? 0), 0),
          items,
          JSON.stringify(rep.queue.statuses),
        );
        assert.deepEqual(rep.queue.stats, {
          free: 8,
          queued: 0,
          running: 0,
          pending: 0,
          held: 0,
          returning: 0,
          completed: items,
          cancelled: 0,
          failed: 0,
        });
        assert.equal(rep.queue.handler.pre, 1);
        assert.equal(rep.queue.handler.post, 1);
        assert.equal(rep.queue.handler.writes, items);
        assert.equal(rep.queueMainOnly.failures, 0);
        assert.deepEqual(rep.readBack.mismatches, []);
        assert.deepEqual(rep.direct.mismatches, []);
        assert.equal(rep.readBack.bytes, DATA_MIB * 1048576);
        assert.deepEqual(rep.beyondEnd, {
          name: "ScsiError",
          senseKey: SenseKey.IllegalRequest,
          asc: 0x21,
          ascq: 0,
          status: StorageStatus.NonexistentSector,
        });
        assert.deepEqual(rep.resetRecovery, { badCbw: "LIBUSB_ERROR_PIPE", afterReset: "ok" });

        // The host's own look at the image: every region holds the bytes the writer hashed.
        assert.equal(rep.regions.length, REGIONS);
        const image = await Deno.open(disk, { read: true });
        try {
          for (const [i, region] of rep.regions.entries()) {
            const bytes = new Uint8Array(region.blocks * 512);
            await image.seek(region.lba * 512, Deno.SeekMode.Start);
            let got = 0;
            while (got < bytes.length) {
              const n = await image.read(bytes.subarray(got));
              if (n === null) break;
              got += n;
            }
            assert.equal(got, bytes.length, `short read of region ${i}`);
            assert.equal(
              await sha256(bytes),
              region.sha256,
              `region ${i} at LBA ${region.lba} differs on the host`,
            );
          }
          // The block just before the first region was never written.
          const before = new Uint8Array(512);
          await image.seek((rep.regions[0].lba - 1) * 512, Deno.SeekMode.Start);
          assert.equal(await image.read(before), 512);
          assert.ok(before.every((b) => b === 0), "the block before region 0 was written");
        } finally {
          image.close();
        }

        console.log(
          `HIL storage: queue ${rep.queue.mibs} MiB/s (${rep.queue.bytes} B in ` +
            `${rep.queue.ms} ms, ${Math.round(rep.queue.handler.writeMicros / 1000)} ms of it in ` +
            `WRITE (10) commands; main + 1 Worker producer, 64 KiB commands); queue with the main ` +
            `thread producing alone ${rep.queueMainOnly.mibs} MiB/s (${rep.queueMainOnly.ms} ms, ` +
            `${rep.queueMainOnly.deviceMs} ms in commands); direct BotDevice loop ` +
            `${rep.direct.mibs} MiB/s (${rep.direct.ms} ms); ` +
            `read back ${rep.readBack.mibs} MiB/s; guest started ${r.bootMs?.toFixed(0)} ms, ` +
            `QEMU exit ${r.totalMs.toFixed(0)} ms, test ${(performance.now() - t0).toFixed(0)} ms`,
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  );

  hilTest(
    "examples/mass_storage/writer.ts runs in the guest and verifies what it wrote",
    async () => {
      const dir = await Deno.makeTempDir({ prefix: "tbq-storage-" });
      try {
        let r;
        {
          await using guest = await bootGuest({
            // The documented command, with the permissions it documents (no -A).
            command: [hostDeno(), ...EXAMPLE_FLAGS, EXAMPLE, "--mib=4"],
            disk: { path: `${dir}/disk.img`, sizeMiB: 32 },
            serial: false,
            timeoutMs: 60_000,
          });
          r = await guest.wait();
        }
        const diag = `code ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
        assert.equal(r.code, 0, diag);
        assert.match(r.stdout, /queue: [\d.]+ MiB\/s write/, diag);
        assert.match(r.stdout, /verified: every byte matches/, diag);
        console.log(r.stdout.trim().split("\n").filter((l) => /MiB\/s/.test(l)).join("\n"));
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}
