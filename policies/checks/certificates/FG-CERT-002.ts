/** FG-CERT-002: basicConstraints, pathLen and keyUsage as RFC 5280 and the role require. */
import { type Check, result, type Violation } from "../../check";
import type { DeclaredCa } from "../../context";
import { casByName, isCaRole } from "../../helpers";

function depthBelow(ca: DeclaredCa, cas: DeclaredCa[], seen = new Set<string>()): number {
  if (seen.has(ca.name)) return 0; // cycles are reported by the fleet loader
  seen.add(ca.name);
  let d = 0;
  for (const child of cas) if (child.parent === ca.name) d = Math.max(d, 1 + depthBelow(child, cas, seen));
  return d;
}

export const check: Check = {
  id: "FG-CERT-002",
  title: "basicConstraints, pathLen and keyUsage correct for the role",
  severity: "high",
  standards: {
    etsiEn303645: ["5.5-1"],
    nistIr8259a: ["Device Identification"],
    iec62443_4_2: ["CR 1.8"],
  },
  rationale:
    "A device certificate that can sign certificates turns one stolen device key into a rogue CA; a CA without keyCertSign or with a too-small pathLen breaks validation; RFC 5280 requires basicConstraints to be critical in CA certificates.",
  appliesTo: ["declared.cas", "declared.batches", "deployed.certificates"],
  check(ctx) {
    const rules = ctx.policy.spec.caConstraints ?? {};
    const v: Violation[] = [];
    const cas = ctx.fleet.declared.cas ?? [];
    const byName = casByName(ctx);
    for (const ca of cas) {
      const s = `ca:${ca.name}`;
      if (ca.role === "root" && ca.parent)
        v.push({ subject: s, message: `parent: got ${ca.parent}, want none for a root` });
      if (ca.role !== "root" && !ca.parent)
        v.push({ subject: s, message: `parent: got none, want the signing CA for role ${ca.role}` });
      const below = depthBelow(ca, cas);
      if (ca.role === "issuing" && below > 0)
        v.push({
          subject: s,
          message: `an issuing CA signs only end-entity certificates, got ${below} CA level(s) below it`,
        });
      if (ca.pathLen !== undefined) {
        if (ca.role === "issuing" && ca.pathLen !== 0)
          v.push({ subject: s, message: `pathLen: got ${ca.pathLen}, want 0 for an issuing CA` });
        if (ca.pathLen < below)
          v.push({
            subject: s,
            message: `pathLen: got ${ca.pathLen}, want at least ${below} (CA levels declared below it)`,
          });
      } else if (rules.requirePathLen) {
        v.push({ subject: s, message: `pathLen: got none, want an explicit pathLen (policy requires it)` });
      }
      const parent = ca.parent ? byName.get(ca.parent) : undefined;
      if (parent?.pathLen !== undefined && parent.pathLen < 1 + below)
        v.push({
          subject: s,
          message: `parent ${parent.name} has pathLen ${parent.pathLen}, which forbids this CA and the ${below} level(s) below it`,
        });
      if (ca.keyUsage) {
        for (const need of ["keyCertSign", "cRLSign"] as const)
          if (!ca.keyUsage.includes(need))
            v.push({
              subject: s,
              message: `keyUsage: got [${ca.keyUsage.join(", ")}], want ${need} for a CA`,
            });
      }
      if (
        rules.requireNameConstraints &&
        ca.role === "issuing" &&
        !(ca.nameConstraints?.permitted?.length || ca.nameConstraints?.excluded?.length)
      )
        v.push({
          subject: s,
          message:
            "nameConstraints: got none, want permitted or excluded subtrees on an issuing CA (policy requires them)",
        });
    }
    for (const b of ctx.fleet.declared.batches ?? []) {
      const s = `batch:${b.id}`;
      const issuer = byName.get(b.issuingCa);
      if (issuer && issuer.role !== "issuing")
        v.push({
          subject: s,
          message: `issuingCa: got ${b.issuingCa} (role ${issuer.role}), want an issuing CA`,
        });
      const ku = b.profile.keyUsage;
      if (ku?.some((u) => u === "keyCertSign" || u === "cRLSign"))
        v.push({
          subject: s,
          message: `profile.keyUsage: got [${ku.join(", ")}], want no keyCertSign or cRLSign on device certificates`,
        });
      if (ku && !ku.includes("digitalSignature"))
        v.push({
          subject: s,
          message: `profile.keyUsage: got [${ku.join(", ")}], want digitalSignature (TLS client authentication)`,
        });
    }
    for (const c of ctx.certificates()) {
      const s = `cert:${c.id}`;
      const bc = c.basicConstraints;
      const ku = c.keyUsage?.usages ?? [];
      if (isCaRole(c.role)) {
        if (!bc?.ca)
          v.push({
            subject: s,
            message: `basicConstraints: got cA=${bc?.ca ?? "absent"}, want cA=TRUE for a ${c.role} CA`,
          });
        else if (!bc.critical)
          v.push({
            subject: s,
            message: "basicConstraints: got non-critical, want critical (RFC 5280 4.2.1.9)",
          });
        if (!ku.includes("keyCertSign"))
          v.push({ subject: s, message: `keyUsage: got [${ku.join(", ")}], want keyCertSign for a CA` });
        if (c.role === "issuing" && bc?.pathLen !== undefined && bc.pathLen !== 0)
          v.push({ subject: s, message: `pathLen: got ${bc.pathLen}, want 0 for an issuing CA` });
        if (rules.requirePathLen && bc?.ca && bc.pathLen === undefined && c.role !== "root")
          v.push({ subject: s, message: "pathLen: got none, want an explicit pathLen (policy requires it)" });
        if (rules.requireNameConstraints && c.role === "issuing" && !c.hasNameConstraints)
          v.push({
            subject: s,
            message:
              "nameConstraints: got none, want name constraints on an issuing CA (policy requires them)",
          });
      } else {
        if (bc?.ca)
          v.push({
            subject: s,
            message: "basicConstraints: got cA=TRUE, want an end-entity certificate for a device",
          });
        const bad = ku.filter((u) => u === "keyCertSign" || u === "cRLSign");
        if (bad.length)
          v.push({
            subject: s,
            message: `keyUsage: got ${bad.join(", ")}, want neither on a device certificate`,
          });
      }
    }
    return result(v);
  },
};
