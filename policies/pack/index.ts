/**
 * fleetguard's CrossGuard policy pack: `pulumi preview --policy-pack policies/pack`. It is a list of
 * check ids, nothing more: each check of the catalog becomes one stack validation policy named after
 * its id, with the enforcement level the fleet policy gives it, and runs through the same engine as
 * the components and the CLI. The fleet policy file is FLEETGUARD_POLICY (absolute, or relative to the
 * repository root), default policies/baseline.yaml; an invalid policy file stops the pack (fail closed).
 */
import { join, resolve } from "node:path";
import { PolicyPack, type StackValidationPolicy } from "@pulumi/policy";
import { defaultEnforcement } from "../check";
import { catalog } from "../checks/index";
import { evaluate } from "../engine";
import { loadPolicy } from "../layering";
import { formatDiagnostic } from "../source";
import { contextFromResources, type PackContext, type ResourceLike } from "./resources";

const repoRoot = join(__dirname, "..", "..");
const policyFile = resolve(repoRoot, process.env.FLEETGUARD_POLICY ?? "policies/baseline.yaml");
const now = process.env.FLEETGUARD_NOW ? new Date(process.env.FLEETGUARD_NOW) : new Date();

const load = loadPolicy(policyFile, { now });
if (!load.policy || load.diagnostics.length) {
  throw new Error(
    `fleetguard policy pack: ${policyFile} is not a valid policy:\n${load.diagnostics.map(formatDiagnostic).join("\n")}`,
  );
}
const policy = load.policy;

// One context per stack analysis, shared by the checks (the engine hands every policy the same array).
const contexts = new WeakMap<readonly unknown[], PackContext>();
function contextFor(resources: readonly ResourceLike[]): PackContext {
  let c = contexts.get(resources);
  if (!c) {
    c = contextFromResources(resources);
    contexts.set(resources, c);
  }
  return c;
}

const policies: StackValidationPolicy[] = catalog.map((check) => ({
  name: check.id,
  description: `${check.title}. ${check.rationale}`,
  enforcementLevel: policy.spec.enforcement?.[check.id] ?? defaultEnforcement(check.severity),
  validateStack: (args, reportViolation) => {
    const { fleet, urns } = contextFor(args.resources as unknown as ResourceLike[]);
    const ev = evaluate(policy, fleet, { now, checks: [check] });
    const run = ev.runs[0]!;
    if (run.status === "not-applicable" || run.status === "disabled") args.notApplicable(run.details);
    for (const f of run.findings) {
      if (f.waived) continue;
      reportViolation(`${check.id} ${f.subject}: ${f.message}`, urns.get(f.subject));
    }
  },
}));

new PolicyPack("fleetguard", { policies });
