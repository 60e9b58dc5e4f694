// worker_threads entry for devices/farm/pool.ts. A worker does not inherit the parent's tsx
// hooks (nor vitest's), so it registers tsx itself before loading the TypeScript worker body.
"use strict";
require("tsx/cjs/api").register();
require("./worker.ts");
