/**
 * USB mass storage (Bulk-Only Transport + SCSI) without hardware: the encodings, the sense →
 * NTSTATUS mapping, BotDevice's error handling against a simulated device, and the handler
 * module's behaviour with no device present. The real device is exercised by
 * tests/hil/storage_test.ts and tests/hil/unplug_test.ts.
 */
import assert from "node:assert/strict";
import {
  LibusbError,
  libusbPath,
  Status,
  statusOfError,
  ThreadedBufferQueue,
  UsbError,
  usbWorkerPermissions,
} from "../mod.ts";
import {
  CBW_SIGNATURE,
  CSW_SIGNATURE,
  CswStatus,
  decodeCbw,
  encodeCbw,
  encodeCsw,
  parseCsw,
} from "../storage/bot.ts";
import {
  parseReadCapacity10,
  parseSense,
  read10Cdb,
  readCapacity10Cdb,
  requestSenseCdb,
  senseStatus,
  testUnitReadyCdb,
  write10Cdb,
} from "../storage/scsi.ts";
import {
  BotDevice,
  BotError,
  createReport,
  itemLba,
  massStorageHandlers,
  type MassStorageOptions,
  readReport,
  ScsiError,
  SenseKey,
  setItemLba,
  StorageStatus,
} from "../storage/mod.ts";
import handlers from "../storage/handlers.ts";
import { fillPattern, firstDifference, regionPattern } from "./fixtures/pattern.ts";
import { SimBotDevice } from "./fixtures/storage_sim.ts";
import type { WorkContext, WorkItem } from "../mod.ts";

const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

Deno.test("CBW: 31 bytes, little-endian fields, direction flag, LUN, CDB length, padded CDB", () => {
  const cbw = encodeCbw({
    tag: 0x11223344,
    dataLength: 0x10000,
    direction: "out",
    lun: 2,
    cdb: write10Cdb(0x01020304, 128),
  });
  assert.equal(cbw.length, 31);
  assert.equal(
    hex(cbw),
    "55534243" + "44332211" + "00000100" + "00" + "02" + "0a" +
      "2a000102030400008000" + "000000000000",
  );
  const inCbw = encodeCbw({ tag: 1, dataLength: 18, direction: "in", cdb: requestSenseCdb() });
  assert.equal(inCbw[12], 0x80);
  assert.equal(inCbw[13], 0);
  assert.equal(inCbw[14], 6);
  assert.equal(new DataView(inCbw.buffer).getUint32(0, true), CBW_SIGNATURE);
  assert.deepEqual(decodeCbw(inCbw), {
    tag: 1,
    dataLength: 18,
    direction: "in",
    lun: 0,
    cdb: requestSenseCdb(),
  });
  // Into a caller's buffer: stale bytes are cleared.
  const target = new Uint8Array(40).fill(0xee);
  const into = encodeCbw(
    { tag: 5, dataLength: 0, direction: "none", cdb: testUnitReadyCdb() },
    target,
  );
  assert.equal(into.length, 31);
  assert.equal(into.buffer, target.buffer);
  assert.ok(into.subarray(15).every((b) => b === 0));
  assert.equal(target[31], 0xee);
});

