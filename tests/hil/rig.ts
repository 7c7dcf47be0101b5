/**
 * Hardware-in-the-loop rig for tbq: boots a throw-away QEMU x86-64 guest
 * (TCG, Debian's stock kernel, a busybox initramfs built by `prepare.sh`) with
 * QEMU-emulated USB devices on a `qemu-xhci` controller, runs one command in
 * it with the host's root filesystem visible (read-only 9p + tmpfs overlay)
 * and the host's working directory shared read-write at the same path, and
 * hands back the command's exit code, stdout and stderr.
 *
 * Devices: `usb-storage` (46f4:0001) over a raw image file on the host, and
 * `usb-serial` (FTDI 0403:6001) whose chardev is a unix socket the rig holds:
 * bytes the guest writes arrive in {@link SerialLink}, and the host can write
 * back; optionally a `usb-kbd` (0627:0001) the host types on through QMP
 * ({@link Guest.typeKeys}). The USB class drivers stay unloaded (unless
 * `modules` asks for them) so libusb can claim interfaces; `hotplug` starts a
 * uevent relay so libusb in the guest sees devices come and go.
 *
 * See README.md in this directory.
 *
 * @module
 */

const HERE = new URL(".", import.meta.url).pathname;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The artefacts `prepare.sh` leaves in the cache (its `manifest.json`). */
export interface RigManifest {
  /** Debian package the kernel came from, e.g. `linux-image-6.1.0-56-amd64`. */
  kernelPackage: string;
  /** Kernel release (also the modules directory name), e.g. `6.1.0-56-amd64`. */
  kernelRelease: string;
  /** Uncompressed ELF kernel, booted directly through its PVH entry. */
  vmlinux: string;
  /** The package's compressed bzImage (slower to boot under TCG). */
  bzImage: string;
  /** Uncompressed newc cpio with busybox, the boot modules and /init. */
  initramfs: string;
  /** The package's full module tree, symlinked into the guest's /lib/modules. */
  modulesDir: string;
  /** Static busybox on the host (also reachable inside the guest). */
  busybox: string;
}

/** Raw disk image backing the guest's `usb-storage` device. */
export interface DiskOptions {
  /** Host path of the raw image; default: a file in the run directory. */
  path?: string;
  /** Size in MiB; the image is created (sparse) or resized to it. Default 16. */
  sizeMiB?: number;
}

/** How to boot a guest and what to run in it. */
export interface GuestOptions {
  /** Argument vector (executed directly) or a shell command line (`sh -c`). */
  command: string[] | string;
  /** Extra environment for the command (PATH and HOME default to the host's). */
  env?: Record<string, string>;
  /** Directory the command starts in; default: `workdir`. */
  cwd?: string;
  /** Host directory shared read-write at the same path; default `Deno.cwd()`. */
  workdir?: string;
  /** More host directories shared read-write at the same path. */
  shares?: string[];
  /** The usb-storage device's image; `false` leaves the device out. */
  disk?: DiskOptions | false;
  /** Attach the FTDI usb-serial device (default true). */
  serial?: boolean;
  /**
   * Attach a QEMU `usb-kbd` (0627:0001, id `kbd`, high speed (QEMU's `usb_version=2`), on a USB2 root port of `xhci.0`);
   * type on it with {@link Guest.typeKeys}. Default false.
   */
  keyboard?: boolean;
  /**
   * Start the uevent relay (`uevent_relay.ts`) before the command, so libudev monitors, such as
   * the one behind libusb's device list and hotplug callbacks, see devices arrive and leave (the
   * guest runs no udevd). The command starts only once the relay listens. Costs about 1 s of boot
   * (deno's start-up in the guest, partly overlapped with USB enumeration). Default false.
   */
  hotplug?: boolean;
  /**
   * Kernel modules (with their dependencies) loaded before the command, e.g.
   * `["usbhid", "hid_generic"]` to have a kernel driver bound to the keyboard. `usbhid` and
   * `hid_generic` ship in the initramfs and load before USB enumeration ends; others are
   * `modprobe`d from the cached module tree. A driver may still be binding as the command starts.
   */
  modules?: string[];
  /** Kill QEMU after this long (default 120 000 ms). */
  timeoutMs?: number;
  /** Guest memory in MiB (default 1024). */
  memoryMiB?: number;
  /** Guest vCPUs (default 1; the machine has 2 cores shared with others). */
  cpus?: number;
  /** Boot the compressed bzImage instead of vmlinux (slower; for comparison). */
  useBzImage?: boolean;
  /** Extra kernel command line arguments. */
  kernelArgs?: string;
  /** Extra QEMU arguments, e.g. more `-device` lines. */
  qemuArgs?: string[];
  /**
   * USB devices (not hubs) the guest's init waits for (bounded, 10 s) before
   * starting the command; default: the rig's own (storage, FTDI, keyboard as
   * enabled). Raise it when `qemuArgs` adds USB devices.
   */
  waitUsbDevices?: number;
  /** Keep the run directory after disposal (its path is in the result). */
  keepRunDir?: boolean;
}

