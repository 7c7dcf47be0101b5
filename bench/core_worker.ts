/// <reference lib="deno.worker" />
/**
 * The core benchmark's baseline Worker, one job per Worker, chosen by the first message
 * (core_common.ts, `BaselineStart`):
 *
 * - `ring`: the consumer of a hand-rolled single-producer/single-consumer ring. It takes each item
 *   in order, "works" by reading its size word and nothing else, and hands the slot back (HEAD + 1),
 *   notifying the producer only when it sleeps. Empty: spin, then `Atomics.wait`.
 * - `pingpong`: answers each request number the main thread writes by writing it back. Idle: spin,
 *   then `Atomics.wait`.
 * - `echo`: answers each message with its data, by `postMessage`.
 *
 * `ring` and `pingpong` block this Worker's event loop until the main thread sets STOP (or writes
 * request -1); then they post `"stopped"`.
 */
import { type BaselineStart, P, R, ringOf, SPIN } from "./core_common.ts";

/** The sum of the sizes read, so that the reads are not dead code. */
let sink = 0;

function consume(start: Extract<BaselineStart, { kind: "ring" }>): void {
  const { words, sizes, capacity } = ringOf(start.words, start.sizes, start.bytes);
  const mask = capacity - 1;
  let head = Atomics.load(words, R.HEAD);
  for (;;) {
    let tail = Atomics.load(words, R.TAIL);
    for (let i = 0; i < SPIN && tail === head; i++) tail = Atomics.load(words, R.TAIL);
    if (tail === head) {
      Atomics.store(words, R.CONSUMER_SLEEPING, 1);
      // The timeout only bounds how long a STOP can go unseen; a producer notifies before that.
      while ((tail = Atomics.load(words, R.TAIL)) === head && !Atomics.load(words, R.STOP)) {
        Atomics.wait(words, R.TAIL, head, 100);
      }
      Atomics.store(words, R.CONSUMER_SLEEPING, 0);
      if (tail === head) return; // STOP
    }
    while (head !== tail) {
      sink += sizes[head & mask]; // the "work"
      head = (head + 1) | 0;
      Atomics.store(words, R.HEAD, head);
      if (Atomics.load(words, R.PRODUCER_SLEEPING)) Atomics.notify(words, R.HEAD);
    }
  }
}

function answer(shared: SharedArrayBuffer): void {
  const words = new Int32Array(shared);
  let last = Atomics.load(words, P.REQUEST);
  for (;;) {
    let request = Atomics.load(words, P.REQUEST);
    for (let i = 0; i < SPIN && request === last; i++) request = Atomics.load(words, P.REQUEST);
    if (request === last) {
      Atomics.store(words, P.WORKER_SLEEPING, 1);
      while ((request = Atomics.load(words, P.REQUEST)) === last) {
        Atomics.wait(words, P.REQUEST, last);
      }
      Atomics.store(words, P.WORKER_SLEEPING, 0);
    }
    if (request === -1) return;
    last = request;
    Atomics.store(words, P.ANSWER, request);
    if (Atomics.load(words, P.MAIN_SLEEPING)) Atomics.notify(words, P.ANSWER);
  }
}

self.onmessage = (event: MessageEvent<BaselineStart>) => {
  const start = event.data;
  if (start.kind === "echo") {
    self.onmessage = (message: MessageEvent) => self.postMessage(message.data);
    self.postMessage("ready");
    return;
  }
  self.onmessage = null;
  self.postMessage("ready");
  if (start.kind === "ring") consume(start);
  else answer(start.words);
  self.postMessage(sink >= 0 ? "stopped" : "stopped?");
};
