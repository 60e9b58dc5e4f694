/** FG-REV-006: every CA certificate of the deployed inventory has a published CRL. */
import { type Check, notApplicable, result, type Violation } from "../../check";
import { isCaRole } from "../../helpers";

export const check: Check = {
  id: "FG-REV-006",
  title: "Every CA publishes a CRL",
  severity: "high",
  standards: {
    etsiEn303645: ["5.5-8"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.8"],
  },
  rationale:
    "A relying party that checks revocation along the whole chain (OpenSSL's -crl_check_all, Node's TLS crl option, the local hub) needs a current CRL from every CA of it and refuses every device under a CA that has none; and a CA without a CRL has no way to revoke what it signed. CRLs are published for every CA from its creation on.",
  appliesTo: ["deployed.crls", "deployed.certificates"],
  check(ctx) {
    if (ctx.fleet.deployed?.crls === undefined) return notApplicable("no CRL folder in the inventory");
    const cas = ctx.certificates().filter((c) => isCaRole(c.role));
    if (!cas.length) return notApplicable("no CA certificates in the inventory");
    const valid = ctx.crls().filter((l) => l.signatureValid !== false);
    const published = new Set(valid.map((l) => l.issuerDer));
    const publishedBy = new Set(valid.map((l) => l.issuerId));
    const v: Violation[] = [];
    // two CAs of one name (a rollover): each needs a CRL of its own, not one of the name
    for (const ca of cas)
      if (
        !publishedBy.has(ca.id) &&
        (!published.has(ca.subjectDer) || cas.some((o) => o !== ca && o.subjectDer === ca.subjectDer))
      )
        v.push({
          subject: `cert:${ca.id}`,
          message: `${ca.role} CA ${ca.id} has no published CRL: verifiers that check the whole chain refuse every certificate under it`,
        });
    return result(v);
  },
};
