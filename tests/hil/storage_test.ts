/**
 * HIL: 16 MiB of pseudo-random data go through a ThreadedBufferQueue (producers: the main thread
 * and a Worker) as SCSI WRITE (10) commands to QEMU's usb-storage at 4 regions of a 64 MiB disk,
 * are read back with READ (10) in the guest, and the HOST then checks the disk image's bytes at
 * those offsets (the data derives from a seed both sides share). The same guest run measures
 * storage MiB/s through the queue against a direct BotDevice loop (same 64 KiB commands) and
 * prints both (no assertion on speed), and checks real CHECK CONDITION and Reset Recovery.
 *
 * The same file is the guest-side program (TBQ_HIL_GUEST=1).
 *
 * Run: deno test -A tests/hil/storage_test.ts   (as root; prepares the rig first)
 */
import assert from "node:assert/strict";
import {
  CHUNK_BLOCKS,
  makeJobs,
  mibPerSecond,
  openDirect,
  readBack,
  writeDirect,
  writeThroughQueue,
} from "../../examples/mass_storage_writer.ts";
import { type ScsiError, SenseKey, StorageStatus } from "../../examples/usb_storage/bot.ts";
import { firstDifference, regionPattern } from "../../examples/usb_storage/pattern.ts";
import { hilTest } from "./gate.ts";
import { bootGuest, hostDeno } from "./rig.ts";

const THIS_FILE = new URL(import.meta.url).pathname;
const DEVICE = { vendorId: 0x46f4, productId: 0x0001 };
const DISK_MIB = 64;
const DATA_MIB = 16;
const REGIONS = 4;

/** What the guest reports on its last stdout line. */
interface GuestReport {
  blockCount: number;
  blockSize: number;
  lbas: number[];
  queue: {
    bytes: number;
    ms: number;
    mibs: number;
    statuses: Record<string, number>[];
    failures: number;
    stats: Record<string, number>;
    handler: Record<string, number>;
  };
  readBack: { bytes: number; ms: number; mibs: number; mismatches: string[] };
  direct: { bytes: number; ms: number; mibs: number };
  /** The same writes again through a fresh queue, produced by the main thread alone. */
  queueMainOnly: { ms: number; mibs: number; failures: number; deviceMs: number };
  beyondEnd: { name: string; senseKey: number; asc: number; ascq: number; status: number };
  resetRecovery: { badCbw: string; afterReset: string };
}

// ---------------------------------------------------------------- guest half

