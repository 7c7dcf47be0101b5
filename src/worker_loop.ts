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
import { Flag, H, State } from "./layout.ts";
import { Completed, Pool } from "./pool.ts";
import { type Command, describe, type Reply, toWire } from "./protocol.ts";
import { BufferDisposition, Status, type StatusCode, statusOfError } from "./status.ts";
import { waitForChange } from "./wait.ts";

/**
 * While items keep coming, the loop lets the Worker's event loop run (the handler's timers and
 * async completions) at least this often; at once when a control message is on its way
 * (CONTROL_SEQ) or a waiter gave up on a watched item (ABORT_WAKE). Each yield costs a
 * MessageChannel round trip (tens of µs), which at 2 ms on a slow device was one per item.
 */
const YIELD_EVERY_MS = 20;
/**
 * A busy loop reads the clock (~100 ns, as much as the rest of a fast step) at most every this
 * many steps: the stride doubles while a stride's steps take under {@linkcode FAST_STRIDE_MS}
 * in all, and drops to one step as soon as they do not. A run of fast steps followed by slow
 * ones overshoots the yield by at most MAX_CLOCK_STRIDE - 1 steps.
 */
const MAX_CLOCK_STRIDE = 16;
const FAST_STRIDE_MS = 0.25;
/**
 * How much queued work (ms) the loop keeps for itself when it wakes producers that sleep (for a
 * free buffer, or for a status): their wake (20–150 µs measured here) and refill. Fewer, later
 * wakes cost the device thread less (see `Pool.holdWakes`); the loop turns this into an item
 * count from its step time, and never fewer than 2 items (a late wake must not leave the device
 * idle). At 80 µs per item on 8 buffers: 3 items, one wake per ~5 items instead of per ~4.
 */
const WAKE_LEAD_MS = 0.2;
/** At most this much queued work (ms) lies between a waiter's item ending and its held wake. */
const DONE_WAKE_DELAY_MS = 1;

/** A moving average of one loop step's time (ms), measured at the clock reads; 0 until known. */
let stepMs = 0;

let pool: Pool;
let handlers: WorkHandlers;
let options: unknown;
/** Proves to the owner that a message comes from this loop, not from a handler. */
let token = "";
let controller = new AbortController();
let running = false;
let closed = false;
/** The item whose `work` (or inline cleanup) is in progress asynchronously, if any. */
let current: Promise<void> | undefined;
const dataViews: Uint8Array[] = [];
const contextViews: Uint8Array[] = [];
/** Running or pended items whose handler asked for `item.signal`. */
const watched = new Set<LoopItem>();

/** The handler's view of one round of one buffer. */
class LoopItem implements WorkItem {
  readonly context: Uint8Array;
  readonly index: number;
  readonly generation: number;
  /** Which run of the buffer this is (a kept buffer runs again with the same generation). */
  readonly run: number;
  #data: Uint8Array;
  #size: number;
  #controller: AbortController | undefined;

  constructor(slot: number) {
    const whole = dataViews[slot] ??= pool.dataView(slot);
    this.index = slot;
    this.generation = pool.generation(slot);
    this.run = pool.run(slot);
    this.#size = pool.size(slot);
    this.#data = this.#size === whole.length ? whole : whole.subarray(0, this.#size);
    this.context = contextViews[slot] ??= pool.contextView(slot);
  }

  get capacity(): number {
    return dataViews[this.index].length;
  }

  get data(): Uint8Array {
    return this.#data;
  }

  get size(): number {
    return this.#size;
  }

