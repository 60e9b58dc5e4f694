// worker_threads entry for devices/farm/pool.ts. In an installed package the compiled worker.js
// sits beside this file; in a checkout a worker does not inherit the parent's tsx hooks (nor
// vitest's), so it registers tsx itself before loading the TypeScript worker body.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

if (fs.existsSync(path.join(__dirname, "worker.js"))) {
  require("./worker.js");
} else {
  require("tsx/cjs/api").register();
  require("./worker.ts");
}
