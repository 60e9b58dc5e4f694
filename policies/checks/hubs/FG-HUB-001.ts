/** FG-HUB-001: AWS IoT policies grant no wildcard actions or resources and tie client IDs to the thing name. */
import { type Check, result, type Violation } from "../../check";
import { awsHubs, statementActions, statementResources } from "../../helpers";

// biome-ignore lint/suspicious/noTemplateCurlyInString: an AWS IoT policy variable, not a JS template
const THING = "${iot:Connection.Thing.ThingName}";

/**
 * A resource that reaches beyond one thing: "*" itself, or a "*" / MQTT wildcard (+, #) that no
 * policy variable (${iot:...}) pins to the connecting thing.
 */
function wildcardResource(r: string): boolean {
  if (r === "*") return true;
  const object = r.replace(/^arn:[^:]*:iot:[^:]*:[^:]*:/, "");
  if (object.includes("${iot:")) return false;
  return object.includes("*") || /(^|\/)[#+](\/|$)/.test(object);
}

export const check: Check = {
  id: "FG-HUB-001",
  title: "AWS IoT policy not overly permissive",
  severity: "high",
  standards: {
    etsiEn303645: ["5.6-1"],
    nistIr8259a: ["Logical Access to Interfaces"],
    iec62443_4_2: ["CR 2.1"],
    awsDeviceDefender: ["IOT_POLICY_OVERLY_PERMISSIVE_CHECK"],
  },
  rationale:
    // biome-ignore lint/suspicious/noTemplateCurlyInString: an AWS IoT policy variable, not a JS template
    "A device policy with iot:* or * resources lets one stolen device key publish to every topic and impersonate every client; tying iot:Connect to ${iot:Connection.Thing.ThingName} means a certificate can only connect as its own thing.",
  appliesTo: ["declared.hubs.aws", "deployed.hubs.aws"],
  check(ctx) {
    const rules = ctx.policy.spec.hubs?.aws ?? {};
    const v: Violation[] = [];
    for (const { where, hub } of awsHubs(ctx)) {
      for (const p of hub.policies ?? []) {
        const s = `aws-policy:${p.name}`;
        p.document.Statement.forEach((st, i) => {
          if (st.Effect !== "Allow") return;
          const at = `${where} Statement[${i}]`;
          const actions = statementActions(st);
          const resources = statementResources(st);
          const wildActions = actions.filter((a) => a.includes("*"));
          if (!rules.allowWildcardActions && wildActions.length)
            v.push({
              subject: s,
              message: `${at}: Action: got ${wildActions.join(", ")}, want explicit iot: actions`,
            });
          const wildRes = resources.filter(wildcardResource);
          if (!rules.allowWildcardResources && wildRes.length)
            v.push({
              subject: s,
              message: `${at}: Resource: got ${wildRes.join(", ")}, want resources scoped to the thing (e.g. ${THING})`,
            });
          const connects = actions.some((a) => a === "iot:Connect" || a === "iot:*" || a === "*");
          if (rules.requireThingNameClientId !== false && connects) {
            const loose = resources.filter((r) => !r.includes(THING));
            if (loose.length)
              v.push({
                subject: s,
                message: `${at}: iot:Connect allowed for client IDs ${loose.join(", ")}, want client/${THING}`,
              });
          }
        });
      }
    }
    return result(v);
  },
};
