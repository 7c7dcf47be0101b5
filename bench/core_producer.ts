/// <reference lib="deno.worker" />
/**
 * A tbq producer Worker for the core benchmark's three-producer case: attaches to the queue it is
 * sent, then for each `run` does `items` hand-offs (fetch, or acquire when none is free; fill
 * 4 KiB; enqueue) as fast as it can and answers `done`. Protocol: core_common.ts.
 */
import { type QueueProducer, type QueueShare, ThreadedBufferQueue } from "../mod.ts";
import { payload, type ProducerCommand, type ProducerReply } from "./core_common.ts";

const record = payload();
let queue: QueueProducer | undefined;
const reply = (message: ProducerReply) => self.postMessage(message);

async function produce(producer: QueueProducer, items: number): Promise<void> {
  for (let i = 0; i < items; i++) {
    const buffer = producer.fetch() ?? await producer.acquire();
    buffer.data.set(record);
    producer.enqueue(buffer);
  }
}

self.onmessage = async (event: MessageEvent<ProducerCommand>) => {
  const command = event.data;
  try {
    if (command.kind === "attach") {
      queue = ThreadedBufferQueue.attach(command.share as QueueShare);
      reply({ kind: "attached" });
    } else if (command.kind === "run") {
      await produce(queue!, command.items);
      reply({ kind: "done", items: command.items });
    } else {
      self.close();
    }
  } catch (error) {
    reply({ kind: "error", message: String((error as Error)?.stack ?? error) });
  }
};
