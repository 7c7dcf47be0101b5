/**
 * The owner: creates the pool and the Worker, starts and stops the loop, closes everything.
 *
 * @module
 */

import {
  type BufferQueueConfig,
  type ThreadedBufferQueueConfig,
  validateConfig,
  validateSizes,
  type WorkerPermissions,
} from "./config.ts";
import { QueueError } from "./errors.ts";
import { Flag } from "./layout.ts";
import { Pool, type QueueStats } from "./pool.ts";
import { QueueProducer, type QueueShare } from "./producer.ts";
import { type Command, fromWire, isReply, type Reply } from "./protocol.ts";

export type { BufferQueueConfig, ThreadedBufferQueueConfig, WorkerPermissions };

const workerEntry = new URL("./worker_loop.ts", import.meta.url);
/** tbq's own modules, which a Worker loads to run the loop and the ready-made handlers. */
const ownFiles = ["../mod.ts", "./", "../ffi/", "../storage/"].map((path) =>
  new URL(path, import.meta.url)
);

/** Distributes `Omit` over the command union. */
type Request = Command extends infer C ? C extends Command ? Omit<C, "id"> : never : never;

/**
 * Options for `close`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type CloseOptions, ThreadedBufferQueue } from "../mod.ts";
 * const queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
 *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
 * });
 * // Give a hung handler a second, then terminate the Worker:
 * const options: CloseOptions = { signal: AbortSignal.timeout(1000) };
 * assert.equal((await queue.close(options)).free, 2);
 * ```
 */
export interface CloseOptions {
  /**
   * When it aborts before the close is done, the close is forced: the Worker is terminated at
   * once, running, pended and queued items complete `Status.Cancelled`, held buffers are taken
   * back, and no `post` or `reuseCleanup` runs any more.
   */
  readonly signal?: AbortSignal;
}

/**
 * A DMF ThreadedBufferQueue: producers on any thread fetch buffers, fill and enqueue them; one
 * work loop in a dedicated Worker runs the handler module's `work` on each, in order; the buffer
 * then returns to the pool. Create with {@linkcode ThreadedBufferQueue.create}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Status, ThreadedBufferQueue } from "../mod.ts";
 *
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 16, bufferSize: 4096 },
 *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url), // upper-cases
 * });
 * await queue.start();
 * const buffer = await queue.acquire();
 * buffer.size = new TextEncoder().encodeInto("hello", buffer.data).written;
 * const status = await queue.enqueueAndWait(buffer, { keep: true });
 * assert.equal(status, Status.Success);
 * assert.equal(new TextDecoder().decode(buffer.data.subarray(0, buffer.size)), "HELLO");
 * queue.reuse(buffer);
 * ```
 */
export class ThreadedBufferQueue extends QueueProducer {
  readonly #pool: Pool;
  readonly #worker: Worker;
  /** Proves that a message comes from this queue's loop (handlers can post to us too). */
  readonly #token = crypto.randomUUID();
  readonly #onError: (error: Error, phase: string) => void;
  readonly #disposeTimeout: number;
  readonly #requests = new Map<number, { resolve(): void; reject(error: Error): void }>();
  #nextRequest = 1;
  #running = false;
  #created = false;
  /** Serialises start/stop/close so that pre and post always pair. */
  #control: Promise<unknown> = Promise.resolve();
  #closing: Promise<QueueStats> | undefined;
  /** Resolves when a close must not wait for the Worker any longer (forced, or it died). */
  readonly #cutShort = Promise.withResolvers<void>();
  #forced = false;
  /** Why the Worker ended on its own, if it did. */
  #failure: QueueError | undefined;
  #ended = false;

  /** @ignore Use `ThreadedBufferQueue.create`. */
  private constructor(
    pool: Pool,
    worker: Worker,
    config: ThreadedBufferQueueConfig,
    disposeTimeout: number,
  ) {
    super(pool);
    this.#pool = pool;
    this.#worker = worker;
    this.#disposeTimeout = disposeTimeout;
    this.#onError = config.onError ??
      ((error, phase) => console.error(`tbq: ${phase} failed:`, error));
    worker.onmessage = (event: MessageEvent<unknown>) => this.#receive(event.data);
    worker.onerror = (event) => {
      event.preventDefault();
      this.#workerFailed(`an uncaught error ended it: ${event.message}`, event.error);
    };
    worker.onmessageerror = () =>
      this.#report(new QueueError("WorkerFailed", "a message from the worker was lost"), "worker");
  }