/** What a finished guest run produced. */
export interface GuestResult {
  /** Exit code of the guest command; null when it never finished. */
  code: number | null;
  /** The command's stdout. */
  stdout: string;
  /** The command's stderr. */
  stderr: string;
  /** The guest's serial console (kernel messages and `TBQ-HIL:` markers). */
  console: string;
  /** Milliseconds from spawning QEMU to the guest command starting. */
  bootMs: number | null;
  /** Milliseconds from spawning QEMU to QEMU exiting. */
  totalMs: number;
  /** True when the rig killed QEMU because `timeoutMs` ran out. */
  timedOut: boolean;
  /** QEMU's own exit code and stderr. */
  qemu: { code: number; stderr: string };
  /** Every byte the guest wrote to the FTDI device. */
  serialOutput: Uint8Array;
  /**
   * The uevent relay's output with `hotplug` ("listening", then one line per relayed event:
   * `ms seqnum action devpath subsystem[/devtype]`); "" without.
   */
  relayLog: string;
  /** The run directory (removed on disposal unless `keepRunDir`). */
  runDir: string;
}

/** The rig's cache directory (`$TBQ_HIL_CACHE` or `~/.cache/tbq-hil`). */
export function cacheDir(): string {
  return Deno.env.get("TBQ_HIL_CACHE") ??
    `${Deno.env.get("HOME") ?? "/root"}/.cache/tbq-hil`;
}

