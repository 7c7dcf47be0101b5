/**
 * HIL: streaming IN with several transfers in flight (`openInStream`, unscoped ffi) against one
 * transfer at a time (`dev.transferIn`, the least-privilege path), in one boot, on both devices:
 *
 * - usb-storage (bulk IN 0x81, super speed, 1024-byte packets): the host fills 8 MiB of the disk
 *   image with seeded random bytes; per round the guest reads them with one SCSI READ (10) (CBW on
 *   0x02, the data stage on 0x81 in 64 KiB transfers, CSW on 0x81), once per way of reading,
 *   every way into the same buffer in place (`transferIn(ep, view)`, `openInStream({ into })`).
 * - the FTDI (bulk IN 0x81, full speed, 64-byte packets, 2 status bytes each): per run the host
 *   writes 256 KiB of seeded random bytes into the chardev once the guest says it is reading;
 *   QEMU's FTDI model passes them on a few hundred bytes per transfer, so the device waits on the
 *   host between transfers: the streaming case (a logger, a sensor, node-usb's `startPoll`).
 *
 * The guest reports a SHA-256 per read and the timings; the host checks every hash against the
 * bytes it wrote, that every way ran, and prints medians of MiB/s (KiB/s for the FTDI), the
 * median of per-round ratios to one at a time, and how busy the guest process was. No assertion
 * on speed: the guest is one TCG vCPU on a shared machine, and numbers swing about 2x.
 *
 * The same file is the guest-side program (TBQ_HIL_GUEST=1).
 *
 * Run: flock /tmp/tbq-qemu.lock env CI=true deno test --allow-all tests/hil/stream_test.ts
 */
import assert from "node:assert/strict";
import { cpuUsage } from "node:process";
import { Libusb, libusbPath, type UsbDevice } from "../../ffi/mod.ts";
import { openInStream } from "../../ffi/stream.ts";
import { BotDevice, CSW_LENGTH, encodeCbw, parseCsw } from "../../storage/bot.ts";
import { read10Cdb } from "../../storage/scsi.ts";
import { hilTest } from "./gate.ts";
import { bootGuest, hostDeno } from "./rig.ts";

const THIS_FILE = new URL(import.meta.url).pathname;
const STORAGE = { vendorId: 0x46f4, productId: 0x0001 };
const FTDI = { vendorId: 0x0403, productId: 0x6001 };
const DISK_MIB = 32;
const DATA_MIB = 8;
/** The region starts 1 MiB in, so a read that ignores the LBA would not match. */
const LBA = 2048;
const BLOCK = 512;
/** Bytes per storage transfer; TBQ_STREAM_CHUNK (host environment) overrides it, to explore. */
const CHUNK = Number(Deno.env.get("TBQ_STREAM_CHUNK") ?? 65536);
/** Storage rounds (each reads the data once per way); TBQ_STREAM_ROUNDS overrides it. */
const ROUNDS = Number(Deno.env.get("TBQ_STREAM_ROUNDS") ?? 4);
const SEED = 0x5eed_1234;
const SERIAL_BYTES = 256 * 1024;
const SERIAL_ROUNDS = 3;
/** Bytes per FTDI transfer: 64 packets of 64 bytes (QEMU fills far fewer per transfer). */
const SERIAL_SIZE = 4096;
const SERIAL_PACKET = 64;
const SERIAL_SEED = 0x5e71_a100;

/** The ways of reading, run in this order in every round; 0 transfers: one at a time. */
const MODES = {
  "one at a time (transferIn)": { transfers: 0 },
  "stream, 4 in flight": { transfers: 4 },
  "stream, 8 in flight": { transfers: 8 },
} as const;
type Mode = keyof typeof MODES;
const SINGLE: Mode = "one at a time (transferIn)";

interface Run {
  mode: Mode;
  round: number;
  /** Storage: CBW to CSW; FTDI: first data byte to last. */
  ms: number;
  /** CPU time of the guest process (user + system) during the read, in ms. */
  cpuMs: number;
  sha256: string;
  /** Storage: the CSW's residue. FTDI: transfers (chunks) it took. */
  detail: number;
  pendingAfter: number;
}

