/**
 * The Worker entry: loads the handler module, then serves the queue for the Worker's life. One
 * `serve` loop runs all the time: it runs `reuseCleanup` for buffers on their way back to the pool
 * (even while stopped), and, while started, takes items off the queue one at a time and runs
 * `work`. Control (start, stop, close) arrives as messages; items arrive through shared memory.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { QueueError } from "./errors.ts";
import type { WorkContext, WorkHandlers, WorkItem, WorkResult } from "./handlers.ts";
import { Flag, H } from "./layout.ts";
import { Pool } from "./pool.ts";
import { type Command, type Reply, toWire } from "./protocol.ts";
import { BufferDisposition, Status, type StatusCode, statusOfError } from "./status.ts";
import { waitForChange } from "./wait.ts";

/** Let the Worker's event loop run (timers, messages) at least this often while busy. */
const YIELD_EVERY_MS = 2;

let pool: Pool;
let handlers: WorkHandlers;
let options: unknown;
let controller = new AbortController();
let running = false;
let closed = false;
/** The item whose `work` (or inline cleanup) is in progress asynchronously, if any. */
let current: Promise<void> | undefined;
const dataViews: Uint8Array[] = [];
const contextViews: Uint8Array[] = [];

/** The handler's view of one round of one buffer. */
class LoopItem implements WorkItem {
  readonly data: Uint8Array;
  readonly context: Uint8Array;
  readonly size: number;
  readonly index: number;
  readonly generation: number;

  constructor(slot: number) {
    const whole = dataViews[slot] ??= pool.dataView(slot);
    this.index = slot;
    this.generation = pool.generation(slot);
    this.size = pool.size(slot);
    this.data = this.size === whole.length ? whole : whole.subarray(0, this.size);
    this.context = contextViews[slot] ??= pool.contextView(slot);
  }
}

const context: WorkContext = {
  get options() {
    return options;
  },
  get signal() {
    return controller.signal;
  },
  workCompleted(item: WorkItem, status: StatusCode = Status.Success) {
    if (!(item instanceof LoopItem)) {
      throw new QueueError("ForeignBuffer", "workCompleted needs the item that work received");
    }
    pool.workCompleted(item.index, item.generation, status);
  },
};

function post(reply: Reply): void {
  self.postMessage(reply);
}