Deno.test("CBW: invalid fields throw BotError invalid-argument (InvalidParameter)", () => {
  const bad = (why: RegExp) => (error: unknown) =>
    error instanceof BotError && error.reason === "invalid-argument" &&
    error.status === Status.InvalidParameter && why.test(error.message);
  const cdb = testUnitReadyCdb();
  assert.throws(
    () => encodeCbw({ tag: 1, dataLength: 0, direction: "none", lun: 16, cdb }),
    bad(/lun/),
  );
  assert.throws(
    () => encodeCbw({ tag: 1, dataLength: 0, direction: "none", cdb: new Uint8Array(17) }),
    bad(/CDB/),
  );
  assert.throws(
    () => encodeCbw({ tag: 1, dataLength: 0, direction: "none", cdb: new Uint8Array(0) }),
    bad(/CDB/),
  );
  assert.throws(
    () => encodeCbw({ tag: 1, dataLength: 4, direction: "none", cdb }),
    bad(/direction/),
  );
  assert.throws(() => encodeCbw({ tag: 1, dataLength: 0, direction: "in", cdb }), bad(/direction/));
  assert.throws(() => encodeCbw({ tag: -1, dataLength: 0, direction: "none", cdb }), bad(/tag/));
  assert.throws(
    () => encodeCbw({ tag: 1, dataLength: 2 ** 32, direction: "in", cdb }),
    bad(/dataLength/),
  );
  assert.throws(() => decodeCbw(new Uint8Array(32)), bad(/31 bytes/));
});

Deno.test("CSW: parses a valid one; rejects length, signature, tag, status and residue errors", () => {
  const csw = encodeCsw({ tag: 0xdeadbeef, residue: 512, status: CswStatus.Failed });
  assert.equal(hex(csw), "55534253" + "efbeadde" + "00020000" + "01");
  assert.equal(new DataView(csw.buffer).getUint32(0, true), CSW_SIGNATURE);
  assert.deepEqual(parseCsw(csw, 0xdeadbeef, 1024), { tag: 0xdeadbeef, residue: 512, status: 1 });
  const phase = encodeCsw({ tag: 3, residue: 0, status: CswStatus.PhaseError });
  assert.equal(parseCsw(phase, 3, 0).status, CswStatus.PhaseError);

  const invalid = (why: RegExp) => (error: unknown) =>
    error instanceof BotError && error.reason === "invalid-csw" &&
    error.status === StorageStatus.DeviceProtocolError && why.test(error.message);
  assert.throws(() => parseCsw(csw.subarray(0, 12), 0xdeadbeef, 1024), invalid(/13 bytes/));
  assert.throws(() => parseCsw(new Uint8Array(14), 0xdeadbeef, 1024), invalid(/13 bytes/));
  const badSig = csw.slice();
  badSig[3] = 0x43; // "USBC": a CBW echoed back
  assert.throws(() => parseCsw(badSig, 0xdeadbeef, 1024), invalid(/signature/));
  assert.throws(() => parseCsw(csw, 1, 1024), invalid(/tag/));
  const badStatus = csw.slice();
  badStatus[12] = 3;
  assert.throws(() => parseCsw(badStatus, 0xdeadbeef, 1024), invalid(/status 3/));
  assert.throws(() => parseCsw(csw, 0xdeadbeef, 511), invalid(/residue/));
});

Deno.test("CDBs: TEST UNIT READY, REQUEST SENSE, READ CAPACITY (10), READ (10), WRITE (10)", () => {
  assert.equal(hex(testUnitReadyCdb()), "000000000000");
  assert.equal(hex(requestSenseCdb()), "030000001200");
  assert.equal(hex(requestSenseCdb(252)), "03000000fc00");
  assert.equal(hex(readCapacity10Cdb()), "25000000000000000000");
  assert.equal(hex(read10Cdb(0xfffffffe, 0xffff)), "2800fffffffe00ffff00");
  assert.equal(hex(write10Cdb(2048, 128)), "2a000000080000008000");
  for (const make of [read10Cdb, write10Cdb]) {
    assert.throws(() => make(0, 0), BotError);
    assert.throws(() => make(0, 65536), BotError);
    assert.throws(() => make(2 ** 32, 1), BotError);
    assert.throws(() => make(1.5, 1), BotError);
  }
  assert.throws(() => requestSenseCdb(256), BotError);
});

