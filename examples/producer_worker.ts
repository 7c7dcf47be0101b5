/**
 * The one Worker entry for the examples' producer Workers, and {@linkcode startProducer}, the
 * owner's side of it.
 *
 * The owner posts one message, `{ share, module, options }` ({@linkcode ProducerStart}). The
 * Worker attaches to the queue with `ThreadedBufferQueue.attach(share)`, imports `module` and
 * posts `{ ready: true }`; then it runs that module's `produce(queue, options)` export
 * ({@linkcode Produce}), posts `{ report }` with what it resolved to (or `{ error }` at any
 * point) and closes itself. A producer that must start on a signal (e.g. when every Worker is
 * ready) waits for it inside `produce`, on a SharedArrayBuffer word passed in `options`.
 *
 * @module
 */

import { type QueueProducer, type QueueShare, ThreadedBufferQueue } from "../mod.ts";

/** What the owner posts to a producer Worker. */
export interface ProducerStart<O = unknown> {
  /** `queue.share()`. */
  readonly share: QueueShare;
  /** URL of the module whose `produce` export the Worker runs. */
  readonly module: string;
  /** The second argument of `produce` (structured-cloned). */
  readonly options: O;
}

/** The function a producer module exports as `produce`; its result is posted back as the report. */
export type Produce<O, R> = (queue: QueueProducer, options: O) => Promise<R>;

/** What a producer Worker posts back. */
export type ProducerMessage<R> = { ready: true } | { report: R } | { error: string };

/** A producer Worker that is attached and has loaded its module. */
export interface StartedProducer<R> {
  /** The Worker (terminate it when done; it closes itself after its report). */
  readonly worker: Worker;
  /** What its `produce` resolved to; rejects if it failed. */
  readonly report: Promise<R>;
}

/**
 * Starts a producer Worker that runs `produce(queue, options)` from `module` on an attached handle
 * of `queue`; resolves once the Worker is attached and the module loaded.
 */
export async function startProducer<O, R>(
  queue: ThreadedBufferQueue,
  module: URL,
  options: O,
  name = "producer Worker",
): Promise<StartedProducer<R>> {
  const worker = new Worker(import.meta.url, { type: "module", name });
  const ready = Promise.withResolvers<void>();
  const report = Promise.withResolvers<R>();
  report.promise.catch(() => {}); // awaited later; no unhandled rejection meanwhile
  const fail = (message: string) => {
    const error = new Error(`${name}: ${message}`);
    ready.reject(error);
    report.reject(error);
  };
  worker.onmessage = ({ data }: MessageEvent<ProducerMessage<R>>) => {
    if ("ready" in data) ready.resolve();
    else if ("report" in data) report.resolve(data.report);
    else fail(data.error);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    fail(event.message);
  };
  const start: ProducerStart<O> = { share: queue.share(), module: module.href, options };
  worker.postMessage(start);
  try {
    await ready.promise;
  } catch (error) {
    worker.terminate();
    throw error;
  }
  return { worker, report: report.promise };
}

if (import.meta.main) {
  // This module is the Worker's entry (the owner imports it only for startProducer).
  const scope = globalThis as unknown as {
    onmessage: ((event: MessageEvent<ProducerStart>) => void) | null;
    postMessage(message: ProducerMessage<unknown>): void;
    close(): void;
  };
  scope.onmessage = async ({ data }) => {
    try {
      const queue = ThreadedBufferQueue.attach(data.share);
      const { produce } = await import(data.module) as { produce?: Produce<unknown, unknown> };
      if (typeof produce !== "function") throw new TypeError(`${data.module} exports no produce`);
      scope.postMessage({ ready: true });
      scope.postMessage({ report: await produce(queue, data.options) });
    } catch (error) {
      scope.postMessage({ error: String((error as Error)?.stack ?? error) });
    }
    scope.close();
  };
}
