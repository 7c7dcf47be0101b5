/**
 * HIL: tbq's USB layer (`ffi/`) on the real Linux USB stack of the rig's guest, with QEMU's
 * usb-storage (46f4:0001, super speed), FTDI (0403:6001, full speed) and usb-kbd (0627:0001, high
 * speed, HID boot keyboard):
 *
 * 1. `dev.configurations` of all three against (i) the configuration descriptor the guest reads
 *    itself with GET_DESCRIPTOR (wTotalLength) and decodes with the small independent parser
 *    below, and (ii) the kernel's copy in sysfs (`descriptors`); the host checks known values,
 *    `speed` and `portPath` (against the sysfs device name).
 * 2. HID interrupt IN: the host types h,e,l,l,o through QMP; the guest reads 8-byte boot reports
 *    with `transferIn(0x81, 8)` and the keys arrive in order.
 * 3. Abort: `transferInAsync(0x81, 8, { timeout: 10000, signal })` with no key pressed, aborted
 *    300 ms later, rejects with LIBUSB_ERROR_INTERRUPTED (cause: the reason) within 100 ms of the
 *    abort; a key typed afterwards is read normally.
 * 4. `reset()` of the storage device, then TEST UNIT READY and READ(10) succeed and READ(10)
 *    returns the image's bytes.
 * 5. (second boot, usbhid + hid_generic loaded) kernel driver: active for the keyboard; detach,
 *    claim, read a typed key, release, attach: active again.
 *
 * The same file is the guest-side program (TBQ_HIL_GUEST=1; argument `main` or `driver`).
 *
 * Run: flock /tmp/tbq-qemu.lock env CI=true deno test --allow-all tests/hil/usb_layer_test.ts
 */
import assert from "node:assert/strict";
import { Libusb, Status, statusName, type UsbDevice, UsbError } from "../../mod.ts";
import { hilTest } from "./gate.ts";
import { bootGuest, type Guest, type GuestResult, hostDeno, withTimeout } from "./rig.ts";

const THIS_FILE = new URL(import.meta.url).pathname;
const STORAGE = { vendorId: 0x46f4, productId: 0x0001 };
const FTDI = { vendorId: 0x0403, productId: 0x6001 };
const KBD = { vendorId: 0x0627, productId: 0x0001 };
/** HID usage IDs (keyboard page) of the letters a..z are 0x04..0x1d. */
const usageOf = (letter: string) => letter.charCodeAt(0) - 0x61 + 0x04;
const HELLO = ["h", "e", "l", "l", "o"];
/** The storage image's block the guest reads, and its content. */
const LBA = 5;
const BLOCK = 512;

// ------------------------------------------------------- independent descriptor parser

/** The WebUSB-shaped fields both parsers give (names and `alternate` left out). */
interface PlainConfiguration {
  configurationValue: number;
  interfaces: {
    interfaceNumber: number;
    alternates: {
      alternateSetting: number;
      interfaceClass: number;
      interfaceSubclass: number;
      interfaceProtocol: number;
      endpoints: { endpointNumber: number; direction: string; type: string; packetSize: number }[];
    }[];
  }[];
}

/** Walks one configuration descriptor set (config, interface, endpoint; others skipped). */
function parseConfigurationBytes(bytes: Uint8Array): PlainConfiguration {
  assert.equal(bytes[1], 2, "not a configuration descriptor");
  const total = bytes[2] | (bytes[3] << 8);
  assert.equal(bytes.length, total, "wTotalLength");
  const config: PlainConfiguration = { configurationValue: bytes[5], interfaces: [] };
  let alternate: PlainConfiguration["interfaces"][0]["alternates"][0] | null = null;
  for (let at = bytes[0]; at < total; at += bytes[at]) {
    const d = bytes.subarray(at, at + bytes[at]);
    assert.ok(d[0] >= 2, `bLength ${d[0]} at ${at}`);
    if (d[1] === 4) {
      let iface = config.interfaces.find((i) => i.interfaceNumber === d[2]);
      if (!iface) config.interfaces.push(iface = { interfaceNumber: d[2], alternates: [] });
      alternate = {
        alternateSetting: d[3],
        interfaceClass: d[5],
        interfaceSubclass: d[6],
        interfaceProtocol: d[7],
        endpoints: [],
      };
      iface.alternates.push(alternate);
    } else if (d[1] === 5 && alternate) {
      alternate.endpoints.push({
        endpointNumber: d[2] & 0x0f,
        direction: d[2] & 0x80 ? "in" : "out",
        type: ["control", "isochronous", "bulk", "interrupt"][d[3] & 3],
        packetSize: (d[4] | (d[5] << 8)) & 0x7ff,
      });
    }
  }
  return config;
}

