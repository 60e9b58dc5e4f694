/** FG-CERT-001: certificate validity within the role's maximum (declared CAs, batch profiles, deployed). */
import { type Check, DAY_MS, result, type Violation } from "../../check";
import { policyRef } from "../../helpers";

export const check: Check = {
  id: "FG-CERT-001",
  title: "Certificate validity within the role's maximum",
  severity: "high",
  standards: {
    etsiEn303645: ["5.5-8"],
    nistIr8259a: ["Device Identification", "Device Configuration"],
    iec62443_4_2: ["CR 1.8", "CR 1.5"],
  },
  rationale:
    "A certificate that lives longer than the policy allows keeps a possibly compromised key trusted for longer and postpones the rotation the fleet is supposed to rehearse.",
  appliesTo: ["declared.cas", "declared.batches", "deployed.certificates"],
  check(ctx) {
    const max = ctx.policy.spec.validity?.maxDays;
    if (!max) return { status: "not-applicable", details: "the policy sets no maximum validity" };
    const v: Violation[] = [];
    for (const ca of ctx.fleet.declared.cas ?? []) {
      const m = max[ca.role];
      if (m !== undefined && ca.validityDays > m)
        v.push({
          subject: `ca:${ca.name}`,
          message: `validityDays: got ${ca.validityDays}, ${policyRef(ctx)} allows at most ${m} for ${ca.role}`,
        });
    }
    for (const b of ctx.fleet.declared.batches ?? []) {
      if (max.device !== undefined && b.profile.validityDays > max.device)
        v.push({
          subject: `batch:${b.id}`,
          message: `profile.validityDays: got ${b.profile.validityDays}, ${policyRef(ctx)} allows at most ${max.device} for device`,
        });
    }
    for (const c of ctx.certificates()) {
      const m = max[c.role];
      const d = Math.round((c.notAfter.getTime() - c.notBefore.getTime()) / DAY_MS);
      if (m !== undefined && d > m)
        v.push({
          subject: `cert:${c.id}`,
          message: `validity: got ${d} days, ${policyRef(ctx)} allows at most ${m} for ${c.role}`,
        });
    }
    return result(v);
  },
};
