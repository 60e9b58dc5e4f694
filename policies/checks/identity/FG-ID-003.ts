/** FG-ID-003: the fraction of a batch that ended quarantined stays under the policy's limit. */
import { type Check, result, type Violation } from "../../check";
import { policyRef } from "../../helpers";

export const check: Check = {
  id: "FG-ID-003",
  title: "Quarantined devices within the batch limit",
  severity: "medium",
  standards: {
    etsiEn303645: ["5.4-2"],
    nistIr8259a: ["Device Identification", "Cybersecurity State Awareness"],
    iec62443_4_2: ["CR 1.2", "CR 3.4"],
  },
  rationale:
    "Quarantine catches cloned device IDs and PUFs that cannot be reconstructed; many of them in one lot points to a counterfeit run or a failing production line, which must stop the rollout rather than be averaged away.",
  appliesTo: ["deployed.batches"],
  check(ctx) {
    const max = ctx.policy.spec.identity?.maxQuarantinedFraction;
    if (max === undefined)
      return { status: "not-applicable", details: "the policy sets no quarantine limit" };
    const v: Violation[] = [];
    for (const b of ctx.fleet.deployed?.batches ?? []) {
      const total = Object.values(b.states).reduce((a, n) => a + (n ?? 0), 0);
      const q = b.states.quarantined ?? 0;
      if (total > 0 && q / total > max)
        v.push({
          subject: `batch:${b.id}`,
          message: `quarantined: got ${q} of ${total} (${((100 * q) / total).toFixed(2)}%), ${policyRef(ctx)} allows at most ${(100 * max).toFixed(2)}%`,
        });
    }
    return result(v);
  },
};
