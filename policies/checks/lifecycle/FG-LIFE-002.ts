/** FG-LIFE-002: no active device certificate is expired or inside the renewal window. */
import { type Check, DAY_MS, result, type Violation } from "../../check";
import { isoDay, policyRef } from "../../helpers";

export const check: Check = {
  id: "FG-LIFE-002",
  title: "Device certificates not expiring within the renewal window",
  severity: "medium",
  standards: {
    etsiEn303645: ["5.5-8"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.5", "CR 1.8"],
    awsDeviceDefender: ["DEVICE_CERTIFICATE_EXPIRING_CHECK"],
  },
  rationale:
    "A device whose certificate expires drops off the hub and may be unreachable for the renewal itself; renewal must start early enough for devices that are offline for days.",
  appliesTo: ["declared.batches", "declared.rotation", "deployed.certificates"],
  check(ctx) {
    const window = ctx.policy.spec.renewal?.deviceWindowDays;
    if (window === undefined)
      return { status: "not-applicable", details: "the policy sets no device renewal window" };
    const v: Violation[] = [];
    for (const b of ctx.fleet.declared.batches ?? [])
      if (b.profile.validityDays <= window)
        v.push({
          subject: `batch:${b.id}`,
          message: `profile.validityDays: got ${b.profile.validityDays}, want more than the ${window}-day renewal window (${policyRef(ctx)})`,
        });
    for (const r of ctx.fleet.declared.rotation ?? [])
      if (r.renewBeforeDays !== undefined && r.renewBeforeDays < window)
        v.push({
          subject: `rotation:${r.name}`,
          message: `renewBeforeDays: got ${r.renewBeforeDays}, want at least ${window} (${policyRef(ctx)})`,
        });
    for (const c of ctx.certificates()) {
      if (c.role !== "device" || !c.active) continue;
      const left = Math.floor((c.notAfter.getTime() - ctx.now.getTime()) / DAY_MS);
      if (left < 0)
        v.push({
          subject: `cert:${c.id}`,
          message: `device certificate expired on ${isoDay(c.notAfter)} and is still active`,
        });
      else if (left < window)
        v.push({
          subject: `cert:${c.id}`,
          message: `device certificate expires on ${isoDay(c.notAfter)}, in ${left} days, inside the ${window}-day renewal window`,
        });
    }
    return result(v);
  },
};