/** Reads the manifest `prepare.sh` wrote; throws with a hint when missing. */
export async function loadManifest(): Promise<RigManifest> {
  const path = `${cacheDir()}/manifest.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    throw new Error(`HIL rig not prepared (no ${path}): run 'bash ${HERE}prepare.sh' as root`);
  }
  const m = JSON.parse(text) as RigManifest;
  for (const f of [m.vmlinux, m.initramfs]) {
    if (!(await exists(f))) throw new Error(`HIL rig cache incomplete (${f}): rerun prepare.sh`);
  }
  return m;
}

/** Runs `prepare.sh` (idempotent: quick when the cache is current). */
export async function prepare(): Promise<void> {
  const out = await new Deno.Command("bash", {
    args: [`${HERE}prepare.sh`],
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`prepare.sh failed with exit code ${out.code}`);
}

/**
 * The host's TSC frequency in kHz, when it can be trusted to be the `cpu MHz` of /proc/cpuinfo
 * (a constant, non-stop TSC and no CPU frequency scaling, as in a cloud VM); else null. Under
 * TCG the guest's TSC runs at the host's rate, but the guest kernel cannot calibrate it (no
 * HPET or ACPI PM timer with `acpi=off`, the PIT too jittery) and falls back to jiffies, a 4 ms
 * clock; the rig passes this as `tsc_early_khz` so the guest keeps the TSC.
 *
 * @example
 * ```ts
 * import { hostTscKhz } from "./rig.ts";
 * const khz = hostTscKhz();
 * console.log(khz === null ? "guest clock: jiffies" : `guest TSC at ${khz} kHz`);
 * ```
 */
export function hostTscKhz(): number | null {
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    const flags = info.match(/^flags\s*:(.*)$/m)?.[1].split(" ") ?? [];
    if (!flags.includes("constant_tsc") || !flags.includes("nonstop_tsc")) return null;
    try {
      Deno.statSync("/sys/devices/system/cpu/cpu0/cpufreq");
      return null; // frequency scaling: "cpu MHz" is the current clock, not the TSC's
    } catch { /* none: "cpu MHz" is the TSC frequency the kernel detected */ }
    const mhz = Number(info.match(/^cpu MHz\s*:\s*([0-9.]+)$/m)?.[1]);
    return Number.isFinite(mhz) && mhz > 100 ? Math.round(mhz * 1000) : null;
  } catch {
    return null;
  }
}

/** Path of the uevent relay program (reachable in the guest through the 9p root). */
export const RELAY_PROGRAM: string = `${HERE}uevent_relay.ts`;

/** The host's deno executable with symlinks resolved (valid in the guest too). */
export function hostDeno(): string {
  return Deno.realPathSync(Deno.execPath());
}

/** A QMP event as QEMU sent it. */
export interface QmpEvent {
  /** Event name, e.g. `DEVICE_DELETED`. */
  event: string;
  /** Event payload. */
  data?: Record<string, unknown>;
  /** QEMU's timestamp. */
  timestamp?: { seconds: number; microseconds: number };
}

/** Error answer to a QMP command. */
export class QmpError extends Error {
  /** QMP error class, e.g. `GenericError` or `DeviceNotFound`. */
  readonly errorClass: string;
  /** Wraps QMP's `{ class, desc }`. */
  constructor(command: string, error: { class: string; desc: string }) {
    super(`QMP ${command}: ${error.class}: ${error.desc}`);
    this.errorClass = error.class;
  }
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void; command: string };
type Waiter<T> = { test: (v: T) => boolean; resolve: (v: T) => void };

/**
 * Minimal QMP client over a connected stream. Use {@link QmpClient.execute}
 * for commands (e.g. `device_del` with `{ id: "storage" }`) and
 * {@link QmpClient.waitForEvent} for asynchronous events.
 */
export class QmpClient {
  #conn: Deno.Conn;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #events: QmpEvent[] = [];
  #eventWaiters: Waiter<QmpEvent>[] = [];
  #greeting: Promise<unknown>;
  #closed = false;
  #writeChain: Promise<void> = Promise.resolve();
  /** Resolves when the connection has ended. */
  readonly done: Promise<void>;

  /** Starts reading from `conn`; call {@link QmpClient.open} instead. */
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    let onGreeting!: (v: unknown) => void;
    this.#greeting = new Promise((r) => onGreeting = r);
    this.done = this.#read(onGreeting);
  }

  /** Connects the client: waits for QEMU's greeting, negotiates capabilities. */
  static async open(conn: Deno.Conn, timeoutMs = 30_000): Promise<QmpClient> {
    const c = new QmpClient(conn);
    await withTimeout(c.#greeting, timeoutMs, "QMP greeting");
    await withTimeout(c.execute("qmp_capabilities"), timeoutMs, "qmp_capabilities");
    return c;
  }

  async #read(onGreeting: (v: unknown) => void): Promise<void> {
    let buf = "";
    try {
      for await (const chunk of this.#conn.readable) {
        buf += decoder.decode(chunk, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) this.#dispatch(JSON.parse(line), onGreeting);
        }
      }
    } catch {
      // connection reset when QEMU dies: treat as end of stream
    } finally {
      this.#closed = true;
      onGreeting(null);
      for (const p of this.#pending.values()) {
        p.reject(new Error(`QMP ${p.command}: connection closed`));
      }
      this.#pending.clear();
    }
  }

  #dispatch(msg: Record<string, unknown>, onGreeting: (v: unknown) => void): void {
    if ("QMP" in msg) return onGreeting(msg.QMP);
    if ("event" in msg) {
      const ev = msg as unknown as QmpEvent;
      this.#events.push(ev);
      this.#eventWaiters = this.#eventWaiters.filter((w) => !(w.test(ev) && (w.resolve(ev), true)));
      return;
    }
    const p = this.#pending.get(msg.id as number);
    if (!p) return;
    this.#pending.delete(msg.id as number);
    if ("error" in msg) {
      p.reject(new QmpError(p.command, msg.error as { class: string; desc: string }));
    } else p.resolve(msg.return);
  }

  /** Sends one QMP command and resolves with its `return` value. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.#closed) return Promise.reject(new Error(`QMP ${command}: connection closed`));
    const id = this.#nextId++;
    const msg = JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id });
    const answer = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, command });
    });
    this.#writeChain = this.#writeChain.then(() => writeAll(this.#conn, encoder.encode(msg + "\n")))
      .catch((e) => this.#pending.get(id)?.reject(e));
    return answer;
  }

  /** Events received so far. */
  events(): readonly QmpEvent[] {
    return this.#events;
  }

  /** Resolves with the first event named `name` (already received or next). */
  waitForEvent(
    name: string,
    timeoutMs: number,
    match: (e: QmpEvent) => boolean = () => true,
  ): Promise<QmpEvent> {
    const test = (e: QmpEvent) => e.event === name && match(e);
    const seen = this.#events.find(test);
    if (seen) return Promise.resolve(seen);
    let waiter!: Waiter<QmpEvent>;
    const p = new Promise<QmpEvent>((resolve) => waiter = { test, resolve });
    this.#eventWaiters.push(waiter);
    return withTimeout(p, timeoutMs, `QMP event ${name}`).finally(() => {
      this.#eventWaiters = this.#eventWaiters.filter((w) => w !== waiter);
    });
  }

  /** Closes the connection (QEMU keeps running). */
  close(): void {
    this.#closed = true;
    closeQuietly(this.#conn);
  }
}

/**
 * The host end of the FTDI device's chardev: what the guest sends out of the
 * device's bulk OUT endpoint arrives here (and in the file {@link filePath});
 * what the host writes is what the guest reads from bulk IN. QEMU's FTDI model
 * drops its receive buffer on USB/FTDI resets, so write only once the guest
 * has opened and configured the device.
 */
export class SerialLink {
  #conn: Deno.Conn;
  #chunks: Uint8Array[] = [];
  #size = 0;
  #waiters: Waiter<Uint8Array>[] = [];
  /** Host file holding every byte the guest wrote so far. */
  readonly filePath: string;
  /** Resolves when the chardev connection has ended (QEMU exited). */
  readonly done: Promise<void>;

  /** Wraps the accepted chardev connection; created by {@link bootGuest}. */
  constructor(conn: Deno.Conn, filePath: string) {
    this.#conn = conn;
    this.filePath = filePath;
    this.done = this.#read();
  }

  async #read(): Promise<void> {
    const file = await Deno.open(this.filePath, { write: true, create: true, truncate: true });
    try {
      for await (const chunk of this.#conn.readable) {
        this.#chunks.push(chunk);
        this.#size += chunk.length;
        await writeAll(file, chunk);
        const all = this.received();
        this.#waiters = this.#waiters.filter((w) => !(w.test(all) && (w.resolve(all), true)));
      }
    } catch {
      // reset at QEMU exit
    } finally {
      file.close();
    }
  }

  /** All bytes the guest has written so far. */
  received(): Uint8Array {
    const out = new Uint8Array(this.#size);
    let o = 0;
    for (const c of this.#chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }

  /** Resolves with everything received once it contains `needle`. */
  waitFor(needle: Uint8Array | string, timeoutMs: number): Promise<Uint8Array> {
    const n = typeof needle === "string" ? encoder.encode(needle) : needle;
    const test = (all: Uint8Array) => indexOfBytes(all, n) >= 0;
    const now = this.received();
    if (test(now)) return Promise.resolve(now);
    let waiter!: Waiter<Uint8Array>;
    const p = new Promise<Uint8Array>((resolve) => waiter = { test, resolve });
    this.#waiters.push(waiter);
    return withTimeout(p, timeoutMs, "serial data").finally(() => {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
    });
  }

  /** Sends bytes to the guest (they queue in the FTDI model's receive buffer). */
  write(data: Uint8Array | string): Promise<void> {
    return writeAll(this.#conn, typeof data === "string" ? encoder.encode(data) : data);
  }

  /** Closes the host end (without `always-plugged` the device would detach). */
  close(): void {
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }
}

/**
 * A running guest: one QEMU process running one command. Await
 * {@link Guest.wait} for the result; dispose (`await using`) to kill QEMU if
 * it still runs and to remove the run directory.
 */
export class Guest {
  /** Per-run host directory (shared into the guest at the same path). */
  readonly runDir: string;
  /** QMP client of this guest's QEMU (hot-plug: `device_del` id `storage`/`ftdi`). */
  readonly qmp: QmpClient;
  /** Host end of the FTDI chardev, or null without `serial`. */
  readonly serial: SerialLink | null;
  /** Host path of the usb-storage image, or null without a disk. */
  readonly diskPath: string | null;
  /** Resolves with ms from QEMU spawn to command start, or null if it never started. */
  readonly commandStarted: Promise<number | null>;

  #child: Deno.ChildProcess;
  #t0: number;
  #consoleText = "";
  #consoleWaiters: Waiter<string>[] = [];
  #consoleDone: Promise<void>;
  #status: Promise<Deno.CommandStatus>;
  #qemuStderr: Promise<string>;
  #timer: ReturnType<typeof setTimeout>;
  #timedOut = false;
  #exited = false;
  #exitHooks = new Set<() => void>();
  #result: Promise<GuestResult> | null = null;
  #keep: boolean;

  /** Assembled by {@link bootGuest}. */
  constructor(init: {
    runDir: string;
    child: Deno.ChildProcess;
    t0: number;
    console: Deno.Conn;
    qmp: QmpClient;
    serial: SerialLink | null;
    diskPath: string | null;
    timeoutMs: number;
    keep: boolean;
    status: Promise<Deno.CommandStatus>;
    qemuStderr: Promise<string>;
  }) {
    this.runDir = init.runDir;
    this.#child = init.child;
    this.#t0 = init.t0;
    this.qmp = init.qmp;
    this.serial = init.serial;
    this.diskPath = init.diskPath;
    this.#keep = init.keep;
    this.#status = init.status;
    this.#qemuStderr = init.qemuStderr;
    this.#timer = setTimeout(() => {
      this.#timedOut = true;
      this.#kill();
    }, init.timeoutMs);
    this.#status.then(() => {
      this.#exited = true;
      clearTimeout(this.#timer);
      for (const hook of this.#exitHooks) hook();
    });
    this.#consoleDone = this.#readConsole(init.console);
    this.commandStarted = new Promise((resolve) => {
      this.#onStarted = resolve;
      this.#consoleDone.then(() => resolve(this.#started));
    });
  }

  #onStarted: (ms: number) => void = () => {};

  #started: number | null = null;

  async #readConsole(conn: Deno.Conn): Promise<void> {
    const file = await Deno.open(`${this.runDir}/console.log`, { write: true, create: true });
    const dec = new TextDecoder();
    try {
      for await (const chunk of conn.readable) {
        await writeAll(file, chunk);
        const before = this.#consoleText.length;
        this.#consoleText += dec.decode(chunk, { stream: true });
        if (
          this.#started === null &&
          this.#consoleText.indexOf("TBQ-HIL: command-start", Math.max(0, before - 32)) >= 0
        ) {
          this.#started = performance.now() - this.#t0;
          this.#onStarted(this.#started);
        }
        const text = this.#consoleText;
        this.#consoleWaiters = this.#consoleWaiters.filter((w) =>
          !(w.test(text) && (w.resolve(text), true))
        );
      }
    } catch {
      // reset at QEMU exit
    } finally {
      file.close();
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }

  /** Milliseconds since QEMU was spawned. */
  elapsedMs(): number {
    return performance.now() - this.#t0;
  }

  /** The guest console so far. */
  console(): string {
    return this.#consoleText;
  }

  /** Resolves with the console text once it contains `text`. */
  waitForConsole(text: string, timeoutMs: number): Promise<string> {
    const test = (s: string) => s.includes(text);
    if (test(this.#consoleText)) return Promise.resolve(this.#consoleText);
    let waiter!: Waiter<string>;
    const p = new Promise<string>((resolve) => waiter = { test, resolve });
    this.#consoleWaiters.push(waiter);
    const gone = this.#consoleDone.then(() => {
      throw new Error(`guest ended before console showed ${JSON.stringify(text)}`);
    });
    return withTimeout(Promise.race([p, gone]), timeoutMs, `console ${JSON.stringify(text)}`)
      .finally(() => {
        this.#consoleWaiters = this.#consoleWaiters.filter((w) => w !== waiter);
      });
  }

  /**
   * Resolves with the guest command's stdout so far once it contains `text`
   * (inotify on the run directory; rejects when the guest ends first or after
   * `timeoutMs`). Use it to sync host actions with guest progress.
   */
  async waitForStdout(text: string, timeoutMs: number): Promise<string> {
    const path = `${this.runDir}/stdout`;
    const check = async () => {
      try {
        const s = await Deno.readTextFile(path);
        return s.includes(text) ? s : null;
      } catch {
        return null;
      }
    };
    const watcher = Deno.watchFs(this.runDir, { recursive: false });
    let why = "timed out";
    const stop = (reason: string) => () => {
      why = reason;
      try {
        watcher.close();
      } catch { /* closed */ }
    };
    const onExit = stop("QEMU exited");
    this.#exitHooks.add(onExit);
    const timer = setTimeout(stop(`timed out after ${timeoutMs} ms`), timeoutMs);
    try {
      let s = await check();
      if (s !== null) return s;
      if (this.#exited) throw new Error("QEMU exited");
      for await (const ev of watcher) {
        if (!ev.paths.some((p) => p.endsWith("/stdout") || p.endsWith("/exit"))) continue;
        s = await check();
        if (s !== null) return s;
        if (await exists(`${this.runDir}/exit`)) {
          why = "guest command exited";
          break;
        }
      }
      throw new Error(`waiting for stdout ${JSON.stringify(text)}: ${why}`);
    } finally {
      clearTimeout(timer);
      this.#exitHooks.delete(onExit);
      try {
        watcher.close();
      } catch { /* closed */ }
    }
  }

  /**
   * Types on the `usb-kbd` (needs `keyboard: true`): for each QEMU qcode (`"a"`, `"h"`, `"ret"`,
   * `"shift"`, ...) a key-down then a key-up event through QMP `input-send-event`, `delayMs`
   * (default 30) between keys. QEMU's HID model queues up to 16 events; the guest sees one
   * 8-byte boot report per event (down: the key's usage ID in byte 2; up: all zero).
   *
   * @example
   * ```ts
   * import { bootGuest } from "./rig.ts";
   * async function hello(): Promise<void> {
   *   await using guest = await bootGuest({ command: "sleep 5", keyboard: true });
   *   await guest.commandStarted;
   *   await guest.typeKeys(["h", "e", "l", "l", "o"]);
   * }
   * ```
   */
  async typeKeys(keys: readonly string[], options: { delayMs?: number } = {}): Promise<void> {
    const delayMs = options.delayMs ?? 30;
    for (const [i, key] of keys.entries()) {
      if (i > 0 && delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      for (const down of [true, false]) {
        await this.qmp.execute("input-send-event", {
          events: [{ type: "key", data: { down, key: { type: "qcode", data: key } } }],
        });
      }
    }
  }

  #kill(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* already gone */ }
  }

  /** Waits for the guest to power off (or time out) and collects the result. */
  wait(): Promise<GuestResult> {
    this.#result ??= this.#collect();
    return this.#result;
  }

  async #collect(): Promise<GuestResult> {
    const status = await this.#status;
    const totalMs = performance.now() - this.#t0;
    await this.#consoleDone;
    await this.serial?.done;
    this.serial?.close();
    this.qmp.close();
    await this.qmp.done;
    const read = async (name: string) => {
      try {
        return await Deno.readTextFile(`${this.runDir}/${name}`);
      } catch {
        return null;
      }
    };
    const exit = await read("exit");
    const code = exit === null ? null : Number.parseInt(exit.trim(), 10);
    return {
      code: Number.isNaN(code) ? null : code,
      stdout: (await read("stdout")) ?? "",
      stderr: (await read("stderr")) ?? "",
      console: this.#consoleText,
      bootMs: this.#started,
      totalMs,
      timedOut: this.#timedOut,
      qemu: { code: status.code, stderr: await this.#qemuStderr },
      serialOutput: this.serial?.received() ?? new Uint8Array(),
      relayLog: (await read("uevent-relay.log")) ?? "",
      runDir: this.runDir,
    };
  }

  /** Kills QEMU if it still runs and waits until everything is closed. */
  async kill(): Promise<void> {
    if (!this.#exited) this.#kill();
    await this.wait();
  }

  /** Kills QEMU if needed and removes the run directory (unless kept). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
    if (!this.#keep) {
      await Deno.remove(this.runDir, { recursive: true }).catch(() => {});
    }
  }
}

/**
 * Boots a guest that runs `options.command` once and powers off. Resolves
 * once QEMU runs and the rig holds its console, QMP and FTDI connections
 * (before the guest has booted: see {@link Guest.commandStarted}).
 */
export async function bootGuest(options: GuestOptions): Promise<Guest> {
  const manifest = await loadManifest();
  const workdir = options.workdir ?? Deno.cwd();
  const cwd = options.cwd ?? workdir;
  const shares = [workdir, ...(options.shares ?? [])].filter((p) => p !== "/");
  const runDir = await Deno.makeTempDir({ prefix: "tbq-hil-" });
  const serialOn = options.serial ?? true;
  let diskPath: string | null = null;
  const cleanups: (() => void)[] = [];
  let waitChild = () => Promise.resolve();
  try {
    if (options.disk !== false) {
      const d = options.disk ?? {};
      diskPath = d.path ?? `${runDir}/disk.img`;
      const size = (d.sizeMiB ?? 16) * 1024 * 1024;
      const f = await Deno.open(diskPath, { write: true, create: true });
      try {
        if (d.sizeMiB !== undefined || (await f.stat()).size === 0) await f.truncate(size);
      } finally {
        f.close();
      }
    }

    await Deno.writeTextFile(
      `${runDir}/config.sh`,
      configScript(manifest, runDir, shares, {
        usbDevices: options.waitUsbDevices ??
          (diskPath ? 1 : 0) + (serialOn ? 1 : 0) + (options.keyboard ? 1 : 0),
        modules: (options.modules ?? []).map((m) => m.replaceAll("-", "_")),
        relay: options.hotplug ? relayCommand() : null,
      }),
    );
    await Deno.writeTextFile(`${runDir}/job.sh`, jobScript(options, cwd));

    const sock = (name: string) => {
      const path = `${runDir}/${name}.sock`;
      const listener = Deno.listen({ transport: "unix", path });
      let open = true;
      cleanups.push(() => {
        if (open) listener.close();
        open = false;
      });
      return {
        path,
        listener: {
          accept: () => listener.accept(),
          close: () => {
            if (open) listener.close();
            open = false;
          },
        },
      };
    };
    const con = sock("console");
    const qmpSock = sock("qmp");
    const ftdi = serialOn ? sock("ftdi") : null;

    const args = qemuArgs(manifest, options, runDir, shares, {
      console: con.path,
      qmp: qmpSock.path,
      ftdi: ftdi?.path ?? null,
      disk: diskPath,
    });
    const t0 = performance.now();
    const child = new Deno.Command("qemu-system-x86_64", {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const status = child.status;
    const qemuStderr = Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
    ]).then(([o, e]) => (o + e).trim());
    cleanups.push(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    });
    waitChild = async () => {
      await status;
      await qemuStderr;
    };

    const accepts = Promise.all([
      con.listener.accept(),
      qmpSock.listener.accept(),
      ftdi ? ftdi.listener.accept() : Promise.resolve(null),
    ]);
    accepts.catch(() => {});
    const died = status.then(async (s) => {
      throw new Error(`QEMU exited (${s.code}) before connecting: ${await qemuStderr}`);
    });
    died.catch(() => {});
    const [conConn, qmpConn, ftdiConn] = await withTimeout(
      Promise.race([accepts, died]),
      30_000,
      "QEMU connecting its chardevs",
    );
    for (const l of [con, qmpSock, ftdi]) l?.listener.close();
    for (const p of [con.path, qmpSock.path, ftdi?.path]) {
      if (p) await Deno.remove(p).catch(() => {}); // Deno may have removed it already
    }

    let qmp: QmpClient;
    try {
      qmp = await QmpClient.open(qmpConn);
    } catch (e) {
      for (const c of [conConn, ftdiConn, qmpConn]) if (c) closeQuietly(c);
      const exited = await withTimeout(status, 2000, "QEMU exit").catch(() => null);
      if (exited) throw new Error(`QEMU exited (${exited.code}): ${await qemuStderr}`);
      throw e;
    }
    cleanups.length = 0;
    return new Guest({
      runDir,
      child,
      t0,
      console: conConn,
      qmp,
      serial: ftdiConn ? new SerialLink(ftdiConn, `${runDir}/ftdi-out.bin`) : null,
      diskPath,
      timeoutMs: options.timeoutMs ?? 120_000,
      keep: options.keepRunDir ?? false,
      status,
      qemuStderr,
    });
  } catch (e) {
    for (const c of cleanups.reverse()) c();
    await waitChild();
    if (!options.keepRunDir) await Deno.remove(runDir, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** Boots a guest, runs one command, powers off and returns the result. */
export async function runInGuest(options: GuestOptions): Promise<GuestResult> {
  await using guest = await bootGuest(options);
  return await guest.wait();
}

/** Quotes one word for a POSIX shell. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

function qemuPath(p: string): string {
  return p.replaceAll(",", ",,");
}

/** The shell command (run chrooted by the guest's init) that starts the uevent relay. */
function relayCommand(): string {
  const env = [
    `HOME=${Deno.env.get("HOME") ?? "/root"}`, // the host's deno cache, read through the overlay
    `PATH=${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
    "NO_COLOR=1",
    "DENO_NO_UPDATE_CHECK=1",
  ];
  const argv = [hostDeno(), "run", "-A", "--no-lock", "--no-config", RELAY_PROGRAM];
  return ["exec", "env", "-i", ...env, ...argv, "/run/tbq-uevent-relay.ready"].map(shellQuote)
    .join(" ");
}