  set size(size: number) {
    pool.setSize(this.index, this.generation, size, this.run);
    this.#size = size;
    this.#data = dataViews[this.index].subarray(0, size);
  }

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (controller.signal.aborted) this.abort(controller.signal.reason);
      else if (this.live()) {
        pruneWatched();
        watched.add(this);
        watchAborts();
      }
      // A blocking transfer holds this thread, so neither the ABORT_WAKE watcher nor the stop
      // message can run: it polls the shared words through this hook between its slices.
      pollable(this.#controller.signal, () => {
        if (this.#controller?.signal.aborted) return;
        if (!pollStop() && this.live() && pool.abandoned(this.index, this.run)) {
          this.abort(abandonedReason());
        }
      });
    }
    return this.#controller.signal;
  }

  /** True while this run of the buffer runs or pends. */
  live(): boolean {
    const state = pool.state(this.index);
    return pool.generation(this.index) === this.generation && pool.run(this.index) === this.run &&
      (state === State.RUNNING || state === State.PENDING);
  }

  abort(reason: unknown): void {
    watched.delete(this);
    this.#controller?.abort(reason);
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
    // Nothing runs after the pool call, so a throw (even a stack overflow) means nothing changed.
    const wasWatched = watched.delete(item);
    try {
      pool.workCompleted(item.index, item.generation, status, item.run);
    } catch (error) {
      if (wasWatched) watched.add(item);
      throw error;
    }
  },
};

function post(reply: Reply): void {
  try {
    self.postMessage(reply);
  } catch {
    // Nothing can be cloned wrongly here (wire forms only); a closing channel drops it.
  }
}

