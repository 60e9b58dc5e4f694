/** FG-ROT-001: rotation schedules change no more than the allowed fraction of a batch per run. */
import { type Check, result, type Violation } from "../../check";
import { plural, policyRef } from "../../helpers";

export const check: Check = {
  id: "FG-ROT-001",
  title: "Rotation waves within the maximum fraction of a batch",
  severity: "medium",
  standards: {
    etsiEn303645: ["5.9"],
    nistIr8259a: ["Device Configuration"],
    iec62443_4_2: ["CR 7.1"],
  },
  rationale:
    "A rotation that breaks something (a firmware that cannot load the new certificate, a hub quota) must hit a wave, not the fleet; small waves keep most devices connected while the problem is found.",
  appliesTo: ["declared.rotation"],
  check(ctx) {
    const max = ctx.policy.spec.rotation?.maxWaveFraction;
    if (max === undefined) return { status: "not-applicable", details: "the policy sets no wave limit" };
    const counts = new Map((ctx.fleet.declared.batches ?? []).map((b) => [b.id, b.count]));
    const v: Violation[] = [];
    for (const r of ctx.fleet.declared.rotation ?? []) {
      if (r.waveFraction <= max) continue;
      const devices = r.batches.reduce((a, id) => a + (counts.get(id) ?? 0), 0);
      v.push({
        subject: `rotation:${r.name}`,
        message: `waveFraction: got ${r.waveFraction}, ${policyRef(ctx)} allows at most ${max} (waves of up to ${plural(Math.ceil(devices * r.waveFraction), "device")} instead of ${Math.ceil(devices * max).toLocaleString("en-US")})`,
      });
    }
    return result(v);
  },
};
