/**
 * Where a dynamic provider finds its runtime (providers/runtime/index.js) inside the provider
 * process. The providers' serialized closures capture only this function and the path the
 * runtime had at deploy time, and a resource's outputs keep the closure of the run that last
 * created or updated it; so the path recorded in the state may be a checkout that has moved or
 * been deleted since, or another version of fleetguard. The runtime is therefore looked up from
 * the program the engine runs now (the provider process runs in the program's directory):
 *  1. FLEETGUARD_RUNTIME, an explicit override;
 *  2. the fleetguard package the program's directory resolves (node_modules/fleetguard there or
 *     in a parent folder, as Node resolves it);
 *  3. the checkout the program sits in: the nearest folder above it, the program's own included,
 *     whose package.json is named fleetguard;
 *  4. the path recorded at deploy time.
 * Everything is inside the one function: Pulumi serializes it by its source text.
 */
export interface RuntimeEntry {
  ca(): typeof import("./runtime/ca");
  batch(): typeof import("./runtime/batch");
}

export function loadRuntime(atDeploy: string, cwd: string = process.cwd()): RuntimeEntry {
  const fs = require("node:fs");
  const p = require("node:path");
  const entryIn = (root: string) => p.join(root, "providers", "runtime", "index.js");
  const candidates: string[] = [];
  if (process.env.FLEETGUARD_RUNTIME) candidates.push(process.env.FLEETGUARD_RUNTIME);
  try {
    candidates.push(entryIn(p.dirname(require.resolve("fleetguard/package.json", { paths: [cwd] }))));
  } catch {
    // the program does not depend on the package: it may sit in a checkout
  }
  for (let dir = cwd; ; dir = p.dirname(dir)) {
    let name: unknown;
    try {
      name = JSON.parse(fs.readFileSync(p.join(dir, "package.json"), "utf8")).name;
    } catch {
      // no (readable) package.json here
    }
    if (name === "fleetguard") {
      candidates.push(entryIn(dir));
      break;
    }
    if (p.dirname(dir) === dir) break;
  }
  candidates.push(atDeploy);
  for (const c of candidates) if (fs.existsSync(c)) return require(c);
  throw new Error(
    `fleetguard runtime: got none at ${candidates.join(", ")}, want the program's directory to ` +
      "depend on fleetguard or sit in a fleetguard checkout, or FLEETGUARD_RUNTIME set to providers/runtime/index.js",
  );
}
