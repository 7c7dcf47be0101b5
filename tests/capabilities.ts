/** Asks a queue's worker which capabilities it has (see fixtures/capability_handlers.ts). */
import { Status, ThreadedBufferQueue, type WorkerPermissions } from "../mod.ts";
import { CAPABILITIES } from "./fixtures/capability_handlers.ts";

export const handlers = new URL("./fixtures/capability_handlers.ts", import.meta.url);
export const capabilities: string[] = [...CAPABILITIES];

/** The capabilities a queue's worker has, tried one per item. */
export async function allowed(
  permissions: WorkerPermissions,
  handlerOptions: { libusbPath?: string } = {},
): Promise<string[]> {
  await using queue = await ThreadedBufferQueue.create({
    bufferQueue: { bufferCount: 1, bufferSize: 1 },
    handlers,
    handlerOptions,
    permissions,
  });
  await queue.start();
  const result: string[] = [];
  for (let index = 0; index < capabilities.length; index++) {
    const buffer = await queue.acquire();
    buffer.data[0] = index;
    if (await queue.enqueueAndWait(buffer) === Status.Success) result.push(capabilities[index]);
  }
  return result;
}
