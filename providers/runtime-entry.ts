/**
 * Where a dynamic provider finds its runtime (providers/runtime/index.js) inside the provider
 * process. The providers' serialized closures capture only this function and the path the
 * runtime had at deploy time, and a resource's outputs keep the closure of the run that last
 * created or updated it; so the path recorded in the state may be a checkout that has moved or
 * been deleted since, or another version of fleetguard. The runtime is therefore looked up from
 * the program the engine runs now (the provider process runs in the program's directory):
 *  1. FLEETGUARD_RUNTIME, an explicit override;
 *  2. the fleetguard package the program's directory resolves (node_modules/fleetguard there or
 *     in a parent folder, as Node resolves it): an installed package has only the compiled runtime,
 *     dist/providers/runtime/index.js;
 *  3. the checkout the program sits in: the nearest folder above it, the program's own included,
 *     whose package.json is named fleetguard;
 *  4. the path recorded at deploy time.
 * In a folder that has both (a checkout that was built), the sources' entry comes first: a dist/
 * may be older than the sources, and the sources' entry uses the compiled files only when they sit
 * next to it. Everything is inside the one function: Pulumi serializes it by its source text when
 * the program imports fleetguard from a checkout; from node_modules, the serialized provider
 * requires "fleetguard/providers/runtime-entry" of the package the provider process resolves.
 */
export interface RuntimeEntry {
  ca(): typeof import("./runtime/ca");
  batch(): typeof import("./runtime/batch");
  hub(): typeof import("./runtime/hub");
  rotation(): typeof import("./runtime/rotation");
}

export function loadRuntime(atDeploy: string, cwd: string = process.cwd()): RuntimeEntry {
  const fs = require("node:fs");
  const p = require("node:path");
  const entriesIn = (root: string) => [
    p.join(root, "providers", "runtime", "index.js"),
    p.join(root, "dist", "providers", "runtime", "index.js"),
  ];
  const candidates: string[] = [];
  if (process.env.FLEETGUARD_RUNTIME) candidates.push(process.env.FLEETGUARD_RUNTIME);
  // Node's node_modules lookup, by hand: require.resolve would resolve "fleetguard" to the package
  // this function runs in when that has "exports" (self-reference), not to the program's
  for (let dir = cwd; ; dir = p.dirname(dir)) {
    const pkg = p.join(dir, "node_modules", "fleetguard");
    if (p.basename(dir) !== "node_modules" && fs.existsSync(p.join(pkg, "package.json"))) {
      candidates.push(...entriesIn(fs.realpathSync(pkg)));
      break;
    }
    if (p.dirname(dir) === dir) break;
  }
  for (let dir = cwd; ; dir = p.dirname(dir)) {
    let name: unknown;
    try {
      name = JSON.parse(fs.readFileSync(p.join(dir, "package.json"), "utf8")).name;
    } catch {
      // no (readable) package.json here
    }
    if (name === "fleetguard") {
      candidates.push(...entriesIn(dir));
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