Deno.test("READ CAPACITY (10) reply and sense data (fixed and descriptor formats)", () => {
  assert.deepEqual(parseReadCapacity10(new Uint8Array([0, 1, 0xff, 0xff, 0, 0, 2, 0])), {
    lastLba: 131071,
    blockSize: 512,
    blockCount: 131072,
  });
  assert.throws(() => parseReadCapacity10(new Uint8Array(7)), BotError);

  const fixed = new Uint8Array(18);
  fixed[0] = 0xf0; // valid bit + 0x70
  fixed[2] = 0x26; // ILI bit + UNIT ATTENTION: only the low nibble is the key
  fixed[7] = 10;
  fixed[12] = 0x21;
  fixed[13] = 0x00;
  assert.deepEqual(parseSense(fixed), { responseCode: 0x70, senseKey: 6, asc: 0x21, ascq: 0 });
  assert.deepEqual(parseSense(new Uint8Array([0x72, 0x02, 0x3a, 0x01, 0, 0, 0, 0])), {
    responseCode: 0x72,
    senseKey: 2,
    asc: 0x3a,
    ascq: 1,
  });
  assert.throws(() => parseSense(new Uint8Array(18)), BotError);
  assert.throws(() => parseSense(new Uint8Array(0)), BotError);
});

Deno.test("sense → NTSTATUS follows the disk class driver's choices", () => {
  const s = (senseKey: number, asc = 0) =>
    senseStatus({ responseCode: 0x70, senseKey, asc, ascq: 0 });
  assert.equal(s(SenseKey.RecoveredError), Status.Success);
  assert.equal(s(SenseKey.NotReady), StorageStatus.DeviceNotReady);
  assert.equal(s(SenseKey.NotReady, 0x3a), StorageStatus.NoMediaInDevice);
  assert.equal(s(SenseKey.MediumError), StorageStatus.DeviceDataError);
  assert.equal(s(SenseKey.HardwareError), StorageStatus.IoDeviceError);
  assert.equal(s(SenseKey.IllegalRequest), StorageStatus.InvalidDeviceRequest);
  assert.equal(s(SenseKey.IllegalRequest, 0x21), StorageStatus.NonexistentSector);
  assert.equal(s(SenseKey.UnitAttention, 0x29), StorageStatus.VerifyRequired);
  assert.equal(s(SenseKey.DataProtect), StorageStatus.MediaWriteProtected);
  assert.equal(s(SenseKey.AbortedCommand), StorageStatus.IoDeviceError);
  assert.equal(s(SenseKey.NoSense), StorageStatus.IoDeviceError);
  // Signed 32-bit, like Status; all failures except RECOVERED ERROR.
  assert.equal(StorageStatus.NonexistentSector, 0xC0000015 | 0);
  assert.equal(StorageStatus.VerifyRequired, 0x80000016 | 0);
  for (const value of Object.values(StorageStatus)) assert.ok(value < 0);
});

Deno.test("BotDevice on a simulated device: ready, capacity, write then read back", () => {
  const sim = new SimBotDevice(64);
  const bot = new BotDevice(sim);
  assert.deepEqual(bot.waitReady(), []);
  assert.deepEqual(bot.readCapacity(), { lastLba: 63, blockSize: 512, blockCount: 64 });
  const data = fillPattern(1, new Uint8Array(4 * 512));
  bot.write10(10, 4, data);
  assert.equal(firstDifference(sim.disk.subarray(10 * 512, 14 * 512), data), -1);
  assert.deepEqual(bot.read10(10, 4), data);
  assert.deepEqual(sim.log, [
    "cbw 0x00",
    "csw",
    "cbw 0x25",
    "data-in 8",
    "csw",
    "cbw 0x2a",
    "data-out 2048",
    "csw",
    "cbw 0x28",
    "data-in 2048",
    "csw",
  ]);
  assert.deepEqual(bot.counters, {
    commands: 4,
    checkConditions: 0,
    clearedHalts: 0,
    resetRecoveries: 0,
  });
  assert.throws(
    () => bot.write10(0, 2, new Uint8Array(512)),
    (e: unknown) => e instanceof BotError && e.status === Status.InvalidParameter,
  );
});

