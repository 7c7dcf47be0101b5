/**
 * The device watch (ffi/watch.ts) without USB: a scripted DeviceSource stands in for libusb's
 * listing. What is checked: the diff (baseline not reported, detach before attach, a replug seen
 * as both), strings read only when something is new, abort, the source closing, listing errors,
 * and that ending the watch leaves no timer behind (the test sanitizers would fail otherwise).
 */
import assert from "node:assert/strict";
import type { UsbDeviceInfo } from "../../ffi/device.ts";
import { LibusbError, UsbError } from "../../ffi/errors.ts";
import { Libusb } from "../../ffi/libusb.ts";
import {
  type DeviceSource,
  type UsbDeviceEvent,
  watchDevices,
  watchDeviceSource,
} from "../../ffi/watch.ts";

function device(address: number, vendorId = 0x0403, productId = 0x6001): UsbDeviceInfo {
  return {
    vendorId,
    productId,
    busNumber: 1,
    deviceAddress: address,
    deviceClass: 0,
    deviceSubclass: 0,
    deviceProtocol: 0,
    deviceVersion: 0x0400,
    usbVersion: 0x0200,
  };
}

/** A bus whose contents the test sets; counts listings, and names devices when asked for strings. */
class ScriptedBus implements DeviceSource {
  devices: UsbDeviceInfo[] = [];
  listings = 0;
  stringListings = 0;
  closedNow = false;
  failure: Error | undefined;
  readonly #closed = Promise.withResolvers<void>();
  readonly closed: Promise<void> = this.#closed.promise;

  list(strings: boolean): UsbDeviceInfo[] | undefined {
    if (this.closedNow) return undefined;
    if (this.failure) throw this.failure;
    this.listings++;
    if (!strings) return this.devices;
    this.stringListings++;
    return this.devices.map((d) => ({ ...d, serialNumber: `S${d.deviceAddress}` }));
  }

  close(): void {
    this.closedNow = true;
    this.#closed.resolve();
  }
}

