/**
 * "fleetguard/policies": the policy engine without the components: load a FleetPolicy file
 * (with its `extends` chain and waivers), evaluate the check catalog against a fleet, format
 * the findings. The file format and the checks: docs/policy.md.
 */
export type { Check, CheckResult as CheckOutcome, Enforcement, Severity, Standards } from "../policies/check";
export { catalog, checkIds, getCheck } from "../policies/checks/index";
export type { DeclaredFleet, DeployedFleet, FleetContext } from "../policies/context";
export {
  type CheckRun,
  type EvaluateOptions,
  type Evaluation,
  evaluate,
  type Finding,
  formatFinding,
  loadPolicyFile,
  type RunStatus,
} from "../policies/engine";
export { type FleetLoad, loadFleet } from "../policies/fleet";
export { diffPolicies, type EffectivePolicy, loadPolicy, type PolicyLoad } from "../policies/layering";
export { type Diagnostic, formatDiagnostic } from "../policies/source";
