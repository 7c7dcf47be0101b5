/**
 * The queue's configuration (DMF's `DMF_CONFIG_ThreadedBufferQueue`) and its validation.
 *
 * @module
 */

import { QueueError } from "./errors.ts";
import type { LayoutSizes } from "./layout.ts";

/**
 * The buffer pool (DMF's `DMF_CONFIG_BufferQueue`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type BufferQueueConfig, ThreadedBufferQueue } from "../mod.ts";
 * // No buffer up front; fetch grows the pool by one, up to two:
 * const growing: BufferQueueConfig = {
 *   bufferCount: 0, bufferSize: 512, enableLookAside: true, maxBufferCount: 2,
 * };
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: growing,
 *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
 * });
 * const [a, b] = [queue.fetch()!, queue.fetch()!];
 * assert.equal(queue.fetch(), null);
 * queue.reuse(a);
 * queue.reuse(b);
 * ```
 */
export interface BufferQueueConfig {
  /** Buffers allocated up front. 0 only with `enableLookAside`. */
  readonly bufferCount: number;
  /** Bytes of data per buffer. */
  readonly bufferSize: number;
  /** Bytes of per-buffer context (default 0). */
  readonly contextSize?: number;
  /** When no buffer is free, `fetch` grows the pool by one, up to `maxBufferCount`. */
  readonly enableLookAside?: boolean;
  /**
   * With look-aside, the most buffers the pool may hold (default: twice `bufferCount`, at least
   * 16). Memory for them is reserved in the SharedArrayBuffer up front but untouched until used.
   */
  readonly maxBufferCount?: number;
}

/**
 * What a Worker may do (Deno's permission options, with `read`/`write`/`ffi` as absolute
 * paths). Keys left out are denied. The queue adds read access to its own module files and to
 * the handler module, which the Worker needs in order to load.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Status, ThreadedBufferQueue, type WorkerPermissions } from "../mod.ts";
 * const permissions: WorkerPermissions = "none"; // still enough to load tbq and the handlers
 * await using queue = await ThreadedBufferQueue.create({
 *   bufferQueue: { bufferCount: 2, bufferSize: 64 },
 *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
 *   permissions,
 * });
 * await queue.start();
 * assert.equal(await queue.enqueueAndWait(await queue.acquire()), Status.Success);
 * ```
 */
export type WorkerPermissions = "inherit" | "none" | {
  readonly env?: "inherit" | boolean | readonly string[];
  readonly ffi?: "inherit" | boolean | readonly (string | URL)[];
  readonly import?: "inherit" | boolean | readonly string[];
  readonly net?: "inherit" | boolean | readonly string[];
  readonly read?: "inherit" | boolean | readonly (string | URL)[];
  readonly run?: "inherit" | boolean | readonly (string | URL)[];
  readonly sys?: "inherit" | boolean | readonly string[];
  readonly write?: "inherit" | boolean | readonly (string | URL)[];
};

/**
 * Everything `ThreadedBufferQueue.create` needs.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ThreadedBufferQueue, type ThreadedBufferQueueConfig } from "../mod.ts";
 * const errors: string[] = [];
 * const config: ThreadedBufferQueueConfig<{ vendorId: number }> = {
 *   bufferQueue: { bufferCount: 8, bufferSize: 64 },
 *   handlers: new URL("../examples/quick_start_handlers.ts", import.meta.url),
 *   handlerOptions: { vendorId: 0x0403 }, // the handlers' ctx.options
 *   onError: (error, phase) => errors.push(`${phase}: ${error.message}`),
 *   disposeTimeout: 1000,
 * };
 * await using queue = await ThreadedBufferQueue.create(config);
 * assert.equal(queue.bufferSize, 64);
 * assert.deepEqual(errors, []);
 * ```
 */
export interface ThreadedBufferQueueConfig<Options = unknown> {
  /** The buffer pool. */
  readonly bufferQueue: BufferQueueConfig;
  /**
   * The handler module (URL or specifier; a query string is allowed). A relative string
   * resolves against the current directory; prefer `new URL("./x.ts", import.meta.url)`.
   */
  readonly handlers: string | URL;
  /** Structured-cloned into the Worker as `ctx.options`. */
  readonly handlerOptions?: Options;
  /** The Worker's permissions (default `"inherit"`). Needs `--unstable-worker-options`. */
  readonly permissions?: WorkerPermissions;
  /**
   * Called on this thread for each error a handler throws or an invalid disposition (the item
   * completes with a failure status either way), and once with `QueueError` `WorkerFailed`
   * (phase `"worker"`) if the Worker dies. An `onError` that throws is logged and ignored.
   * Default: `console.error`.
   */
  readonly onError?: (error: Error, phase: string) => void;
  /** The Worker's name, for debugging. */
  readonly name?: string;
  /**
   * Milliseconds `create` waits for the handler module to load (default 10 000); then it rejects
   * with `QueueError` `HandlerLoad` and ends the Worker.
   */
  readonly loadTimeout?: number;
  /**
   * Milliseconds `await using` (`[Symbol.asyncDispose]`) lets a graceful close take before it
   * forces one (default 5 000): the Worker is terminated and every item completes `Cancelled`.
   */
  readonly disposeTimeout?: number;
}