Deno.test("BotDevice: CHECK CONDITION → REQUEST SENSE → ScsiError with key/ASC/ASCQ and status", () => {
  const sim = new SimBotDevice(64);
  const bot = new BotDevice(sim);
  assert.throws(() => bot.write10(60, 8, new Uint8Array(8 * 512)), (error: unknown) => {
    assert.ok(error instanceof ScsiError, String(error));
    assert.equal(error.opcode, 0x2a);
    assert.equal(error.senseKey, SenseKey.IllegalRequest);
    assert.equal(error.asc, 0x21);
    assert.equal(error.ascq, 0);
    assert.equal(error.status, StorageStatus.NonexistentSector);
    assert.equal(statusOfError(error), StorageStatus.NonexistentSector);
    return true;
  });
  assert.deepEqual(sim.log.slice(-4), ["csw", "cbw 0x03", "data-in 18", "csw"]);
  // A failed READ: the device stalls data-in; the host clears the halt and reads the CSW.
  sim.log.length = 0;
  assert.throws(() => bot.read10(63, 2), (e: unknown) => e instanceof ScsiError && e.asc === 0x21);
  assert.deepEqual(sim.log, [
    "cbw 0x28",
    "data-in 1024",
    "clearHalt 0x81",
    "csw",
    "cbw 0x03",
    "data-in 18",
    "csw",
  ]);
  assert.equal(bot.counters.checkConditions, 2);
  assert.equal(bot.counters.clearedHalts, 1);
  // The device is fine afterwards.
  bot.testUnitReady();
});

Deno.test("BotDevice: UNIT ATTENTION on the first command; waitReady rides it out", () => {
  const strict = new BotDevice(new SimBotDevice(8, { unitAttention: true }));
  assert.throws(
    () => strict.testUnitReady(),
    (e: unknown) =>
      e instanceof ScsiError && e.senseKey === SenseKey.UnitAttention &&
      e.status === StorageStatus.VerifyRequired,
  );
  strict.testUnitReady();

  const bot = new BotDevice(new SimBotDevice(8, { unitAttention: true }));
  assert.deepEqual(bot.waitReady(), [{ responseCode: 0x70, senseKey: 6, asc: 0x29, ascq: 0 }]);
  assert.throws(
    () => new BotDevice(new SimBotDevice(8, { gone: true })).waitReady(),
    (e: unknown) => e instanceof UsbError && e.status === Status.DeviceNotConnected,
  );
});

Deno.test("BotDevice: stalls in the data and CSW phases are cleared and the command completes", () => {
  const sim = new SimBotDevice(16, { stallCsw: 1 });
  const bot = new BotDevice(sim);
  bot.testUnitReady();
  assert.deepEqual(sim.log, ["cbw 0x00", "csw", "clearHalt 0x81", "csw"]);
  assert.equal(bot.counters.resetRecoveries, 0);

  // A stalled data-out: clear the OUT halt, read the CSW (Failed), then sense.
  sim.log.length = 0;
  sim.faults.stallDataOut = 1;
  assert.throws(
    () => bot.write10(0, 1, new Uint8Array(512)),
    (e: unknown) =>
      e instanceof ScsiError && e.senseKey === SenseKey.AbortedCommand &&
      e.status === StorageStatus.IoDeviceError,
  );
  assert.deepEqual(sim.log.slice(0, 4), ["cbw 0x2a", "data-out 512", "clearHalt 0x2", "csw"]);

  // A CSW that stalls twice: Reset Recovery, then the stall's UsbError (PipeBroken).
  sim.log.length = 0;
  sim.faults.stallCsw = 2;
  assert.throws(
    () => bot.testUnitReady(),
    (e: unknown) => e instanceof UsbError && e.code === LibusbError.PIPE,
  );
  assert.deepEqual(sim.log, [
    "cbw 0x00",
    "csw",
    "clearHalt 0x81",
    "csw",
    "reset",
    "clearHalt 0x81",
    "clearHalt 0x2",
  ]);
  assert.equal(bot.counters.resetRecoveries, 1);
  bot.testUnitReady();
});

