/** The handler module of `quick_start.ts`: it runs in the queue's Worker and upper-cases each item. */

import { BufferDisposition, defineWorkHandlers } from "../mod.ts";

export default defineWorkHandlers({
  work(item) {
    // item.data is the first item.size bytes of the buffer, shared with the producer.
    for (let i = 0; i < item.size; i++) {
      if (item.data[i] >= 0x61 && item.data[i] <= 0x7a) item.data[i] -= 0x20; // a-z → A-Z
    }
    return BufferDisposition.WorkComplete;
  },
});
