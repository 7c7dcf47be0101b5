/**
 * Whether this machine can run the hardware-in-the-loop rig, and `hilTest`, which registers a rig
 * test accordingly: it runs where the rig can run (root with apt, or QEMU and the prepared cache
 * present); under CI=true a machine that cannot run it FAILS with the reason; elsewhere the test
 * is ignored with a loud warning saying why. Never a silent skip.
 */
import { loadManifest, prepare } from "./rig.ts";

let readiness: Promise<string | undefined> | undefined;

/** Why the rig cannot run here, or undefined when it can (then it is prepared). */
export function rigUnavailable(): Promise<string | undefined> {
  return readiness ??= (async () => {
    const forced = Deno.env.get("TBQ_HIL_UNAVAILABLE");
    if (forced) return `TBQ_HIL_UNAVAILABLE says: ${forced}`;
    if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
      return `the rig needs x86-64 Linux, not ${Deno.build.os}/${Deno.build.arch}`;
    }
    try {
      await prepare();
      await loadManifest();
      return undefined;
    } catch (error) {
      return `the rig could not be prepared: ${(error as Error).message}`;
    }
  })();
}

/**
 * The reason, decided once before the tests are registered. Inside the guest (where a rig test
 * file runs as the guest-side program) nothing is prepared.
 */
export const unavailable: string | undefined = Deno.env.get("TBQ_HIL_GUEST") === "1"
  ? undefined
  : await rigUnavailable();

/** Registers a test that needs the rig (see the module doc for what happens where it cannot run). */
export function hilTest(name: string, fn: () => Promise<void>): void {
  if (!unavailable) {
    Deno.test({ name: `[hil] ${name}`, fn });
  } else if (Deno.env.get("CI") === "true") {
    Deno.test(`[hil] ${name}`, () => {
      throw new Error(`CI=true and this machine cannot run the USB rig: ${unavailable}`);
    });
  } else {
    console.warn(`\n!!! [hil] NOT RUN: ${name}\n!!! ${unavailable}\n`);
    Deno.test({ name: `[hil] ${name} (NOT RUN: ${unavailable})`, ignore: true, fn });
  }
}