Deno.test("BotDevice: phase error and invalid CSW → Reset Recovery, then a DeviceProtocolError", () => {
  const sim = new SimBotDevice(16, { phaseError: 1 });
  const bot = new BotDevice(sim);
  assert.throws(
    () => bot.readCapacity(),
    (e: unknown) =>
      e instanceof BotError && e.reason === "phase-error" &&
      e.status === StorageStatus.DeviceProtocolError,
  );
  assert.deepEqual(sim.log.slice(-3), ["reset", "clearHalt 0x81", "clearHalt 0x2"]);
  sim.faults.badCsw = 1;
  assert.throws(
    () => bot.testUnitReady(),
    (e: unknown) => e instanceof BotError && e.reason === "invalid-csw",
  );
  assert.equal(bot.counters.resetRecoveries, 2);
  assert.equal(bot.readCapacity().blockCount, 16);
});

Deno.test("BotDevice: a rejected CBW (as a 32-byte one is) needs Reset Recovery", () => {
  const sim = new SimBotDevice(16);
  assert.throws(
    () => sim.transferOut(0x02, new Uint8Array(32)),
    (e: unknown) => e instanceof UsbError && e.code === LibusbError.PIPE,
  );
  const bot = new BotDevice(sim);
  // Both pipes stay halted until the reset: the next CBW stalls and BotDevice recovers.
  assert.throws(
    () => bot.testUnitReady(),
    (e: unknown) => e instanceof UsbError && e.code === LibusbError.PIPE,
  );
  assert.equal(bot.counters.resetRecoveries, 1);
  bot.testUnitReady();
});

Deno.test("BotDevice: timeouts recover and pass IoTimeout; a vanished device passes through untouched", () => {
  const sim = new SimBotDevice(16, { timeoutDataOut: 1 });
  const bot = new BotDevice(sim);
  assert.throws(
    () => bot.write10(0, 1, new Uint8Array(512)),
    (e: unknown) => e instanceof UsbError && e.status === Status.IoTimeout,
  );
  assert.equal(bot.counters.resetRecoveries, 1);
  bot.write10(0, 1, new Uint8Array(512));

  sim.faults.gone = true;
  sim.log.length = 0;
  assert.throws(
    () => bot.write10(0, 1, new Uint8Array(512)),
    (e: unknown) =>
      e instanceof UsbError && e.name === "LIBUSB_ERROR_NO_DEVICE" &&
      e.status === Status.DeviceNotConnected,
  );
  assert.deepEqual(sim.log, [], "no recovery is attempted on a device that is gone");
  assert.equal(bot.counters.resetRecoveries, 1);
});

Deno.test("pattern data is reproducible from the seed and differs between seeds and regions", () => {
  const a = regionPattern(123, 0, 4096);
  assert.deepEqual(regionPattern(123, 0, 4096), a);
  assert.notEqual(firstDifference(regionPattern(124, 0, 4096), a), -1);
  assert.notEqual(firstDifference(regionPattern(123, 1, 4096), a), -1);
  // An unaligned view gets the same bytes as an aligned one.
  const backing = new Uint8Array(4097);
  assert.deepEqual(fillPattern(5, backing.subarray(1)), fillPattern(5, new Uint8Array(4096)));
  assert.deepEqual(fillPattern(0, new Uint8Array(7)).length, 7);
  assert.equal(firstDifference(new Uint8Array(2), new Uint8Array(3)), 2);
});

