/**
 * FG-REV-004: no hub still admits a certificate the registry has revoked, nor any certificate of a device
 * the registry holds as revoked or decommissioned (the registry against the hubs, independent of CRLs).
 */
import { type Check, notApplicable, result, type Violation } from "../../check";

const ENDED = new Set(["revoked", "decommissioned"]);

export const check: Check = {
  id: "FG-REV-004",
  title: "No revoked certificate or retired device still admitted by a hub",
  severity: "critical",
  standards: {
    etsiEn303645: ["5.5-8"],
    nistIr8259a: ["Device Identification", "Logical Access to Interfaces"],
    iec62443_4_2: ["CR 1.8", "CR 2.1"],
    awsDeviceDefender: ["REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK"],
  },
  rationale:
    "A revocation recorded in the registry protects nothing until every hub refuses the certificate: a hub record still active (or a local hub whose state file still lists the certificate) keeps a compromised or retired device connected, whatever the CRL says.",
  appliesTo: ["deployed.certificates"],
  check(ctx) {
    const certs = (ctx.fleet.deployed?.certificates ?? []).filter((c) => c.role === "device");
    if (!certs.some((c) => c.hubs !== undefined))
      return notApplicable("no hub registrations in the inventory");
    const v: Violation[] = [];
    for (const c of certs) {
      const admitting = (c.hubs ?? []).filter((h) => h.accepts);
      if (!admitting.length) continue;
      const where = admitting.map((h) => `${h.hub} (${h.status})`).join(", ");
      const device = c.deviceId ?? c.id;
      if (c.status === "revoked")
        v.push({
          subject: `cert:${c.id}`,
          message: `device ${device}: certificate revoked in the registry${c.revocationReason ? ` (${c.revocationReason})` : ""} but still admitted by ${where}`,
        });
      else if (c.deviceState !== undefined && ENDED.has(c.deviceState))
        v.push({
          subject: `cert:${c.id}`,
          message: `device ${device} is ${c.deviceState} in the registry but its certificate is still admitted by ${where}`,
        });
    }
    return result(v);
  },
};
