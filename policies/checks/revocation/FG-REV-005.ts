/**
 * FG-REV-005: every certificate the registry holds as revoked (and not yet expired) is listed on its
 * CA's published CRL (RFC 5280 5.3: an entry stays at least until the certificate expires).
 */
import { type Check, notApplicable, result, type Violation } from "../../check";
import { isCaRole, isoDay } from "../../helpers";

export const check: Check = {
  id: "FG-REV-005",
  title: "Every revocation in the registry is on its CA's published CRL",
  severity: "high",
  standards: {
    etsiEn303645: ["5.5-8"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.8"],
    awsDeviceDefender: ["REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK"],
  },
  rationale:
    "Relying parties learn of a revocation only from the CRL: a revocation recorded in the registry but missing from the CA's published CRL (not re-published, or published to the wrong place) leaves the certificate trusted by every verifier that checks CRLs, and a CA with revocations and no CRL at all revokes nothing.",
  appliesTo: ["deployed.certificates", "deployed.crls"],
  check(ctx) {
    if (ctx.fleet.deployed?.crls === undefined) return notApplicable("no CRL folder in the inventory");
    const inventory = ctx.fleet.deployed.certificates ?? [];
    if (!inventory.some((c) => c.status !== undefined))
      return notApplicable("no registry status in the inventory");
    const revokedIds = new Set(inventory.filter((c) => c.status === "revoked").map((c) => c.id));
    const revoked = ctx.certificates().filter((c) => revokedIds.has(c.id) && c.notAfter > ctx.now);
    const crls = ctx.crls().filter((c) => c.signatureValid !== false);
    const caById = new Map(
      ctx
        .certificates()
        .filter((x) => isCaRole(x.role))
        .map((x) => [x.id, x]),
    );
    const v: Violation[] = [];
    for (const c of revoked) {
      let mine = crls.filter((l) => l.issuerDer === c.issuerDer);
      if (mine.length > 1) {
        // two CAs of one name (a rollover's predecessor and successor): the CRL of the CA that
        // issued this certificate (its authority key identifier), not merely the newest of the name
        const own = mine.filter((l) => {
          const ca = caById.get(l.issuerId);
          return ca !== undefined && c.x509.checkIssued(ca.x509);
        });
        if (own.length) mine = own;
      }
      if (!mine.length) {
        v.push({
          subject: `cert:${c.id}`,
          message: `device ${c.deviceId ?? c.id}: serial ${c.serial} is revoked in the registry but its CA (${c.issuer}) has no published CRL`,
        });
        continue;
      }
      const newest = mine.reduce((a, b) => (b.thisUpdate > a.thisUpdate ? b : a));
      if (!newest.revokedSerials.has(c.serial))
        v.push({
          subject: `cert:${c.id}`,
          message: `device ${c.deviceId ?? c.id}: serial ${c.serial} is revoked in the registry but missing from the CRL of ${newest.issuerId} (thisUpdate ${isoDay(newest.thisUpdate)})`,
        });
    }
    return result(v);
  },
};
