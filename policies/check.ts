/**
 * The shape of a policy check (after cdk-nag, minus its repetition): one check per file under
 * policies/checks/<area>/<ID>.ts, carrying its own id, severity, rationale and the standards it serves,
 * so a pack or a report is just a list of ids. A check is a pure function of a CheckContext and returns
 * pass, fail (with one violation per subject) or not-applicable (with the reason).
 */
import type { ContextPart, FleetContext } from "./context";
import type { PolicySpec } from "./schema/fleet-policy.gen";
import type { CertInfo, CrlInfo } from "./x509";

export type Severity = "critical" | "high" | "medium" | "low";
export type Enforcement = "disabled" | "advisory" | "mandatory";

export interface Standards {
  /** ETSI EN 303 645 provisions, e.g. "5.1-1". */
  etsiEn303645?: string[];
  /** NIST IR 8259A device cybersecurity capabilities. */
  nistIr8259a?: string[];
  /** IEC 62443-4-2 component requirements, e.g. "CR 1.2". */
  iec62443_4_2?: string[];
  /** AWS IoT Device Defender audit check names this check matches. */
  awsDeviceDefender?: string[];
}

export interface Violation {
  /** What the violation is about: ca:<name>, batch:<id>, cert:<id>, crl:<issuer>, aws-policy:<name>, ... */
  subject: string;
  message: string;
}

export type CheckResult =
  | { status: "pass"; details?: string }
  | { status: "not-applicable"; details: string }
  | { status: "fail"; violations: Violation[] };

/** What a check sees: the effective policy, the fleet, the clock, and parsed deployed material. */
export interface CheckContext {
  policy: { name: string; spec: PolicySpec };
  fleet: FleetContext;
  now: Date;
  /** Deployed certificates, parsed once per evaluation (throws if one is malformed). */
  certificates(): CertInfo[];
  /** Deployed CRLs, parsed and signature-checked against their issuer certificate when it is known. */
  crls(): CrlInfo[];
}

export interface Check {
  id: string;
  title: string;
  severity: Severity;
  standards: Standards;
  rationale: string;
  /** The context parts it reads; none present means not-applicable without running it. */
  appliesTo: ContextPart[];
  check(ctx: CheckContext): CheckResult;
}

/** Build a result from a list of violations, so checks read as "collect what is wrong". */
export function result(violations: Violation[], passDetails?: string): CheckResult {
  return violations.length ? { status: "fail", violations } : { status: "pass", details: passDetails };
}

export function notApplicable(details: string): CheckResult {
  return { status: "not-applicable", details };
}

export const DAY_MS = 86_400_000;

export function days(ms: number): number {
  return Math.floor(ms / DAY_MS);
}

/** Default enforcement from severity, before the policy's overrides. */
export function defaultEnforcement(severity: Severity): Enforcement {
  return severity === "critical" || severity === "high" ? "mandatory" : "advisory";
}
