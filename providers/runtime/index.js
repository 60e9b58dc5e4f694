// Entry point that fleetguard's dynamic providers load at run time. Pulumi serializes a
// dynamic provider's closure into the state; ours captures only the lookup of this file
// (providers/runtime-entry.ts: from the program's directory first, so a moved checkout keeps
// working), and everything heavy (core crypto, registry, clients) is loaded here, inside the
// provider process. Compiled JavaScript is used when present, else the TypeScript sources
// through tsx, resolved from this file's own checkout or package.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

if (!fs.existsSync(path.join(__dirname, "ca.js"))) {
  require("tsx/cjs/api").register();
}
module.exports = {
  ca: () => require("./ca"),
  batch: () => require("./batch"),
};