/** `loadTimeout` when the config has none. */
export const DEFAULT_LOAD_TIMEOUT_MS = 10_000;
/** `disposeTimeout` when the config has none. */
export const DEFAULT_DISPOSE_TIMEOUT_MS = 5_000;

const permissionKeys = ["env", "ffi", "import", "net", "read", "run", "sys", "write"] as const;
/** Keys whose lists may hold `URL`s (paths) as well as strings. */
const pathKeys = new Set<string>(["ffi", "read", "run", "write"]);

/** Checks the parts of a config beside the pool sizes; returns the timeouts. */
export function validateConfig(
  config: ThreadedBufferQueueConfig,
): { loadTimeout: number; disposeTimeout: number } {
  if (config.onError !== undefined && typeof config.onError !== "function") {
    throw new QueueError(
      "InvalidConfig",
      `onError must be a function, not ${typeof config.onError}`,
    );
  }
  validatePermissions(config.permissions);
  const timeout = (name: "loadTimeout" | "disposeTimeout", fallback: number): number => {
    const value = config[name] ?? fallback;
    if (typeof value !== "number" || !(value >= 0) || !Number.isFinite(value)) {
      throw new QueueError("InvalidConfig", `${name} must be a number of milliseconds ≥ 0`);
    }
    return value;
  };
  return {
    loadTimeout: timeout("loadTimeout", DEFAULT_LOAD_TIMEOUT_MS),
    disposeTimeout: timeout("disposeTimeout", DEFAULT_DISPOSE_TIMEOUT_MS),
  };
}

/** Refuses a `permissions` value that Deno would misread or reject with a raw error. */
function validatePermissions(permissions: unknown): void {
  if (permissions === undefined || permissions === "inherit" || permissions === "none") return;
  const refuse = (why: string) =>
    new QueueError(
      "InvalidConfig",
      `permissions ${why}: give "inherit", "none", or an object with the keys ` +
        `${permissionKeys.join(", ")}, each "inherit", true, false or a list`,
    );
  if (typeof permissions !== "object" || permissions === null || Array.isArray(permissions)) {
    throw refuse(`must not be ${describeValue(permissions)}`);
  }
  for (const [key, value] of Object.entries(permissions)) {
    if (!(permissionKeys as readonly string[]).includes(key)) {
      throw refuse(`has an unknown key "${key}"`);
    }
    if (value === undefined || value === "inherit" || typeof value === "boolean") continue;
    const entryOk = (entry: unknown) =>
      typeof entry === "string" || (pathKeys.has(key) && entry instanceof URL);
    if (!Array.isArray(value) || !value.every(entryOk)) {
      throw refuse(`.${key} must not be ${describeValue(value)}`);
    }
  }
}

function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list with entries that are not strings";
  return typeof value === "string" ? `"${value}"` : `a ${typeof value}`;
}

/** The pool sizes a valid config asks for. */
export function validateSizes(config: BufferQueueConfig): LayoutSizes & { lookAside: boolean } {
  if (typeof config !== "object" || config === null) {
    throw new QueueError("InvalidConfig", "bufferQueue must be an object");
  }
  const count = (name: keyof BufferQueueConfig, fallback?: number): number => {
    const value = config[name] ?? fallback;
    if (!Number.isSafeInteger(value) || (value as number) < 0 || (value as number) > 0x7fffffff) {
      throw new QueueError(
        "InvalidConfig",
        `bufferQueue.${name} must be a non-negative integer, not ${String(value)}`,
      );
    }
    return value as number;
  };
  const bufferCount = count("bufferCount");
  const bufferSize = count("bufferSize");
  const contextSize = count("contextSize", 0);
  const lookAside = config.enableLookAside === true;
  if (!lookAside && bufferCount === 0) {
    throw new QueueError(
      "InvalidConfig",
      "bufferQueue.bufferCount is 0 without enableLookAside: no buffer could ever be fetched",
    );
  }
  let maxBuffers = bufferCount;
  if (lookAside) {
    maxBuffers = count("maxBufferCount", Math.max(2 * bufferCount, 16));
    if (maxBuffers < Math.max(bufferCount, 1)) {
      throw new QueueError(
        "InvalidConfig",
        `bufferQueue.maxBufferCount (${maxBuffers}) must be at least bufferCount and at least 1`,
      );
    }
  }
  return { bufferCount, maxBuffers, bufferSize, contextSize, lookAside };
}
