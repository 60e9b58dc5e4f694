/** FG-LIFE-001: no CA certificate is expired or inside the renewal window. */
import { type Check, DAY_MS, result, type Violation } from "../../check";
import { isCaRole, isoDay, policyRef } from "../../helpers";

export const check: Check = {
  id: "FG-LIFE-001",
  title: "CA certificates not expiring within the renewal window",
  severity: "high",
  standards: {
    etsiEn303645: ["5.5-8"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.8"],
    awsDeviceDefender: ["CA_CERTIFICATE_EXPIRING_CHECK"],
  },
  rationale:
    "When a CA expires every certificate below it stops validating at once; its rollover (new CA, overlap, re-issue) must start well before, so a CA inside the window is a finding.",
  appliesTo: ["declared.cas", "deployed.certificates"],
  check(ctx) {
    const window = ctx.policy.spec.renewal?.caWindowDays;
    if (window === undefined)
      return { status: "not-applicable", details: "the policy sets no CA renewal window" };
    const v: Violation[] = [];
    for (const ca of ctx.fleet.declared.cas ?? [])
      if (ca.validityDays <= window)
        v.push({
          subject: `ca:${ca.name}`,
          message: `validityDays: got ${ca.validityDays}, want more than the ${window}-day renewal window (${policyRef(ctx)})`,
        });
    for (const c of ctx.certificates()) {
      if (!isCaRole(c.role)) continue;
      const left = Math.floor((c.notAfter.getTime() - ctx.now.getTime()) / DAY_MS);
      if (left < 0)
        v.push({
          subject: `cert:${c.id}`,
          message: `${c.role} CA certificate expired on ${isoDay(c.notAfter)}`,
        });
      else if (left < window)
        v.push({
          subject: `cert:${c.id}`,
          message: `${c.role} CA certificate expires on ${isoDay(c.notAfter)}, in ${left} days, inside the ${window}-day renewal window`,
        });
    }
    return result(v);
  },
};
