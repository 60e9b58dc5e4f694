#!/usr/bin/env node
// The `fleet` command of the package (package.json "bin"). Installed, it runs the compiled CLI
// in dist/. In a checkout the TypeScript sources are run through tsx instead, even when a dist/
// exists, because a dist/ left from an earlier build may be older than the sources.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const sources = path.join(__dirname, "..", "cli", "fleet.ts");
let entry = path.join(__dirname, "..", "dist", "cli", "fleet.js");
if (fs.existsSync(sources)) {
  require("tsx/cjs/api").register();
  entry = sources;
}
// cli/fleet runs itself only as the main module; here this file is, so the same ending is repeated
require(entry)
  .main(process.argv.slice(2))
  .then(
    (code) => process.exit(code),
    (err) => {
      console.error(`fleet: internal error: ${err instanceof Error ? err.message : String(err)}`);
      if (process.env.FLEETGUARD_DEBUG && err instanceof Error && err.stack) console.error(err.stack);
      process.exit(70);
    },
  );
