/**
 * The request/response handler without USB: its option checks (directly and through a queue whose
 * Worker is granted only libusb), the no-device paths (`absent` modes, `keep`), and the parts that
 * turn packets into an answer (header stripping, where an answer ends, stale bytes) against a
 * simulated IN endpoint that delivers packets as USB does: a transfer takes whole packets until a
 * short one or its buffer is full, and times out when nothing comes.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  libusbPath,
  Status,
  ThreadedBufferQueue,
  UsbError,
  UsbStatus,
  usbWorkerPermissions,
} from "../../mod.ts";
import { LibusbError } from "../../ffi/errors.ts";
import { requestResponseHandlers } from "../../ffi/ready_made.ts";
import {
  type AnswerFormat,
  DRAIN_QUIET_MS,
  drainStale,
  readAnswer,
  type ReadIn,
  stripPacketHeaders,
} from "../../ffi/handlers/answer.ts";
import { exchangePlan, itemCapacity } from "../../ffi/handlers/request_response.ts";

const encode = (text: string) => new TextEncoder().encode(text);
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const FTDI_STATUS = [0xb1, 0x00];

// ------------------------------------------------------------------------- a simulated endpoint

/** A packet the device has ready at time `at` (ms). */
interface Arrival {
  at: number;
  packet: number[];
}

/** An IN endpoint with a fake clock: packets become readable at their time. */
class SimulatedIn {
  now = 0;
  reads: number[] = [];
  abortAt = Infinity;
  readonly clock = () => this.now;

  constructor(readonly packetSize: number, readonly arrivals: Arrival[]) {}

  readonly read: ReadIn = (into, timeout) => {
    assert.equal(into.length % this.packetSize, 0, "reads are whole packets, so none overflows");
    this.reads.push(into.length);
    const until = this.now + timeout;
    let moved = 0;
    for (;;) {
      if (this.abortAt <= until && (this.arrivals[0]?.at ?? Infinity) > this.abortAt) {
        this.now = Math.max(this.now, this.abortAt);
        throw new UsbError(LibusbError.INTERRUPTED, { transferred: moved, detail: "aborted" });
      }
      const next = this.arrivals[0];
      if (!next || next.at > until) {
        this.now = until;
        throw new UsbError(LibusbError.TIMEOUT, { transferred: moved });
      }
      assert.ok(next.packet.length <= this.packetSize);
      assert.ok(moved + next.packet.length <= into.length, "a packet larger than the room");
      this.now = Math.max(this.now, next.at);
      this.arrivals.shift();
      into.set(next.packet, moved);
      moved += next.packet.length;
      if (next.packet.length < this.packetSize || moved === into.length) return moved;
    }
  };
}

/** `payload` cut into packets of at most `packetSize` bytes, each behind `header`, all at `at`. */
function packets(payload: number[], packetSize: number, header: number[] = [], at = 0): Arrival[] {
  const room = packetSize - header.length;
  const out: Arrival[] = [];
  for (let i = 0; i < payload.length; i += room) {
    out.push({ at, packet: [...header, ...payload.slice(i, i + room)] });
  }
  return out;
}

function answerOf(
  device: SimulatedIn,
  format: AnswerFormat,
  roomSize = 256,
  timeout = 1000,
): { text: string; length: number; error?: unknown } {
  const room = new Uint8Array(roomSize);
  const answer = readAnswer(device.read, room, format, timeout, device.clock);
  return { ...answer, text: decode(room.subarray(0, answer.length)) };
}

const errorNamed = (error: unknown, name: string, status: number) => {
  assert.ok(error instanceof UsbError, String(error));
  assert.equal(error.name, name);
  assert.equal(error.status, status);
};

// ------------------------------------------------------------------------------ option checks

