/**
 * tbq taken from a remote origin, as a user who runs `deno add jsr:@tbq/tbq` gets it: the checkout
 * is served over HTTP on loopback, and a program imports tbq and its handler module from there and
 * drives a queue whose Worker runs under `usbWorkerPermissions()` (the libusb library only). The
 * queue must grant that Worker import access to the origin, and nothing else: the handler's file
 * read is refused.
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);
const types: Record<string, string> = {
  ".ts": "application/typescript; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".json": "application/json",
};

Deno.test("remote origin: tbq and its handler over HTTP, the Worker under usbWorkerPermissions()", async () => {
  const served: string[] = [];
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      const path = new URL(request.url).pathname;
      served.push(path);
      const file = new URL(`.${path}`, root);
      const type = types[path.slice(path.lastIndexOf("."))];
      if (!file.href.startsWith(root.href) || !type) return new Response("no", { status: 404 });
      try {
        return new Response(await Deno.readFile(file), { headers: { "content-type": type } });
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  const origin = `127.0.0.1:${server.addr.port}`;
  const denoDir = await Deno.makeTempDir({ prefix: "tbq-remote-" });
  const work = await Deno.makeTempDir({ prefix: "tbq-remote-cwd-" });
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-config",
        "--no-lock",
        `--allow-import=${origin}`,
        "--allow-read",
        "--allow-env",
        "--allow-ffi",
        "--unstable-worker-options",
        new URL("fixtures/remote_user.ts", import.meta.url).pathname,
        `http://${origin}/`,
      ],
      cwd: work,
      env: { DENO_DIR: denoDir, NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    const report = stdout.match(/^REMOTE (.*)$/m)?.[1];
    assert.equal(output.code, 0, `${stdout}\n${stderr}`);
    assert.ok(report, `no REMOTE line:\n${stdout}\n${stderr}`);
    assert.deepEqual(JSON.parse(report), { status: "Success", free: 2, errors: [] });
    assert.ok(served.includes("/src/worker_loop.ts"), "the Worker's own modules came over HTTP");
    assert.ok(served.includes("/tests/fixtures/remote_handlers.ts"), "so did the handler");
  } finally {
    await Deno.remove(denoDir, { recursive: true });
    await Deno.remove(work, { recursive: true });
  }
});
