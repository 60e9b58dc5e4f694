/** FG-HUB-003: hub logging is enabled at the level the policy requires. */
import { type Check, result, type Violation } from "../../check";
import { awsHubs, policyRef } from "../../helpers";

const ORDER = ["DISABLED", "ERROR", "WARN", "INFO", "DEBUG"];

export const check: Check = {
  id: "FG-HUB-003",
  title: "Hub logging enabled",
  severity: "medium",
  standards: {
    etsiEn303645: ["5.10-1"],
    nistIr8259a: ["Cybersecurity State Awareness"],
    iec62443_4_2: ["CR 2.8", "CR 6.1"],
    awsDeviceDefender: ["LOGGING_DISABLED_CHECK"],
  },
  rationale:
    "Without hub logs a cloned device, a denied connection storm or a certificate used from two places leaves no trace; incident response starts blind.",
  appliesTo: ["declared.hubs.aws", "deployed.hubs.aws"],
  check(ctx) {
    const min = ctx.policy.spec.hubs?.aws?.minLogLevel ?? "ERROR";
    if (min === "DISABLED")
      return { status: "not-applicable", details: "the policy does not require hub logging" };
    const v: Violation[] = [];
    for (const { where, hub } of awsHubs(ctx)) {
      const level = hub.logging?.enabled ? (hub.logging.level ?? "ERROR") : "DISABLED";
      if (ORDER.indexOf(level) < ORDER.indexOf(min))
        v.push({
          subject: "aws-logging",
          message: `${where} logging: got ${level}, ${policyRef(ctx)} wants at least ${min}`,
        });
    }
    return result(v);
  },
};