function report(phase: string, error: unknown): void {
  post({ type: "report", phase, error: toWire(error) });
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

// ── one item ─────────────────────────────────────────────────────────────────────────────

/** Runs one item's work; returns a promise only if the handler went asynchronous. */
function runItem(slot: number): Promise<void> | undefined {
  const item = new LoopItem(slot);
  let result: WorkResult | Promise<WorkResult>;
  try {
    result = handlers.work(item, context);
  } catch (error) {
    return fail(item, error);
  }
  if (isThenable(result)) {
    return Promise.resolve(result).then(
      (value) => settle(item, value),
      (error) => fail(item, error),
    );
  }
  return settle(item, result);
}

function settle(item: LoopItem, result: WorkResult): Promise<void> | undefined {
  let disposition: unknown = result;
  let status: unknown = Status.Success;
  if (typeof result === "object" && result !== null) {
    disposition = result.disposition;
    status = result.status ?? Status.Success;
  }
  if (disposition === BufferDisposition.WorkPending) {
    pool.pend(item.index, item.generation);
    return undefined;
  }
  if (disposition !== BufferDisposition.WorkComplete || !Number.isInteger(status)) {
    return fail(
      item,
      new QueueError(
        "InvalidDisposition",
        `work returned an invalid disposition (${describe(result)}): return ` +
          "BufferDisposition.WorkComplete or WorkPending, or { disposition, status }",
      ),
    );
  }
  return finish(item, status as number);
}

function fail(item: LoopItem, error: unknown): Promise<void> | undefined {
  report("work", error);
  return finish(item, statusOfError(error));
}

/** WorkComplete: cleans the buffer here (no hop through the recycle list), then completes. */
function finish(item: LoopItem, status: StatusCode): Promise<void> | undefined {
  const complete = () => {
    if (!pool.finishRunning(item.index, item.generation, status, true)) {
      report(
        "work",
        new QueueError(
          "BufferState",
          "work returned WorkComplete for an item already completed with workCompleted; " +
            "the first status stands",
        ),
      );
    }
  };
  const cleaning = cleanup(item);
  if (!cleaning) {
    complete();
    return undefined;
  }
  return cleaning.then(complete);
}

function cleanup(item: WorkItem): Promise<void> | undefined {
  if (!handlers.reuseCleanup) return undefined;
  try {
    const result = handlers.reuseCleanup(item, context);
    if (isThenable(result)) {
      return Promise.resolve(result).then(undefined, (error) => report("reuseCleanup", error));
    }
  } catch (error) {
    report("reuseCleanup", error);
  }
  return undefined;
}

/** Runs `reuseCleanup` for one buffer from the recycle list, if there is one. */
function recycleOne(): Promise<void> | undefined | false {
  const slot = pool.takeRecycled();
  if (slot < 0) return false;
  const item = new LoopItem(slot);
  const cleaning = cleanup(item);
  if (!cleaning) {
    pool.settleRecycled(slot);
    return undefined;
  }
  return cleaning.then(() => pool.settleRecycled(slot));
}

// ── the loop ─────────────────────────────────────────────────────────────────────────────

const yieldChannel = new MessageChannel();
let yielded: (() => void) | undefined;
yieldChannel.port1.onmessage = () => yielded?.();

/** Lets timers and messages run: a macrotask turn without the 4 ms clamp of nested timers. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => {
    yielded = resolve;
    yieldChannel.port2.postMessage(0);
  });
}

async function serve(): Promise<void> {
  const words = pool.words;
  let nextYield = performance.now() + YIELD_EVERY_MS;
  while (!closed) {
    const seen = Atomics.load(words, H.LOOP_WAKE);
    // One returning buffer, then one item: neither can starve the other. A step that stays
    // synchronous costs no await (the hot path: a handler that completes at once).
    let step = track(recycleOne());
    const cleaned = typeof step === "boolean" ? step : await step;
    step = !closed && running && !pool.hasFlag(Flag.STOP_REQUESTED) && track(takeAndRun());
    const ran = typeof step === "boolean" ? step : await step;
    if (cleaned || ran) {
      if (performance.now() >= nextYield) {
        await yieldToEventLoop();
        nextYield = performance.now() + YIELD_EVERY_MS;
      }
      continue;
    }
    // Nothing to do: spin a little, then sleep until someone bumps LOOP_WAKE.
    Atomics.store(words, H.LOOP_SLEEPING, 1);
    const sleeping = waitForChange(words, H.LOOP_WAKE, seen);
    if (sleeping) await sleeping;
    Atomics.store(words, H.LOOP_SLEEPING, 0);
    nextYield = performance.now() + YIELD_EVERY_MS;
  }
}

function takeAndRun(): Promise<void> | undefined | false {
  const slot = pool.takeNext();
  return slot < 0 ? false : runItem(slot);
}

/**
 * Exposes a step that went asynchronous as `current`, so that stop and close can wait for it.
 * Returns whether there was a step at all (as a promise only for an asynchronous one).
 */
function track(step: Promise<void> | undefined | false): boolean | Promise<boolean> {
  if (step === false) return false;
  if (!step) return true;
  current = step;
  return step.then(() => {
    current = undefined;
    return true;
  });
}

// ── control ──────────────────────────────────────────────────────────────────────────────

async function init(command: Extract<Command, { type: "init" }>): Promise<void> {
  pool = Pool.attach(command.buffer);
  options = command.options;
  let module: { default?: unknown };
  try {
    module = await import(command.handlers);
  } catch (error) {
    throw new QueueError(
      "HandlerLoad",
      `the handler module ${command.handlers} failed to load: ${
        (error as Error)?.message ?? error
      }`,
      { cause: error },
    );
  }
  const candidate = module.default as Partial<WorkHandlers> | undefined;
  if (typeof candidate?.work !== "function") {
    throw new QueueError(
      "HandlerLoad",
      `the handler module ${command.handlers} has no work handler: ` +
        "export default defineWorkHandlers({ work(item, ctx) { … } })",
    );
  }
  handlers = candidate as WorkHandlers;
  if (typeof handlers.reuseCleanup === "function") pool.setFlag(Flag.HAS_CLEANUP);
  serve().catch((error) => report("loop", error));
}

async function start(): Promise<void> {
  controller = new AbortController();
  pool.clearFlag(Flag.STOP_REQUESTED);
  await handlers.pre?.(context);
  running = true;
  pool.setFlag(Flag.RUNNING);
  pool.wakeLoop();
}

/** Called with STOP_REQUESTED already set by the owner: no further item starts. */
async function stop(): Promise<void> {
  if (!running) return;
  controller.abort(new QueueError("Closed", "the queue's loop is stopping"));
  await current;
  running = false;
  pool.clearFlag(Flag.RUNNING);
  try {
    await handlers.post?.(context);
  } finally {
    pool.clearFlag(Flag.STOP_REQUESTED);
  }
}

async function close(): Promise<void> {
  pool.setFlag(Flag.STOP_REQUESTED);
  let postError: unknown;
  try {
    await stop();
  } catch (error) {
    postError = error;
  }
  controller.abort(new QueueError("Closed", "the queue is closed"));
  // From here on only close() touches the pool: serve() finishes its step and leaves.
  closed = true;
  pool.wakeLoop();
  await current;
  pool.reclaimAll();
  for (let cleaning = recycleOne(); cleaning !== false; cleaning = recycleOne()) await cleaning;
  pool.setFlag(Flag.CLOSED);
  pool.wakeAll();
  yieldChannel.port1.close();
  if (postError !== undefined) throw postError;
}

const actions = { init, start, stop, close } as const;

self.onmessage = async (event: MessageEvent<Command>) => {
  const command = event.data;
  try {
    await (actions[command.type] as (command: Command) => Promise<void>)(command);
    post({ type: "done", id: command.id });
  } catch (error) {
    post({ type: "done", id: command.id, error: toWire(error) });
  }
};

self.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  report("unhandled rejection in the worker", event.reason);
});

self.addEventListener("error", (event) => {
  event.preventDefault();
  report("uncaught error in the worker", event.error ?? event.message);
});

function describe(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
