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
 * import type { BufferQueueConfig } from "../mod.ts";
 * const pool: BufferQueueConfig = { bufferCount: 16, bufferSize: 4096, contextSize: 16 };
 * const growing: BufferQueueConfig = {
 *   bufferCount: 0, bufferSize: 512, enableLookAside: true, maxBufferCount: 64,
 * };
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
 * import type { WorkerPermissions } from "../mod.ts";
 * const permissions: WorkerPermissions = { ffi: ["/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0"] };
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
 * import type { ThreadedBufferQueueConfig } from "../mod.ts";
 * const config: ThreadedBufferQueueConfig<{ vendorId: number }> = {
 *   bufferQueue: { bufferCount: 8, bufferSize: 64 },
 *   handlers: new URL("./handlers.ts", import.meta.url),
 *   handlerOptions: { vendorId: 0x0403 },
 * };
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
   * completes with a failure status either way). Default: `console.error`.
   */
  readonly onError?: (error: Error, phase: string) => void;
  /** The Worker's name, for debugging. */
  readonly name?: string;
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
