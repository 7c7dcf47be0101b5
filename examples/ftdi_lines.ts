/**
 * What the FTDI logger's producers send: numbered text lines, one line per queue item (so one
 * bulk transfer each), and the routine every producer (the main thread or a Worker) runs. The
 * lines are deterministic, so whoever receives them can check each one byte for byte.
 *
 * @module
 */

import { type QueueProducer, Status, statusName } from "../mod.ts";

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

/**
 * Line `seq` of `producer`: `P<producer> <seq, 6 digits> <words…>\n`, between 20 and
 * {@linkcode MAX_LINE_BYTES} bytes long (ASCII only), so lines span one to four 64-byte USB packets.
 *
 * @example
 * ```ts
 * import { ftdiLine } from "./ftdi_lines.ts";
 * console.log(JSON.stringify(ftdiLine(1, 0))); // "P1 000000 …\n"
 * ```
 */
export function ftdiLine(producer: number, seq: number): string {
  const mixed = (Math.imul(seq + 1, 0x9e3779b1) ^ Math.imul(producer + 1, 0x85ebca77)) >>> 0;
  let line = `P${producer} ${String(seq).padStart(6, "0")}`;
  const target = 20 + (mixed % (MAX_LINE_BYTES - 20));
  for (let i = 0; line.length + 1 < target; i++) {
    line += ` ${WORDS[(((mixed >>> (i % 24)) ^ i) >>> 0) % WORDS.length]}`;
  }
  return `${line.slice(0, target - 1)}\n`;
}

/**
 * A line as the receiver parsed it back: its producer and sequence number (`undefined` when the
 * text is not a well-formed line).
 *
 * @example
 * ```ts
 * import { ftdiLine, parseFtdiLine } from "./ftdi_lines.ts";
 * console.log(parseFtdiLine(ftdiLine(2, 7).trimEnd())); // { producer: 2, seq: 7 }
 * ```
 */
export function parseFtdiLine(text: string): { producer: number; seq: number } | undefined {
  const match = /^P(\d+) (\d{6})( |$)/.exec(text);
  return match ? { producer: Number(match[1]), seq: Number(match[2]) } : undefined;
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
 * import { produceLines } from "./ftdi_lines.ts";
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