Deno.test("writeBlocks / readBlocks: chunked WRITE (10) / READ (10), whole blocks only", () => {
  const sim = new SimBotDevice(64);
  const bot = new BotDevice(sim);
  const data = fillPattern(3, new Uint8Array(10 * 512));
  bot.writeBlocks(5, data, 4); // 4 + 4 + 2 blocks
  assert.equal(firstDifference(sim.disk.subarray(5 * 512, 15 * 512), data), -1);
  assert.equal(firstDifference(bot.readBlocks(5, 10, 3), data), -1);
  assert.equal(bot.counters.commands, 3 + 4);
  assert.throws(() => bot.writeBlocks(0, new Uint8Array(100)), BotError);
});

Deno.test("handler helpers: item LBA in the context, report buffer", () => {
  const context = new Uint8Array(8);
  setItemLba(context.subarray(2, 6), 0xfedcba98);
  assert.equal(itemLba(context.subarray(2, 6)), 0xfedcba98);
  assert.deepEqual([...context], [0, 0, 0x98, 0xba, 0xdc, 0xfe, 0, 0]);
  const report = readReport(createReport());
  assert.equal(report.pre, 0);
  assert.equal(report.post, 0);
  assert.equal(report.lastFailure, 0);
});

const ABSENT: MassStorageOptions = {
  vendorId: 0x46f4,
  productId: 0x0001,
  libusbPath: libusbPath(),
};

function context(options: MassStorageOptions): WorkContext<MassStorageOptions> {
  return {
    options,
    signal: new AbortController().signal,
    workCompleted: () => assert.fail("the handler never pends"),
  };
}

function item(size: number, lba: number): WorkItem {
  const ctx = new Uint8Array(4);
  setItemLba(ctx, lba);
  return {
    data: new Uint8Array(size),
    context: ctx,
    size,
    index: 0,
    signal: new AbortController().signal,
  };
}

Deno.test("mass storage handlers without a device: fail-start rejects pre; fail-items fails items", async () => {
  // This host has no USB device 46f4:0001 (it exists only inside the QEMU rig).
  const strict = context(ABSENT);
  await assert.rejects(
    async () => await handlers.pre!(strict),
    (error: unknown) => statusOfError(error) === Status.DeviceNotConnected,
  );
  await handlers.post!(strict);

  const report = createReport();
  const tolerant = context({ ...ABSENT, absent: "fail-items", report });
  await handlers.pre!(tolerant);
  assert.deepEqual(await handlers.work(item(512, 0), tolerant), {
    disposition: 1,
    status: Status.DeviceNotConnected,
  });
  assert.deepEqual(await handlers.work({ ...item(512, 0), context: new Uint8Array(0) }, tolerant), {
    disposition: 1,
    status: Status.InvalidParameter,
  });
  await handlers.post!(tolerant);
  const seen = readReport(report);
  assert.equal(seen.pre, 1);
  assert.equal(seen.post, 1);
  assert.equal(seen.failures, 2);
  assert.equal(seen.writes, 0);
  assert.equal(seen.lastFailure, Status.InvalidParameter);
});

Deno.test("massStorageHandlers in a Worker granted only libusb and storage/: start() rejects", async () => {
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 2, bufferSize: 512, contextSize: 4 },
    handlers: massStorageHandlers,
    handlerOptions: ABSENT,
    permissions: usbWorkerPermissions({ read: [new URL("../storage/", import.meta.url)] }),
  });
  await assert.rejects(
    () => queue.start(),
    (error: unknown) => statusOfError(error) === Status.DeviceNotConnected,
  );
});

Deno.test("UsbError statuses pass through BotDevice unchanged", () => {
  const error = new UsbError(LibusbError.TIMEOUT, { operation: "x" });
  const bot = new BotDevice({
    transferOut: () => {
      throw error;
    },
    transferIn: () => new Uint8Array(0),
    clearHalt: () => {},
    controlTransferOut: () => 0,
  });
  assert.throws(() => bot.testUnitReady(), (e: unknown) => e === error);
  assert.equal(bot.counters.resetRecoveries, 1);
});
