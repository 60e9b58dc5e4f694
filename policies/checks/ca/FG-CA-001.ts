/** FG-CA-001: a CA outlives everything it signs by the policy's margin. */
import { type Check, DAY_MS, result, type Violation } from "../../check";
import { casByName, isoDay, issuerOf, policyRef } from "../../helpers";

export const check: Check = {
  id: "FG-CA-001",
  title: "CA outlives the certificates it signs",
  severity: "high",
  standards: {
    etsiEn303645: ["5.5-8"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.8"],
  },
  rationale:
    "A leaf that outlives its issuer stops validating when the CA expires, long before the renewal the fleet planned: devices drop off the hub all at once. The margin leaves time to roll the CA over.",
  appliesTo: ["declared.cas", "declared.batches", "deployed.certificates"],
  check(ctx) {
    const margin = ctx.policy.spec.validity?.caMarginDays ?? 0;
    const v: Violation[] = [];
    const byName = casByName(ctx);
    for (const ca of ctx.fleet.declared.cas ?? []) {
      const parent = ca.parent ? byName.get(ca.parent) : undefined;
      if (parent && parent.validityDays < ca.validityDays + margin)
        v.push({
          subject: `ca:${ca.name}`,
          message: `validityDays: got ${ca.validityDays} under ${parent.name} (${parent.validityDays} days), want at most ${parent.validityDays - margin} (${policyRef(ctx)} margin ${margin} days)`,
        });
    }
    for (const b of ctx.fleet.declared.batches ?? []) {
      const ca = byName.get(b.issuingCa);
      if (ca && ca.validityDays < b.profile.validityDays + margin)
        v.push({
          subject: `batch:${b.id}`,
          message: `profile.validityDays: got ${b.profile.validityDays} under ${ca.name} (${ca.validityDays} days), want at most ${ca.validityDays - margin} (${policyRef(ctx)} margin ${margin} days)`,
        });
    }
    const certs = ctx.certificates();
    for (const c of certs) {
      const issuer = issuerOf(certs, c);
      if (issuer && issuer.notAfter.getTime() < c.notAfter.getTime() + margin * DAY_MS)
        v.push({
          subject: `cert:${c.id}`,
          message: `notAfter ${isoDay(c.notAfter)} is within ${margin} days of (or after) its issuer ${issuer.id}'s notAfter ${isoDay(issuer.notAfter)}`,
        });
    }
    return result(v);
  },
};
