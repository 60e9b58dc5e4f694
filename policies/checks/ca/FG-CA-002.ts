/** FG-CA-002: issuing CAs issue, and carry, only the extended key usages the policy allows. */
import { LEGACY_MANIFEST_SIGNER_EKU, MANIFEST_SIGNER_EKU } from "../../../core/manifest/format";
import { type Check, result, type Violation } from "../../check";
import { issuerOf, policyRef } from "../../helpers";
import type { ExtKeyUsage } from "../../schema/fleet-policy.gen";

/** RFC 5280 4.2.1.12 key purposes by name, and fleetguard's manifest signer (both of its OIDs). */
const NAMED: Record<string, string[]> = {
  serverAuth: ["1.3.6.1.5.5.7.3.1"],
  clientAuth: ["1.3.6.1.5.5.7.3.2"],
  codeSigning: ["1.3.6.1.5.5.7.3.3"],
  emailProtection: ["1.3.6.1.5.5.7.3.4"],
  timeStamping: ["1.3.6.1.5.5.7.3.8"],
  OCSPSigning: ["1.3.6.1.5.5.7.3.9"],
  manifestSigning: [MANIFEST_SIGNER_EKU, LEGACY_MANIFEST_SIGNER_EKU],
};
const NAME_OF = new Map(Object.entries(NAMED).flatMap(([n, oids]) => oids.map((o) => [o, n] as const)));

/** What core/enroll/profile issues when a profile names none, and what a batch's manifest signer carries. */
export const DEFAULT_ALLOWED: ExtKeyUsage[] = ["clientAuth", "manifestSigning"];

const oidsOf = (u: string): string[] => NAMED[u] ?? [u];
const show = (oids: string[]) => `[${oids.map((o) => NAME_OF.get(o) ?? o).join(", ")}]`;

export const check: Check = {
  id: "FG-CA-002",
  title: "Issuing CAs issue only the allowed extended key usages",
  severity: "high",
  standards: {
    etsiEn303645: ["5.1-4"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.2", "CR 1.8"],
  },
  rationale:
    "A device certificate that also says serverAuth or codeSigning turns one extracted device key into a server or firmware signer the fleet's relying parties trust. fleetguard's CA certificates carry no extendedKeyUsage, so the check reads what an issuing CA issues: each declared batch profile's extKeyUsage (clientAuth when absent) and every deployed device certificate's; a deployed issuing CA certificate that does carry the extension (a brought-your-own CA) must stay within the same list, and its devices within its own list: Windows and NSS intersect usages along the chain, and Go requires the usage it verifies in every CA that lists any. The default allows clientAuth and manifestSigning, the fleet's manifest signers.",
  appliesTo: ["declared.batches", "deployed.certificates"],
  check(ctx) {
    const listed = ctx.policy.spec.caConstraints?.issuing?.allowedExtKeyUsages ?? DEFAULT_ALLOWED;
    const allowed = new Set(listed.flatMap(oidsOf));
    const want = `only [${listed.join(", ")}] (${policyRef(ctx)} caConstraints.issuing.allowedExtKeyUsages)`;
    const v: Violation[] = [];
    for (const b of ctx.fleet.declared.batches ?? []) {
      const ekus = (b.profile.extKeyUsage ?? ["clientAuth"]).flatMap((u) => oidsOf(u).slice(0, 1));
      const bad = ekus.filter((o) => !allowed.has(o));
      if (ekus.length === 0)
        v.push({
          subject: `batch:${b.id}`,
          message: `profile.extKeyUsage: got [] (any purpose), want ${want}`,
        });
      else if (bad.length)
        v.push({
          subject: `batch:${b.id}`,
          message: `profile.extKeyUsage: got ${show(ekus)}, want ${want}; ${show(bad)} not allowed`,
        });
    }
    const certs = ctx.certificates();
    for (const c of certs) {
      if (c.role !== "issuing" && c.role !== "device") continue;
      // Node's X509Certificate.keyUsage is the extendedKeyUsage list (undefined when absent)
      const ekus = c.x509.keyUsage ?? [];
      const bad = ekus.filter((o) => !allowed.has(o));
      // RFC 5280 4.2.1.12: no extension means any purpose; on a CA it only means no constraint
      if (c.role === "device" && c.x509.keyUsage === undefined)
        v.push({ subject: `cert:${c.id}`, message: `extKeyUsage: got none (any purpose), want ${want}` });
      else if (bad.length)
        v.push({
          subject: `cert:${c.id}`,
          message: `extKeyUsage: got ${show(ekus)}, want ${want}; ${show(bad)} not allowed`,
        });
      const issuer = c.role === "device" ? issuerOf(certs, c) : undefined;
      const limit = issuer?.x509.keyUsage;
      if (issuer && limit && !limit.includes("2.5.29.37.0")) {
        const outside = ekus.filter((o) => !limit.includes(o));
        if (outside.length)
          v.push({
            subject: `cert:${c.id}`,
            message: `extKeyUsage: got ${show(ekus)}, want within its issuer ${issuer.id}'s ${show(limit)}; ${show(outside)} fails verifiers that intersect usages along the chain (Windows, NSS; Go for the usage it verifies)`,
          });
      }
    }
    return result(v);
  },
};
