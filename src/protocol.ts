/**
 * Messages between the owner and the work loop's Worker. Only control travels this way (create,
 * start, stop, close, error reports, the Worker's last word); items travel through the
 * SharedArrayBuffer. Every reply carries the queue's token, so that a handler posting to its
 * parent (`self.postMessage`) can never be taken for the loop.
 *
 * Errors cross as {@linkcode WireError}s and come back as the same class with the same fields:
 * the built-in error classes, `QueueError`, `DOMException` and every class registered with
 * {@linkcode registerErrorClass} (the USB layer registers `UsbError`).
 *
 * @module
 */

import { QueueError } from "./errors.ts";

/** Owner → Worker. */
export type Command =
  | {
    readonly type: "init";
    readonly id: number;
    readonly token: string;
    readonly buffer: SharedArrayBuffer;
    readonly handlers: string;
    readonly options: unknown;
  }
  | { readonly type: "start" | "stop" | "close"; readonly id: number };

/** Worker → owner. */
export type Reply =
  | {
    readonly type: "done";
    readonly token: string;
    readonly id: number;
    readonly error?: WireError;
  }
  | {
    readonly type: "report";
    readonly token: string;
    readonly phase: string;
    readonly error: WireError;
  }
  /** The Worker is about to end on its own (the handler called `self.close()` or `Deno.exit()`). */
  | { readonly type: "dying"; readonly token: string; readonly how: string };

/** A field value that crosses as it is. */
type WireField =
  | string
  | number
  | boolean
  | bigint
  | null
  | undefined
  | Uint8Array
  | readonly (string | number)[];

/** An error as it crosses threads: structured clone would drop its class and fields. */
export interface WireError {
  /** The registered class it was (see {@linkcode registerErrorClass}); "Error" if none. */
  readonly kind: string;
  readonly name: string;
  readonly message: string;
  readonly stack?: string;
  /** Its own enumerable fields that are primitives, bytes or lists of them (`code`, `status`, …). */
  readonly fields: Readonly<Record<string, WireField>>;
  readonly cause?: WireError;
}

type ErrorClass = abstract new (...args: never[]) => Error;

const classesByKind = new Map<string, ErrorClass>();
const kindsByClass = new Map<ErrorClass, string>();

/**
 * Lets errors of `errorClass` cross between the Worker and the owner as themselves. Both threads
 * must register it (register where the class is defined, at module load).
 */
export function registerErrorClass(kind: string, errorClass: ErrorClass): void {
  classesByKind.set(kind, errorClass);
  kindsByClass.set(errorClass, kind);
}

for (
  const builtin of [
    Error,
    TypeError,
    RangeError,
    SyntaxError,
    ReferenceError,
    EvalError,
    URIError,
    AggregateError,
  ]
) {
  registerErrorClass(builtin.name, builtin);
}
registerErrorClass("DOMException", DOMException);
registerErrorClass("QueueError", QueueError);

/** How deep a chain of causes crosses. */
const MAX_CAUSES = 4;

/** Flattens anything thrown into a {@linkcode WireError}; never throws. */
export function toWire(error: unknown, depth = 0): WireError {
  try {
    if (!(error instanceof Error) && !(error instanceof DOMException)) {
      return {
        kind: "Error",
        name: "Error",
        message: `a value that is no Error was thrown: ${describe(error)}`,
        fields: {},
      };
    }
    const fields: Record<string, WireField> = {};
    for (const key of Object.keys(error)) {
      if (key === "name" || key === "message" || key === "stack" || key === "cause") continue;
      const value = read(error, key);
      if (value instanceof Uint8Array) fields[key] = new Uint8Array(value);
      else if (
        Array.isArray(value) && value.every((v) => typeof v === "string" || typeof v === "number")
      ) {
        fields[key] = [...value];
      } else if (value === null || (typeof value !== "object" && typeof value !== "function")) {
        fields[key] = value as WireField;
      }
    }
    const cause = read(error, "cause");
    return {
      kind: kindOf(error),
      name: String(read(error, "name") ?? "Error"),
      message: String(read(error, "message") ?? ""),
      stack: typeof read(error, "stack") === "string" ? read(error, "stack") as string : undefined,
      fields,
      cause: cause !== undefined && depth < MAX_CAUSES ? toWire(cause, depth + 1) : undefined,
    };
  } catch {
    return { kind: "Error", name: "Error", message: "an error that could not be read", fields: {} };
  }
}

/** Rebuilds an error from its wire form, as its registered class; never throws. */
export function fromWire(wire: WireError): Error {
  try {
    const errorClass = classesByKind.get(String(wire.kind)) ?? Error;
    const message = String(wire.message);
    const error: Error = errorClass === DOMException
      ? new DOMException(message, String(wire.name))
      // A real Error object with the class's prototype; the class's constructor (whose
      // arguments we cannot know) does not run: the fields are restored instead.
      : Reflect.construct(Error, [message], errorClass);
    const own = (key: string, value: unknown, enumerable: boolean) =>
      Object.defineProperty(error, key, { value, writable: true, enumerable, configurable: true });
    if (!(error instanceof DOMException) && error.name !== wire.name) own("name", wire.name, false);
    for (const [key, value] of Object.entries(wire.fields ?? {})) own(key, value, true);
    if (typeof wire.stack === "string") own("stack", wire.stack, false);
    if (wire.cause) own("cause", fromWire(wire.cause), false);
    return error;
  } catch {
    return new Error(`an error from the worker that could not be rebuilt: ${describe(wire)}`);
  }
}

/** True for a message that the loop of the queue with `token` sent. */
export function isReply(value: unknown, token: string): value is Reply {
  if (typeof value !== "object" || value === null) return false;
  const reply = value as Partial<Record<string, unknown>>;
  if (reply.token !== token) return false;
  switch (reply.type) {
    case "done":
      return typeof reply.id === "number";
    case "report":
      return typeof reply.phase === "string" && typeof reply.error === "object";
    case "dying":
      return typeof reply.how === "string";
    default:
      return false;
  }
}

function kindOf(error: object): string {
  for (let proto = Object.getPrototypeOf(error); proto; proto = Object.getPrototypeOf(proto)) {
    const kind = kindsByClass.get(Object.getOwnPropertyDescriptor(proto, "constructor")?.value);
    if (kind) return kind;
  }
  return "Error";
}

function read(object: object, key: string): unknown {
  try {
    return (object as Record<string, unknown>)[key];
  } catch (error) {
    return `<${key} threw ${describe(error)}>`;
  }
}

/** A short text for any value; never throws. */
export function describe(value: unknown): string {
  try {
    if (typeof value === "string") return JSON.stringify(value);
    return JSON.stringify(value) ?? String(value);
  } catch {
    try {
      return String(value);
    } catch {
      return Object.prototype.toString.call(value);
    }
  }
}
