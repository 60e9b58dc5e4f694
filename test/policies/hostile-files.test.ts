// What a component (enforceAtConstruction) and `fleet policy review` (files read from git) do with
// hostile policy files (issue 9, finding 9): INVALID_INPUT with file:line:column, never the content of a
// file that is not a policy, and no `extends` outside the policy root.
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FleetError } from "../../core/errors";
import { enforceAtConstruction, loadPolicyFile } from "../../policies/engine";
import { loadPolicy, rootFor } from "../../policies/layering";
import { MAX_SOURCE_BYTES, SourceFile, validateAgainstSchema } from "../../policies/source";

const work = realpathSync(mkdtempSync(join(tmpdir(), "fleet-policy-hostile-")));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const SECRET = "s3cret-passphrase-do-not-print";

const policy = (name: string, extra = "", spec = "{}") =>
  `apiVersion: fleetguard.io/v1\nkind: FleetPolicy\nmetadata:\n  name: ${name}\n${extra}spec: ${spec}\n`;

function thrown(f: () => unknown): FleetError {
  try {
    f();
  } catch (e) {
    if (e instanceof FleetError) return e;
    throw e;
  }
  throw new Error("did not throw");
}

describe("policy files that are not policies, or are hostile", () => {
  it("enforceAtConstruction: a .env as the parent is INVALID_INPUT naming it, without its content", () => {
    const dir = join(work, "dotenv");
    mkdirSync(dir);
    writeFileSync(join(dir, ".env"), `PULUMI_CONFIG_PASSPHRASE=${SECRET}\n`);
    writeFileSync(join(dir, "line.yaml"), policy("line", "  extends: .env\n"));
    const e = thrown(() => enforceAtConstruction(join(dir, "line.yaml"), { cas: [] }, { checks: [] }));
    expect(e.message).not.toContain(SECRET);
    expect(e.code).toBe("INVALID_INPUT");
    expect(e.message).toContain(`${join(dir, ".env")}:1:1: (document): got a file that is not a FleetPolicy`);
  });

  it("enforceAtConstruction: a typo is INVALID_INPUT with file:line:column and the field", () => {
    const file = join(work, "typo.yaml");
    writeFileSync(file, policy("typo", "", "\n  rotation:\n    maxWaveFracton: 0.1"));
    const e = thrown(() => enforceAtConstruction(file, { cas: [] }, { checks: [] }));
    expect(e.code).toBe("INVALID_INPUT");
    expect(e.message).toContain(
      `\n  ${file}:7:5: spec.rotation.maxWaveFracton: unknown key "maxWaveFracton" (did you mean "maxWaveFraction"?), want one of maxWaveFraction`,
    );
    // the loader components can call themselves says the same
    expect(thrown(() => loadPolicyFile(file)).message).toBe(
      `policy ${file}: got 1 error, want none:\n  ${file}:7:5: spec.rotation.maxWaveFracton: unknown key "maxWaveFracton" (did you mean "maxWaveFraction"?), want one of maxWaveFraction`,
    );
  });

  it("enforceAtConstruction: an alias bomb is INVALID_INPUT naming the file, not a crash", () => {
    const file = join(work, "bomb.yaml");
    const rows = ["  a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (const [i, l] of ["b", "c", "d", "e", "f", "g"].entries())
      rows.push(`  ${l}: &${l} [${Array(10).fill(`*${"abcdefg"[i]}`).join(", ")}]`);
    writeFileSync(file, policy("bomb", "", `\n${rows.join("\n")}`));
    const e = thrown(() => enforceAtConstruction(file, { cas: [] }, { checks: [] }));
    expect(e.code).toBe("INVALID_INPUT");
    expect(e.message).toContain(`${file}:7:10: (yaml): got aliases that expand more than 100 times`);
  });

  it("a file read from git (fleet policy review) may not extend outside the root either", () => {
    const files: Record<string, string> = {
      "repo/policies/line.yaml": policy("line", "  extends: ../../outside.yaml\n"),
      "outside.yaml": `password: ${SECRET}\n`,
    };
    const read = (p: string) => {
      const text = files[p];
      if (text === undefined) throw Object.assign(new Error("ENOENT"), { code: "ENOENT" });
      return text;
    };
    const r = loadPolicy("repo/policies/line.yaml", { readFile: read, root: "repo" });
    expect(r.policy).toBeUndefined();
    expect(JSON.stringify(r.diagnostics)).not.toContain(SECRET);
    expect(r.diagnostics).toHaveLength(1);
    expect(r.diagnostics[0]).toMatchObject({
      kind: "input",
      file: "repo/policies/line.yaml",
      line: 5,
      column: 12,
      path: "metadata.extends",
    });
    expect(r.diagnostics[0]!.message).toContain("which is outside the policy root");
    // inside the root, the same chain loads
    files["repo/base.yaml"] = policy("base");
    files["repo/policies/line.yaml"] = policy("line", "  extends: ../base.yaml\n");
    const ok = loadPolicy("repo/policies/line.yaml", { readFile: read, root: "repo" });
    expect(ok.diagnostics).toEqual([]);
    expect(ok.policy!.chain.map((c) => c.name)).toEqual(["base", "line"]);
  });

  it("the policy root defaults to the git work tree above the file, else the file's folder", () => {
    const repo = join(work, "repo-root");
    mkdirSync(join(repo, ".git"), { recursive: true });
    mkdirSync(join(repo, "policies", "examples"), { recursive: true });
    expect(rootFor(join(repo, "policies", "examples", "x.yaml"), "")).toBe(repo);
    const loose = join(work, "no-repo", "sub");
    mkdirSync(loose, { recursive: true });
    expect(rootFor(join(loose, "x.yaml"), "")).toBe(loose);
    expect(rootFor(join(loose, "x.yaml"), repo)).toBe(repo);
  });

  it("an oversized text is refused before it is parsed, and a non-map document is never quoted", () => {
    const big = new SourceFile("big.yaml", `${policy("big")}#${"x".repeat(MAX_SOURCE_BYTES)}\n`);
    expect(big.data).toBeUndefined();
    expect(big.parseDiagnostics[0]!.message).toMatch(/^got \d+ bytes, want at most 1048576 \(1 MiB\)$/);
    for (const text of [`${SECRET}\n`, `- ${SECRET}\n`, `token: ${SECRET}\n`, `kind: ${SECRET}\n`]) {
      const ds = validateAgainstSchema(new SourceFile("f.yaml", text), "fleet-policy");
      expect(ds).toHaveLength(1);
      expect(ds[0]!.message).not.toContain(SECRET);
      expect(ds[0]!.message).toContain("got a file that is not a FleetPolicy (content not shown)");
    }
  });
});