function configScript(
  m: RigManifest,
  runDir: string,
  shares: string[],
  o: { usbDevices: number; modules: string[]; relay: string | null },
): string {
  for (const mod of o.modules) {
    if (!/^[A-Za-z0-9_]+$/.test(mod)) throw new Error(`bad module name ${mod}`);
  }
  const lines = [
    `TBQ_RUNDIR=${shellQuote(runDir)}`,
    `TBQ_KVER=${shellQuote(m.kernelRelease)}`,
    `TBQ_MODDIR=${shellQuote(m.modulesDir)}`,
    `TBQ_USB_DEVICES=${o.usbDevices}`,
    `TBQ_MODULES=${shellQuote(o.modules.join(" "))}`,
    `TBQ_RELAY=${shellQuote(o.relay ?? "")}`,
    "tbq_shares() {",
    "  :",
    ...shares.map((p, i) => `  share tbqshare${i} ${shellQuote(p)}`),
    "}",
  ];
  return lines.join("\n") + "\n";
}

function jobScript(o: GuestOptions, cwd: string): string {
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    HOME: Deno.env.get("HOME") ?? "/root",
    LANG: "C.UTF-8",
    NO_COLOR: "1",
    TBQ_HIL_GUEST: "1",
    ...o.env,
  };
  const argv = typeof o.command === "string" ? ["/bin/sh", "-c", o.command] : o.command;
  if (argv.length === 0) throw new Error("empty guest command");
  return [
    ...Object.entries(env).map(([k, v]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`bad env name ${k}`);
      return `export ${k}=${shellQuote(v)}`;
    }),
    `cd ${shellQuote(cwd)} || exit 125`,
    `exec ${argv.map(shellQuote).join(" ")}`,
    "",
  ].join("\n");
}

