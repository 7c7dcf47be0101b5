/**
 * What the demo's producers send and what the simulated device keeps: the record format (payload
 * in `data`, header in `context`), a deterministic payload generator so the main thread can check
 * every byte afterwards without keeping copies, and the layout of the device's shared memory.
 *
 * A payload also stands on its own, for a device that receives only the bytes (a real USB device
 * gets `data` and nothing else): it starts with the record's producer, sequence number and length
 * and ends with the FNV-1a of everything before, so a reader can split a byte stream back into
 * records and check each one without the generator.
 *
 * @module
 */

/** Bytes of `context` per buffer: producer id, sequence number, checksum, magic (u32 LE each). */
export const CONTEXT_SIZE = 16;
/** Marks a context as filled by a demo producer. */
export const RECORD_MAGIC = 0x7462_7172;
/** Shortest payload a producer sends: its frame (producer, seq and length before, FNV-1a after). */
export const MIN_PAYLOAD = 16;

/** The header a producer writes into a buffer's `context`. */
export interface RecordHeader {
  /** Which producer sent it (0 is the main thread). */
  producer: number;
  /** The producer's own sequence number, from 0. */
  seq: number;
  /** FNV-1a of the payload, as the producer computed it. */
  checksum: number;
  /** {@linkcode RECORD_MAGIC} if the context was written by a producer. */
  magic: number;
}

/** Writes a record header into a buffer's context. */
export function writeHeader(context: Uint8Array, header: RecordHeader): void {
  const view = new DataView(context.buffer, context.byteOffset, CONTEXT_SIZE);
  view.setUint32(0, header.producer, true);
  view.setUint32(4, header.seq, true);
  view.setUint32(8, header.checksum, true);
  view.setUint32(12, header.magic, true);
}

/** Reads a record header from a buffer's context. */
export function readHeader(context: Uint8Array): RecordHeader {
  const view = new DataView(context.buffer, context.byteOffset, CONTEXT_SIZE);
  return {
    producer: view.getUint32(0, true),
    seq: view.getUint32(4, true),
    checksum: view.getUint32(8, true),
    magic: view.getUint32(12, true),
  };
}

/** Payload length of record `seq` of `producer`: varies from MIN_PAYLOAD to `max`. */
export function payloadLength(producer: number, seq: number, max: number): number {
  const mixed = Math.imul(seq + 1, 0x9e3779b1) ^ Math.imul(producer + 1, 0x85ebca77);
  return MIN_PAYLOAD + ((mixed >>> 7) % (max - MIN_PAYLOAD + 1));
}

/**
 * Fills `bytes` (at least {@linkcode MIN_PAYLOAD} long) with the payload of record `seq` of
 * `producer`: producer, seq and `bytes.length` (u32 LE each), a xorshift32 stream, and the FNV-1a
 * of all that (u32 LE) in the last 4 bytes.
 */
export function fillPayload(bytes: Uint8Array, producer: number, seq: number): void {
  if (bytes.length < MIN_PAYLOAD) {
    throw new RangeError(`a payload has ${MIN_PAYLOAD} bytes or more`);
  }
  const frame = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  frame.setUint32(0, producer, true);
  frame.setUint32(4, seq, true);
  frame.setUint32(8, bytes.length, true);
  const end = bytes.length - 4;
  let x = (Math.imul(producer + 1, 0x27d4eb2d) ^ Math.imul(seq + 1, 0x165667b1)) | 1;
  for (let i = 12; i < end; i++) {
    if ((i & 3) === 0) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
    }
    bytes[i] = x >>> (8 * (i & 3));
  }
  frame.setUint32(end, checksum(bytes.subarray(0, end)), true);
}

/** FNV-1a, 32 bits, unsigned. */
export function checksum(bytes: Uint8Array): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) hash = Math.imul(hash ^ bytes[i], 0x01000193);
  return hash >>> 0;
}

// ── the simulated device's memory ─────────────────────────────────────────────────────────

/** Int32 header words of the device memory. */
export const DEV = {
  /** Records stored in the log (written after the entry, with Atomics.store). */
  WRITES: 0,
  /** `pre` calls (device opened). */
  OPENS: 1,
  /** `post` calls (device closed). */
  CLOSES: 2,
  /** Transfers the device refused (bad header or checksum). */
  REJECTS: 3,
  /** Transfer number (1-based) at which the requested fault was injected; 0 if none yet. */
  FAULT_AT: 4,
  /** Log capacity in records. */
  CAPACITY: 5,
} as const;
/** Byte offset of two BigInt64 counters: payload bytes stored, and busy nanoseconds. */
const COUNTERS_OFFSET = 32;
/** Byte offset of the log: one entry of LOG_WORDS int32 per record. */
const LOG_OFFSET = 64;
/** Int32 words per log entry: producer, seq, size, checksum of the bytes received. */
export const LOG_WORDS = 4;

/** Views over the device's shared memory: a header, two counters and the received-record log. */
export class DeviceMemory {
  /** The shared memory (pass it to the handler through `handlerOptions`). */
  readonly buffer: SharedArrayBuffer;
  /** Header words (see {@linkcode DEV}). */
  readonly header: Int32Array;
  /** [payload bytes stored, busy nanoseconds]. */
  readonly counters: BigInt64Array;
  /** The log: LOG_WORDS int32 per record. */
  readonly log: Int32Array;

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.header = new Int32Array(buffer, 0, COUNTERS_OFFSET / 4);
    this.counters = new BigInt64Array(buffer, COUNTERS_OFFSET, 2);
    this.log = new Int32Array(buffer, LOG_OFFSET);
  }

  /** Allocates device memory for up to `capacity` records. */
  static allocate(capacity: number): DeviceMemory {
    const memory = new DeviceMemory(
      new SharedArrayBuffer(LOG_OFFSET + capacity * LOG_WORDS * 4),
    );
    memory.header[DEV.CAPACITY] = capacity;
    return memory;
  }

  /** Records stored so far. */
  get writes(): number {
    return Atomics.load(this.header, DEV.WRITES);
  }

  /** Payload bytes stored so far. */
  get bytes(): number {
    return Number(Atomics.load(this.counters, 0));
  }

  /** Time the device spent on transfers, in nanoseconds. */
  get busyNs(): number {
    return Number(Atomics.load(this.counters, 1));
  }

  /** Appends one received record; false when the log is full. */
  append(producer: number, seq: number, size: number, sum: number): boolean {
    const n = this.header[DEV.WRITES];
    if (n >= this.header[DEV.CAPACITY]) return false;
    const at = n * LOG_WORDS;
    this.log[at] = producer;
    this.log[at + 1] = seq;
    this.log[at + 2] = size;
    this.log[at + 3] = sum | 0;
    Atomics.add(this.counters, 0, BigInt(size));
    Atomics.store(this.header, DEV.WRITES, n + 1);
    return true;
  }

  /** Adds to the busy-time counter. */
  addBusy(ns: number): void {
    Atomics.add(this.counters, 1, BigInt(Math.round(ns)));
  }
}

/** Faults the simulated device can inject (once, at one transfer) to prove the checker works. */
export const FAULTS = ["none", "drop", "duplicate", "corrupt", "reorder", "timeout"] as const;
/** One of {@linkcode FAULTS}. */
export type Fault = typeof FAULTS[number];
