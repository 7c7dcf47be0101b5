import assert from "node:assert/strict";
import { allowed, capabilities, handlers } from "./capabilities.ts";

Deno.test("a worker with an empty grant can load its modules and nothing else", async () => {
  assert.deepEqual(await allowed({}), ["read own module"]);
  assert.deepEqual(await allowed("none"), ["read own module"]);
});

Deno.test("a worker gets exactly what its permissions grant", async () => {
  assert.deepEqual(
    await allowed({ env: ["HOME"], read: ["/etc/hostname"] }),
    ["env", "read outside the grant", "read own module"],
  );
});

Deno.test("a read grant given as a file: URL string means that file", async () => {
  assert.deepEqual(
    await allowed({ read: ["file:///etc/hostname"] }),
    ["read outside the grant", "read own module"],
  );
});

Deno.test("an inheriting worker has the test's permissions", async () => {
  assert.deepEqual(
    await allowed("inherit"),
    capabilities.filter((name) => name !== "libusb"),
    "libusb needs its path in the handler options",
  );
});

Deno.test("asking for more than the program has is a clear InvalidConfig error", async () => {
  const script = `
    import { ThreadedBufferQueue } from ${
    JSON.stringify(new URL("../mod.ts", import.meta.url).href)
  };
    try {
      const queue = await ThreadedBufferQueue.create({
        bufferQueue: { bufferCount: 1, bufferSize: 1 },
        handlers: ${JSON.stringify(handlers.href)},
        permissions: { net: true },
      });
      console.log("created");
      await queue.close();
    } catch (error) {
      console.log(error.code, error.message);
    }`;
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(file, script);
  // `deno eval` would grant everything; `deno run` with read only is the narrow parent.
  const { stdout, code } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-worker-options", "--allow-read", file],
    stdout: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output().finally(() => Deno.remove(file));
  assert.equal(code, 0);
  const text = new TextDecoder().decode(stdout);
  assert.match(text, /^InvalidConfig /);
  assert.match(text, /cannot exceed its parent's/);
});
