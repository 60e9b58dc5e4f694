/** FG-REV-001: no certificate listed on a valid CRL is still active. */
import { type Check, notApplicable, result, type Violation } from "../../check";
import { isRevoked, revokedKeys } from "../../helpers";

export const check: Check = {
  id: "FG-REV-001",
  title: "Revoked certificates not still active",
  severity: "critical",
  standards: {
    etsiEn303645: ["5.5-8"],
    nistIr8259a: ["Device Identification", "Logical Access to Interfaces"],
    iec62443_4_2: ["CR 1.8", "CR 2.1"],
    awsDeviceDefender: [
      "REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK",
      "REVOKED_CA_CERTIFICATE_STILL_ACTIVE_CHECK",
    ],
  },
  rationale:
    "Revocation only helps if the hub stops accepting the certificate: a revoked device or CA certificate still registered as active at the hub keeps a decommissioned or compromised identity connected.",
  appliesTo: ["deployed.certificates", "deployed.crls"],
  check(ctx) {
    if (!ctx.fleet.deployed?.crls?.length) return notApplicable("no CRLs in the inventory");
    const revoked = revokedKeys(ctx);
    const v: Violation[] = [];
    for (const c of ctx.certificates())
      if (c.active && isRevoked(revoked, c))
        v.push({
          subject: `cert:${c.id}`,
          message: `${c.role} certificate serial ${c.serial} is revoked by its issuer's CRL but still active`,
        });
    return result(v);
  },
};
