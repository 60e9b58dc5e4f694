/**
 * Where the dynamic providers find their runtime (issue 9, finding 10): from the program the
 * engine runs now, before the path recorded in the state at deploy time, which may be a checkout
 * that moved or another version of fleetguard. Each case is a tree of folders with stand-in
 * runtimes that say which one was loaded.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadRuntime } from "../../providers/runtime-entry";

let root: string;
let envBefore: string | undefined;
beforeEach(() => {
  root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "fg-runtime-entry-")));
  envBefore = process.env.FLEETGUARD_RUNTIME;
  delete process.env.FLEETGUARD_RUNTIME;
});
afterEach(() => {
  if (envBefore === undefined) delete process.env.FLEETGUARD_RUNTIME;
  else process.env.FLEETGUARD_RUNTIME = envBefore;
  fs.rmSync(root, { recursive: true, force: true });
});

/** A stand-in fleetguard at `dir` (package.json named `name`) whose runtime reports `label`. */
function fakeFleetguard(dir: string, label: string, name = "fleetguard"): string {
  const entry = path.join(dir, "providers", "runtime", "index.js");
  fs.mkdirSync(path.dirname(entry), { recursive: true });
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name }));
  fs.writeFileSync(entry, `module.exports = { ca: () => ${JSON.stringify(label)}, batch: () => "batch" };`);
  return entry;
}
const which = (r: ReturnType<typeof loadRuntime>) => r.ca() as unknown as string;
const mkdir = (...p: string[]) => {
  const d = path.join(root, ...p);
  fs.mkdirSync(d, { recursive: true });
  return d;
};

describe("loadRuntime", () => {
  it("an installed package that ships only compiled code: its dist/providers/runtime/index.js", () => {
    const stale = fakeFleetguard(mkdir("old", "fleetguard"), "stale copy at the recorded path");
    const pkg = mkdir("platform", "node_modules", "fleetguard");
    fs.writeFileSync(path.join(pkg, "package.json"), JSON.stringify({ name: "fleetguard" }));
    const entry = path.join(pkg, "dist", "providers", "runtime", "index.js");
    fs.mkdirSync(path.dirname(entry), { recursive: true });
    fs.writeFileSync(entry, 'module.exports = { ca: () => "compiled package", batch: () => "batch" };');
    expect(which(loadRuntime(stale, mkdir("platform", "stacks", "prod")))).toBe("compiled package");
  });

  it("a program inside a checkout that moved: the checkout around it, not the recorded path", () => {
    const stale = fakeFleetguard(mkdir("old", "fleetguard"), "stale copy at the recorded path");
    fakeFleetguard(mkdir("new", "fleetguard"), "moved checkout");
    // a package.json of another name on the way up does not stop the walk
    fs.writeFileSync(
      path.join(mkdir("new", "fleetguard", "examples"), "package.json"),
      '{"name":"examples"}',
    );
    const prog = mkdir("new", "fleetguard", "examples", "prog");
    expect(which(loadRuntime(stale, prog))).toBe("moved checkout");
    // the program's own folder is the checkout
    expect(which(loadRuntime(stale, path.join(root, "new", "fleetguard")))).toBe("moved checkout");
  });

  it("a program that depends on fleetguard: its package, wherever the program or the package was", () => {
    const stale = fakeFleetguard(mkdir("old", "fleetguard"), "stale");
    fakeFleetguard(mkdir("platform", "node_modules", "fleetguard"), "installed package");
    // Node's resolution: node_modules of the program's folder or of a folder above it
    expect(which(loadRuntime(stale, mkdir("platform")))).toBe("installed package");
    expect(which(loadRuntime(stale, mkdir("platform", "stacks", "prod")))).toBe("installed package");
  });

  it("the installed package comes before a checkout the program happens to sit in", () => {
    fakeFleetguard(mkdir("ck"), "checkout");
    fakeFleetguard(mkdir("ck", "prog", "node_modules", "fleetguard"), "installed package");
    expect(which(loadRuntime("/nonexistent/index.js", path.join(root, "ck", "prog")))).toBe(
      "installed package",
    );
  });

  it("FLEETGUARD_RUNTIME overrides everything", () => {
    fakeFleetguard(mkdir("ck"), "checkout");
    process.env.FLEETGUARD_RUNTIME = fakeFleetguard(mkdir("pinned"), "override", "anything");
    expect(which(loadRuntime("/nonexistent/index.js", mkdir("ck", "prog")))).toBe("override");
  });

  it("the recorded path when the program is neither in a checkout nor depends on the package", () => {
    const recorded = fakeFleetguard(mkdir("elsewhere", "fg"), "recorded");
    expect(which(loadRuntime(recorded, mkdir("prog")))).toBe("recorded");
  });

  it("nothing anywhere: an error that says what was tried and what to do", () => {
    fs.writeFileSync(path.join(mkdir("prog"), "package.json"), '{"name":"not-fleetguard"}');
    expect(() => loadRuntime("/gone/providers/runtime/index.js", path.join(root, "prog"))).toThrow(
      /fleetguard runtime: got none at \/gone\/providers\/runtime\/index\.js, want .*FLEETGUARD_RUNTIME/,
    );
  });
});
