/** FG-REV-003: CAs publish CRLs at least as often as the policy says, and published CRLs are fresh and valid. */
import { type Check, result, type Violation } from "../../check";
import { isoDay, policyRef } from "../../helpers";

/** How far thisUpdate may be backdated before the span counts against the interval. */
const SKEW_HOURS = 5 / 60;

export const check: Check = {
  id: "FG-REV-003",
  title: "CRLs published within the interval, fresh and correctly signed",
  severity: "high",
  standards: {
    etsiEn303645: ["5.5-8"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.8"],
  },
  rationale:
    "A revocation takes effect only when relying parties fetch a CRL that lists it; a long interval or a stale CRL (past its nextUpdate) leaves revoked devices trusted, and a CRL with a bad signature is ignored.",
  appliesTo: ["declared.cas", "deployed.crls"],
  check(ctx) {
    const max = ctx.policy.spec.revocation?.crlIntervalHours;
    const v: Violation[] = [];
    if (max !== undefined) {
      for (const ca of ctx.fleet.declared.cas ?? []) {
        if (ca.role === "root") continue; // offline roots publish on their own (yearly) cadence
        if (ca.crlIntervalHours === undefined)
          v.push({
            subject: `ca:${ca.name}`,
            message: `crlIntervalHours: got none, want at most ${max} (${policyRef(ctx)})`,
          });
        else if (ca.crlIntervalHours > max)
          v.push({
            subject: `ca:${ca.name}`,
            message: `crlIntervalHours: got ${ca.crlIntervalHours}, ${policyRef(ctx)} allows at most ${max}`,
          });
      }
    }
    for (const crl of ctx.crls()) {
      const s = `crl:${crl.issuerId}`;
      if (crl.signatureValid === false)
        v.push({ subject: s, message: `signature does not verify against issuer ${crl.issuerId}` });
      if (!crl.nextUpdate) {
        v.push({ subject: s, message: "nextUpdate: got none, want a nextUpdate (RFC 5280 5.1.2.5)" });
        continue;
      }
      if (crl.nextUpdate < ctx.now)
        v.push({ subject: s, message: `stale: nextUpdate ${isoDay(crl.nextUpdate)} has passed` });
      const span = (crl.nextUpdate.getTime() - crl.thisUpdate.getTime()) / 3_600_000;
      // a signer backdates thisUpdate a little for relying parties' clock skew (core/ca signCrl: 60 s)
      if (max !== undefined && span - SKEW_HOURS > max)
        v.push({
          subject: s,
          message: `thisUpdate-to-nextUpdate: got ${Math.round(span)} hours, ${policyRef(ctx)} allows at most ${max}`,
        });
    }
    return result(v);
  },
};
