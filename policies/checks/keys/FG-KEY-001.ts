/** FG-KEY-001: every key (declared CA, batch device profile, deployed certificate) meets its role's rule. */
import type { Check, Violation } from "../../check";
import { describeRule, keyProblem, parseKeyName, policyRef } from "../../helpers";

export const check: Check = {
  id: "FG-KEY-001",
  title: "Key algorithm and size allowed for the role",
  severity: "high",
  standards: {
    etsiEn303645: ["5.5-1", "5.5-8"],
    nistIr8259a: ["Device Identification", "Data Protection"],
    iec62443_4_2: ["CR 1.9", "CR 4.3"],
    awsDeviceDefender: ["CA_CERTIFICATE_KEY_QUALITY_CHECK", "DEVICE_CERTIFICATE_KEY_QUALITY_CHECK"],
  },
  rationale:
    "Short or deprecated keys let an attacker forge CA or device signatures; the longer a key lives (roots), the more margin it needs, so each role has its own minimum.",
  appliesTo: ["declared.cas", "declared.batches", "deployed.certificates"],
  check(ctx) {
    const keys = ctx.policy.spec.keys;
    if (!keys) return { status: "not-applicable", details: "the policy sets no key rules" };
    const v: Violation[] = [];
    const want = (role: keyof typeof keys) =>
      `${policyRef(ctx)} allows ${describeRule(keys[role]!)} for ${role}`;
    for (const ca of ctx.fleet.declared.cas ?? []) {
      const rule = keys[ca.role];
      if (!rule) continue;
      const k = parseKeyName(ca.algorithm);
      const problem = k ? keyProblem(k, rule) : `unknown algorithm ${JSON.stringify(ca.algorithm)}`;
      if (problem)
        v.push({
          subject: `ca:${ca.name}`,
          message: `algorithm: got ${ca.algorithm} (${problem}), ${want(ca.role)}`,
        });
    }
    for (const b of ctx.fleet.declared.batches ?? []) {
      if (!keys.device) continue;
      const k = parseKeyName(b.profile.algorithm);
      const problem = k
        ? keyProblem(k, keys.device)
        : `unknown algorithm ${JSON.stringify(b.profile.algorithm)}`;
      if (problem)
        v.push({
          subject: `batch:${b.id}`,
          message: `profile.algorithm: got ${b.profile.algorithm} (${problem}), ${want("device")}`,
        });
    }
    for (const c of ctx.certificates()) {
      const rule = keys[c.role];
      if (!rule) continue;
      const problem =
        c.key.family && c.key.bits
          ? keyProblem({ family: c.key.family, bits: c.key.bits }, rule)
          : `key type ${c.key.type} is not supported`;
      if (problem) v.push({ subject: `cert:${c.id}`, message: `public key: ${problem}, ${want(c.role)}` });
    }
    return v.length ? { status: "fail", violations: v } : { status: "pass" };
  },
};
