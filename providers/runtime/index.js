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
// Pulumi's dynamic-provider host prints `${error}: ${error.stack}` for every error a method
// throws. A FleetError is an input, registry or station problem its message explains (field,
// got, want): it goes out without a stack trace. Anything else is a defect and keeps its stack.
// FLEETGUARD_DEBUG=1 keeps every stack.
function clean(mod) {
  const out = {};
  for (const [name, fn] of Object.entries(mod)) {
    if (typeof fn !== "function" || !["check", "diff", "create", "update", "read", "del"].includes(name)) {
      out[name] = fn;
      continue;
    }
    out[name] = async (...args) => {
      try {
        return await fn(...args);
      } catch (e) {
        if (e && e.name === "FleetError" && !process.env.FLEETGUARD_DEBUG) e.stack = `code ${e.code}`;
        throw e;
      }
    };
  }
  return out;
}
let ca;
let batch;
let hub;
let rotation;
module.exports = {
  ca: () => {
    ca ??= clean(require("./ca"));
    return ca;
  },
  batch: () => {
    batch ??= clean(require("./batch"));
    return batch;
  },
  hub: () => {
    hub ??= clean(require("./hub"));
    return hub;
  },
  rotation: () => {
    rotation ??= clean(require("./rotation"));
    return rotation;
  },
};
