/**
 * Finding the libusb-1.0 shared library.
 *
 * @module
 */

import { registerErrorClass } from "../src/protocol.ts";

/**
 * The library could not be found or loaded. `tried` lists every path that was tried, in order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Libusb, LibusbNotFoundError } from "../mod.ts";
 * try {
 *   Libusb.open({ path: "/nonexistent/libusb-1.0.so.0" });
 *   assert.fail("opened a library that does not exist");
 * } catch (error) {
 *   assert.ok(error instanceof LibusbNotFoundError);
 *   assert.deepEqual(error.tried, ["/nonexistent/libusb-1.0.so.0"]);
 * }
 * ```
 */
export class LibusbNotFoundError extends Error {
  /** Every path tried, in order. */
  readonly tried: readonly string[];

  /**
   * Makes the error; the message lists `tried` and names `LIBUSB_PATH`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { LibusbNotFoundError } from "../mod.ts";
   * const error = new LibusbNotFoundError(["/nonexistent"]);
   * assert.match(error.message, /\/nonexistent/);
   * assert.match(error.message, /LIBUSB_PATH/);
   * ```
   */
  constructor(tried: readonly string[], detail?: string, options?: ErrorOptions) {
    super(
      `libusb-1.0 not found${detail ? ` (${detail})` : ""}. Tried:\n` +
        tried.map((path) => `  - ${path}`).join("\n") +
        "\nInstall libusb-1.0 (Debian/Ubuntu: apt-get install libusb-1.0-0; Fedora: dnf install " +
        "libusb1; macOS: brew install libusb) or set LIBUSB_PATH to the library's path.",
      options,
    );
    this.name = "LibusbNotFoundError";
    this.tried = [...tried];
  }
}

/**
 * What the lookup consults; every member defaults to the real thing. Tests inject their own.
 *
 * @example
 * ```ts
 * import { findLibusb, type LibusbLookup } from "./library.ts";
 * const lookup: LibusbLookup = {
 *   env: (name) => (name === "LIBUSB_PATH" ? "/opt/libusb/libusb-1.0.so.0" : undefined),
 *   exists: () => true,
 * };
 * findLibusb(lookup); // "/opt/libusb/libusb-1.0.so.0"
 * ```
 */
export interface LibusbLookup {
  /** Reads an environment variable; default `Deno.env.get`, treated as unset where denied. */
  readonly env?: (name: string) => string | undefined;
  /** The platform; default `Deno.build.os`. */
  readonly os?: string;
  /** The CPU; default `Deno.build.arch`. */
  readonly arch?: string;
  /** The directory a relative `LIBUSB_PATH` is resolved against; default `Deno.cwd()`. */
  readonly cwd?: () => string;
  /**
   * Whether a library is at this absolute path. Default: `Deno.statSync`; where stat is denied, a
   * trial `Deno.dlopen` (which works where only that path has an ffi grant).
   */
  readonly exists?: (path: string) => boolean;
}

/** True for `/x`, `C:\x`, `C:/x`, `\\server\x`. */
function isAbsolute(path: string): boolean {
  return path.startsWith("/") || /^[A-Za-z]:[\\/]/.test(path) || path.startsWith("\\\\");
}

function join(dir: string, name: string, windows: boolean): string {
  const separator = windows ? "\\" : "/";
  return dir.endsWith("/") || dir.endsWith("\\") ? dir + name : dir + separator + name;
}

function safeEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // env access denied: as if unset
  }
}

function defaultExists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    if (
      !(error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied)
    ) {
      return false;
    }
  }
  // stat denied (e.g. a Worker granted only ffi for the library): try loading it instead.
  try {
    Deno.dlopen(path, {}).close();
    return true;
  } catch {
    return false;
  }
}

/** The library's file name on each platform. */
const FILE_NAMES: Readonly<Record<string, string>> = {
  linux: "libusb-1.0.so.0",
  android: "libusb-1.0.so",
  darwin: "libusb-1.0.0.dylib",
  windows: "libusb-1.0.dll",
  freebsd: "libusb.so.3",
};