Deno.test("request/response options: defaults, and each bad option named", () => {
  assert.deepEqual(exchangePlan({ vendorId: 0x0403, productId: 0x6001 }), {
    outEndpoint: 0x01,
    inEndpoint: 0x81,
    timeout: 1000,
    answerEnd: "short-packet",
    packetHeader: 0,
  });
  assert.deepEqual(
    exchangePlan({
      vendorId: 1,
      productId: 2,
      outEndpoint: 0x02,
      inEndpoint: 0x83,
      timeout: 50,
      answerEnd: { terminator: 0x0a },
      packetHeader: 2,
      absent: "wait",
      serialNumber: "A1",
      interface: 1,
    }),
    {
      outEndpoint: 0x02,
      inEndpoint: 0x83,
      timeout: 50,
      answerEnd: { terminator: 0x0a },
      packetHeader: 2,
    },
  );
  const base = { vendorId: 1, productId: 2 };
  const bad: [unknown, RegExp][] = [
    [null, /handlerOptions must be an object/],
    [{ productId: 2 }, /vendorId must be an integer in 0\.\.65535, got undefined/],
    [{ ...base, productId: 0x10000 }, /productId must be an integer/],
    [{ ...base, outEndpoint: 0x82 }, /outEndpoint must be an OUT address.*got 130/],
    [{ ...base, outEndpoint: 0 }, /outEndpoint must be an OUT address/],
    [{ ...base, inEndpoint: 0x02 }, /inEndpoint must be an IN address, bit 7 set/],
    [{ ...base, inEndpoint: 0x180 }, /inEndpoint must be an IN address/],
    [{ ...base, timeout: 0 }, /timeout must be an integer in 1\.\./],
    [{ ...base, timeout: 1.5 }, /timeout must be an integer/],
    [{ ...base, answerEnd: "newline" }, /answerEnd must be "short-packet", \{ terminator/],
    [{ ...base, answerEnd: { terminator: 256 } }, /terminator must be an integer in 0\.\.255/],
    [{ ...base, answerEnd: { length: 0 } }, /length must be an integer in 1\.\./],
    [{ ...base, answerEnd: { length: 4, terminator: 10 } }, /got one with keys/],
    [{ ...base, packetHeader: -1 }, /packetHeader must be an integer/],
    [{ ...base, absent: "retry" }, /absent must be one of fail-start, fail-items, wait/],
    [{ ...base, serialNumber: 7 }, /serialNumber must be a string/],
    [{ ...base, interface: 256 }, /interface must be an integer/],
    [{ ...base, libusbPath: "" }, /libusbPath must be a non-empty string/],
    [{ ...base, endpoint: 2 }, /unknown option "endpoint"; known: vendorId/],
  ];
  for (const [options, message] of bad) {
    assert.throws(() => exchangePlan(options), (error: unknown) => {
      errorNamed(error, "LIBUSB_ERROR_INVALID_PARAM", Status.InvalidParameter);
      assert.match((error as Error).message, message);
      return true;
    }, JSON.stringify(options));
  }
});

Deno.test("request/response in a Worker granted only libusb: bad options reject start()", async () => {
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 2, bufferSize: 64 },
    handlers: requestResponseHandlers,
    handlerOptions: { vendorId: 1, productId: 2, inEndpoint: 0x01, libusbPath: libusbPath() },
    permissions: usbWorkerPermissions(),
  });
  await assert.rejects(queue.start(), (error: unknown) => {
    errorNamed(error, "LIBUSB_ERROR_INVALID_PARAM", Status.InvalidParameter);
    assert.match((error as Error).message, /inEndpoint must be an IN address/);
    return true;
  });
  assert.equal(queue.running, false);
});

// ---------------------------------------------------------------------------- no device at all

function noDeviceQueue(absent: string) {
  return ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 2, bufferSize: 128, contextSize: 8 },
    handlers: requestResponseHandlers,
    handlerOptions: {
      vendorId: 0xfffe,
      productId: 0x0001,
      outEndpoint: 0x02,
      inEndpoint: 0x81,
      answerEnd: { terminator: 0x0a },
      libusbPath: libusbPath(),
      absent,
    },
    permissions: usbWorkerPermissions(),
  });
}

Deno.test("request/response, no device, fail-start: start() rejects, not connected", async () => {
  await using queue = await noDeviceQueue("fail-start");
  await assert.rejects(queue.start(), (error: unknown) => {
    errorNamed(error, "LIBUSB_ERROR_NOT_FOUND", Status.DeviceNotConnected);
    return true;
  });
});

Deno.test("request/response, no device, fail-items + keep: DeviceNotConnected, buffer held, request intact", async () => {
  await using queue = await noDeviceQueue("fail-items");
  await queue.start();
  const request = queue.fetch()!;
  const text = "*IDN?\n";
  request.size = new TextEncoder().encodeInto(text, request.data).written;
  request.context.fill(0xee);
  assert.equal(await queue.enqueueAndWait(request, { keep: true }), Status.DeviceNotConnected);
  assert.equal(queue.stats().held, 1, "the kept buffer is the caller's again");
  assert.equal(request.size, text.length);
  assert.equal(decode(request.data.subarray(0, request.size)), text, "the request is intact");
  assert.deepEqual([...request.context], [0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee]);
  // Held again: it can go round once more, then back to the pool.
  assert.equal(await queue.enqueueAndWait(request, { keep: true }), Status.DeviceNotConnected);
  queue.reuse(request);
  await queue.onIdle();
  assert.equal(queue.stats().free, 2);
});