/** Lets a pending next() reach its sleep. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 10));

const brief = (e: UsbDeviceEvent) => `${e.type} ${e.device.deviceAddress}`;

Deno.test("watch: devices present at the start are not reported; later changes are", async () => {
  const bus = new ScriptedBus();
  bus.devices = [device(1, 0x1d6b, 2), device(2)];
  const watch = watchDeviceSource(bus, { interval: 5 });
  bus.devices = [device(1, 0x1d6b, 2), device(2), device(3, 0x46f4, 1)];
  assert.deepEqual(brief((await watch.next()).value!), "attach 3");
  bus.devices = [device(1, 0x1d6b, 2), device(3, 0x46f4, 1)];
  assert.deepEqual(brief((await watch.next()).value!), "detach 2");
  await watch.return();
  assert.deepEqual(await watch.next(), { done: true, value: undefined });
});

Deno.test("watch: a replug within one interval is a detach then an attach, strings only for it", async () => {
  const bus = new ScriptedBus();
  bus.devices = [device(1, 0x1d6b, 2), device(2)];
  const watch = watchDeviceSource(bus, { interval: 5 });
  // Unplug + replug between two listings: same ids, new address.
  bus.devices = [device(1, 0x1d6b, 2), device(4)];
  const first = (await watch.next()).value!;
  const second = (await watch.next()).value!;
  assert.deepEqual([brief(first), brief(second)], ["detach 2", "attach 4"]);
  assert.equal(
    first.device.serialNumber,
    undefined,
    "present at the start: listed without strings",
  );
  assert.equal(second.device.serialNumber, "S4", "a new device's strings are read");
  assert.equal(bus.stringListings, 1);
  // Nothing changes for a while: no string listing, only cheap ones.
  const listings = bus.listings;
  const idle = watch.next();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(bus.listings > listings + 2, `polled ${bus.listings - listings} times in 50 ms`);
  assert.equal(bus.stringListings, 1, "strings are read only when something is new");
  // The replugged device leaves with the info it came with (its strings).
  bus.devices = [device(1, 0x1d6b, 2)];
  const gone = (await idle).value!;
  assert.equal(brief(gone), "detach 4");
  assert.equal(gone.device.serialNumber, "S4");
  await watch.return();
});

Deno.test("watch: nothing is polled until someone iterates", async () => {
  const bus = new ScriptedBus();
  const watch = watchDeviceSource(bus, { interval: 5 });
  assert.equal(bus.listings, 1, "the baseline, taken at the call");
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.equal(bus.listings, 1, "no timer runs while nobody waits on next()");
  await watch.return();
});

Deno.test("watch: break out of for await stops the polling, no timer left behind", async () => {
  const bus = new ScriptedBus();
  const watch = watchDeviceSource(bus, { interval: 5 });
  bus.devices = [device(6), device(7)];
  const events: string[] = [];
  for await (const event of watch) {
    events.push(brief(event));
    break; // calls return(): the second event is dropped, the polling stops
  }
  assert.deepEqual(events, ["attach 6"]);
  const listings = bus.listings;
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(bus.listings, listings, "no listing after the break");
  assert.deepEqual(await watch.next(), { done: true, value: undefined });
  // The op sanitizer of this test fails if a watch timer is still pending here.
});

Deno.test("watch: return() while next() sleeps resolves it done at once", async () => {
  const watch = watchDeviceSource(new ScriptedBus(), { interval: 60_000 });
  const pending = watch.next();
  await settle();
  const t0 = performance.now();
  await watch.return();
  assert.deepEqual(await pending, { done: true, value: undefined });
  assert.ok(performance.now() - t0 < 100, "the 60 s sleep was cut short");
});

Deno.test("watch: abort rejects the pending next() with the signal's reason, then done", async () => {
  const controller = new AbortController();
  const watch = watchDeviceSource(new ScriptedBus(), {
    interval: 60_000,
    signal: controller.signal,
  });
  const pending = watch.next();
  await settle();
  const reason = new Error("enough watching");
  const t0 = performance.now();
  controller.abort(reason);
  await assert.rejects(pending, (error) => error === reason);
  assert.ok(performance.now() - t0 < 100, "the 60 s sleep was cut short");
  assert.deepEqual(await watch.next(), { done: true, value: undefined });
});

Deno.test("watch: an already aborted signal rejects the first next(), even with events ready", async () => {
  const bus = new ScriptedBus();
  const watch = watchDeviceSource(bus, { signal: AbortSignal.abort("stop"), interval: 5 });
  bus.devices = [device(2)];
  await assert.rejects(watch.next(), (error) => error === "stop");
  assert.equal(bus.listings, 1, "no listing after the abort");
});

Deno.test("watch: the source closing ends the iteration, promptly even mid-sleep", async () => {
  const bus = new ScriptedBus();
  const watch = watchDeviceSource(bus, { interval: 60_000 });
  const pending = watch.next();
  await settle();
  const t0 = performance.now();
  bus.close();
  assert.deepEqual(await pending, { done: true, value: undefined });
  assert.ok(performance.now() - t0 < 100);

  // Closed without a `closed` promise: the next listing says so (undefined) and the loop ends.
  const plain = new ScriptedBus();
  const events: UsbDeviceEvent[] = [];
  const watch2 = watchDeviceSource({ list: (s) => plain.list(s) }, { interval: 5 });
  setTimeout(() => plain.close(), 20);
  for await (const event of watch2) events.push(event);
  assert.deepEqual(events, []);
});

Deno.test("watch: a failed listing rejects next() with its error, then the watch is over", async () => {
  const bus = new ScriptedBus();
  const watch = watchDeviceSource(bus, { interval: 5 });
  const failure = new UsbError(LibusbError.NO_MEM, { operation: "devices" });
  bus.failure = failure;
  await assert.rejects(watch.next(), (error) => error === failure);
  assert.deepEqual(await watch.next(), { done: true, value: undefined });

  // A failure at the first listing surfaces at the first next().
  const broken = watchDeviceSource(bus, { interval: 5 });
  await assert.rejects(broken.next(), (error) => error === failure);
});

Deno.test("watch: a bad interval is a UsbError at the call", () => {
  for (const interval of [0, -5, NaN, Infinity, "100" as unknown as number]) {
    assert.throws(
      () => watchDeviceSource(new ScriptedBus(), { interval }),
      (error) => error instanceof UsbError && error.name === "LIBUSB_ERROR_INVALID_PARAM",
      String(interval),
    );
  }
});

Deno.test("watchDevices over libusb: closing the Libusb ends the iteration", async () => {
  const usb = Libusb.open();
  const watch = watchDevices(usb, { interval: 60_000 });
  const pending = watch.next();
  await settle();
  const t0 = performance.now();
  usb.close();
  assert.deepEqual(await pending, { done: true, value: undefined });
  assert.ok(performance.now() - t0 < 200, "woken by usb.closed, not the 60 s timer");
  // Created on a closed Libusb: over at once.
  const late = watchDevices(usb);
  assert.deepEqual(await late.next(), { done: true, value: undefined });
});

Deno.test("watchDevices over libusb: no change here within a few polls; abort ends it", async () => {
  using usb = Libusb.open();
  const signal = AbortSignal.timeout(150);
  const events: UsbDeviceEvent[] = [];
  await assert.rejects(async () => {
    for await (const event of watchDevices(usb, { signal, interval: 20 })) events.push(event);
  }, { name: "TimeoutError" });
  assert.deepEqual(events, [], "no device came or went on this machine meanwhile");
});
