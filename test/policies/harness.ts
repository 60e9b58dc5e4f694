/**
 * The shared check harness: loads a fixture fleet file (test/policies/fixtures/<ID>/{pass,fail}.yaml)
 * with the real loaders, under the policy it names, and runs one check of the catalog through the real
 * engine at a fixed clock (the fixtures' certificates and CRLs have fixed dates; see generate.sh).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Check } from "../../policies/check";
import { type CheckRun, evaluate } from "../../policies/engine";
import { loadFleet } from "../../policies/fleet";
import { loadPolicy } from "../../policies/layering";
import { formatDiagnostic } from "../../policies/source";

export const FIXTURES = join(__dirname, "fixtures");
export const FIXTURE_NOW = new Date("2026-12-01T00:00:00Z");

export function fixturePath(id: string, kind: "pass" | "fail"): string {
  return join(FIXTURES, id, `${kind}.yaml`);
}

export function hasFixture(id: string, kind: "pass" | "fail"): boolean {
  return existsSync(fixturePath(id, kind));
}

/** Subjects a fail fixture declares it expects, from its "# expect: a, b" line. */
export function expectedSubjects(id: string): string[] | undefined {
  const m = /^# expect: (.+)$/m.exec(readFileSync(fixturePath(id, "fail"), "utf8"));
  return m ? m[1]!.split(",").map((s) => s.trim()) : undefined;
}

export function runFixture(check: Check, kind: "pass" | "fail"): CheckRun {
  const file = fixturePath(check.id, kind);
  const fleet = loadFleet(file);
  if (!fleet.fleet)
    throw new Error(`fixture ${file} is invalid:\n${fleet.diagnostics.map(formatDiagnostic).join("\n")}`);
  const policy = loadPolicy(fleet.policyPath!, { now: FIXTURE_NOW });
  if (!policy.policy || policy.diagnostics.length)
    throw new Error(`fixture policy is invalid:\n${policy.diagnostics.map(formatDiagnostic).join("\n")}`);
  const ev = evaluate(policy.policy, fleet.fleet, { now: FIXTURE_NOW, checks: [check] });
  return ev.runs[0]!;
}
