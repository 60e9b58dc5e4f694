/** Policy `names` (wildcards, URI schemes) and identity.refreshAttestSample: a policy extending the baseline may only tighten them. */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { loadPolicy } from "../../policies/layering";
import { tmpdir } from "../helpers/openssl";

const BASELINE = fs.readFileSync(path.join(__dirname, "../../policies/baseline.yaml"), "utf8");

function child(spec: string): ReturnType<typeof loadPolicy> {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, "baseline.yaml"), BASELINE);
  fs.mkdirSync(path.join(dir, "lines"));
  const file = path.join(dir, "lines", "line.yaml");
  fs.writeFileSync(
    file,
    `apiVersion: fleetguard.io/v1\nkind: FleetPolicy\nmetadata:\n  name: line\n  extends: ../baseline.yaml\nspec:\n${spec}`,
  );
  const prev = process.env.FLEETGUARD_POLICY_ROOT;
  process.env.FLEETGUARD_POLICY_ROOT = dir;
  try {
    return loadPolicy(file);
  } finally {
    if (prev === undefined) delete process.env.FLEETGUARD_POLICY_ROOT;
    else process.env.FLEETGUARD_POLICY_ROOT = prev;
  }
}

describe("policy names and refresh sampling", () => {
  it("the baseline refuses wildcards and allows urn, https, spiffe", () => {
    const l = child("  names:\n    allowedUriSchemes: [urn]\n");
    expect(l.diagnostics).toEqual([]);
    expect(l.policy!.spec.names).toEqual({ allowWildcardDns: false, allowedUriSchemes: ["urn"] });
  });

  it("a product line cannot allow wildcards or add a scheme without a waiver", () => {
    const w = child("  names:\n    allowWildcardDns: true\n");
    expect(w.diagnostics.map((d) => d.path).join(" ")).toMatch(/names\.allowWildcardDns/);
    const s = child("  names:\n    allowedUriSchemes: [urn, http]\n");
    expect(s.diagnostics.map((d) => d.path).join(" ")).toMatch(/names\.allowedUriSchemes/);
  });

  it("refreshAttestSample is a whole number >= 1", () => {
    expect(
      child("  identity:\n    refreshAttestSample: 500\n").policy!.spec.identity!.refreshAttestSample,
    ).toBe(500);
    expect(child("  identity:\n    refreshAttestSample: 0\n").diagnostics.length).toBeGreaterThan(0);
  });
});
