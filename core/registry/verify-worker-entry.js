// worker_threads entry for core/registry/verify-thread.ts. In an installed package the compiled
// verify-worker.js sits beside this file; in a checkout a worker does not inherit the parent's tsx
// hooks (nor vitest's), so it registers tsx itself before loading the TypeScript body.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

if (fs.existsSync(path.join(__dirname, "verify-worker.js"))) {
  require("./verify-worker.js");
} else {
  require("tsx/cjs/api").register();
  require("./verify-worker.ts");
}