async function guestMain(): Promise<void> {
  const seed = Number(Deno.env.get("TBQ_STORAGE_SEED"));
  let blockCount: number, blockSize: number;
  {
    using direct = openDirect(DEVICE);
    ({ blockCount, blockSize } = direct.bot.readCapacity());
  }
  const jobs = makeJobs(seed, REGIONS, blockCount, DATA_MIB);
  console.log(`guest: ${blockCount} blocks; writing ${DATA_MIB} MiB through the queue`);

  const queued = await writeThroughQueue({ ...DEVICE, jobs, workers: 1, timeoutMs: 60_000 });

  using direct = openDirect(DEVICE);
  const back = readBack(direct.bot, jobs);
  const directMs = writeDirect(direct.bot, jobs); // same data at the same LBAs, no queue

  // A real CHECK CONDITION: READ (10) past the end of the medium.
  let beyondEnd: GuestReport["beyondEnd"] = {
    name: "none",
    senseKey: -1,
    asc: -1,
    ascq: -1,
    status: 0,
  };
  try {
    direct.bot.read10(blockCount - 1, 2);
  } catch (error) {
    const e = error as ScsiError;
    beyondEnd = { name: e.name, senseKey: e.senseKey, asc: e.asc, ascq: e.ascq, status: e.status };
  }

  // A 32-byte CBW stalls the device (rig README); Reset Recovery must bring it back.
  const dev = direct.bot.device;
  let badCbw = "accepted";
  try {
    const cbw = new Uint8Array(32);
    cbw.set([0x55, 0x53, 0x42, 0x43]);
    dev.transferOut(0x02, cbw, { timeout: 2000 });
  } catch (error) {
    badCbw = (error as Error).name;
  }
  let afterReset = "ok";
  try {
    direct.bot.resetRecovery();
    direct.bot.testUnitReady();
    if (firstDifference(direct.bot.read10(jobs[0].lba, 1), jobs[0].data.subarray(0, 512)) >= 0) {
      afterReset = "read back differs";
    }
  } catch (error) {
    afterReset = String(error);
  }

  direct.close();
  const again = await writeThroughQueue({ ...DEVICE, jobs, workers: 0, timeoutMs: 60_000 });

  const bytes = jobs.reduce((n, j) => n + j.data.length, 0);
  const report: GuestReport = {
    blockCount,
    blockSize,
    lbas: jobs.map((j) => j.lba),
    queue: {
      bytes: queued.bytes,
      ms: Math.round(queued.ms),
      mibs: mibPerSecond(queued.bytes, queued.ms),
      statuses: queued.producers.map((p) => p.statuses),
      failures: queued.producers.reduce((n, p) => n + p.failures.length, 0),
      stats: { ...queued.stats },
      handler: { ...queued.report },
    },
    readBack: {
      bytes: back.bytes,
      ms: Math.round(back.ms),
      mibs: mibPerSecond(back.bytes, back.ms),
      mismatches: back.mismatches,
    },
    direct: { bytes, ms: Math.round(directMs), mibs: mibPerSecond(bytes, directMs) },
    queueMainOnly: {
      ms: Math.round(again.ms),
      mibs: mibPerSecond(again.bytes, again.ms),
      failures: again.producers.reduce((n, p) => n + p.failures.length, 0),
      deviceMs: Math.round(again.report.writeMicros / 1000),
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
        const seed = (Math.random() * 0x7fffffff) | 0;
        const t0 = performance.now();
        let r;
        {
          await using guest = await bootGuest({
            command: [hostDeno(), "run", "-A", "--no-lock", "--unstable-worker-options", THIS_FILE],
            env: { TBQ_STORAGE_SEED: String(seed) },
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
        assert.equal(rep.queue.failures, 0, JSON.stringify(rep.queue.statuses));
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
        assert.equal(rep.readBack.bytes, DATA_MIB * 1048576);
        assert.deepEqual(rep.beyondEnd, {
          name: "ScsiError",
          senseKey: SenseKey.IllegalRequest,
          asc: 0x21,
          ascq: 0,
          status: StorageStatus.NonexistentSector,
        });
        assert.deepEqual(rep.resetRecovery, { badCbw: "LIBUSB_ERROR_PIPE", afterReset: "ok" });

        // The host's own look at the image: every region holds the seed's bytes.
        const image = await Deno.open(disk, { read: true });
        try {
          const jobs = makeJobs(seed, REGIONS, rep.blockCount, DATA_MIB);
          assert.deepEqual(jobs.map((j) => j.lba), rep.lbas);
          for (const [i, job] of jobs.entries()) {
            const bytes = new Uint8Array(job.data.length);
            await image.seek(job.lba * 512, Deno.SeekMode.Start);
            let got = 0;
            while (got < bytes.length) {
              const n = await image.read(bytes.subarray(got));
              if (n === null) break;
              got += n;
            }
            assert.equal(got, bytes.length, `short read of region ${i}`);
            assert.equal(
              firstDifference(bytes, regionPattern(seed, i, bytes.length)),
              -1,
              `region ${i} at LBA ${job.lba} differs on the host`,
            );
          }
          // The block just before the first region was never written.
          const before = new Uint8Array(512);
          await image.seek((jobs[0].lba - 1) * 512, Deno.SeekMode.Start);
          assert.equal(await image.read(before), 512);
          assert.ok(before.every((b) => b === 0), "the block before region 0 was written");
        } finally {
          image.close();
        }

        console.log(
          `HIL storage (seed ${seed}): queue ${rep.queue.mibs} MiB/s (${rep.queue.bytes} B in ` +
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
    "examples/mass_storage_writer.ts runs in the guest and verifies what it wrote",
    async () => {
      const example = new URL("../../examples/mass_storage_writer.ts", import.meta.url).pathname;
      const dir = await Deno.makeTempDir({ prefix: "tbq-storage-" });
      try {
        let r;
        {
          await using guest = await bootGuest({
            // The documented command, with the permissions it documents (no -A).
            command: [
              hostDeno(),
              "run",
              "--no-lock",
              "--allow-read",
              "--allow-ffi",
              "--unstable-worker-options",
              example,
              "--mib=4",
              "--seed=5",
            ],
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
