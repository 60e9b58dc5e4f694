// worker_threads entry for bench/lib/enroll-bound.ts: a worker does not inherit the parent's tsx
// hooks, so it registers tsx itself before loading the TypeScript worker body.
"use strict";
require("tsx/cjs/api").register();
require("./enroll-bound-worker.ts");
