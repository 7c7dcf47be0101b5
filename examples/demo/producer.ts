/**
 * One demo producer, the same code on the main thread and in producer Workers: it acquires a
 * buffer, writes record `seq` (payload in `data`, header in `context`, length in `size`) and
 * enqueues it, either with `enqueueAndWait` (timing the wait) or with plain `enqueue`. A producer
 * Worker (`../producer_worker.ts`) runs {@linkcode produce}.
 *
 * @module
 */

import { type QueueProducer, statusName } from "../../mod.ts";
import {
  checksum,
  CONTEXT_SIZE,
  fillPayload,
  payloadLength,
  RECORD_MAGIC,
  writeHeader,
} from "./records.ts";

/** Int32 word of {@linkcode ProducerJob.control}: non-zero once producers must stop. */
export const STOP = 0;
/** Int32 word of {@linkcode ProducerJob.control}: non-zero once producers may start. */
export const GO = 1;

/** How a producer enqueues: `wait` uses `enqueueAndWait`, `stream` uses `enqueue`. */
export type ProducerMode = "wait" | "stream";

/** What a producer Worker is told to do (posted to it with the queue's share). */
export interface ProducerJob {
  /** The producer's id (0 is the main thread). */
  readonly producer: number;
  /** How it enqueues. */
  readonly mode: ProducerMode;
  /** Two Int32 words: {@linkcode STOP} and {@linkcode GO}. */
  readonly control: SharedArrayBuffer;
}

/** What a producer reports when it stops. */
export interface ProducerReport {
  /** The producer's id. */
  readonly producer: number;
  /** How it enqueued. */
  readonly mode: ProducerMode;
  /** Records enqueued (sequence numbers 0 .. sent - 1). */
  readonly sent: number;
  /** Payload bytes enqueued. */
  readonly bytes: number;
  /** `enqueueAndWait` latencies in microseconds (empty for `stream`). */
  readonly latenciesUs: Float64Array<ArrayBuffer>;
  /** Statuses `enqueueAndWait` resolved with, by `statusName` (empty for `stream`). */
  readonly statuses: Record<string, number>;
}

/** Sends numbered records through a queue handle. */
export class RecordProducer {
  readonly #queue: QueueProducer;
  readonly #producer: number;
  readonly #mode: ProducerMode;
  #sent = 0;
  #bytes = 0;
  #latencies = new Float64Array(1024);
  #waited = 0;
  readonly #statuses: Record<string, number> = {};

  constructor(queue: QueueProducer, producer: number, mode: ProducerMode) {
    if (queue.contextSize < CONTEXT_SIZE) {
      throw new RangeError(`the queue's contextSize must be at least ${CONTEXT_SIZE}`);
    }
    this.#queue = queue;
    this.#producer = producer;
    this.#mode = mode;
  }

  /** Sends the next record. */
  async sendOne(mode: ProducerMode = this.#mode): Promise<void> {
    const buffer = await this.#queue.acquire();
    const seq = this.#sent;
    const size = payloadLength(this.#producer, seq, buffer.data.length);
    const payload = buffer.data.subarray(0, size);
    fillPayload(payload, this.#producer, seq);
    buffer.size = size;
    writeHeader(buffer.context, {
      producer: this.#producer,
      seq,
      checksum: checksum(payload),
      magic: RECORD_MAGIC,
    });
    this.#sent++;
    this.#bytes += size;
    if (mode === "stream") {
      this.#queue.enqueue(buffer);
      return;
    }
    const start = performance.now();
    const status = await this.#queue.enqueueAndWait(buffer);
    this.#record((performance.now() - start) * 1000, statusName(status));
  }

  /** Sends records until `stopped()` is true. */
  async run(stopped: () => boolean): Promise<void> {
    while (!stopped()) await this.sendOne();
  }

  /** Records sent so far. */
  get sent(): number {
    return this.#sent;
  }

  /** What this producer did. */
  report(): ProducerReport {
    return {
      producer: this.#producer,
      mode: this.#mode,
      sent: this.#sent,
      bytes: this.#bytes,
      latenciesUs: this.#latencies.slice(0, this.#waited),
      statuses: { ...this.#statuses },
    };
  }

  #record(latencyUs: number, status: string): void {
    if (this.#waited === this.#latencies.length) {
      const grown = new Float64Array(this.#latencies.length * 2);
      grown.set(this.#latencies);
      this.#latencies = grown;
    }
    this.#latencies[this.#waited++] = latencyUs;
    this.#statuses[status] = (this.#statuses[status] ?? 0) + 1;
  }
}

/** A producer Worker's job: waits for the GO word, sends records until the STOP word, reports. */
export async function produce(queue: QueueProducer, job: ProducerJob): Promise<ProducerReport> {
  const producer = new RecordProducer(queue, job.producer, job.mode);
  const control = new Int32Array(job.control);
  const go = Atomics.waitAsync(control, GO, 0);
  if (go.async) await go.value;
  await producer.run(() => Atomics.load(control, STOP) !== 0);
  return producer.report();
}