interface Report {
  storage: Run[];
  serial: Run[];
}

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** xorshift32 bytes for a seed. */
function seededBytes(length: number, seed: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(length);
  const words = new Uint32Array(out.buffer, 0, length >> 2);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  return out;
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const perSecond = (bytes: number, ms: number, unit: number) => bytes / unit / (ms / 1000);
const modes = () => Object.entries(MODES) as [Mode, (typeof MODES)[Mode]][];

// ---------------------------------------------------------------- guest half

/** Reads the data stage of one READ (10) of DATA_MIB into `data`, one way; returns the run. */
async function storageRun(
  dev: UsbDevice,
  mode: Mode,
  round: number,
  tag: number,
  data: Uint8Array<ArrayBuffer>,
): Promise<Run> {
  const { transfers } = MODES[mode];
  const total = data.length;
  data.fill(0);
  const cpu0 = cpuUsage();
  const t0 = performance.now();
  const cdb = read10Cdb(LBA, total / BLOCK);
  dev.transferOut(0x02, encodeCbw({ tag, dataLength: total, direction: "in", cdb }));
  let got = 0;
  if (transfers === 0) {
    while (got < total) {
      // The least-privilege path at its best: the data lands in place, no copy.
      const room = data.subarray(got, got + Math.min(CHUNK, total - got));
      const chunk = dev.transferIn(0x81, room);
      if (chunk.length === 0) throw new Error(`${mode}: empty transfer at ${got}`);
      got += chunk.length;
    }
  } else {
    // In place too (`into`), and exactly the data stage (its length): no spare transfer may
    // swallow the CSW.
    await using stream = openInStream(dev, 0x81, { transfers, size: CHUNK, into: data });
    for await (const chunk of stream) {
      if (chunk.byteOffset !== got) throw new Error(`${mode}: a chunk at ${chunk.byteOffset}`);
      got += chunk.length;
    }
  }
  const csw = parseCsw(dev.transferIn(0x81, CSW_LENGTH), tag, total);
  const ms = performance.now() - t0;
  const cpu = cpuUsage(cpu0);
  if (csw.status !== 0) throw new Error(`${mode}: CSW status ${csw.status}`);
  if (got !== total) throw new Error(`${mode}: ${got} bytes of ${total}`);
  return {
    mode,
    round,
    ms,
    cpuMs: (cpu.user + cpu.system) / 1000,
    sha256: await sha256(data),
    detail: csw.residue,
    pendingAfter: dev.pendingTransfers,
  };
}

/**
 * Reads SERIAL_BYTES from the FTDI, one way, after announcing `ftdi reading <run>` (the host then
 * writes them). Each 64-byte packet of a transfer starts with 2 modem-status bytes.
 */
async function serialRun(dev: UsbDevice, mode: Mode, round: number, run: number): Promise<Run> {
  const { transfers } = MODES[mode];
  const data = new Uint8Array(SERIAL_BYTES);
  let got = 0;
  let chunks = 0;
  let t0 = 0;
  let cpu0 = cpuUsage();
  const take = (chunk: Uint8Array) => {
    chunks++;
    for (let at = 0; at < chunk.length; at += SERIAL_PACKET) {
      const payload = chunk.subarray(at + 2, Math.min(at + SERIAL_PACKET, chunk.length));
      if (payload.length === 0) continue;
      if (got === 0) {
        t0 = performance.now();
        cpu0 = cpuUsage();
      }
      if (got + payload.length > data.length) throw new Error(`${mode}: more bytes than sent`);
      data.set(payload, got);
      got += payload.length;
    }
  };
  console.log(`ftdi reading ${run}`);
  if (transfers === 0) {
    while (got < data.length) take(dev.transferIn(0x81, SERIAL_SIZE, { timeout: 30_000 }));
  } else {
    await using stream = openInStream(dev, 0x81, {
      transfers,
      size: SERIAL_SIZE,
      timeout: 30_000,
    });
    for await (const chunk of stream) {
      take(chunk);
      if (got === data.length) break; // closes the stream: cancels the transfers still waiting
    }
  }
  const ms = performance.now() - t0;
  const cpu = cpuUsage(cpu0);
  return {
    mode,
    round,
    ms,
    cpuMs: (cpu.user + cpu.system) / 1000,
    sha256: await sha256(data),
    detail: chunks,
    pendingAfter: dev.pendingTransfers,
  };
}

async function guestMain(): Promise<void> {
  using usb = Libusb.open({ path: libusbPath() });
  const report: Report = { storage: [], serial: [] };
  {
    using dev = usb.openDevice(STORAGE);
    dev.claimInterface(0);
    new BotDevice(dev).waitReady();
    const data = new Uint8Array(DATA_MIB * 1048576);
    let tag = 100;
    for (let round = 0; round < ROUNDS; round++) {
      for (const [mode] of modes()) {
        report.storage.push(await storageRun(dev, mode, round, ++tag, data));
      }
    }
  }
  {
    using dev = usb.openDevice(FTDI);
    dev.claimInterface(0);
    let run = 0;
    for (let round = 0; round < SERIAL_ROUNDS; round++) {
      for (const [mode] of modes()) report.serial.push(await serialRun(dev, mode, round, run++));
    }
  }
  console.log(`REPORT ${JSON.stringify(report)}`);
}

// ----------------------------------------------------------------- host half

/** One line per way: median rate, median ratio to one at a time in the same round, busy %. */
function summary(runs: Run[], bytes: number, unit: number, unitName: string): string {
  return modes().map(([mode]) => {
    const mine = runs.filter((run) => run.mode === mode);
    const rates = mine.map((run) => perSecond(bytes, run.ms, unit));
    // Paired with the one-at-a-time read of the same round, so slow swings of load cancel out.
    const ratios = mine.map((run) =>
      runs.find((b) => b.mode === SINGLE && b.round === run.round)!.ms / run.ms
    );
    const busy = median(mine.map((run) => run.cpuMs / run.ms * 100));
    return `  ${mode}: ${median(rates).toFixed(1)} ${unitName}, x${median(ratios).toFixed(2)}, ` +
      `guest process busy ${busy.toFixed(0)}% (each: ${
        rates.map((rate) => rate.toFixed(1)).join(", ")
      })`;
  }).join("\n");
}

if (Deno.env.get("TBQ_HIL_GUEST") === "1") {
  await guestMain();
} else {
  hilTest(
    "stream: several IN transfers in flight vs one at a time, storage and FTDI, bytes intact",
    async () => {
      const dir = await Deno.makeTempDir({ prefix: "tbq-stream-" });
      try {
        const disk = `${dir}/disk.img`;
        const region = seededBytes(DATA_MIB * 1048576, SEED);
        const serialBytes = seededBytes(SERIAL_BYTES, SERIAL_SEED);
        const expected = { storage: await sha256(region), serial: await sha256(serialBytes) };
        {
          using file = await Deno.open(disk, { write: true, create: true, truncate: true });
          await file.truncate(DISK_MIB * 1048576);
          await file.seek(LBA * BLOCK, Deno.SeekMode.Start);
          let written = 0;
          while (written < region.length) written += await file.write(region.subarray(written));
        }
        const t0 = performance.now();
        let r;
        {
          await using guest = await bootGuest({
            command: [hostDeno(), "run", "-A", "--no-lock", THIS_FILE],
            env: { TBQ_STREAM_CHUNK: String(CHUNK), TBQ_STREAM_ROUNDS: String(ROUNDS) },
            disk: { path: disk },
            serial: true,
            timeoutMs: 120_000,
          });
          // Each FTDI run: the guest is reading, then the bytes go in (the first wait also
          // covers the storage part).
          for (let run = 0; run < SERIAL_ROUNDS * modes().length; run++) {
            await guest.waitForStdout(`ftdi reading ${run}\n`, 90_000);
            await guest.serial!.write(serialBytes);
          }
          r = await guest.wait();
        }
        const diag =
          `code ${r.code}, timedOut ${r.timedOut}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}` +
          `\nconsole tail:\n${r.console.slice(-2000)}`;
        assert.equal(r.code, 0, diag);
        const line = r.stdout.split("\n").find((l) => l.startsWith("REPORT "));
        assert.ok(line, `no REPORT line\n${diag}`);
        const report = JSON.parse(line.slice("REPORT ".length)) as Report;
        const ways = modes().length;
        assert.equal(report.storage.length, ROUNDS * ways, "every way ran every storage round");
        assert.equal(report.serial.length, SERIAL_ROUNDS * ways, "every way ran every FTDI round");
        for (const part of ["storage", "serial"] as const) {
          for (const run of report[part]) {
            const what = `${part}, ${run.mode}, round ${run.round}`;
            assert.equal(run.sha256, expected[part], `${what}: bytes differ`);
            assert.equal(run.pendingAfter, 0, `${what}: transfers left on the device`);
            if (part === "storage") assert.equal(run.detail, 0, `${what}: CSW residue`);
          }
        }
        const transfersPerSerialRun = median(report.serial.map((run) => run.detail));
        console.log(
          `HIL stream (guest started ${r.bootMs?.toFixed(0)} ms, QEMU exit ` +
            `${r.totalMs.toFixed(0)} ms, test ${(performance.now() - t0).toFixed(0)} ms)\n` +
            `usb-storage, ${DATA_MIB} MiB READ (10) data stage in ${CHUNK / 1024} KiB ` +
            `transfers, ${ROUNDS} rounds:\n` +
            summary(report.storage, region.length, 1048576, "MiB/s") +
            `\nFTDI, ${SERIAL_BYTES / 1024} KiB streamed by the host, ${SERIAL_SIZE}-byte ` +
            `transfers (~${Math.round(SERIAL_BYTES / transfersPerSerialRun)} data bytes each), ` +
            `${SERIAL_ROUNDS} rounds:\n` +
            summary(report.serial, SERIAL_BYTES, 1024, "KiB/s"),
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}
