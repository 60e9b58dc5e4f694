/** FG-HUB-002: no MQTT wildcards in Deny statements of AWS IoT policies. */
import { type Check, result, type Violation } from "../../check";
import { awsHubs, statementResources } from "../../helpers";

export const check: Check = {
  id: "FG-HUB-002",
  title: "No MQTT wildcards in deny statements",
  severity: "medium",
  standards: {
    etsiEn303645: ["5.6-1"],
    nistIr8259a: ["Logical Access to Interfaces"],
    iec62443_4_2: ["CR 2.1"],
    awsDeviceDefender: ["IOT_POLICY_POTENTIAL_MISCONFIGURATION_CHECK"],
  },
  rationale:
    "AWS IoT treats MQTT wildcards (+ and #) in policy resources as literal characters, so a Deny on topic/admin/# denies only a topic literally named '#': the author believes a subtree is closed while it is open.",
  appliesTo: ["declared.hubs.aws", "deployed.hubs.aws"],
  check(ctx) {
    if (ctx.policy.spec.hubs?.aws?.forbidDenyWildcards === false)
      return { status: "not-applicable", details: "the policy allows MQTT wildcards in deny statements" };
    const v: Violation[] = [];
    for (const { where, hub } of awsHubs(ctx))
      for (const p of hub.policies ?? [])
        p.document.Statement.forEach((st, i) => {
          if (st.Effect !== "Deny") return;
          const wild = statementResources(st).filter((r) =>
            /[+#]/.test(r.replace(/^arn:[^:]*:iot:[^:]*:[^:]*:/, "")),
          );
          if (wild.length)
            v.push({
              subject: `aws-policy:${p.name}`,
              message: `${where} Statement[${i}]: Deny on ${wild.join(", ")}: MQTT wildcards match literally here and deny nothing else; list topics or use a policy variable`,
            });
        });
    return result(v);
  },
};