/** `dev.configurations` reduced to the fields of {@linkcode PlainConfiguration}. */
function plain(configs: UsbDevice["configurations"]): PlainConfiguration[] {
  return configs.map((c) => ({
    configurationValue: c.configurationValue,
    interfaces: c.interfaces.map((i) => ({
      interfaceNumber: i.interfaceNumber,
      alternates: i.alternates.map((a) => ({
        alternateSetting: a.alternateSetting,
        interfaceClass: a.interfaceClass,
        interfaceSubclass: a.interfaceSubclass,
        interfaceProtocol: a.interfaceProtocol,
        endpoints: a.endpoints.map((e) => ({
          endpointNumber: e.endpointNumber,
          direction: e.direction,
          type: e.type,
          packetSize: e.packetSize,
        })),
      })),
    })),
  }));
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", data)));
}

// ------------------------------------------------------------------------- guest half

interface DescriptorReport {
  id: string;
  sysfsName: string;
  sysfsSpeed: string;
  speed: string;
  portPath: number[];
  busNumber: number;
  activeConfiguration: number | undefined;
  /** `dev.configurations` (reduced). */
  layer: PlainConfiguration[];
  /** Own parse of the GET_DESCRIPTOR bytes. */
  fromControl: PlainConfiguration;
  /** Own parse of sysfs' copy. */
  fromSysfs: PlainConfiguration;
  rawControl: string;
  rawSysfs: string;
  names: { configuration?: string; interfaces: (string | undefined)[] };
}

interface KeyRead {
  /** Every report read, hex. */
  reports: string[];
  /** New key-downs (HID usage IDs) in order. */
  keys: number[];
  /** Reports already queued before the host typed (drained). */
  drained: string[];
}

interface AbortReport {
  clocksource: string;
  /** Median step of `performance.now()` in ms (4 under jiffies at HZ=250). */
  tickMs: number;
  abortAfterMs: number;
  settleMs: number;
  name: string;
  status: unknown;
  causeIsReason: boolean;
  transferred: number | undefined;
  dataLength: number | undefined;
  /**
   * What a synchronous `transferIn` on the same endpoint, called as soon as the rejection is
   * seen, threw (nothing is queued: LIBUSB_ERROR_TIMEOUT is right).
   */
  immediatelyAfter: string;
  afterwards: KeyRead;
}

interface StorageReport {
  portPath: number[];
  before: { tur: number; readStatus: number; sha: string };
  reset: string;
  after: {
    tur: number[];
    sense: string[];
    readStatus: number;
    sha: string;
    head: string;
  };
}

interface MainReport {
  descriptors: DescriptorReport[];
  hello: KeyRead;
  abort: AbortReport;
  storage: StorageReport;
}

