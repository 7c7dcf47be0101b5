// The core benchmark's handler module: work that does nothing and completes at once.
import { BufferDisposition, defineWorkHandlers } from "../mod.ts";

export default defineWorkHandlers({ work: () => BufferDisposition.WorkComplete });