Deno.test("request/response, no device, wait: the item waits in order until its waiter gives up", async () => {
  await using queue = await noDeviceQueue("wait");
  await queue.start(); // "wait" tolerates an absent device at start
  const first = queue.fetch()!;
  const second = queue.fetch()!;
  first.size = second.size = 1;
  const giveUp = new AbortController();
  const waiting = queue.enqueueAndWait(first, { keep: true, signal: giveUp.signal });
  const behind = queue.enqueueAndWait(second, { keep: true });
  await new Promise((resolve) => setTimeout(resolve, 700)); // several open attempts
  assert.deepEqual([queue.stats().running, queue.stats().queued], [1, 1], "waiting, in order");
  giveUp.abort(new Error("enough"));
  await assert.rejects(waiting, /enough/);
  for (let i = 0; i < 100 && queue.stats().queued > 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.deepEqual([queue.stats().running, queue.stats().queued], [1, 0], "the next one waits");
  await queue.stop(); // the running item's wait ends through item.signal: Cancelled
  assert.equal(await behind, Status.Cancelled);
});

// ---------------------------------------------------------------------------- header stripping

Deno.test("stripPacketHeaders: full packets, a short one, header-only ones, none", () => {
  const bytes = new Uint8Array([
    ...[0xb1, 0, 1, 2, 3, 4], // full 6-byte packet
    ...[0xb1, 0, 5, 6, 7, 8],
    ...[0xb1, 0], // header-only, as an idle FTDI sends (only as the last of a transfer)
  ]);
  assert.equal(stripPacketHeaders(bytes, bytes.length, 6, 2), 8);
  assert.deepEqual([...bytes.subarray(0, 8)], [1, 2, 3, 4, 5, 6, 7, 8]);
  const short = new Uint8Array([9, 9, 1, 2, 3, 4, 9, 9, 5]);
  assert.equal(stripPacketHeaders(short, short.length, 6, 2), 5);
  assert.deepEqual([...short.subarray(0, 5)], [1, 2, 3, 4, 5]);
  assert.equal(stripPacketHeaders(short, 0, 6, 2), 0);
  const plain = new Uint8Array([1, 2, 3]);
  assert.equal(stripPacketHeaders(plain, 3, 64, 0), 3);
  assert.deepEqual([...plain], [1, 2, 3]);
});

// ---------------------------------------------------------------------------- where answers end

Deno.test("answer ends at a short packet: full packets then a short one, or a zero-length packet", () => {
  const format: AnswerFormat = { answerEnd: "short-packet", packetSize: 8, packetHeader: 0 };
  const body = [...encode("0123456789abcdefXYZ")]; // 8 + 8 + 3
  const device = new SimulatedIn(8, packets(body, 8));
  assert.deepEqual(answerOf(device, format), { length: 19, text: "0123456789abcdefXYZ" });
  assert.deepEqual(device.reads, [256], "one transfer");

  const exact = new SimulatedIn(8, [...packets(body.slice(0, 16), 8), { at: 0, packet: [] }]);
  assert.deepEqual(answerOf(exact, format), { length: 16, text: "0123456789abcdef" });
  const empty = new SimulatedIn(8, [{ at: 0, packet: [] }]);
  assert.deepEqual(answerOf(empty, format), { length: 0, text: "" }, "a ZLP: an empty answer");
});

Deno.test("answer ends at a short packet; with a header, idle packets neither count nor end it", () => {
  const format: AnswerFormat = { answerEnd: "short-packet", packetSize: 8, packetHeader: 2 };
  const device = new SimulatedIn(8, [
    { at: 0, packet: FTDI_STATUS },
    { at: 16, packet: FTDI_STATUS },
    ...packets([...encode("status: ok")], 8, FTDI_STATUS, 30), // 6 + 4
  ]);
  assert.deepEqual(answerOf(device, format), { length: 10, text: "status: ok" });
  assert.equal(device.reads.length, 3, "two idle transfers, then the answer's");
});

Deno.test("answer ends at a terminator, however the device splits it, headers stripped", () => {
  const format: AnswerFormat = { answerEnd: { terminator: 0x0a }, packetSize: 8, packetHeader: 2 };
  const device = new SimulatedIn(8, [
    ...packets([...encode("HELLO WOR")], 8, FTDI_STATUS, 0), // 6 + 3: a short packet mid-answer
    { at: 5, packet: FTDI_STATUS },
    ...packets([...encode("LD #7\n")], 8, FTDI_STATUS, 40),
  ]);
  assert.deepEqual(answerOf(device, format), { length: 15, text: "HELLO WORLD #7\n" });
  assert.equal(device.now, 40, "done when the last packet came, though it was a full one");
  assert.ok(device.reads.every((n) => n === 8), "a packet per read");
});

Deno.test("answer of a fixed length: reads just the packets it needs", () => {
  const format: AnswerFormat = { answerEnd: { length: 10 }, packetSize: 8, packetHeader: 2 };
  const device = new SimulatedIn(8, [
    ...packets([1, 2, 3, 4], 8, FTDI_STATUS, 0),
    ...packets([5, 6, 7, 8, 9, 10], 8, FTDI_STATUS, 20),
  ]);
  const answer = answerOf(device, format);
  assert.equal(answer.length, 10);
  assert.deepEqual(device.reads, [16, 8], "10 bytes in 6-byte payloads: 2 packets, then 1");
});

Deno.test("property: any split into packets, with idle packets between, gives back the line", () => {
  fc.assert(
    fc.property(
      fc.string({ minLength: 0, maxLength: 300 }).map((s) => s.replaceAll("\n", " ")),
      fc.integer({ min: 0, max: 4 }),
      fc.array(fc.tuple(fc.integer({ min: 1, max: 62 }), fc.integer({ min: 0, max: 3 })), {
        minLength: 1,
        maxLength: 40,
      }),
      (text, header, cuts) => {
        const packetSize = 64;
        const payload = [...encode(`${text}\n`)];
        const arrivals: Arrival[] = [];
        const status = [0xb1, 0, 0, 0].slice(0, header);
        let at = 0;
        let cut = 0;
        for (let i = 0; i < payload.length;) {
          const [chunk, idles] = cuts[cut++ % cuts.length];
          const piece = payload.slice(i, i + chunk);
          i += piece.length;
          arrivals.push(...packets(piece, packetSize, status, at));
          if (header > 0) {
            for (let k = 0; k < idles; k++) arrivals.push({ at: at += 3, packet: status });
          }
          at += 2;
        }
        const device = new SimulatedIn(packetSize, arrivals);
        const format: AnswerFormat = {
          answerEnd: { terminator: 0x0a },
          packetSize,
          packetHeader: header,
        };
        const answer = answerOf(device, format, 1024, 10_000);
        assert.equal(answer.error, undefined);
        assert.equal(answer.text, `${text}\n`);
      },
    ),
    { numRuns: 300 },
  );
});

// ---------------------------------------------------------------------------- failures

Deno.test("an answer that does not end in time: IoTimeout, with what did arrive", () => {
  const format: AnswerFormat = { answerEnd: { terminator: 0x0a }, packetSize: 8, packetHeader: 2 };
  const device = new SimulatedIn(8, packets([...encode("PART")], 8, FTDI_STATUS, 10));
  const answer = answerOf(device, format, 256, 300);
  assert.equal(answer.text, "PART");
  errorNamed(answer.error, "LIBUSB_ERROR_TIMEOUT", Status.IoTimeout);
  assert.match(String(answer.error), /did not end within 300 ms \(4 bytes so far\)/);
  assert.ok(device.now >= 300 && device.now <= 301, `${device.now}`);
});

Deno.test("an aborted read: Cancelled, the bytes that arrived are kept (headers stripped)", () => {
  const format: AnswerFormat = { answerEnd: { terminator: 0x0a }, packetSize: 8, packetHeader: 2 };
  const device = new SimulatedIn(8, [
    ...packets([...encode("abcdefgh")], 8, FTDI_STATUS, 0), // 6 + 2 (short: one transfer)
    ...packets([...encode("ijklmn")], 8, FTDI_STATUS, 50), // full: the transfer goes on
    ...packets([...encode("late\n")], 8, FTDI_STATUS, 500),
  ]);
  device.abortAt = 100;
  const answer = answerOf(device, format);
  assert.equal(answer.text, "abcdefghijklmn");
  errorNamed(answer.error, "LIBUSB_ERROR_INTERRUPTED", Status.Cancelled);
  assert.equal(device.arrivals.length, 1, "the late part stays queued: the next item drains it");
});

Deno.test("bytes after the answer's end: DataOverrun, and size shows them all", () => {
  const terminated: AnswerFormat = {
    answerEnd: { terminator: 0x0a },
    packetSize: 8,
    packetHeader: 0,
  };
  const device = new SimulatedIn(8, packets([...encode("OK\nJUNK")], 8));
  const answer = answerOf(device, terminated);
  assert.equal(answer.text, "OK\nJUNK");
  errorNamed(answer.error, "LIBUSB_ERROR_OVERFLOW", UsbStatus.DataOverrun);
  assert.match(String(answer.error), /sent 4 bytes after the 3-byte answer/);

  const fixed: AnswerFormat = { answerEnd: { length: 5 }, packetSize: 8, packetHeader: 2 };
  const longer = new SimulatedIn(8, packets([1, 2, 3, 4, 5, 6], 8, FTDI_STATUS));
  const six = answerOf(longer, fixed);
  assert.equal(six.length, 6);
  errorNamed(six.error, "LIBUSB_ERROR_OVERFLOW", UsbStatus.DataOverrun);
});

Deno.test("an answer larger than the buffer: DataOverrun; a room of no whole packets still reads", () => {
  const format: AnswerFormat = { answerEnd: { terminator: 0x0a }, packetSize: 8, packetHeader: 0 };
  const fits = new SimulatedIn(8, packets([...encode("0123456789\n")], 8));
  assert.deepEqual(answerOf(fits, format, 12), { length: 11, text: "0123456789\n" });
  assert.deepEqual(fits.reads, [8, 8], "a whole packet into the room, then one read aside");

  const big = new SimulatedIn(8, packets([...encode("0123456789abcdef\n")], 8));
  const answer = answerOf(big, format, 12);
  assert.equal(answer.text, "0123456789ab");
  errorNamed(answer.error, "LIBUSB_ERROR_OVERFLOW", UsbStatus.DataOverrun);
  assert.match(
    String(answer.error),
    /does not fit in the 12-byte buffer \(4 more bytes were dropped\)/,
  );

  const tooLong = readAnswer(() => 0, new Uint8Array(8), {
    answerEnd: { length: 9 },
    packetSize: 8,
    packetHeader: 0,
  }, 100);
  errorNamed(tooLong.error, "LIBUSB_ERROR_INVALID_PARAM", Status.InvalidParameter);
});

Deno.test("a transfer failure other than a timeout ends the answer with that error", () => {
  const format: AnswerFormat = { answerEnd: "short-packet", packetSize: 8, packetHeader: 0 };
  const gone: ReadIn = () => {
    throw new UsbError(LibusbError.NO_DEVICE, { transferred: 0 });
  };
  const answer = readAnswer(gone, new Uint8Array(64), format, 100);
  assert.equal(answer.length, 0);
  errorNamed(answer.error, "LIBUSB_ERROR_NO_DEVICE", Status.DeviceNotConnected);
});

// ---------------------------------------------------------------------------- stale bytes

Deno.test("drainStale drops a late answer, stops at the first quiet read", () => {
  const device = new SimulatedIn(8, [
    ...packets([...encode("late answer\n")], 8, FTDI_STATUS, 0),
    ...packets([...encode("next")], 8, FTDI_STATUS, 200), // after the quiet read: not drained
  ]);
  const dropped = drainStale(device.read, new Uint8Array(64), 8, 2, 1000, device.clock);
  assert.equal(dropped, 12);
  assert.equal(device.arrivals.length, 1);
  // The late answer's 2 full packets leave the first read waiting for more until its timeout;
  // the second read brings nothing.
  assert.equal(device.now, 2 * DRAIN_QUIET_MS);

  const idle = new SimulatedIn(8, [{ at: 0, packet: FTDI_STATUS }]);
  assert.equal(drainStale(idle.read, new Uint8Array(64), 8, 2, 1000, idle.clock), 0);
  assert.equal(idle.now, 0, "an idle status packet is quiet at once");

  const streaming = new SimulatedIn(
    8,
    Array.from({ length: 100 }, (_, i) => ({ at: i * 10, packet: [...FTDI_STATUS, 1] })),
  );
  assert.equal(drainStale(streaming.read, new Uint8Array(64), 8, 2, 100, streaming.clock), 11);
  assert.ok(streaming.now <= 100, "bounded by the budget");

  const unplugged: ReadIn = () => {
    throw new UsbError(LibusbError.NO_DEVICE);
  };
  assert.throws(() => drainStale(unplugged, new Uint8Array(8), 8, 0, 100), /NO_DEVICE/);
});

// ---------------------------------------------------------------------------- the answer's room

Deno.test("itemCapacity: the item's capacity (the queue's bufferSize), else data's length", () => {
  assert.equal(itemCapacity({ data: new Uint8Array(5), capacity: 300 }), 300);
  assert.equal(itemCapacity({ data: new Uint8Array(16).subarray(4, 6) }), 2);
});
