/** FG-HUB-004: Azure DPS enrollment groups use allowed attestation and verified CAs. */
import { type Check, result, type Violation } from "../../check";
import { azureHubs, policyRef } from "../../helpers";

export const check: Check = {
  id: "FG-HUB-004",
  title: "Azure DPS enrollment attestation allowed and CA verified",
  severity: "high",
  standards: {
    etsiEn303645: ["5.4-4", "5.5-1"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.2", "CR 1.9"],
  },
  rationale:
    "A symmetric-key enrollment group shares one secret across devices, and an X.509 CA group whose CA skipped proof of possession trusts a certificate nobody proved to hold the key of; both let a device be impersonated at registration.",
  appliesTo: ["declared.hubs.azure", "deployed.hubs.azure"],
  check(ctx) {
    const rules = ctx.policy.spec.hubs?.azure;
    if (!rules) return { status: "not-applicable", details: "the policy sets no Azure rules" };
    const v: Violation[] = [];
    for (const { where, hub } of azureHubs(ctx))
      for (const g of hub.enrollmentGroups ?? []) {
        const s = `azure-group:${g.name}`;
        if (rules.allowedAttestation && !rules.allowedAttestation.includes(g.attestation))
          v.push({
            subject: s,
            message: `${where} attestation: got ${g.attestation}, ${policyRef(ctx)} allows ${rules.allowedAttestation.join(", ")}`,
          });
        if (rules.requireCaVerified && g.attestation === "x509-ca" && g.caVerified !== true)
          v.push({
            subject: s,
            message: `${where} caVerified: got ${g.caVerified ?? "none"}, want true (proof of possession of the CA key)`,
          });
      }
    return result(v);
  },
};