/**
 * The absolute paths `libusbPath()` tries, in order, when `LIBUSB_PATH` is not set.
 *
 * @example
 * ```ts
 * import { libusbCandidates } from "./library.ts";
 * libusbCandidates({ os: "linux", arch: "x86_64", env: () => undefined })[0];
 * // "/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0"
 * ```
 */
export function libusbCandidates(lookup: LibusbLookup = {}): string[] {
  const env = lookup.env ?? safeEnv;
  const os = lookup.os ?? Deno.build.os;
  const arch = lookup.arch ?? Deno.build.arch;
  const windows = os === "windows";
  const name = FILE_NAMES[os] ?? FILE_NAMES.linux;
  const listSeparator = windows ? ";" : ":";
  const fromVariable = (variable: string): string[] =>
    (env(variable) ?? "").split(listSeparator).filter((dir) => dir !== "" && isAbsolute(dir));
  let dirs: string[];
  if (os === "darwin") {
    dirs = [
      ...fromVariable("DYLD_LIBRARY_PATH"),
      "/opt/homebrew/lib",
      "/opt/homebrew/opt/libusb/lib",
      "/usr/local/lib",
      "/usr/local/opt/libusb/lib",
      "/opt/local/lib",
      "/usr/lib",
    ];
  } else if (windows) {
    const systemRoot = env("SystemRoot") ?? "C:\\Windows";
    dirs = [...fromVariable("PATH"), join(systemRoot, "System32", true)];
  } else {
    const triplet = arch === "aarch64" ? "aarch64-linux-gnu" : "x86_64-linux-gnu";
    dirs = [
      ...fromVariable("LD_LIBRARY_PATH"),
      `/usr/lib/${triplet}`,
      `/lib/${triplet}`,
      "/usr/lib64",
      "/lib64",
      "/usr/lib",
      "/lib",
      "/usr/local/lib",
      "/usr/local/lib64",
      "/run/current-system/sw/lib",
    ];
  }
  return [...new Set(dirs.map((dir) => join(dir, name, windows)))];
}

/**
 * Finds the library as {@linkcode libusbPath} does, with an injectable environment.
 *
 * @example
 * ```ts
 * import { findLibusb } from "./library.ts";
 * const path = findLibusb({ exists: (p) => p === "/usr/lib64/libusb-1.0.so.0", os: "linux" });
 * ```
 */
export function findLibusb(lookup: LibusbLookup = {}): string {
  const env = lookup.env ?? safeEnv;
  const exists = lookup.exists ?? defaultExists;
  const override = env("LIBUSB_PATH");
  if (override !== undefined && override !== "") {
    let path = override;
    if (!isAbsolute(path)) {
      try {
        path = join((lookup.cwd ?? Deno.cwd)(), path, (lookup.os ?? Deno.build.os) === "windows");
      } catch {
        // cwd denied: keep it relative; the error below still names it
      }
    }
    if (isAbsolute(path) && exists(path)) return path;
    throw new LibusbNotFoundError([path], `LIBUSB_PATH is set to ${JSON.stringify(override)}`);
  }
  const tried = libusbCandidates(lookup);
  for (const path of tried) if (exists(path)) return path;
  throw new LibusbNotFoundError(tried, "LIBUSB_PATH is not set");
}

/**
 * The absolute path of the libusb-1.0 library that `Libusb.open()` loads: `LIBUSB_PATH` when set
 * (relative paths are resolved against the working directory), else the first platform location
 * that exists. Grant exactly this path as a Worker's `ffi` permission. Throws a
 * {@linkcode LibusbNotFoundError} listing every path tried.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Libusb, libusbPath } from "../mod.ts";
 * const path = libusbPath(); // grant exactly this: --allow-ffi=<path>, or a Worker's ffi: [path]
 * assert.ok(path.startsWith("/"));
 * using usb = Libusb.open();
 * assert.equal(usb.path, path);
 * ```
 */
export function libusbPath(): string {
  return findLibusb();
}

registerErrorClass("LibusbNotFoundError", LibusbNotFoundError);
