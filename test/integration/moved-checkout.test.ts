/**
 * A stack keeps working after the checkout moves (issue 9, finding 10), with the real engine.
 * The dynamic providers' closures record the runtime's absolute path, and a resource's outputs
 * keep the closure of the run that created it, so refresh, read and delete used to look for the
 * runtime in the old place. Here a program using CaHierarchy sits in a copy of the checkout; it
 * is deployed, the whole folder is moved, and a stand-in that throws is left at the old path
 * (another version of fleetguard there must not be loaded either). Then up, preview and refresh
 * from the new place change nothing and fail nowhere.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCommand } from "../helpers/proc";
import { PulumiStack, REPO } from "../helpers/pulumi";

// what the program needs of the checkout: everything but dependencies, caches, state and tests
const SKIP = new Set(["node_modules", ".git", ".cache", ".state", "dist", "test", "bench"]);

const PROGRAM = `import { CaHierarchy } from "../components/CaHierarchy";

const pki = new CaHierarchy("pki", {
  root: { name: "root", algorithm: "ecdsa-p256", subject: { commonName: "Moved Root" }, validityDays: 3650, pathLen: 1 },
  issuing: [{ name: "line", subject: { commonName: "Moved Line" }, validityDays: 730 }],
});
export const cas = pki.summary;
`;

const cleanups: Array<() => void> = [];
afterAll(() => {
  for (const c of cleanups.reverse()) c();
});

type Summary = Record<string, { fingerprintSha256: string; certificatePem: string }>;

describe("a stack whose checkout moved", () => {
  it("up, preview and refresh from the new place: no changes, no error", async () => {
    const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "fg-moved-")));
    cleanups.push(() => fs.rmSync(base, { recursive: true, force: true }));
    const before = path.join(base, "before", "fleetguard");
    fs.mkdirSync(before, { recursive: true });
    for (const e of fs.readdirSync(REPO)) {
      if (!SKIP.has(e)) fs.cpSync(path.join(REPO, e), path.join(before, e), { recursive: true });
    }
    fs.symlinkSync(path.join(REPO, "node_modules"), path.join(before, "node_modules"));
    const prog = path.join(before, "prog");
    fs.mkdirSync(prog);
    fs.writeFileSync(
      path.join(prog, "Pulumi.yaml"),
      "name: fleetguard-moved-fixture\nruntime:\n  name: nodejs\n  options:\n    typescript: true\nmain: index.ts\n",
    );
    fs.writeFileSync(path.join(prog, "index.ts"), PROGRAM);

    const stack = new PulumiStack(prog, "it-moved");
    cleanups.push(() => stack.cleanup());
    await stack.init();
    await stack.run(["up", "--yes", "--skip-preview"]);
    const first = (await stack.outputs()).cas as Summary;
    expect(Object.keys(first).sort()).toEqual(["line", "root"]);
    const recorded = path.join(before, "providers", "runtime", "index.js");
    expect(fs.readFileSync(stack.checkpointFile(), "utf8")).toContain(JSON.stringify(recorded).slice(1, -1));

    // move the whole folder; something else now sits at the old runtime path
    const after = path.join(base, "after");
    fs.renameSync(path.join(base, "before"), after);
    fs.mkdirSync(path.dirname(recorded), { recursive: true });
    fs.writeFileSync(recorded, 'throw new Error("the runtime at the recorded path was loaded");\n');
    const moved = path.join(after, "fleetguard", "prog");
    const pulumi = (args: string[]) =>
      runCommand("pulumi", [...args, "--non-interactive", "--stack", stack.stack, "--cwd", moved], {
        env: stack.env,
      });
    for (const args of [
      ["up", "--yes", "--skip-preview", "--expect-no-changes"],
      ["preview", "--expect-no-changes"],
      ["preview", "--refresh", "--expect-no-changes"],
      ["refresh", "--yes", "--skip-preview", "--expect-no-changes"],
    ]) {
      const r = await pulumi(args);
      expect(r.status, `pulumi ${args.join(" ")}\n${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout + r.stderr).not.toMatch(/error|recorded path was loaded/i);
    }
    const out = JSON.parse((await pulumi(["stack", "output", "--json"])).stdout) as { cas: Summary };
    for (const name of ["root", "line"])
      expect(out.cas[name]!.fingerprintSha256).toBe(first[name]!.fingerprintSha256);
  }, 900_000);
});
