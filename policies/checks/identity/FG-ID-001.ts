/** FG-ID-001: batches take identities only from allowed sources, with what each source requires. */
import { type Check, result, type Violation } from "../../check";
import { policyRef } from "../../helpers";

export const check: Check = {
  id: "FG-ID-001",
  title: "Identity source allowed, with its safeguards",
  severity: "high",
  standards: {
    etsiEn303645: ["5.4-2", "5.4-4"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.2", "CR 1.5"],
  },
  rationale:
    "Injected keys are only trustworthy in an untrusted factory when an HSM counts them (no over-production) and the counter allows no more chips than the batch; PUF-derived keys only when the fuzzy extractor's failure rate is low enough that devices do not lose their identity in the field.",
  appliesTo: ["declared.batches"],
  check(ctx) {
    const rules = ctx.policy.spec.identity;
    if (!rules) return { status: "not-applicable", details: "the policy sets no identity rules" };
    const v: Violation[] = [];
    for (const b of ctx.fleet.declared.batches ?? []) {
      const s = `batch:${b.id}`;
      if (rules.allowedSources && !rules.allowedSources.includes(b.identitySource))
        v.push({
          subject: s,
          message: `identitySource: got ${b.identitySource}, ${policyRef(ctx)} allows ${rules.allowedSources.join(", ") || "none"}`,
        });
      if (b.identitySource === "injected" && rules.injected?.requireHsmCounter) {
        if (!b.hsmCounter)
          v.push({
            subject: s,
            message: "hsmCounter: got none, want an HSM production counter for injected keys",
          });
        else if (b.hsmCounter.limit > b.count)
          v.push({
            subject: s,
            message: `hsmCounter.limit: got ${b.hsmCounter.limit}, want at most count ${b.count} (the factory could provision ${b.hsmCounter.limit - b.count} extra chips)`,
          });
      }
      const maxRate = rules.puf?.maxKeyFailureRate;
      if (b.identitySource === "puf" && maxRate !== undefined) {
        const rate = b.puf?.keyFailureRate;
        if (rate === undefined)
          v.push({ subject: s, message: `puf.keyFailureRate: got none, want at most ${maxRate}` });
        else if (rate > maxRate)
          v.push({
            subject: s,
            message: `puf.keyFailureRate: got ${rate}, ${policyRef(ctx)} allows at most ${maxRate}`,
          });
      }
    }
    return result(v);
  },
};
