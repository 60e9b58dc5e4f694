/** FG-REV-002: no active device certificate chains to a revoked intermediate or issuing CA. */
import { type Check, notApplicable, result, type Violation } from "../../check";
import { isRevoked, issuerOf, plural, revokedKeys } from "../../helpers";
import type { CertInfo } from "../../x509";

export const check: Check = {
  id: "FG-REV-002",
  title: "No active devices under a revoked intermediate CA",
  severity: "critical",
  standards: {
    etsiEn303645: ["5.5-8"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.8"],
    awsDeviceDefender: ["INTERMEDIATE_CA_REVOKED_FOR_ACTIVE_DEVICE_CERTIFICATES_CHECK"],
  },
  rationale:
    "Revoking an intermediate revokes everything below it; devices still active under it either keep connecting on a broken chain or fail at the next validation, so they must be re-issued under a live CA before (or right after) the revocation.",
  appliesTo: ["deployed.certificates", "deployed.crls"],
  check(ctx) {
    if (!ctx.fleet.deployed?.crls?.length) return notApplicable("no CRLs in the inventory");
    const revoked = revokedKeys(ctx);
    const certs = ctx.certificates();
    const below = new Map<CertInfo, string[]>();
    for (const d of certs) {
      if (d.role !== "device" || !d.active) continue;
      const seen = new Set<CertInfo>();
      for (let ca = issuerOf(certs, d); ca && !seen.has(ca); ca = issuerOf(certs, ca)) {
        seen.add(ca);
        if (ca.role !== "root" && isRevoked(revoked, ca)) below.set(ca, [...(below.get(ca) ?? []), d.id]);
      }
    }
    const v: Violation[] = [];
    for (const [ca, devices] of below)
      v.push({
        subject: `cert:${ca.id}`,
        message: `${ca.role} CA ${ca.id} is revoked but ${plural(devices.length, "active device certificate")} chain to it (${devices.slice(0, 5).join(", ")}${devices.length > 5 ? ", ..." : ""})`,
      });
    return result(v);
  },
};
