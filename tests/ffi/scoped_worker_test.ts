import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { Status } from "../../src/status.ts";
import { libusbPath } from "../../ffi/library.ts";

Deno.test("libusb works in a Worker granted only the library path; all else is denied", async () => {
  const path = libusbPath();
  const workerUrl = new URL("./scoped_worker.ts", import.meta.url);
  const otherLibrary = [
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib",
  ]
    .map((dir) => `${dir}/libc.so.6`)
    .find((candidate) => {
      try {
        return Deno.statSync(candidate).isFile;
      } catch {
        return false;
      }
    });
  assert.ok(otherLibrary, "an absolute libc path to try loading");
  const tmpDir = await Deno.makeTempDir();
  const tmpFile = `${tmpDir}/written-by-worker.txt`;
  const worker = new Worker(workerUrl, {
    type: "module",
    deno: {
      permissions: {
        ffi: [path],
        read: [
          fromFileUrl(new URL("../../ffi/", import.meta.url)),
          fromFileUrl(new URL("../../src/status.ts", import.meta.url)),
          fromFileUrl(workerUrl),
        ],
        net: false,
        env: false,
        write: false,
        run: false,
        sys: false,
      },
    },
  });
  try {
    const { promise, resolve, reject } = Promise.withResolvers<Record<string, unknown>>();
    worker.onmessage = (event) => resolve(event.data);
    worker.onerror = (event) => {
      event.preventDefault();
      reject(new Error(`worker failed: ${event.message}`));
    };
    worker.postMessage({ path, tmpFile, otherLibrary });
    const report = await promise;

    const version = report.version as { major: number; minor: number; micro: number };
    assert.equal(version.major, 1, JSON.stringify(report));
    assert.ok(Number.isInteger(version.minor) && Number.isInteger(version.micro));
    assert.deepEqual(report.devices, []);
    assert.equal(report.errorName, "LIBUSB_ERROR_NO_DEVICE");
    assert.deepEqual(report.watch, [{ done: true, value: undefined }]); // polled, nothing changed, ended cleanly
    assert.deepEqual(report.openDevice, {
      name: "LIBUSB_ERROR_NOT_FOUND",
      code: -5,
      status: Status.DeviceNotConnected,
    });
    assert.equal(report.pathInside, path);
    assert.equal(report.openWithoutPath, path);

    const denied = report.denied as Record<string, string>;
    assert.deepEqual(Object.keys(denied).sort(), [
      "connect",
      "env",
      "fetch",
      "otherLibrary",
      "pointerView",
      "readOutside",
      "statLibrary",
      "write",
    ]);
    for (const [what, outcome] of Object.entries(denied)) {
      assert.ok(["NotCapable", "PermissionDenied"].includes(outcome), `${what}: ${outcome}`);
    }
    await assert.rejects(Deno.stat(tmpFile), Deno.errors.NotFound, "the write really was denied");
  } finally {
    worker.terminate();
    await Deno.remove(tmpDir, { recursive: true });
  }
});