interface DriverReport {
  waitedMs: number;
  activeAtStart: boolean;
  sysfsDriverAtStart: string | null;
  detached: boolean;
  activeAfterDetach: boolean;
  sysfsDriverWhileClaimed: string | null;
  key: KeyRead;
  activeAfterRelease: boolean;
  attach: string;
  activeAtEnd: boolean;
  sysfsDriverAtEnd: string | null;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** The sysfs directory (`/sys/bus/usb/devices/<name>`) of the device at bus/address. */
function sysfsDevice(bus: number, address: number): string {
  for (const e of Deno.readDirSync("/sys/bus/usb/devices")) {
    if (e.name.includes(":")) continue;
    const dir = `/sys/bus/usb/devices/${e.name}`;
    try {
      const b = Number(Deno.readTextFileSync(`${dir}/busnum`));
      const d = Number(Deno.readTextFileSync(`${dir}/devnum`));
      if (b === bus && d === address) return e.name;
    } catch { /* not a device */ }
  }
  throw new Error(`no sysfs device for bus ${bus} address ${address}`);
}

function sysfsDriver(name: string): string | null {
  try {
    return Deno.readLinkSync(`/sys/bus/usb/devices/${name}:1.0/driver`).split("/").pop()!;
  } catch {
    return null;
  }
}

function describe(dev: UsbDevice, id: string): DescriptorReport {
  const sysfsName = sysfsDevice(dev.info.busNumber, dev.info.deviceAddress);
  const getConfig = (length: number) =>
    dev.controlTransferIn(
      { requestType: "standard", recipient: "device", request: 6, value: 0x0200, index: 0 },
      length,
    );
  const head = getConfig(9);
  const raw = getConfig(head[2] | (head[3] << 8));
  const sysfs = Deno.readFileSync(`/sys/bus/usb/devices/${sysfsName}/descriptors`);
  const sysfsConfig = sysfs.subarray(18, 18 + (sysfs[20] | (sysfs[21] << 8)));
  const configs = dev.configurations;
  return {
    id,
    sysfsName,
    sysfsSpeed: Deno.readTextFileSync(`/sys/bus/usb/devices/${sysfsName}/speed`).trim(),
    speed: dev.speed,
    portPath: dev.portPath,
    busNumber: dev.info.busNumber,
    activeConfiguration: dev.configuration?.configurationValue,
    layer: plain(configs),
    fromControl: parseConfigurationBytes(raw),
    fromSysfs: parseConfigurationBytes(sysfsConfig),
    rawControl: hex(raw),
    rawSysfs: hex(sysfsConfig),
    names: {
      configuration: configs[0]?.configurationName,
      interfaces: configs[0]?.interfaces.map((i) => i.alternate.interfaceName) ?? [],
    },
  };
}

function isTimeout(e: unknown): boolean {
  return e instanceof UsbError && e.name === "LIBUSB_ERROR_TIMEOUT";
}

/** Reads queued reports until one times out (what was there before the host typed). */
function drain(dev: UsbDevice): string[] {
  const out: string[] = [];
  for (let i = 0; i < 20; i++) {
    try {
      out.push(hex(dev.transferIn(0x81, 8, { timeout: 100 })));
    } catch (e) {
      if (isTimeout(e)) break;
      throw e;
    }
  }
  return out;
}

/**
 * Announces `marker` (the host then types), then reads boot reports until `want` key-downs and
 * their key-ups arrived, or `ms` passed.
 */
function readKeys(dev: UsbDevice, marker: string, want: number, ms: number): KeyRead {
  const drained = drain(dev);
  console.log(marker);
  const read: KeyRead = { reports: [], keys: [], drained };
  let previous: number[] = [];
  const end = performance.now() + ms;
  const buffer = new Uint8Array(8);
  while (performance.now() < end) {
    let report: Uint8Array;
    try {
      report = dev.transferIn(0x81, buffer, { timeout: 500 }); // filled in place
    } catch (e) {
      if (isTimeout(e)) continue;
      throw e;
    }
    read.reports.push(hex(report));
    const down = [...report.subarray(2)].filter((u) => u !== 0);
    for (const u of down) if (!previous.includes(u)) read.keys.push(u);
    previous = down;
    if (read.keys.length >= want && down.length === 0) break;
  }
  return read;
}

function tickMs(): number {
  const steps: number[] = [];
  let prev = performance.now();
  const end = prev + 100;
  while (steps.length < 15) {
    const now = performance.now();
    if (now !== prev) steps.push(now - prev);
    prev = now;
    if (now > end) break;
  }
  steps.sort((a, b) => a - b);
  return steps.length ? Math.round(steps[steps.length >> 1] * 1000) / 1000 : NaN;
}

async function abortRead(dev: UsbDevice): Promise<AbortReport> {
  drain(dev);
  const controller = new AbortController();
  const reason = new Error("tbq: aborted by the test");
  const t0 = performance.now();
  let abortedAt = 0;
  const timer = setTimeout(() => {
    abortedAt = performance.now();
    controller.abort(reason);
  }, 300);
  let settledAt = 0;
  let error: unknown = null;
  try {
    await dev.transferInAsync(0x81, 8, { timeout: 10_000, signal: controller.signal });
  } catch (e) {
    error = e;
  } finally {
    settledAt = performance.now();
    clearTimeout(timer);
  }
  let immediatelyAfter = "resolved";
  try {
    dev.transferIn(0x81, 8, { timeout: 50 });
  } catch (e) {
    immediatelyAfter = (e as Error).name;
  }
  await new Promise((r) => setTimeout(r, 0)); // let the layer finish its bookkeeping
  const e = error as UsbError | null;
  return {
    clocksource: Deno.readTextFileSync(
      "/sys/devices/system/clocksource/clocksource0/current_clocksource",
    ).trim(),
    tickMs: tickMs(),
    abortAfterMs: Math.round((abortedAt - t0) * 10) / 10,
    settleMs: abortedAt ? Math.round((settledAt - abortedAt) * 10) / 10 : NaN,
    name: e?.name ?? "resolved",
    status: e?.status,
    causeIsReason: e?.cause === reason,
    transferred: e?.transferred,
    dataLength: e?.data?.length,
    immediatelyAfter,
    afterwards: readKeys(dev, "READY-AFTER-ABORT", 1, 15_000),
  };
}

// Bulk-Only Transport, just enough for TEST UNIT READY, REQUEST SENSE and READ (10).
let tag = 1;
function scsi(
  dev: UsbDevice,
  cb: number[],
  dataIn: number,
): { status: number; data: Uint8Array } {
  const cbw = new Uint8Array(31);
  const v = new DataView(cbw.buffer);
  v.setUint32(0, 0x43425355, true); // "USBC"
  v.setUint32(4, tag, true);
  v.setUint32(8, dataIn, true);
  cbw[12] = dataIn ? 0x80 : 0;
  cbw[14] = cb.length;
  cbw.set(cb, 15);
  assert.equal(dev.transferOut(0x02, cbw, { timeout: 5000 }), 31);
  const data = dataIn ? dev.transferIn(0x81, dataIn, { timeout: 5000 }) : new Uint8Array();
  const csw = dev.transferIn(0x81, 13, { timeout: 5000 });
  const c = new DataView(csw.buffer, csw.byteOffset, csw.byteLength);
  assert.equal(csw.length, 13, "CSW length");
  assert.equal(c.getUint32(0, true), 0x53425355, "CSW signature");
  assert.equal(c.getUint32(4, true), tag++, "CSW tag");
  return { status: csw[12], data };
}

const TUR = [0, 0, 0, 0, 0, 0];
const READ10 = [0x28, 0, 0, 0, 0, LBA, 0, 0, 1, 0];

async function storageReset(usb: Libusb): Promise<StorageReport> {
  let dev = usb.openDevice(STORAGE);
  try {
    dev.claimInterface(0);
    const tur0 = scsi(dev, TUR, 0).status;
    const read0 = scsi(dev, READ10, BLOCK);
    const before = { tur: tur0, readStatus: read0.status, sha: await sha256(read0.data.slice()) };
    let reset = "ok";
    try {
      dev.reset();
    } catch (e) {
      reset = (e as Error).name;
      if (reset !== "LIBUSB_ERROR_NOT_FOUND") throw e;
      dev.close();
      dev = usb.openDevice(STORAGE);
      dev.claimInterface(0);
    }
    const turs: number[] = [];
    const sense: string[] = [];
    for (let i = 0; i < 4; i++) {
      const s = scsi(dev, TUR, 0).status;
      turs.push(s);
      if (s === 0) break;
      sense.push(hex(scsi(dev, [3, 0, 0, 0, 18, 0], 18).data));
    }
    const read = scsi(dev, READ10, BLOCK);
    return {
      portPath: dev.portPath,
      before,
      reset,
      after: {
        tur: turs,
        sense,
        readStatus: read.status,
        sha: await sha256(read.data.slice()),
        head: hex(read.data.subarray(0, 16)),
      },
    };
  } finally {
    dev.close();
  }
}

async function guestMain(): Promise<void> {
  using usb = Libusb.open();
  const descriptors: DescriptorReport[] = [];
  for (const [id, filter] of [["storage", STORAGE], ["ftdi", FTDI], ["kbd", KBD]] as const) {
    using dev = usb.openDevice(filter);
    descriptors.push(describe(dev, id));
  }
  let hello: KeyRead;
  let abort: AbortReport;
  {
    using kbd = usb.openDevice(KBD);
    kbd.claimInterface(0);
    hello = readKeys(kbd, "READY-HELLO", HELLO.length, 20_000);
    abort = await abortRead(kbd);
    kbd.releaseInterface(0);
  }
  const storage = await storageReset(usb);
  const report: MainReport = { descriptors, hello, abort, storage };
  console.log(`REPORT ${JSON.stringify(report)}`);
}

function guestDriver(): void {
  using usb = Libusb.open();
  using kbd = usb.openDevice(KBD);
  const name = sysfsDevice(kbd.info.busNumber, kbd.info.deviceAddress);
  // usbhid loaded before the command, but binding may lag enumeration by a little.
  const t0 = performance.now();
  while (!kbd.kernelDriverActive(0) && performance.now() - t0 < 5000) sleepSync(20);
  const waitedMs = Math.round(performance.now() - t0);
  const activeAtStart = kbd.kernelDriverActive(0);
  const sysfsDriverAtStart = sysfsDriver(name);
  const detached = kbd.detachKernelDriver(0);
  const activeAfterDetach = kbd.kernelDriverActive(0);
  kbd.claimInterface(0);
  const sysfsDriverWhileClaimed = sysfsDriver(name);
  const key = readKeys(kbd, "READY-DRIVER-KEY", 1, 15_000);
  kbd.releaseInterface(0);
  const activeAfterRelease = kbd.kernelDriverActive(0);
  let attach = "ok";
  try {
    kbd.attachKernelDriver(0);
  } catch (e) {
    attach = `${(e as Error).name}: ${(e as Error).message}`;
  }
  const report: DriverReport = {
    waitedMs,
    activeAtStart,
    sysfsDriverAtStart,
    detached,
    activeAfterDetach,
    sysfsDriverWhileClaimed,
    key,
    activeAfterRelease,
    attach,
    activeAtEnd: kbd.kernelDriverActive(0),
    sysfsDriverAtEnd: sysfsDriver(name),
  };
  console.log(`REPORT ${JSON.stringify(report)}`);
}

// -------------------------------------------------------------------------- host half

/** Waits for `text` on the guest's stdout; on failure throws with what the guest said. */
async function waitFor(guest: Guest, text: string, ms: number): Promise<void> {
  try {
    await guest.waitForStdout(text, ms);
  } catch (error) {
    await guest.kill();
    const r = await guest.wait();
    throw new Error(
      `${(error as Error).message}\ncode ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}` +
        `\nconsole:\n${r.console}`,
    );
  }
}

function reportOf<T>(r: GuestResult): T {
  const diag = `code ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}\nconsole:\n${r.console}`;
  assert.equal(r.code, 0, diag);
  const line = r.stdout.split("\n").find((l) => l.startsWith("REPORT "));
  assert.ok(line, `no REPORT line\n${diag}`);
  return JSON.parse(line.slice("REPORT ".length)) as T;
}

const endpoint = (endpointNumber: number, direction: string, type: string, packetSize: number) => ({
  endpointNumber,
  direction,
  type,
  packetSize,
});

/** What the host knows the three devices' single configuration holds. */
const KNOWN: Record<string, PlainConfiguration["interfaces"][0]["alternates"][0]> = {
  storage: {
    alternateSetting: 0,
    interfaceClass: 0x08,
    interfaceSubclass: 0x06,
    interfaceProtocol: 0x50,
    endpoints: [endpoint(1, "in", "bulk", 1024), endpoint(2, "out", "bulk", 1024)],
  },
  ftdi: {
    alternateSetting: 0,
    interfaceClass: 0xff,
    interfaceSubclass: 0xff,
    interfaceProtocol: 0xff,
    endpoints: [endpoint(1, "in", "bulk", 64), endpoint(2, "out", "bulk", 64)],
  },
  kbd: {
    alternateSetting: 0,
    interfaceClass: 3,
    interfaceSubclass: 1,
    interfaceProtocol: 1,
    endpoints: [endpoint(1, "in", "interrupt", 8)],
  },
};
const SPEED: Record<string, [string, string]> = {
  storage: ["super", "5000"],
  ftdi: ["full", "12"],
  kbd: ["high", "480"], // QEMU's usb-kbd defaults to usb_version=2: a high-speed device
};

function blockContent(): Uint8Array<ArrayBuffer> {
  const block = new Uint8Array(BLOCK);
  for (let i = 0; i < BLOCK; i++) block[i] = (i * 7 + 3) & 0xff;
  block.set(new TextEncoder().encode(`tbq usb layer LBA ${LBA}`));
  return block;
}

if (Deno.env.get("TBQ_HIL_GUEST") === "1") {
  if (Deno.args[0] === "driver") guestDriver();
  else await guestMain();
} else {
  hilTest(
    "usb layer: descriptors, HID interrupt IN, abort, reset (storage, FTDI, usb-kbd)",
    async () => {
      const image = await Deno.makeTempFile({ prefix: "tbq-usb-layer-", suffix: ".img" });
      try {
        const block = blockContent();
        {
          using f = await Deno.open(image, { write: true });
          await f.truncate(16 << 20);
          await f.seek(LBA * BLOCK, Deno.SeekMode.Start);
          await f.write(block);
        }
        await using guest = await bootGuest({
          command: [hostDeno(), "run", "-A", "--no-lock", THIS_FILE, "main"],
          keyboard: true,
          disk: { path: image },
          timeoutMs: 150_000,
        });
        await waitFor(guest, "READY-HELLO", 90_000);
        await guest.typeKeys(HELLO);
        await waitFor(guest, "READY-AFTER-ABORT", 40_000);
        await guest.typeKeys(["x"]);
        const rep = reportOf<MainReport>(await withTimeout(guest.wait(), 60_000, "guest exit"));

        // 1. Descriptors: the layer, the wire and the kernel agree, and hold what QEMU builds.
        for (const d of rep.descriptors) {
          console.log(
            `${d.id}: ${d.sysfsName} speed ${d.speed} (sysfs ${d.sysfsSpeed}) portPath ` +
              `[${d.portPath}] config ${d.activeConfiguration} names ${JSON.stringify(d.names)} ` +
              `raw ${d.rawControl}`,
          );
          assert.equal(d.rawControl, d.rawSysfs, `${d.id}: GET_DESCRIPTOR bytes = sysfs bytes`);
          assert.deepEqual(d.layer, [d.fromControl], `${d.id}: dev.configurations`);
          assert.deepEqual(d.fromSysfs, d.fromControl);
          assert.equal(d.activeConfiguration, 1);
          assert.deepEqual(d.layer[0].interfaces, [{
            interfaceNumber: 0,
            alternates: [KNOWN[d.id]],
          }]);
          assert.deepEqual([d.speed, d.sysfsSpeed], SPEED[d.id], `${d.id} speed`);
          assert.equal(`${d.busNumber}-${d.portPath.join(".")}`, d.sysfsName, `${d.id} portPath`);
        }

        // 2. Keys typed through QMP arrive in order as boot reports.
        console.log(`hello: reports ${rep.hello.reports.join(" ")} (drained ${rep.hello.drained})`);
        assert.deepEqual(rep.hello.keys, HELLO.map(usageOf));
        assert.equal(rep.hello.reports.length, 2 * HELLO.length, "one report per key down and up");

        // 3. Abort: settles within 100 ms (+ one clock tick), with the reason as cause.
        const a = rep.abort;
        console.log(
          `abort: settled ${a.settleMs} ms after abort() (${a.abortAfterMs} ms after the start); ` +
            `clocksource ${a.clocksource}, performance.now() step ${a.tickMs} ms; ${a.name} ` +
            `status ${a.status} transferred ${a.transferred} data ${a.dataLength}`,
        );
        assert.equal(a.name, "LIBUSB_ERROR_INTERRUPTED");
        assert.equal(a.status, Status.Cancelled, `status ${statusName(a.status as number)}`);
        assert.equal(a.causeIsReason, true, "cause is the signal's reason");
        assert.equal(a.transferred, 0);
        assert.equal(a.dataLength, 0);
        assert.ok(a.abortAfterMs >= 290, `aborted after ${a.abortAfterMs} ms`);
        const tick = Number.isFinite(a.tickMs) ? Math.min(a.tickMs, 10) : 10;
        assert.ok(a.settleMs <= 100 + tick, `settled ${a.settleMs} ms after the abort`);
        assert.deepEqual(a.afterwards.keys, [usageOf("x")], "the device works after the abort");

        // 4. Reset, then the storage answers and reads the image's block.
        const s = rep.storage;
        console.log(`storage reset: ${JSON.stringify(s)}`);
        const sha = await sha256(block);
        assert.deepEqual(s.before, { tur: 0, readStatus: 0, sha });
        assert.equal(s.reset, "ok");
        assert.equal(s.after.tur.at(-1), 0, `TEST UNIT READY after reset: ${s.after.tur}`);
        assert.equal(s.after.readStatus, 0);
        assert.equal(s.after.sha, sha);

        // Last, so that everything above is checked and printed first.
        assert.equal(
          a.immediatelyAfter,
          "LIBUSB_ERROR_TIMEOUT",
          "a transfer right after the aborted one settled must not find the endpoint busy",
        );
      } finally {
        await Deno.remove(image).catch(() => {});
      }
    },
  );

  hilTest("usb layer: kernel driver query, detach and attach (usbhid on the usb-kbd)", async () => {
    await using guest = await bootGuest({
      command: [hostDeno(), "run", "-A", "--no-lock", THIS_FILE, "driver"],
      keyboard: true,
      disk: false,
      serial: false,
      modules: ["usbhid", "hid_generic"],
      timeoutMs: 120_000,
    });
    await waitFor(guest, "READY-DRIVER-KEY", 90_000);
    await guest.typeKeys(["k"]);
    const rep = reportOf<DriverReport>(await withTimeout(guest.wait(), 60_000, "guest exit"));
    console.log(`kernel driver: ${JSON.stringify(rep)}`);
    assert.equal(rep.activeAtStart, true, "usbhid bound at start");
    assert.equal(rep.sysfsDriverAtStart, "usbhid");
    assert.equal(rep.detached, true);
    assert.equal(rep.activeAfterDetach, false);
    assert.equal(rep.sysfsDriverWhileClaimed, "usbfs");
    assert.deepEqual(rep.key.keys, [usageOf("k")]);
    assert.equal(rep.attach, "ok");
    assert.equal(rep.activeAtEnd, true, "usbhid bound again");
    assert.equal(rep.sysfsDriverAtEnd, "usbhid");
  });
}
