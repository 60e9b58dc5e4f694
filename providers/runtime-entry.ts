/**
 * Where a dynamic provider finds its runtime (providers/runtime/index.js) inside the provider
 * process. The providers' serialized closures capture only this function and a path: the env
 * override, the path at deploy time, then the package by name under the program directory.
 */
export interface RuntimeEntry {
  ca(): typeof import("./runtime/ca");
  batch(): typeof import("./runtime/batch");
}

export function loadRuntime(atDeploy: string): RuntimeEntry {
  const fs = require("node:fs");
  const p = require("node:path");
  const candidates = [
    process.env.FLEETGUARD_RUNTIME,
    atDeploy,
    p.join(process.cwd(), "node_modules", "fleetguard", "providers", "runtime", "index.js"),
    p.join(process.cwd(), "providers", "runtime", "index.js"),
  ];
  for (const c of candidates) if (c && fs.existsSync(c)) return require(c);
  throw new Error(
    `fleetguard runtime not found; set FLEETGUARD_RUNTIME (tried ${candidates.filter(Boolean).join(", ")})`,
  );
}
