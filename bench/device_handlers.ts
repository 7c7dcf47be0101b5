/**
 * The queue's handler in bench/device_bench.ts: each item goes through the simulated device
 * (bench/device_sim.ts), exactly as the direct loop does it. The device time and sleep margin are
 * read from the control words for each item, so one queue serves every case of the run. It also
 * adds up how long its thread spent between items (`S.GAP`): time the device sat idle.
 */
import { BufferDisposition, defineWorkHandlers } from "../mod.ts";
import { C, type Device, deviceItem, openDevice, S } from "./device_sim.ts";

/** What the bench passes as `handlerOptions`. */
export interface DeviceHandlerOptions {
  /** The compiled device library ("" for the libc fallback). */
  readonly libPath: string;
  /** Int32Array words, indexed by `C`. */
  readonly control: SharedArrayBuffer;
  /** Float64Array, indexed by `S`: the handler's device statistics. */
  readonly stats: SharedArrayBuffer;
}

let device: Device | undefined;
let control: Int32Array = new Int32Array(C.LENGTH);
let stats: Float64Array = new Float64Array(0);
let lastEnd = 0;

export default defineWorkHandlers<DeviceHandlerOptions>({
  pre(ctx) {
    device = openDevice(ctx.options.libPath);
    device.init();
    control = new Int32Array(ctx.options.control);
    stats = new Float64Array(ctx.options.stats);
  },
  work(item) {
    const start = performance.now();
    if (stats[S.ITEMS] > 0) stats[S.GAP] += (start - lastEnd) * 1e6; // not across rounds
    deviceItem(
      device!,
      item.data,
      Atomics.load(control, C.PHASE_NS),
      Atomics.load(control, C.MARGIN_NS),
      stats,
    );
    lastEnd = performance.now();
    return BufferDisposition.WorkComplete;
  },
  post() {
    device?.close();
    device = undefined;
  },
});
