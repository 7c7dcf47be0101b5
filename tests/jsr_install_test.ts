/**
 * tbq as a user installs it: `deno add jsr:@tbq/tbq` against a JSR-shaped registry on loopback
 * (`JSR_URL`), then a program and its handler module import `@tbq/tbq` and run a queue whose
 * Worker has `usbWorkerPermissions()` only. The queue must grant that Worker import access to the
 * registry that tbq came from, and nothing more.
 */
import assert from "node:assert/strict";
import { serveRegistry } from "./fixtures/jsr_registry.ts";

const handlersModule = `
import { BufferDisposition, defineWorkHandlers } from "@tbq/tbq";
export default defineWorkHandlers({
  work(item) {
    item.data[0] ^= 0xff;
    return BufferDisposition.WorkComplete;
  },
});
`;

const program = `
import { statusName, ThreadedBufferQueue, usbWorkerPermissions } from "@tbq/tbq";
await using queue = await ThreadedBufferQueue.create({
  bufferQueue: { bufferCount: 2, bufferSize: 8 },
  handlers: new URL("./handlers.ts", import.meta.url),
  permissions: usbWorkerPermissions(),
});
await queue.start();
const buffer = queue.fetch()!;
buffer.data[0] = 1;
buffer.size = 1;
const status = await queue.enqueueAndWait(buffer, { keep: true });
console.log("JSR " + JSON.stringify({ status: statusName(status), reply: buffer.data[0] }));
queue.reuse(buffer);
`;

async function deno(args: string[], cwd: string, env: Record<string, string>) {
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { ...env, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(90_000),
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    text: `${decoder.decode(output.stdout)}\n${decoder.decode(output.stderr)}`,
  };
}

Deno.test("jsr install: deno add jsr:@tbq/tbq from a loopback registry, the Worker least-privileged", async () => {
  await using registry = await serveRegistry(new URL("../", import.meta.url));
  const app = await Deno.makeTempDir({ prefix: "tbq-jsr-app-" });
  const denoDir = await Deno.makeTempDir({ prefix: "tbq-jsr-cache-" });
  const env = { JSR_URL: registry.url, DENO_DIR: denoDir };
  try {
    await Deno.writeTextFile(`${app}/deno.json`, "{}\n");
    const added = await deno(["add", "jsr:@tbq/tbq"], app, env);
    assert.equal(added.code, 0, added.text);
    const config = JSON.parse(await Deno.readTextFile(`${app}/deno.json`));
    assert.match(config.imports?.["@tbq/tbq"] ?? "", /^jsr:@tbq\/tbq@/, JSON.stringify(config));
    await Deno.writeTextFile(`${app}/handlers.ts`, handlersModule);
    await Deno.writeTextFile(`${app}/main.ts`, program);
    const run = await deno(
      [
        "run",
        `--allow-import=${registry.host}`,
        "--allow-read",
        "--allow-env",
        "--allow-ffi",
        "--unstable-worker-options",
        "main.ts",
      ],
      app,
      env,
    );
    assert.equal(run.code, 0, run.text);
    const report = run.text.match(/^JSR (.*)$/m)?.[1];
    assert.ok(report, run.text);
    assert.deepEqual(JSON.parse(report), { status: "Success", reply: 0xfe });
    assert.ok(
      registry.requests.includes("/@tbq/tbq/0.1.0/src/worker_loop.ts"),
      "from the registry",
    );
  } finally {
    await Deno.remove(app, { recursive: true });
    await Deno.remove(denoDir, { recursive: true });
  }
});