  /**
   * Allocates the pool in one SharedArrayBuffer, starts the Worker and loads the handler module.
   * The loop does not run until `start()`. Rejects with a `QueueError`: `InvalidConfig` for a bad
   * config, `HandlerLoad` for a module that fails to load, has no `work`, or is still loading
   * after `loadTimeout` ms, `WorkerFailed` if the Worker ends while loading it.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 8, bufferSize: 4096, contextSize: 16 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   *   handlerOptions: { greeting: "hi" }, // structured-cloned to ctx.options
   * });
   * assert.equal(queue.running, false); // the loop waits for start()
   * await assert.rejects(
   *   ThreadedBufferQueue.create({ bufferQueue: { bufferCount: -1, bufferSize: 8 }, handlers: "./h.ts" }),
   *   { code: "InvalidConfig" },
   * );
   * ```
   */
  static async create<Options = unknown>(
    config: ThreadedBufferQueueConfig<Options>,
  ): Promise<ThreadedBufferQueue> {
    if (typeof config !== "object" || config === null) {
      throw new QueueError("InvalidConfig", "create needs a config object");
    }
    const sizes = validateSizes(config.bufferQueue);
    const { loadTimeout, disposeTimeout } = validateConfig(config as ThreadedBufferQueueConfig);
    const handlers = resolveHandlers(config.handlers);
    let pool: Pool;
    try {
      pool = Pool.create(sizes, sizes.lookAside);
    } catch (error) {
      throw new QueueError("InvalidConfig", `cannot allocate the pool: ${error}`, { cause: error });
    }
    const worker = spawnWorker(handlers, config.permissions, config.name);
    const queue = new ThreadedBufferQueue(
      pool,
      worker,
      config as ThreadedBufferQueueConfig,
      disposeTimeout,
    );
    const loading = queue.#request({
      type: "init",
      token: queue.#token,
      buffer: pool.buffer,
      handlers: handlers.href,
      options: config.handlerOptions,
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tooSlow = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new QueueError(
              "HandlerLoad",
              `the handler module ${handlers.href} did not finish loading within ${loadTimeout} ms ` +
                "(a top-level await that never settles?); raise loadTimeout if it is just slow",
            ),
          ),
        loadTimeout,
      );
    });
    try {
      await Promise.race([loading, tooSlow]);
    } catch (error) {
      loading.catch(() => {});
      queue.#end();
      throw error;
    } finally {
      clearTimeout(timer);
    }
    queue.#created = true;
    return queue;
  }

  /**
   * A producer handle on a shared queue, for another Worker (or thread) than the owner's. It has
   * every producer method: fetch, acquire, enqueue*, enqueue*AndWait, reuse, flush, count,
   * workCompleted, stats, onIdle. Throws `QueueError` `ForeignBuffer` for anything but a share
   * of a tbq queue whose header checks out.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Status, ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * await queue.start();
   * const producer = ThreadedBufferQueue.attach(queue.share()); // usually in another Worker
   * assert.equal(await producer.enqueueAndWait(await producer.acquire()), Status.Success);
   * const foreign = { kind: "tbq", buffer: new SharedArrayBuffer(64) } as const;
   * assert.throws(() => ThreadedBufferQueue.attach(foreign), { code: "ForeignBuffer" });
   * ```
   */
  static attach(share: QueueShare): QueueProducer {
    if (share?.kind !== "tbq" || !(share.buffer instanceof SharedArrayBuffer)) {
      throw new QueueError("ForeignBuffer", "attach needs the value returned by queue.share()");
    }
    return new QueueProducer(Pool.attach(share.buffer));
  }

  /**
   * A structured-cloneable value for `ThreadedBufferQueue.attach` in another Worker.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * const share = queue.share(); // post it to a Worker: worker.postMessage(share)
   * assert.equal(share.kind, "tbq");
   * assert.ok(share.buffer instanceof SharedArrayBuffer);
   * ```
   */
  share(): QueueShare {
    this.assertOpen();
    return { kind: "tbq", buffer: this.#pool.buffer };
  }

  /**
   * True between a successful `start()` and the next `stop()`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * assert.equal(queue.running, false);
   * await queue.start();
   * assert.equal(queue.running, true);
   * await queue.stop();
   * assert.equal(queue.running, false);
   * ```
   */
  get running(): boolean {
    return this.#running;
  }

  /**
   * Runs `pre` once on the worker thread, then the loop. Items enqueued while stopped run now.
   * Rejects with `QueueError` `AlreadyRunning` (status `InvalidDeviceState`) when running, or with
   * what `pre` threw (the loop then does not run).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Status, ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * const early = queue.enqueueAndWait(queue.fetch()!); // queued while stopped
   * await queue.start(); // runs pre, then the loop: the early item runs now
   * assert.equal(await early, Status.Success);
   * await assert.rejects(queue.start(), { code: "AlreadyRunning", status: Status.InvalidDeviceState });
   * ```
   */
  start(): Promise<void> {
    return this.#serially(async () => {
      this.assertOpen();
      if (this.#running) {
        throw new QueueError("AlreadyRunning", "the queue is already running; stop it first");
      }
      this.#pool.clearFlag(Flag.STOP_REQUESTED);
      await this.#request({ type: "start" });
      this.#running = true;
    });
  }

  /**
   * The loop takes no further item, lets the one in progress finish, runs `post`, and resolves.
   * Queued items stay queued. On a stopped queue, resolves without running `post` again.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * await using queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * await queue.start();
   * await queue.stop(); // runs post
   * queue.enqueue(queue.fetch()!);
   * assert.equal(queue.count(), 1); // stays queued until the next start()
   * await queue.start();
   * await queue.onIdle();
   * assert.equal(queue.count(), 0);
   * ```
   */
  stop(): Promise<void> {
    // Asked now, not when earlier control calls are done: the loop takes no further item from
    // here on (a `start` still in line clears it again before it runs `pre`).
    if (!this.#pool.hasFlag(Flag.CLOSING)) this.#pool.setFlag(Flag.STOP_REQUESTED);
    return this.#serially(async () => {
      this.assertOpen();
      if (!this.#running) return;
      this.#pool.setFlag(Flag.STOP_REQUESTED);
      this.#pool.wakeLoop();
      try {
        await this.#request({ type: "stop" });
      } finally {
        this.#running = false;
      }
    });
  }

  /**
   * Stops the loop (running `post`), cancels queued and pended items (their waiters resolve with
   * `Status.Cancelled`), takes back held buffers, runs their `reuseCleanup`, and ends the Worker.
   * When `signal` aborts first, the close is forced instead (see {@linkcode CloseOptions}): a
   * handler that never returns cannot hold it hostage. Afterwards every method throws
   * `QueueError` `Closed`; pending `acquire()` and `onIdle()` calls reject with it. Resolves with
   * the final stats (every buffer free). Every call returns the same promise; a later call's
   * signal can still force it.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Status, ThreadedBufferQueue } from "../mod.ts";
   * const queue = await ThreadedBufferQueue.create({
   *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   * });
   * const queued = queue.enqueueAndWait(queue.fetch()!); // never started
   * const stats = await queue.close();
   * assert.equal(await queued, Status.Cancelled);
   * assert.equal(stats.free, 2);
   * assert.throws(() => queue.fetch(), { code: "Closed" });
   * ```
   */
  close(options?: CloseOptions): Promise<QueueStats> {
    const signal = options?.signal;
    if (signal?.aborted) this.#force();
    const closing = this.#closing ??= this.#close();
    if (signal && !signal.aborted) {
      const force = () => this.#force();
      signal.addEventListener("abort", force, { once: true });
      const forget = () => signal.removeEventListener("abort", force);
      closing.then(forget, forget);
    }
    return closing;
  }

  /**
   * `close()`, forced after `disposeTimeout` ms (default 5 000) so that `await using` never hangs
   * on a handler that does not return.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { ThreadedBufferQueue } from "../mod.ts";
   * let escaped: ThreadedBufferQueue;
   * {
   *   await using queue = await ThreadedBufferQueue.create({
   *     bufferQueue: { bufferCount: 2, bufferSize: 64 },
   *     handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
   *     disposeTimeout: 1000, // force the close after a second (default 5 000)
   *   });
   *   await queue.start();
   *   escaped = queue;
   * } // closed here
   * assert.throws(() => escaped.count(), { code: "Closed" });
   * ```
   */
  async [Symbol.asyncDispose](): Promise<void> {
    // Not AbortSignal.timeout: its timer would keep the process alive after a quick close.
    const grace = new AbortController();
    const timer = setTimeout(() => grace.abort(), this.#disposeTimeout);
    try {
      await this.close({ signal: grace.signal });
    } finally {
      clearTimeout(timer);
    }
  }

  /** @ignore After the Worker died, the error says why. */
  protected override closedError(): QueueError {
    return new QueueError("Closed", "the queue is closed", { cause: this.#failure });
  }

  /** The one close routine: normal, forced (cut short) and after the Worker died. */
  async #close(): Promise<QueueStats> {
    const pool = this.#pool;
    pool.setFlag(Flag.CLOSING | Flag.STOP_REQUESTED);
    pool.wakeAll();
    if (!this.#ended) {
      // Once forced, the Worker is not asked to close (its stop could still finish items).
      const graceful = this.#control.then(() =>
        this.#forced ? undefined : this.#request({ type: "close" })
      );
      const outcome = await Promise.race([
        graceful.then(() => undefined, (error: Error) => error),
        this.#cutShort.promise.then(() => undefined),
      ]);
      // `post` threw (a Worker that died has been reported already).
      if (outcome && !this.#failure && !this.#ended) this.#report(outcome, "post");
    }
    this.#end();
    return pool.stats();
  }

  /** Cuts a close short: the Worker is terminated without being asked. */
  #force(): void {
    this.#forced = true;
    this.#cutShort.resolve();
  }

  /** Ends the Worker and settles everything it left: the last step of every close. */
  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#running = false;
    this.#worker.terminate();
    this.#pool.closeOut();
    this.#rejectRequests(this.#failure ?? new QueueError("Closed", "the queue is closed"));
    this.#force();
  }

  #serially<T>(action: () => Promise<T>): Promise<T> {
    const result = this.#control.then(action);
    this.#control = result.catch(() => {});
    return result;
  }

  #request(request: Request): Promise<void> {
    if (this.#ended) return Promise.reject(this.#failure ?? this.closedError());
    const id = this.#nextRequest++;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#requests.set(id, { resolve, reject });
    try {
      this.#pool.noteControl();
      this.#worker.postMessage({ ...request, id } as Command);
    } catch (error) {
      this.#requests.delete(id);
      return Promise.reject(
        new QueueError("InvalidConfig", `cannot send to the worker: ${error}`, { cause: error }),
      );
    }
    return promise;
  }

  #receive(message: unknown): void {
    if (!isReply(message, this.#token)) {
      this.#report(
        new Error(
          "the queue's worker posted a message that is not the loop's (a handler called " +
            "self.postMessage?); it was ignored",
        ),
        "message",
      );
      return;
    }
    const reply = message as Reply;
    if (reply.type === "report") {
      this.#report(fromWire(reply.error), reply.phase);
    } else if (reply.type === "dying") {
      this.#workerFailed(reply.how);
    } else {
      const request = this.#requests.get(reply.id);
      if (!request) return;
      this.#requests.delete(reply.id);
      if (reply.error) request.reject(fromWire(reply.error));
      else request.resolve();
    }
  }

  /** Calls `onError`; one that throws is logged, never allowed to take the owner down. */
  #report(error: Error, phase: string): void {
    try {
      this.#onError(error, phase);
    } catch (thrown) {
      console.error(`tbq: onError threw while reporting a ${phase} error:`, thrown, error);
    }
  }

  #rejectRequests(error: Error): void {
    for (const { reject } of this.#requests.values()) reject(error);
    this.#requests.clear();
  }

  /** The Worker ended on its own: nothing will run again, so close from this side at once. */
  #workerFailed(how: string, cause?: unknown): void {
    if (this.#failure || this.#ended) return;
    this.#failure = new QueueError("WorkerFailed", `the queue's worker ended: ${how}`, { cause });
    if (this.#created) this.#report(this.#failure, "worker");
    this.#rejectRequests(this.#failure);
    this.#force();
    if (this.#created) this.close().catch(() => {});
    else this.#end();
  }
}

function resolveHandlers(handlers: string | URL): URL {
  if (handlers instanceof URL) return handlers;
  if (typeof handlers !== "string" || handlers === "") {
    throw new QueueError("InvalidConfig", "handlers must be a module URL or specifier");
  }
  try {
    if (/^\.{0,2}\//.test(handlers)) return new URL(handlers, `file://${Deno.cwd()}/`);
    return new URL(handlers);
  } catch (error) {
    throw new QueueError(
      "InvalidConfig",
      `handlers "${handlers}" is not a URL or a relative path; ` +
        'pass new URL("./handlers.ts", import.meta.url)',
      { cause: error },
    );
  }
}

/** Worker options with the (unstable) permissions key, typed here to need no unstable types. */
interface DenoWorkerOptions {
  type: "module";
  name: string;
  deno?: { permissions: unknown };
}

function spawnWorker(
  handlers: URL,
  permissions: WorkerPermissions | undefined,
  name: string | undefined,
): Worker {
  const options: DenoWorkerOptions = { type: "module", name: name ?? "tbq work loop" };
  if (permissions !== undefined && permissions !== "inherit") {
    options.deno = { permissions: withModuleAccess(permissions, handlers) };
  }
  try {
    return new Worker(workerEntry, options as unknown as WorkerOptions);
  } catch (error) {
    const escalation = error instanceof Deno.errors.NotCapable
      ? ": the worker's permissions ask for more than this thread has (a Worker's permissions " +
        "cannot exceed its parent's); grant them to the program, e.g. --allow-ffi=<path>"
      : "";
    throw new QueueError("InvalidConfig", `cannot start the worker: ${error}${escalation}`, {
      cause: error,
    });
  }
}

/**
 * Adds what the Worker needs to load tbq's own modules and the handler module, wherever they come
 * from, and nothing more: read access to `file:` modules, import access to the hosts of `http(s):`
 * and `jsr:` ones. A `file:` URL given as a string becomes a path (Deno would read it as a
 * relative path).
 */
function withModuleAccess(permissions: WorkerPermissions, handlers: URL): unknown {
  const granted = permissions === "none" ? {} : permissions;
  if (typeof granted !== "object") return granted;
  const paths = (list: unknown) =>
    Array.isArray(list)
      ? list.map((entry) =>
        typeof entry === "string" && entry.startsWith("file:") ? new URL(entry) : entry
      )
      : list;
  const modules = [...ownFiles, handlers];
  const files = modules.filter((url) => url.protocol === "file:")
    .map((url) => new URL(url.pathname, "file:///"));
  const hosts = [...new Set(modules.flatMap(importHost))];
  const extend = <T>(current: unknown, needed: T[]) =>
    current === true || current === "inherit" || needed.length === 0
      ? current
      : [...(Array.isArray(current) ? current : []), ...needed];
  return {
    ...granted,
    read: extend(paths(granted.read), files),
    write: paths(granted.write),
    import: extend(granted.import, hosts),
  };
}

/** The host a module's import needs permission for, if it is fetched over the network. */
function importHost(url: URL): string[] {
  if (url.protocol === "https:" || url.protocol === "http:") return [url.host];
  if (url.protocol !== "jsr:") return [];
  let registry = "https://jsr.io";
  try {
    registry = Deno.env.get("JSR_URL") ?? registry;
  } catch {
    // No env access here: the default registry.
  }
  return [new URL(registry).host];
}
