/**
 * Messages between the owner and the work loop's Worker. Only control travels this way (create,
 * start, stop, close, error reports); items travel through the SharedArrayBuffer.
 *
 * @module
 */

import { QueueError, type QueueErrorCode } from "./errors.ts";

/** Owner → Worker. */
export type Command =
  | {
    readonly type: "init";
    readonly id: number;
    readonly buffer: SharedArrayBuffer;
    readonly handlers: string;
    readonly options: unknown;
  }
  | { readonly type: "start" | "stop" | "close"; readonly id: number };

/** Worker → owner. */
export type Reply =
  | { readonly type: "done"; readonly id: number; readonly error?: WireError }
  | { readonly type: "report"; readonly phase: string; readonly error: WireError };

/** An error as it crosses threads: structured clone would drop `code` and `status`. */
export interface WireError {
  readonly name: string;
  readonly message: string;
  readonly stack?: string;
  readonly code?: string;
  readonly status?: number;
}

/** Flattens anything thrown into a {@linkcode WireError}. */
export function toWire(error: unknown): WireError {
  if (error instanceof Error) {
    const { code, status } = error as { code?: unknown; status?: unknown };
    return {
      name: error.name,
      message: error.message,
      stack: error.stack,
      code: typeof code === "string" ? code : undefined,
      status: typeof status === "number" ? status : undefined,
    };
  }
  return { name: "Error", message: String(error) };
}

const errorClasses: Record<string, ErrorConstructor> = {
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
};

/** Rebuilds an error from its wire form: a `QueueError` stays one; others keep name and status. */
export function fromWire(wire: WireError): Error {
  const error: Error & { status?: number; code?: string } = wire.name === "QueueError"
    ? new QueueError(wire.code as QueueErrorCode, wire.message)
    : new (errorClasses[wire.name] ?? Error)(wire.message);
  if (!(error instanceof QueueError)) {
    error.name = wire.name;
    if (wire.status !== undefined) error.status = wire.status;
    if (wire.code !== undefined) error.code = wire.code;
  }
  if (wire.stack) error.stack = wire.stack;
  return error;
}
