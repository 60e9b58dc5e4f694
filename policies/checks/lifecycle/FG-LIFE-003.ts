/** FG-LIFE-003: no device key or certificate is older than the policy's maximum key age. */
import { type Check, DAY_MS, result, type Violation } from "../../check";
import { isoDay, policyRef } from "../../helpers";

export const check: Check = {
  id: "FG-LIFE-003",
  title: "Device key and certificate age within the maximum",
  severity: "medium",
  standards: {
    etsiEn303645: ["5.5-8"],
    nistIr8259a: ["Device Identification", "Data Protection"],
    iec62443_4_2: ["CR 1.5"],
    awsDeviceDefender: ["DEVICE_CERTIFICATE_AGE_CHECK"],
  },
  rationale:
    "The longer a key is in use the more it has been exposed; re-keying on a cadence bounds the damage of an unnoticed compromise. A batch whose certificates outlive the maximum key age needs a schedule that re-keys it.",
  appliesTo: ["declared.batches", "declared.rotation", "deployed.certificates"],
  check(ctx) {
    const max = ctx.policy.spec.renewal?.maxKeyAgeDays;
    if (max === undefined) return { status: "not-applicable", details: "the policy sets no maximum key age" };
    const v: Violation[] = [];
    const rotation = ctx.fleet.declared.rotation ?? [];
    for (const r of rotation)
      if (r.rekeyAfterDays !== undefined && r.rekeyAfterDays > max)
        v.push({
          subject: `rotation:${r.name}`,
          message: `rekeyAfterDays: got ${r.rekeyAfterDays}, ${policyRef(ctx)} allows at most ${max}`,
        });
    for (const b of ctx.fleet.declared.batches ?? []) {
      if (b.profile.validityDays <= max) continue;
      const rekeyed = rotation.some(
        (r) => r.batches.includes(b.id) && r.rekeyAfterDays !== undefined && r.rekeyAfterDays <= max,
      );
      if (!rekeyed)
        v.push({
          subject: `batch:${b.id}`,
          message: `profile.validityDays ${b.profile.validityDays} exceeds the maximum key age ${max} and no rotation schedule re-keys this batch within ${max} days`,
        });
    }
    for (const c of ctx.certificates()) {
      if (c.role !== "device" || !c.active) continue;
      const born = c.keyCreatedAt && c.keyCreatedAt < c.notBefore ? c.keyCreatedAt : c.notBefore;
      const age = Math.floor((ctx.now.getTime() - born.getTime()) / DAY_MS);
      if (age > max)
        v.push({
          subject: `cert:${c.id}`,
          message: `key in use since ${isoDay(born)}: ${age} days old, ${policyRef(ctx)} allows at most ${max}`,
        });
    }
    return result(v);
  },
};
