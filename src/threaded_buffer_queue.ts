/**
 * The owner: creates the pool and the Worker, starts and stops the loop, closes everything.
 *
 * @module
 */

import {
  type BufferQueueConfig,
  type ThreadedBufferQueueConfig,
  validateSizes,
  type WorkerPermissions,
} from "./config.ts";
import { QueueError } from "./errors.ts";
import { Flag } from "./layout.ts";
import { Pool, type QueueStats } from "./pool.ts";
import { QueueProducer, type QueueShare } from "./producer.ts";
import { type Command, fromWire, type Reply } from "./protocol.ts";

export type { BufferQueueConfig, ThreadedBufferQueueConfig, WorkerPermissions };

const workerEntry = new URL("./worker_loop.ts", import.meta.url);
/** The files a Worker reads to run the loop and let handler modules import `mod.ts`. */
const ownFiles = ["../mod.ts", "./", "../ffi/"].map((path) => new URL(path, import.meta.url));

/** Distributes `Omit` over the command union. */
type Request = Command extends infer C ? C extends Command ? Omit<C, "id"> : never : never;

/**
 * A DMF ThreadedBufferQueue: producers on any thread fetch buffers, fill and enqueue them; one
 * work loop in a dedicated Worker runs the handler module's `work` on each, in order; the buffer
 * then returns to the pool. Create with {@linkcode ThreadedBufferQueue.create}.
 *
 * @example
 * ```ts ignore
 * import { Status, ThreadedBufferQueue } from "./mod.ts";
 *
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 16, bufferSize: 4096 },
 *   handlers: new URL("./device_handlers.ts", import.meta.url),
 * });
 * await queue.start();
 * const buffer = await queue.acquire();
 * buffer.data.set([0x01, 0x02]);
 * buffer.size = 2;
 * const status = await queue.enqueueAndWait(buffer);
 * console.log(status === Status.Success);
 * ```
 */
export class ThreadedBufferQueue extends QueueProducer {
  readonly #pool: Pool;
  readonly #worker: Worker;
  readonly #onError: (error: Error, phase: string) => void;
  readonly #requests = new Map<number, { resolve(): void; reject(error: Error): void }>();
  #nextRequest = 1;
  #running = false;
  /** Serialises start/stop/close so that pre and post always pair. */
  #control: Promise<unknown> = Promise.resolve();
  #closing: Promise<QueueStats> | undefined;
  #workerFailure: Error | undefined;

