/**
 * The one policy engine behind all three enforcement points (component construction, the CrossGuard
 * pack, the `fleet policy` CLI): run every check of the catalog against a fleet context under an
 * effective policy. Enforcement per check comes from its severity unless the policy overrides it; a
 * waiver turns a finding into a waived one until it expires; a check that throws becomes a CHECK_ERROR
 * finding (blocking when the check is mandatory: fail closed) and the run goes on.
 */
import { FleetError } from "../core/errors";
import {
  type Check,
  type CheckContext,
  type CheckResult,
  defaultEnforcement,
  type Enforcement,
  type Severity,
} from "./check";
import { catalog } from "./checks/index";
import { type DeclaredFleet, type FleetContext, hasPart } from "./context";
import { type EffectivePolicy, loadPolicy, waiverFor } from "./layering";
import { formatDiagnostic } from "./source";
import { type CertInfo, type CrlInfo, parseCertificate, parseCrl } from "./x509";

export interface Finding {
  checkId: string;
  title: string;
  severity: Severity;
  enforcement: Enforcement;
  code: "VIOLATION" | "CHECK_ERROR";
  subject: string;
  message: string;
  waived?: { reason: string; expires: string; policy: string };
}

export type RunStatus = "pass" | "fail" | "not-applicable" | "error" | "disabled";

export interface CheckRun {
  id: string;
  title: string;
  severity: Severity;
  enforcement: Enforcement;
  status: RunStatus;
  details?: string;
  findings: Finding[];
}

export interface Evaluation {
  policy: string;
  runs: CheckRun[];
  findings: Finding[];
  /** Unwaived findings of mandatory checks: these fail a preview, a pack and the CLI. */
  blocking: Finding[];
  /** Unwaived findings of advisory checks: shown, never blocking. */
  advisory: Finding[];
}

export interface EvaluateOptions {
  /** The clock (default: now): expiry windows, key ages, waiver expiry. */
  now?: Date;
  /** Checks to run (default: the whole catalog). */
  checks?: readonly Check[];
}

export type PolicyInput = Pick<EffectivePolicy, "name" | "spec"> & Partial<Pick<EffectivePolicy, "waivers">>;

function enforcementOf(policy: PolicyInput, check: Check): Enforcement {
  return policy.spec.enforcement?.[check.id] ?? defaultEnforcement(check.severity);
}

function makeContext(policy: PolicyInput, fleet: FleetContext, now: Date): CheckContext {
  let certs: CertInfo[] | undefined;
  let crls: CrlInfo[] | undefined;
  const ctx: CheckContext = {
    policy: { name: policy.name, spec: policy.spec },
    fleet,
    now,
    certificates() {
      certs ??= (fleet.deployed?.certificates ?? []).map((c) => {
        try {
          return parseCertificate(c);
        } catch (err) {
          throw new Error(`certificate ${c.id}: ${err instanceof Error ? err.message : String(err)}`);
        }
      });
      return certs;
    },
    crls() {
      if (!crls) {
        const all = ctx.certificates();
        crls = (fleet.deployed?.crls ?? []).map((c) => {
          try {
            return parseCrl(
              c,
              all.find((x) => x.id === c.issuer),
            );
          } catch (err) {
            throw new Error(`CRL of ${c.issuer}: ${err instanceof Error ? err.message : String(err)}`);
          }
        });
      }
      return crls;
    },
  };
  return ctx;
}

