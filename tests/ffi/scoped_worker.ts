/// <reference lib="deno.worker" />
// Runs inside a Worker whose permissions are: ffi = the libusb path only, read = the ffi modules
// and this file, nothing else. Reports what worked and what was denied.
import { Libusb } from "../../ffi/libusb.ts";
import { libusbPath } from "../../ffi/library.ts";
import { UsbError } from "../../ffi/errors.ts";

interface Request {
  readonly path: string;
  readonly tmpFile: string;
  /** Another real library, by absolute path, that the Worker may not load. */
  readonly otherLibrary: string;
}

/**
 * The error's class name if `run` failed, else "allowed". `fetch` wraps the permission error in a
 * TypeError; its cause is what counts (a refused connection would be a different cause).
 */
async function outcome(run: () => unknown): Promise<string> {
  try {
    await run();
    return "allowed";
  } catch (error) {
    if (error instanceof TypeError && error.cause instanceof Error) return error.cause.name;
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      return error.name;
    }
    return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  }
}

self.onmessage = async (event: MessageEvent<Request>) => {
  const { path, tmpFile, otherLibrary } = event.data;
  const report: Record<string, unknown> = {};
  {
    using usb = Libusb.open({ path });
    report.version = usb.version;
    report.devices = usb.devices();
    usb.setLogLevel("none");
    report.errorName = usb.errorName(-4);
    const events = [];
    const watch = usb.watch({ interval: 10 });
    const next = watch.next();
    await new Promise((resolve) => setTimeout(resolve, 50)); // a few listings: nothing changes
    await watch.return?.();
    events.push(await next);
    report.watch = events;
    try {
      usb.openDevice({ vendorId: 0x46f4, productId: 0x0001 });
      report.openDevice = "opened";
    } catch (error) {
      report.openDevice = error instanceof UsbError
        ? { name: error.name, code: error.code, status: error.status }
        : String(error);
    }
  }
  report.pathInside = await outcome(() => libusbPath()) === "allowed" ? libusbPath() : "failed";
  {
    using usb = Libusb.open(); // no path: finds the library without env or stat
    report.openWithoutPath = usb.path;
  }
  report.denied = {
    fetch: await outcome(() => fetch("http://127.0.0.1:47991/")),
    connect: await outcome(async () =>
      (await Deno.connect({ hostname: "127.0.0.1", port: 47991 })).close()
    ),
    env: await outcome(() => Deno.env.get("PATH")),
    write: await outcome(() => Deno.writeTextFile(tmpFile, "must not exist")),
    readOutside: await outcome(() => Deno.readTextFile("/etc/hostname")),
    statLibrary: await outcome(() => Deno.statSync(path)),
    otherLibrary: await outcome(() => Deno.dlopen(otherLibrary, {}).close()),
    pointerView: await outcome(() => Deno.UnsafePointer.create(0x1000n)),
  };
  self.postMessage(report);
};
