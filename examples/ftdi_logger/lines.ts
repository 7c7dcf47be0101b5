/**
 * What the FTDI logger's producers send: numbered text lines, one line per queue item (so one
 * bulk transfer each), and the routine every producer (the main thread or a Worker) runs. Each
 * line ends with the FNV-1a of its text, so whoever receives the lines can check each one on its
 * own: that it is whole, unmixed and unchanged.
 *
 * @module
 */

import { type QueueProducer, Status, statusName } from "../../mod.ts";

/** The longest line {@linkcode ftdiLine} makes, in bytes (newline included); below any sane `bufferSize`. */
export const MAX_LINE_BYTES = 200;

const WORDS = [
  "usb",
  "bulk",
  "queue",
  "buffer",
  "worker",
  "ftdi",
  "serial",
  "transfer",
  "producer",
  "in-order",
  "libusb",
  "deno",
];

/** FNV-1a of an ASCII text, as 8 hex digits. */
const fnv1a = (text: string) =>
  ([...text].reduce((h, c) => Math.imul(h ^ c.charCodeAt(0), 0x01000193), 0x811c9dc5) >>> 0)
    .toString(16).padStart(8, "0");

/**
 * Line `seq` of `producer`: `P<producer> <seq, 6 digits> <words…> <FNV-1a of the text before the
 * last space, 8 hex digits>\n`, between 28 and {@linkcode MAX_LINE_BYTES} bytes long (ASCII only),
 * so lines span one to four 64-byte USB packets.
 *
 * @example
 * ```ts
 * import { ftdiLine } from "./lines.ts";
 * console.log(JSON.stringify(ftdiLine(1, 0))); // "P1 000000 … 1a2b3c4d\n"
 * ```
 */
export function ftdiLine(producer: number, seq: number): string {
  const mixed = (Math.imul(seq + 1, 0x9e3779b1) ^ Math.imul(producer + 1, 0x85ebca77)) >>> 0;
  let text = `P${producer} ${String(seq).padStart(6, "0")}`;
  const length = 18 + (mixed % (MAX_LINE_BYTES - 27)); // of the text: 18 to 190
  for (let i = 0; text.length < length; i++) {
    text += ` ${WORDS[(((mixed >>> (i % 24)) ^ i) >>> 0) % WORDS.length]}`;
  }
  text = text.slice(0, length);
  return `${text} ${fnv1a(text)}\n`;
}

/** What one producer is told to do (posted to a producer Worker with the queue's share). */
export interface LineJob {
  /** The producer's number (0: the main thread). */
  readonly producer: number;
  /** Lines to send (sequence numbers 0 .. lines - 1). */
  readonly lines: number;
  /** `enqueueAndWait` calls a producer keeps outstanding (at least 1). */
  readonly window: number;
  /** Bound of every wait (for a buffer, for a line's status), in milliseconds. */
  readonly timeoutMs: number;
}

/** What one producer did. */
export interface LineReport {
  /** The producer's number. */
  readonly producer: number;
  /** Lines enqueued. */
  readonly sent: number;
  /** Bytes enqueued (the lines' lengths, newlines included). */
  readonly bytes: number;
  /** How many lines completed with each status, by `statusName`. */
  readonly statuses: Record<string, number>;
  /** The first line that did not complete with Success, e.g. `"P1 #12: IoTimeout"`. */
  readonly firstFailure?: string;
}

/**
 * Sends `job.lines` numbered lines through a queue handle (the owner or an attached producer), in
 * sequence order, each with `enqueueAndWait`, keeping up to `job.window` of them in flight. Every
 * line's status is counted; a wait that takes longer than `job.timeoutMs` rejects.
 *
 * @example
 * ```ts ignore
 * import { produceLines } from "./lines.ts";
 * const report = await produceLines(queue, { producer: 0, lines: 10, window: 4, timeoutMs: 10_000 });
 * ```
 */
export async function produceLines(queue: QueueProducer, job: LineJob): Promise<LineReport> {
  const encoder = new TextEncoder();
  const signal = AbortSignal.timeout(job.timeoutMs);
  const statuses: Record<string, number> = {};
  let firstFailure: string | undefined;
  let bytes = 0;
  const inFlight: Promise<void>[] = [];
  const track = async (seq: number, wait: Promise<number>) => {
    const status = await wait;
    const name = statusName(status);
    statuses[name] = (statuses[name] ?? 0) + 1;
    if (status !== Status.Success) firstFailure ??= `P${job.producer} #${seq}: ${name}`;
  };
  let error: unknown;
  try {
    for (let seq = 0; seq < job.lines; seq++) {
      if (inFlight.length >= Math.max(1, job.window)) await inFlight.shift();
      const line = ftdiLine(job.producer, seq);
      const buffer = await queue.acquire({ signal });
      const { read, written } = encoder.encodeInto(line, buffer.data);
      if (read !== line.length) {
        queue.reuse(buffer);
        throw new RangeError(
          `a ${line.length}-byte line does not fit a ${queue.bufferSize}-byte buffer`,
        );
      }
      buffer.size = written;
      bytes += written;
      inFlight.push(track(seq, queue.enqueueAndWait(buffer, { signal })));
    }
  } catch (caught) {
    error = caught;
  }
  // Settle every outstanding wait (each bounded by the signal) before reporting or rethrowing.
  const rejected = (await Promise.allSettled(inFlight)).find((r): r is PromiseRejectedResult =>
    r.status === "rejected"
  );
  if (error !== undefined) throw error;
  if (rejected) throw rejected.reason;
  return {
    producer: job.producer,
    sent: job.lines,
    bytes,
    statuses,
    ...(firstFailure ? { firstFailure } : {}),
  };
}

/** A producer Worker's job (see `../producer_worker.ts`): a {@linkcode LineJob} and its GO word. */
export interface WorkerLineJob extends LineJob {
  /** Int32 word 0 becomes non-zero when the producers may start. */
  readonly go: SharedArrayBuffer;
}

/** What a producer Worker runs: waits (up to `job.timeoutMs`) for GO, then {@linkcode produceLines}. */
export async function produce(queue: QueueProducer, job: WorkerLineJob): Promise<LineReport> {
  const wait = Atomics.waitAsync(new Int32Array(job.go), 0, 0, job.timeoutMs);
  if (wait.async && await wait.value === "timed-out") throw new Error("GO never came");
  return await produceLines(queue, job);
}
