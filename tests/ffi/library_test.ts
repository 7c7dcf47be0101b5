import assert from "node:assert/strict";
import {
  findLibusb,
  libusbCandidates,
  LibusbNotFoundError,
  libusbPath,
} from "../../ffi/library.ts";

const noEnv = (): undefined => undefined;

Deno.test("libusbPath() is absolute and names an existing file", () => {
  const path = libusbPath();
  assert.ok(path.startsWith("/"), path);
  assert.ok(Deno.statSync(path).isFile, path);
});

Deno.test("linux candidates: LD_LIBRARY_PATH first, then the multiarch and common dirs", () => {
  const candidates = libusbCandidates({
    os: "linux",
    arch: "x86_64",
    env: (name) => (name === "LD_LIBRARY_PATH" ? "/opt/a:relative/dir::/opt/b/" : undefined),
  });
  assert.deepEqual(candidates.slice(0, 4), [
    "/opt/a/libusb-1.0.so.0",
    "/opt/b/libusb-1.0.so.0",
    "/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0",
    "/lib/x86_64-linux-gnu/libusb-1.0.so.0",
  ]);
  for (const dir of ["/usr/lib64", "/usr/local/lib"]) {
    assert.ok(candidates.includes(`${dir}/libusb-1.0.so.0`), dir);
  }
  assert.ok(candidates.every((path) => path.startsWith("/")));
  const arm = libusbCandidates({ os: "linux", arch: "aarch64", env: noEnv });
  assert.equal(arm[0], "/usr/lib/aarch64-linux-gnu/libusb-1.0.so.0");
});

Deno.test("darwin and windows candidates use their own names and places", () => {
  const mac = libusbCandidates({ os: "darwin", arch: "aarch64", env: noEnv });
  assert.equal(mac[0], "/opt/homebrew/lib/libusb-1.0.0.dylib");
  assert.ok(mac.includes("/usr/local/lib/libusb-1.0.0.dylib"));
  const win = libusbCandidates({
    os: "windows",
    arch: "x86_64",
    env: (name) => (name === "PATH" ? "C:\\tools;D:\\bin\\" : undefined),
  });
  assert.deepEqual(win, [
    "C:\\tools\\libusb-1.0.dll",
    "D:\\bin\\libusb-1.0.dll",
    "C:\\Windows\\System32\\libusb-1.0.dll",
  ]);
});

Deno.test("findLibusb returns the first candidate that exists", () => {
  const seen: string[] = [];
  const path = findLibusb({
    os: "linux",
    arch: "x86_64",
    env: noEnv,
    exists: (p) => {
      seen.push(p);
      return p === "/usr/lib64/libusb-1.0.so.0";
    },
  });
  assert.equal(path, "/usr/lib64/libusb-1.0.so.0");
  assert.equal(seen.at(-1), path);
  assert.ok(seen.length > 1);
});

Deno.test("nothing found: one error listing every path tried and naming LIBUSB_PATH", () => {
  const tried: string[] = [];
  assert.throws(
    () => findLibusb({ os: "linux", arch: "x86_64", env: noEnv, exists: (p) => !tried.push(p) }),
    (error: unknown) => {
      assert.ok(error instanceof LibusbNotFoundError);
      assert.deepEqual(error.tried, tried);
      for (const path of tried) assert.ok(error.message.includes(path), path);
      assert.match(error.message, /LIBUSB_PATH/);
      return true;
    },
  );
});

Deno.test("LIBUSB_PATH overrides the search; relative values resolve against cwd", () => {
  const env = (value: string) => (name: string) => name === "LIBUSB_PATH" ? value : undefined;
  assert.equal(
    findLibusb({ env: env("/x/libusb.so"), exists: (p) => p === "/x/libusb.so" }),
    "/x/libusb.so",
  );
  assert.equal(
    findLibusb({ os: "linux", env: env("lib/libusb.so"), cwd: () => "/work", exists: () => true }),
    "/work/lib/libusb.so",
  );
  // A bad override is an error, not a silent fall-back to the platform's copy.
  assert.throws(
    () => findLibusb({ env: env("/nonexistent"), exists: (p) => p !== "/nonexistent" }),
    (error: unknown) =>
      error instanceof LibusbNotFoundError && error.tried.length === 1 &&
      error.tried[0] === "/nonexistent" && /LIBUSB_PATH/.test(error.message),
  );
});

Deno.test("a subprocess with LIBUSB_PATH=/nonexistent gets the listed-paths error", async () => {
  const modules = new URL("../../ffi/", import.meta.url).href;
  const script = `
    import { libusbPath } from "${modules}library.ts";
    import { Libusb } from "${modules}libusb.ts";
    const report = (f) => { try { return { ok: f() }; } catch (e) {
      return { name: e.name, message: e.message, tried: e.tried }; } };
    console.log(JSON.stringify([report(() => libusbPath()), report(() => Libusb.open().path)]));
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", script],
    env: { LIBUSB_PATH: "/nonexistent" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  const results = JSON.parse(new TextDecoder().decode(output.stdout));
  assert.equal(results.length, 2);
  for (const result of results) {
    assert.equal(result.name, "LibusbNotFoundError", JSON.stringify(result));
    assert.deepEqual(result.tried, ["/nonexistent"]);
    assert.match(result.message, /\/nonexistent/);
    assert.match(result.message, /LIBUSB_PATH/);
  }
});
