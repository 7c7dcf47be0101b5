/// <reference lib="deno.worker" />
// The baseline: a plain Worker that takes each record by postMessage, does the same (no) work,
// and answers with a status by postMessage: what a queue without shared memory costs.
self.onmessage = (event: MessageEvent<Uint8Array>) => {
  self.postMessage(event.data[0]);
};