  private constructor(pool: Pool, worker: Worker, config: ThreadedBufferQueueConfig) {
    super(pool);
    this.#pool = pool;
    this.#worker = worker;
    this.#onError = config.onError ??
      ((error, phase) => console.error(`tbq: ${phase} failed:`, error));
    worker.onmessage = (event: MessageEvent<Reply>) => this.#receive(event.data);
    worker.onerror = (event) => {
      event.preventDefault();
      this.#workerFailed(
        new QueueError("WorkerFailed", `the queue's worker failed: ${event.message}`, {
          cause: event.error,
        }),
      );
    };
    worker.onmessageerror = () =>
      this.#workerFailed(new QueueError("WorkerFailed", "a message from the worker was lost"));
  }

  /**
   * Allocates the pool in one SharedArrayBuffer, starts the Worker and loads the handler module.
   * The loop does not run until `start()`. Rejects with a `QueueError`: `InvalidConfig` for bad
   * sizes, `HandlerLoad` for a module that fails to load or has no `work`.
   */
  static async create<Options = unknown>(
    config: ThreadedBufferQueueConfig<Options>,
  ): Promise<ThreadedBufferQueue> {
    if (typeof config !== "object" || config === null) {
      throw new QueueError("InvalidConfig", "create needs a config object");
    }
    const sizes = validateSizes(config.bufferQueue);
    const handlers = resolveHandlers(config.handlers);
    let pool: Pool;
    try {
      pool = Pool.create(sizes, sizes.lookAside);
    } catch (error) {
      throw new QueueError("InvalidConfig", `cannot allocate the pool: ${error}`, { cause: error });
    }
    const worker = spawnWorker(handlers, config.permissions, config.name);
    const queue = new ThreadedBufferQueue(pool, worker, config as ThreadedBufferQueueConfig);
    try {
      await queue.#request({
        type: "init",
        buffer: pool.buffer,
        handlers: handlers.href,
        options: config.handlerOptions,
      });
    } catch (error) {
      worker.terminate();
      throw error;
    }
    return queue;
  }

  /**
   * A producer handle on a shared queue, for another Worker (or thread) than the owner's. It has
   * every producer method: fetch, acquire, enqueue*, enqueue*AndWait, reuse, flush, count,
   * workCompleted, stats.
   */
  static attach(share: QueueShare): QueueProducer {
    if (share?.kind !== "tbq" || !(share.buffer instanceof SharedArrayBuffer)) {
      throw new QueueError("ForeignBuffer", "attach needs the value returned by queue.share()");
    }
    return new QueueProducer(Pool.attach(share.buffer));
  }

  /** A structured-cloneable value for `ThreadedBufferQueue.attach` in another Worker. */
  share(): QueueShare {
    this.assertOpen();
    return { kind: "tbq", buffer: this.#pool.buffer };
  }

  /** True between a successful `start()` and the next `stop()`. */
  get running(): boolean {
    return this.#running;
  }

  /**
   * Runs `pre` once on the worker thread, then the loop. Items enqueued while stopped run now.
   * Rejects with `QueueError` `AlreadyRunning` (status `InvalidDeviceState`) when running, or with
   * what `pre` threw (the loop then does not run).
   */
  start(): Promise<void> {
    return this.#serially(async () => {
      this.assertOpen();
      if (this.#running) {
        throw new QueueError("AlreadyRunning", "the queue is already running; stop it first");
      }
      await this.#request({ type: "start" });
      this.#running = true;
    });
  }

  /**
   * The loop takes no further item, lets the one in progress finish, runs `post`, and resolves.
   * Queued items stay queued. On a stopped queue, resolves without running `post` again.
   */
  stop(): Promise<void> {
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
   * Afterwards every method throws `QueueError` `Closed`; pending `acquire()` calls reject with
   * it. Resolves with the final stats (every buffer free). Calling it again returns the same.
   */
  close(): Promise<QueueStats> {
    return this.#closing ??= this.#close();
  }

  /** Same as `close()`, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(): Promise<QueueStats> {
    const pool = this.#pool;
    pool.setFlag(Flag.CLOSING | Flag.STOP_REQUESTED);
    pool.wakeAll();
    await this.#control;
    if (!this.#workerFailure) {
      try {
        await this.#request({ type: "close" });
      } catch (error) {
        this.#onError(error as Error, this.#workerFailure ? "worker" : "post");
      }
    }
    this.#running = false;
    if (this.#workerFailure) closeWithoutWorker(pool);
    this.#worker.terminate();
    this.#rejectRequests(new QueueError("Closed", "the queue is closed"));
    return pool.stats();
  }

  #serially<T>(action: () => Promise<T>): Promise<T> {
    const result = this.#control.then(action);
    this.#control = result.catch(() => {});
    return result;
  }

  #request(request: Request): Promise<void> {
    if (this.#workerFailure) return Promise.reject(this.#workerFailure);
    const id = this.#nextRequest++;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#requests.set(id, { resolve, reject });
    try {
      this.#worker.postMessage({ ...request, id } as Command);
    } catch (error) {
      this.#requests.delete(id);
      return Promise.reject(
        new QueueError("InvalidConfig", `cannot send to the worker: ${error}`, { cause: error }),
      );
    }
    return promise;
  }

  #receive(reply: Reply): void {
    if (reply.type === "report") {
      this.#onError(fromWire(reply.error), reply.phase);
      return;
    }
    const request = this.#requests.get(reply.id);
    if (!request) return;
    this.#requests.delete(reply.id);
    if (reply.error) request.reject(fromWire(reply.error));
    else request.resolve();
  }

  #rejectRequests(error: Error): void {
    for (const { reject } of this.#requests.values()) reject(error);
    this.#requests.clear();
  }

  /** The Worker died: nothing will run again, so close the pool from this side. */
  #workerFailed(error: QueueError): void {
    if (this.#workerFailure) return;
    this.#workerFailure = error;
    this.#rejectRequests(error);
    this.#onError(error, "worker");
    if (!this.#pool.hasFlag(Flag.CLOSING)) {
      this.#pool.setFlag(Flag.CLOSING | Flag.STOP_REQUESTED);
      closeWithoutWorker(this.#pool);
    }
  }
}

/** Closes a pool whose Worker is gone: cancels everything, skips `reuseCleanup`. */
function closeWithoutWorker(pool: Pool): void {
  pool.reclaimAll();
  for (let slot = pool.takeRecycled(); slot >= 0; slot = pool.takeRecycled()) {
    pool.settleRecycled(slot);
  }
  pool.setFlag(Flag.CLOSED);
  pool.wakeAll();
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
    options.deno = { permissions: withModuleReads(permissions, handlers) };
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
 * Adds read access to the files the Worker must load: tbq's own modules and the handler module.
 * A `file:` URL given as a string becomes a path (Deno would read it as a relative path).
 */
function withModuleReads(permissions: WorkerPermissions, handlers: URL): unknown {
  const granted = permissions === "none" ? {} : permissions;
  if (typeof granted !== "object") return granted;
  const paths = (list: unknown) =>
    Array.isArray(list)
      ? list.map((entry) =>
        typeof entry === "string" && entry.startsWith("file:") ? new URL(entry) : entry
      )
      : list;
  const normalized = { ...granted, read: paths(granted.read), write: paths(granted.write) };
  const needed = ownFiles.filter((url) => url.protocol === "file:");
  if (handlers.protocol === "file:") needed.push(new URL(handlers.pathname, "file:///"));
  const read = normalized.read;
  if (read === true || read === "inherit" || needed.length === 0) return normalized;
  return { ...normalized, read: [...(Array.isArray(read) ? read : []), ...needed] };
}