function qemuArgs(
  m: RigManifest,
  o: GuestOptions,
  runDir: string,
  shares: string[],
  s: { console: string; qmp: string; ftdi: string | null; disk: string | null },
): string[] {
  const virtfs = (path: string, tag: string, ro: boolean) => [
    "-virtfs",
    `local,path=${qemuPath(path)},mount_tag=${tag},security_model=none,multidevs=remap` +
    (ro ? ",readonly=on" : ""),
  ];
  const append = [
    "console=ttyS0",
    "quiet",
    "panic=-1",
    // ACPI off boots ~0.4 s faster, but with it off a PVH-booted kernel finds one CPU only (the
    // MADT is how it learns of the others), so a guest asked for several CPUs keeps ACPI.
    (o.cpus ?? 1) > 1 ? "" : "acpi=off",
    "mitigations=off",
    "tsc=reliable",
    "no_timer_check",
    "8250.nr_uarts=1",
    tscArgument(o.kernelArgs),
    o.kernelArgs ?? "",
  ].join(" ").replace(/ +/g, " ").trim();
  const args = [
    ...["-nodefaults", "-no-user-config", "-machine", "pc", "-accel", "tcg", "-cpu", "max"],
    ...["-smp", String(o.cpus ?? 1), "-m", String(o.memoryMiB ?? 1024)],
    ...["-display", "none", "-no-reboot"],
    ...["-kernel", o.useBzImage ? m.bzImage : m.vmlinux, "-initrd", m.initramfs],
    ...["-append", append],
    ...["-chardev", `socket,id=con,path=${qemuPath(s.console)}`, "-serial", "chardev:con"],
    ...["-chardev", `socket,id=qmp,path=${qemuPath(s.qmp)}`, "-mon", "chardev=qmp,mode=control"],
    ...virtfs("/", "hostroot", true),
    ...virtfs(runDir, "tbqrun", false),
    ...shares.flatMap((p, i) => virtfs(p, `tbqshare${i}`, false)),
    ...["-device", "qemu-xhci,id=xhci,p2=8,p3=8"],
  ];
  if (s.disk) {
    args.push(
      ...["-blockdev", `driver=file,filename=${qemuPath(s.disk)},node-name=disk0-file`],
      ...["-blockdev", "driver=raw,file=disk0-file,node-name=disk0"],
      ...["-device", "usb-storage,bus=xhci.0,drive=disk0,id=storage"],
    );
  }
  if (s.ftdi) {
    args.push(
      ...["-chardev", `socket,id=ftdi,path=${qemuPath(s.ftdi)}`],
      ...["-device", "usb-serial,bus=xhci.0,chardev=ftdi,id=ftdi,always-plugged=on"],
    );
  }
  if (o.keyboard) args.push("-device", "usb-kbd,bus=xhci.0,id=kbd");
  return [...args, ...(o.qemuArgs ?? [])];
}

/** `tsc_early_khz=…` unless the caller gives one (or the host's TSC rate is unknown). */
function tscArgument(kernelArgs: string | undefined): string {
  if (kernelArgs?.includes("tsc_early_khz=")) return "";
  const khz = hostTscKhz();
  return khz === null ? "" : `tsc_early_khz=${khz}`;
}

/** Closes a resource that may already be closed (a drained `readable` closes it). */
function closeQuietly(r: { close(): void }): void {
  try {
    r.close();
  } catch { /* already closed */ }
}

async function writeAll(w: { write(p: Uint8Array): Promise<number> }, data: Uint8Array) {
  let off = 0;
  while (off < data.length) off += await w.write(data.subarray(off));
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

function indexOfBytes(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Runs `fn`'s promise against a deadline; the timer never outlives it. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}
