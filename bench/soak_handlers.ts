/**
 * The soak's handler module (see soak.ts). `ctx.options.control` is the soak's control buffer
 * (`Control` in tests/fixtures/mixed_producer.ts). Items are `fill(buffer, how, id)`:
 * - `How.Now` completes at once; `How.Async` through a promise (a microtask or a macrotask);
 * - `How.TimerPend` pends and completes from a worker timer, or at once when its `item.signal`
 *   aborts (the waiter gave up, or the queue stops);
 * - `How.OwnerPend` pends and is handed to its producer's mailbox: that thread completes it;
 * - `How.Reply` writes a reply over the item and sets `item.size` (what `keep` hands back).
 * Each status is `statusFor(how, id)`. `reuseCleanup` counts, and is async for every fourth id.
 * About once a second `work` stores this Worker's heap size (after `gc()` when exposed).
 */
import { BufferDisposition, defineWorkHandlers, type WorkResult } from "../mod.ts";
import {
  Control,
  How,
  Mailbox,
  replySize,
  writeReply,
  Yielder,
} from "../tests/fixtures/mixed_producer.ts";
import { read, statusFor } from "../tests/fixtures/stress_common.ts";

interface Options {
  control: SharedArrayBuffer;
}

let words: Int32Array | undefined;
let mailbox: Mailbox | undefined;
let sampled = 0;
/** Macrotask turns without timer clamping (the Worker ends with the queue). */
const yielder = new Yielder();

const control = (options: Options) => {
  if (!words) {
    words = new Int32Array(options.control);
    mailbox = new Mailbox(words, Control.MAILBOX);
  }
  return words;
};

function sampleHeap(w: Int32Array): void {
  const now = performance.now();
  if (now - sampled < 1000) return;
  sampled = now;
  (globalThis as { gc?: () => void }).gc?.();
  Atomics.store(w, Control.LOOP_HEAP_KIB, Math.round(Deno.memoryUsage().heapUsed / 1024));
}

export default defineWorkHandlers<Options>({
  work(item, ctx) {
    const w = control(ctx.options);
    Atomics.add(w, Control.WORKED, 1);
    sampleHeap(w);
    const { producer: how, seq: id, ok } = read(item.data);
    if (!ok) Atomics.add(w, Control.CORRUPT, 1);
    const status = statusFor(how, id);
    const complete = { disposition: BufferDisposition.WorkComplete, status } as const;
    switch (how) {
      case How.TimerPend: {
        if (item.signal.aborted) {
          Atomics.add(w, Control.SIGNAL_ABORTS, 1);
          return complete;
        }
        const finish = () => {
          try {
            ctx.workCompleted(item, status);
          } catch {
            Atomics.add(w, Control.COMPLETE_ERRORS, 1);
          }
        };
        const onAbort = () => {
          clearTimeout(timer);
          Atomics.add(w, Control.SIGNAL_ABORTS, 1);
          finish();
        };
        const timer = setTimeout(() => {
          item.signal.removeEventListener("abort", onAbort);
          finish();
        }, id % 3);
        item.signal.addEventListener("abort", onAbort, { once: true });
        return BufferDisposition.WorkPending;
      }
      case How.OwnerPend:
        mailbox!.post(id);
        return BufferDisposition.WorkPending;
      case How.Async:
        return id & 1 ? Promise.resolve(complete) : yielder.next().then((): WorkResult => complete);
      case How.Reply:
        item.size = replySize(id);
        writeReply(item.data, id);
        return complete;
      default:
        return complete;
    }
  },
  reuseCleanup(item, ctx) {
    const w = control(ctx.options);
    Atomics.add(w, Control.CLEANUP_STARTED, 1);
    const id = item.context.length >= 8
      ? new DataView(item.context.buffer, item.context.byteOffset, 8).getInt32(4, true)
      : 0;
    if (id % 4 !== 0) {
      Atomics.add(w, Control.CLEANUP_FINISHED, 1);
      return;
    }
    return yielder.next().then(() => {
      Atomics.add(w, Control.CLEANUP_FINISHED, 1);
    });
  },
});