/** Evaluate every check against the fleet; never throws for a failing or crashing check. */
export function evaluate(policy: PolicyInput, fleet: FleetContext, opts: EvaluateOptions = {}): Evaluation {
  const now = opts.now ?? new Date();
  const ctx = makeContext(policy, fleet, now);
  const full: EffectivePolicy = { chain: [], waivers: [], ...policy };
  const runs: CheckRun[] = [];
  for (const check of opts.checks ?? catalog) {
    const enforcement = enforcementOf(policy, check);
    const base = { id: check.id, title: check.title, severity: check.severity, enforcement };
    const finding = (code: Finding["code"], subject: string, message: string): Finding => {
      const w = waiverFor(full, check.id, subject, now);
      return {
        checkId: check.id,
        title: check.title,
        severity: check.severity,
        enforcement,
        code,
        subject,
        message,
        ...(w ? { waived: { reason: w.reason, expires: w.expires, policy: w.policy } } : {}),
      };
    };
    if (enforcement === "disabled") {
      runs.push({ ...base, status: "disabled", details: "disabled by the policy", findings: [] });
      continue;
    }
    if (!check.appliesTo.some((p) => hasPart(fleet, p))) {
      runs.push({
        ...base,
        status: "not-applicable",
        details: `nothing to check (${check.appliesTo.join(", ")})`,
        findings: [],
      });
      continue;
    }
    let res: CheckResult;
    try {
      res = check.check(ctx);
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      runs.push({
        ...base,
        status: "error",
        details: msg,
        findings: [finding("CHECK_ERROR", "check", `check failed to run: ${msg}`)],
      });
      continue;
    }
    if (res.status === "fail") {
      runs.push({
        ...base,
        status: "fail",
        findings: res.violations.map((v) => finding("VIOLATION", v.subject, v.message)),
      });
    } else {
      runs.push({ ...base, status: res.status, details: res.details, findings: [] });
    }
  }
  const findings = runs.flatMap((r) => r.findings);
  return {
    policy: policy.name,
    runs,
    findings,
    blocking: findings.filter((f) => !f.waived && f.enforcement === "mandatory"),
    advisory: findings.filter((f) => !f.waived && f.enforcement === "advisory"),
  };
}

export function formatFinding(f: Finding): string {
  return `${f.checkId} ${f.subject}: ${f.message}`;
}

/**
 * Load a policy file with its extends chain for a caller that cannot print diagnostics itself (a
 * component): any problem throws one FleetError listing every diagnostic as file:line:column: path:
 * message (INVALID_INPUT for a malformed file, POLICY_VIOLATION for a loosening or an expired waiver).
 * The diagnostics quote no file that is not a policy (policies/source.ts), so neither does this.
 */
export function loadPolicyFile(file: string, opts: Pick<EvaluateOptions, "now"> = {}): EffectivePolicy {
  const load = loadPolicy(file, { now: opts.now });
  if (load.policy && load.diagnostics.length === 0) return load.policy;
  const lines = load.diagnostics.map(formatDiagnostic);
  const code =
    load.diagnostics.some((d) => d.kind === "input") || !load.policy ? "INVALID_INPUT" : "POLICY_VIOLATION";
  throw new FleetError(
    code,
    `policy ${file}: got ${lines.length} error${lines.length === 1 ? "" : "s"}, want none:\n  ${lines.join("\n  ")}`,
    "policy",
  );
}

/**
 * For components: evaluate what a component declares before anything is created. Throws a FleetError
 * POLICY_VIOLATION naming each mandatory check id and message, so `pulumi preview` fails with them.
 * `policy` is an effective policy or the path of a policy file (loaded with its extends chain).
 * Returns the evaluation so the caller can log advisory findings.
 */
export function enforceAtConstruction(
  policy: PolicyInput | string,
  declared: DeclaredFleet,
  opts: EvaluateOptions = {},
): Evaluation {
  const effective = typeof policy === "string" ? loadPolicyFile(policy, opts) : policy;
  const ev = evaluate(effective, { declared }, opts);
  if (ev.blocking.length) {
    const lines = ev.blocking.map(formatFinding);
    throw new FleetError(
      "POLICY_VIOLATION",
      `policy '${effective.name}' refuses this declaration (${lines.length} mandatory violation${lines.length === 1 ? "" : "s"}):\n  ${lines.join("\n  ")}`,
      "policy",
    );
  }
  return ev;
}
