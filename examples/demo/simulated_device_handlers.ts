/**
 * Handler module for a SIMULATED device (no hardware): each `work` call is one blocking bulk-OUT
 * transfer that takes `setupUs` plus `nsPerByte` per payload byte, like a synchronous libusb
 * transfer. The device checks each record's checksum and appends what it received to a log in
 * shared "device memory" that the main thread reads back to verify delivery.
 *
 * With `fault` set, the device misbehaves once, at transfer `faultAt`, so the demo can prove its
 * checker catches it: `drop` (claims success, stores nothing), `duplicate` (stores it twice),
 * `corrupt` (stores a damaged copy), `reorder` (stores it after the producer's next record),
 * `timeout` (fails with `IoTimeout`, stores nothing).
 *
 * @module
 */

import { BufferDisposition, defineWorkHandlers, Status, type StatusCode } from "../../mod.ts";
import { checksum, DEV, DeviceMemory, type Fault, readHeader, RECORD_MAGIC } from "./records.ts";

/** `handlerOptions` of the simulated device. */
export interface SimulatedDeviceOptions {
  /** The device memory (see `DeviceMemory`). */
  readonly memory: SharedArrayBuffer;
  /** Fixed cost of one transfer, in microseconds. */
  readonly setupUs: number;
  /** Cost per payload byte, in nanoseconds. */
  readonly nsPerByte: number;
  /** A fault to inject once (default none). */
  readonly fault?: Fault;
  /** The 1-based transfer number at which the fault happens. */
  readonly faultAt?: number;
}

/** Below this much remaining time a transfer spins: OS timer slack would overshoot a sleep. */
const SPIN_TAIL_MS = 0.12;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

let memory: DeviceMemory | undefined;
let transfers = 0;
/** A record held back by the `reorder` fault: [producer, seq, size, checksum]. */
let heldBack: [number, number, number, number] | undefined;

/** Blocks this thread until `deadline` (a `performance.now()` time), like a blocking transfer. */
function blockUntil(deadline: number): void {
  const remaining = deadline - performance.now();
  if (remaining > 2 * SPIN_TAIL_MS) Atomics.wait(sleeper, 0, 0, remaining - SPIN_TAIL_MS);
  while (performance.now() < deadline) { /* the transfer is still on the wire */ }
}

/** Stores one received record, applying the requested fault at transfer `faultAt`. */
function store(
  dev: DeviceMemory,
  options: SimulatedDeviceOptions,
  record: [number, number, number, number],
): StatusCode {
  const appendAll = (...records: [number, number, number, number][]) =>
    records.every((r) => dev.append(...r)) ? Status.Success : Status.InsufficientResources;
  if (heldBack && heldBack[0] === record[0]) {
    const late = heldBack;
    heldBack = undefined;
    return appendAll(record, late);
  }
  const fault = options.fault ?? "none";
  if (fault === "none" || transfers !== (options.faultAt ?? 1)) return appendAll(record);
  Atomics.store(dev.header, DEV.FAULT_AT, transfers);
  switch (fault) {
    case "drop":
      return Status.Success;
    case "duplicate":
      return appendAll(record, record);
    case "corrupt":
      return appendAll([record[0], record[1], record[2], record[3] ^ 0x10]);
    case "reorder":
      heldBack = record;
      return Status.Success;
    case "timeout":
      return Status.IoTimeout;
  }
}

export default defineWorkHandlers<SimulatedDeviceOptions>({
  pre(ctx) {
    memory ??= new DeviceMemory(ctx.options.memory);
    Atomics.add(memory.header, DEV.OPENS, 1);
  },

  work(item, ctx) {
    const start = performance.now();
    const options = ctx.options;
    const dev = memory!;
    const deadline = start + (options.setupUs + item.size * options.nsPerByte / 1000) / 1000;
    transfers++;
    const header = readHeader(item.context);
    const received = checksum(item.data);
    let status: StatusCode;
    if (header.magic !== RECORD_MAGIC || header.checksum !== received) {
      Atomics.add(dev.header, DEV.REJECTS, 1);
      status = Status.InvalidParameter;
    } else {
      status = store(dev, options, [header.producer, header.seq, item.size, received]);
    }
    blockUntil(deadline);
    dev.addBusy((performance.now() - start) * 1e6);
    return { disposition: BufferDisposition.WorkComplete, status };
  },

  post() {
    const dev = memory!;
    if (heldBack) {
      dev.append(...heldBack);
      heldBack = undefined;
    }
    Atomics.add(dev.header, DEV.CLOSES, 1);
  },
});