function report(phase: string, error: unknown): void {
  post({ type: "report", token, phase, error: toWire(error) });
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

/** The status an error carries; a `status` getter that throws gives Unsuccessful. */
function statusOf(error: unknown): StatusCode {
  try {
    return statusOfError(error);
  } catch {
    return Status.Unsuccessful;
  }
}

// ── item signals ─────────────────────────────────────────────────────────────────────────

/** The key under which a signal carries its synchronous abort check (read by ffi/transfer.ts). */
const POLL_ABORT = Symbol.for("tbq.pollAbort");

function pollable(signal: AbortSignal, poll: () => void): void {
  Object.defineProperty(signal, POLL_ABORT, { value: poll });
}

function abandonedReason(): DOMException {
  return new DOMException("the item's waiter gave up (its signal aborted)", "AbortError");
}

/**
 * The owner asked the loop to stop (it writes STOP_REQUESTED before it posts the message): aborts
 * `ctx.signal` and the items' signals now, as the stop will. True if it did.
 */
function pollStop(): boolean {
  if (!running || controller.signal.aborted || !pool.hasFlag(Flag.STOP_REQUESTED)) return false;
  const reason = pool.hasFlag(Flag.CLOSING) ? closedReason() : stoppingReason();
  controller.abort(reason);
  abortItems(reason);
  return true;
}

let watchingAborts = false;

/** While some item's signal is watched, sleeps on ABORT_WAKE and aborts abandoned items. */
function watchAborts(): void {
  if (watchingAborts || closed) return;
  const words = pool.words;
  for (;;) {
    const seen = Atomics.load(words, H.ABORT_WAKE);
    for (const item of watched) {
      if (!item.live()) watched.delete(item);
      else if (pool.abandoned(item.index, item.run)) {
        item.abort(abandonedReason());
      }
    }
    if (watched.size === 0) return;
    const sleeping = waitForChange(words, H.ABORT_WAKE, seen, undefined, 0);
    if (!sleeping) continue;
    watchingAborts = true;
    sleeping.then(() => {
      watchingAborts = false;
      watchAborts();
    });
    return;
  }
}

/** The queue stops or closes: every watched item still running or pending aborts too. */
function abortItems(reason: unknown): void {
  for (const item of watched) {
    if (item.live()) item.abort(reason);
    else watched.delete(item);
  }
}

/**
 * Forgets watched items whose run ended (a pended item completed from another thread is never
 * seen here): at most the pool's size of them are live, so the set stays small.
 */
function pruneWatched(): void {
  if (watched.size <= pool.allocated()) return;
  for (const item of watched) if (!item.live()) watched.delete(item);
}

// ── one item ─────────────────────────────────────────────────────────────────────────────

/** Runs one item's work; returns a promise only if the handler went asynchronous. */
function runItem(slot: number): Promise<void> | undefined {
  const item = new LoopItem(slot);
  let result: WorkResult | Promise<WorkResult>;
  try {
    result = handlers.work(item, context);
    if (isThenable(result)) {
      return Promise.resolve(result).then(
        (value) => settle(item, value),
        (error) => fail(item, error),
      );
    }
  } catch (error) {
    return fail(item, error);
  }
  return settle(item, result);
}

function settle(item: LoopItem, result: WorkResult): Promise<void> | undefined {
  let disposition: unknown = result;
  let status: unknown = Status.Success;
  try {
    if (typeof result === "object" && result !== null) {
      disposition = result.disposition;
      status = result.status ?? Status.Success;
    }
  } catch (error) {
    return fail(item, error);
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
  return finish(item, statusOf(error));
}

/** WorkComplete: the status is final now; the buffer is cleaned here (no recycle-list hop). */
function finish(item: LoopItem, status: StatusCode): Promise<void> | undefined {
  watched.delete(item);
  const completed = pool.completeRunning(item.index, item.generation, status);
  if (!(completed & Completed.FIRST)) {
    report(
      "work",
      new QueueError(
        "BufferState",
        "work returned WorkComplete for an item already completed with workCompleted; " +
          "the first status stands",
      ),
    );
  }
  if (!(completed & Completed.CLEAN)) return undefined;
  const cleaning = cleanup(item);
  if (!cleaning) {
    pool.settleCleaned(item.index);
    return undefined;
  }
  return cleaning.then(() => pool.settleCleaned(item.index));
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
    pool.settleCleaned(slot);
    return undefined;
  }
  return cleaning.then(() => pool.settleCleaned(slot));
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
  let lastClock = 0;
  let nextYield = 0;
  let clockStride = 1;
  let stepsToClock = 1;
  /** Back from the event loop (or starting): the next yield is due YIELD_EVERY_MS from now. */
  const restartClock = (): void => {
    lastClock = performance.now();
    nextYield = lastClock + YIELD_EVERY_MS;
    clockStride = stepsToClock = 1;
  };
  restartClock();
  /** The loop may take items: started, and no stop asked for. */
  const taking = (): boolean => !closed && running && !pool.hasFlag(Flag.STOP_REQUESTED);
  const yieldDue = (): boolean => {
    if (--stepsToClock > 0) return false;
    const now = performance.now();
    stepMs += ((now - lastClock) / clockStride - stepMs) / 4;
    pool.noteStep(stepMs);
    clockStride = now - lastClock < FAST_STRIDE_MS
      ? Math.min(clockStride * 2, MAX_CLOCK_STRIDE)
      : 1;
    stepsToClock = clockStride;
    lastClock = now;
    return now >= nextYield;
  };
  let control = Atomics.load(words, H.CONTROL_SEQ);
  let aborts = Atomics.load(words, H.ABORT_WAKE);
  /** Something only the event loop can serve is waiting. */
  const wanted = (): boolean =>
    Atomics.load(words, H.CONTROL_SEQ) !== control ||
    (watched.size > 0 && Atomics.load(words, H.ABORT_WAKE) !== aborts) ||
    yieldDue();
  while (!closed) {
    // One returning buffer, then one item: neither can starve the other. A step that stays
    // synchronous costs no await (the hot path: a handler that completes at once).
    // Wakes of producers waiting for a free buffer or a status are held back only inside these
    // synchronous steps (see Pool.holdWakes): every way out to the event loop sends them first.
    let step = track(held(recycleOne));
    const cleaned = typeof step === "boolean" ? step : (pool.flushWakes(), await step);
    step = taking() && track(held(takeAndRun));
    const ran = typeof step === "boolean" ? step : (pool.flushWakes(), await step);
    if (cleaned || ran) {
      if (wanted()) {
        pool.flushWakes();
        control = Atomics.load(words, H.CONTROL_SEQ);
        aborts = Atomics.load(words, H.ABORT_WAKE);
        await yieldToEventLoop();
        restartClock();
      }
      continue;
    }
    // Nothing to do: say so, look once more, then spin a little and sleep until someone bumps
    // LOOP_WAKE.
    pool.flushWakes();
    const seen = pool.loopIdle();
    if (!closed && !pool.loopHasWork(taking())) {
      const sleeping = waitForChange(
        words,
        H.LOOP_WAKE,
        seen,
        undefined,
        undefined,
        H.LOOP_SLEEPING,
      );
      if (sleeping) await sleeping;
    }
    pool.loopBusy();
    restartClock();
  }
}

/**
 * Runs a loop step with the pool holding back sleepers' wakes while more is queued than the
 * loop needs to cover a producer's wake ({@linkcode WAKE_LEAD_MS}; at most half the pool), and
 * a waiter's only while its wake comes at most {@linkcode DONE_WAKE_DELAY_MS} late.
 */
function held<T>(step: () => T): T {
  const allocated = pool.allocated();
  if (stepMs > 0) {
    const freeAbove = Math.min(allocated >> 1, Math.max(2, Math.ceil(WAKE_LEAD_MS / stepMs)));
    const late = Math.floor(DONE_WAKE_DELAY_MS / stepMs); // items a held wake may wait behind
    pool.holdWakes(freeAbove, Math.max(freeAbove, allocated - late));
  } else {
    pool.holdWakes(allocated >> 1, -1); // step time not known yet: no waiter's wake is held
  }
  try {
    return step();
  } finally {
    pool.holdWakes(-1, -1);
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
  token = command.token;
  pool = Pool.attach(command.buffer);
  options = command.options;
  let module: { default?: unknown };
  try {
    module = await import(command.handlers);
  } catch (error) {
    throw new QueueError(
      "HandlerLoad",
      `the handler module ${command.handlers} failed to load: ${
        (error as Error)?.message ?? describe(error)
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

/** Runs `pre`, then lets the loop take items (the owner cleared STOP_REQUESTED first). */
async function start(): Promise<void> {
  controller = new AbortController();
  pollable(controller.signal, pollStop);
  await handlers.pre?.(context);
  running = true;
  pool.setFlag(Flag.RUNNING);
  pool.wakeLoop();
}

/** With STOP_REQUESTED set by the owner: lets the item in progress finish, then runs `post`. */
function stoppingReason(): QueueError {
  return new QueueError("Closed", "the queue's loop is stopping");
}

function closedReason(): QueueError {
  return new QueueError("Closed", "the queue is closed");
}

async function stop(reason = stoppingReason()): Promise<void> {
  if (!running) return;
  controller.abort(reason);
  abortItems(reason);
  await current;
  running = false;
  pool.clearFlag(Flag.RUNNING);
  await handlers.post?.(context);
}

/**
 * The Worker's part of a normal close (the owner set CLOSING and STOP_REQUESTED): stop, cancel
 * and reclaim everything through `reuseCleanup`. The owner finishes with `Pool.closeOut`.
 */
async function close(): Promise<void> {
  const reason = closedReason();
  let postError: unknown;
  try {
    await stop(reason);
  } catch (error) {
    postError = error;
  }
  controller.abort(reason);
  abortItems(reason);
  // From here on only close() touches the pool: serve() finishes its step and leaves.
  closed = true;
  pool.wakeLoop();
  await current;
  pool.reclaimAll();
  for (let cleaning = recycleOne(); cleaning !== false; cleaning = recycleOne()) await cleaning;
  yieldChannel.port1.close();
  if (postError !== undefined) throw postError;
}

const actions = {
  init,
  start: () => start(),
  stop: () => stop(),
  close: () => close(),
} as const;

self.onmessage = async (event: MessageEvent<Command>) => {
  const command = event.data;
  try {
    await (actions[command.type] as (command: Command) => Promise<void>)(command);
    post({ type: "done", token, id: command.id });
  } catch (error) {
    post({ type: "done", token, id: command.id, error: toWire(error) });
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

// ── the Worker's last word ───────────────────────────────────────────────────────────────
// A Worker that ends itself tells its parent nothing. The two ways a handler can end it say so
// first, so that the owner settles everything at once instead of waiting forever.

function lastWord(how: string): void {
  post({ type: "dying", token, how });
}

const closeWorker = self.close.bind(self);
self.close = () => {
  lastWord("the handler called self.close()");
  closeWorker();
};

const exitProcess = Deno.exit;
Deno.exit = (code?: number): never => {
  lastWord(`the handler called Deno.exit(${code ?? ""})`);
  return exitProcess(code);
};
